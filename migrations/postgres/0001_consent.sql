-- askee consent engine, revocation and audit log (PostgreSQL).
-- Times are unix seconds unless the column name ends in _ms (unix millis).
-- Migrations are forever: never edit this file once merged, add a new one.

CREATE TABLE invitations (
    manifest_id     TEXT    NOT NULL PRIMARY KEY,
    node_key        TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    domain          TEXT,
    manifest_json   TEXT    NOT NULL,
    manifest_digest TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT  NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'granted', 'withdrawn'))
);
CREATE INDEX invitations_node_key ON invitations (node_key);

CREATE TABLE grants (
    grant_id         TEXT   NOT NULL PRIMARY KEY,
    manifest_id      TEXT   NOT NULL UNIQUE REFERENCES invitations (manifest_id),
    node_key         TEXT   NOT NULL,
    statement        TEXT   NOT NULL,
    signature        TEXT   NOT NULL,
    permissions_json TEXT   NOT NULL,
    granted_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    revoked_at       BIGINT,
    revoke_reason    TEXT,
    revoked_by       TEXT,
    CHECK ((revoked_at IS NULL AND revoke_reason IS NULL AND revoked_by IS NULL)
        OR (revoked_at IS NOT NULL AND revoke_reason IS NOT NULL AND revoked_by IS NOT NULL))
);
CREATE INDEX grants_node_key ON grants (node_key);
CREATE INDEX grants_revoked ON grants (expires_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE tokens (
    token_id   TEXT   NOT NULL PRIMARY KEY,
    grant_id   TEXT   NOT NULL REFERENCES grants (grant_id),
    node_key   TEXT   NOT NULL,
    kid        TEXT   NOT NULL,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    jwt        TEXT   NOT NULL
);
CREATE INDEX tokens_grant_id ON tokens (grant_id);
CREATE INDEX tokens_node_key ON tokens (node_key);

CREATE TABLE nonces (
    node_key   TEXT   NOT NULL,
    nonce      TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (node_key, nonce)
);
CREATE INDEX nonces_expires_at ON nonces (expires_at);

CREATE TABLE operators (
    name       TEXT   NOT NULL PRIMARY KEY,
    token_hash TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- One row per leaf of the tamper-evident log. `body` holds the exact bytes
-- the leaf hash was computed over; kind/subject/timestamp_ms are copies for
-- querying only.
CREATE TABLE audit_entries (
    idx          BIGINT NOT NULL PRIMARY KEY CHECK (idx >= 0),
    timestamp_ms BIGINT NOT NULL,
    kind         TEXT   NOT NULL,
    subject      TEXT   NOT NULL,
    body         TEXT   NOT NULL,
    leaf_hash    BYTEA  NOT NULL CHECK (octet_length(leaf_hash) = 32)
);
CREATE INDEX audit_entries_subject ON audit_entries (subject);
CREATE INDEX audit_entries_kind ON audit_entries (kind);

CREATE TABLE audit_checkpoints (
    size          BIGINT NOT NULL PRIMARY KEY CHECK (size >= 0),
    root          BYTEA  NOT NULL CHECK (octet_length(root) = 32),
    note          TEXT   NOT NULL,
    created_at_ms BIGINT NOT NULL
);
