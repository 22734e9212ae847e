-- askee opt-in discovery: the crawl queue and the verified signals.
-- Times are unix seconds. Migrations are forever: never edit once merged.

-- One row per domain the crawler knows. The queue is this table ordered by
-- next_check_at, so a killed crawler resumes where it stopped.
CREATE TABLE discovery_domains (
    domain          TEXT   NOT NULL PRIMARY KEY,
    added_at        BIGINT NOT NULL,
    next_check_at   BIGINT NOT NULL,
    -- consecutive checks that got no answer (a lost answer is not a "no")
    failures        BIGINT NOT NULL DEFAULT 0,
    last_checked_at BIGINT,
    -- invited | known | withdrawn | rejected | absent | retry
    last_outcome    TEXT,
    last_reason     TEXT
);
CREATE INDEX discovery_domains_due ON discovery_domains (next_check_at);

-- One row per verified (domain, key): the invitation it created, once.
-- domain is '' for a QR statement of a volunteer without a domain.
CREATE TABLE discovery_signals (
    domain      TEXT   NOT NULL,
    node_key    TEXT   NOT NULL,
    source      TEXT   NOT NULL,
    signal_json TEXT   NOT NULL,
    manifest_id TEXT   NOT NULL UNIQUE REFERENCES invitations (manifest_id),
    verified_at BIGINT NOT NULL,
    PRIMARY KEY (domain, node_key)
);
