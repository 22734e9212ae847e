-- askee coordinator (issue 5, throughput): per-node counter changes from
-- result reports are appended here instead of updating the `nodes` rows of
-- every reporter inside the report transaction (the row-lock hot spot). A
-- node's events are folded into its counters (in event order) by the node's
-- own lease and heartbeat, by the sweeper and before the reputation ledger
-- is read; Byzantine exclusion is evaluated on the fold.
-- Migrations are forever: never edit once merged.
CREATE TABLE node_events (
    event_id BIGSERIAL PRIMARY KEY,
    node_key TEXT NOT NULL REFERENCES nodes (node_key),
    kind TEXT NOT NULL CHECK (kind IN ('completed', 'failed', 'agreed', 'wrong',
        'consensus_failure')),
    created_ms BIGINT NOT NULL
);
CREATE INDEX node_events_by_node ON node_events (node_key, event_id);
