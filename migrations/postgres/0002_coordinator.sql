-- askee task coordinator (PostgreSQL): nodes, operator keys, modules, tasks,
-- assignments (replicas). Times are unix seconds unless the column name
-- ends in _ms. Never edit once merged; add a new migration.

CREATE TABLE node_challenges (
    challenge  TEXT   NOT NULL PRIMARY KEY,
    node_key   TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX node_challenges_expiry ON node_challenges (expires_at);

CREATE TABLE nodes (
    node_key          TEXT   NOT NULL PRIMARY KEY,
    token_id          TEXT   NOT NULL,
    grant_id          TEXT   NOT NULL,
    token_expires_at  BIGINT NOT NULL,
    token_payload_json TEXT  NOT NULL,
    profile_json      TEXT   NOT NULL,
    cpu_cores         BIGINT NOT NULL,
    ram_mb            BIGINT NOT NULL,
    storage_gb        BIGINT NOT NULL,
    bandwidth_mbps    BIGINT NOT NULL,
    owner             TEXT   NOT NULL,
    network_prefix    TEXT   NOT NULL,
    state             TEXT   NOT NULL CHECK (state IN ('active', 'offline', 'byzantine', 'revoked')),
    registered_at     BIGINT NOT NULL,
    last_heartbeat    BIGINT NOT NULL,
    heartbeats        BIGINT NOT NULL DEFAULT 0,
    assigned          BIGINT NOT NULL DEFAULT 0,
    completed         BIGINT NOT NULL DEFAULT 0,
    failed            BIGINT NOT NULL DEFAULT 0,
    agreed            BIGINT NOT NULL DEFAULT 0,
    wrong             BIGINT NOT NULL DEFAULT 0,
    invalid_signatures BIGINT NOT NULL DEFAULT 0,
    consensus_failures BIGINT NOT NULL DEFAULT 0,
    streak            BIGINT NOT NULL DEFAULT 0,
    reputation_micros BIGINT NOT NULL DEFAULT 0,
    exclusion_reason  TEXT
);
CREATE INDEX nodes_state_heartbeat ON nodes (state, last_heartbeat);

CREATE TABLE operator_keys (
    public_key TEXT   NOT NULL PRIMARY KEY,
    operator   TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE modules (
    sha256     TEXT   NOT NULL PRIMARY KEY,
    bytes      BYTEA  NOT NULL,
    size_bytes BIGINT NOT NULL,
    operator   TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE tasks (
    task_id          TEXT   NOT NULL PRIMARY KEY,
    operator         TEXT   NOT NULL,
    operator_key     TEXT   NOT NULL,
    statement_json   TEXT   NOT NULL,
    signature        TEXT   NOT NULL,
    module_sha256    TEXT   NOT NULL REFERENCES modules (sha256),
    task_type        TEXT   NOT NULL,
    duration_hours   BIGINT NOT NULL,
    cpu_cores        BIGINT NOT NULL,
    ram_mb           BIGINT NOT NULL,
    storage_gb       BIGINT NOT NULL,
    bandwidth_mbps   BIGINT NOT NULL,
    f                BIGINT NOT NULL,
    max_replicas     BIGINT NOT NULL,
    adaptive         BIGINT NOT NULL,
    known_digest     TEXT,
    bootstrap        BIGINT NOT NULL DEFAULT 0,
    deadline         BIGINT NOT NULL,
    state            TEXT   NOT NULL CHECK (state IN ('pending', 'verified', 'failed', 'cancelled')),
    replicas_wanted  BIGINT NOT NULL,
    replicas_active  BIGINT NOT NULL DEFAULT 0,
    replicas_total   BIGINT NOT NULL DEFAULT 0,
    results_received BIGINT NOT NULL DEFAULT 0,
    trusted_node     TEXT,
    accepted_digest  TEXT,
    reason           TEXT,
    audit_index      BIGINT,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL
);
CREATE INDEX tasks_open ON tasks (state, created_ms);
-- Lease candidates: pending tasks that still want replicas, in queue order.
CREATE INDEX tasks_wanting ON tasks (bootstrap, created_ms, task_id)
    WHERE state = 'pending' AND replicas_active < replicas_wanted;

CREATE TABLE assignments (
    assignment_id    TEXT   NOT NULL PRIMARY KEY,
    task_id          TEXT   NOT NULL REFERENCES tasks (task_id),
    node_key         TEXT   NOT NULL,
    state            TEXT   NOT NULL CHECK (state IN ('leased', 'reported', 'expired', 'failed', 'abandoned')),
    leased_at        BIGINT NOT NULL,
    lease_expires_at BIGINT NOT NULL,
    status           TEXT,
    result_digest    TEXT,
    signature        TEXT,
    exit_code        BIGINT,
    stdout           TEXT,
    failure          TEXT,
    verdict          TEXT,
    reported_at_ms   BIGINT,
    UNIQUE (task_id, node_key)
);
CREATE INDEX assignments_lease ON assignments (state, lease_expires_at);
CREATE INDEX assignments_node ON assignments (node_key, state);
