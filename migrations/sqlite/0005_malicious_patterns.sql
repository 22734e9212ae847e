-- askee coordinator: signed claims a node made that no honest agent can
-- (for example, more fuel consumed than the task allows), the seed's
-- exhibits_malicious_patterns, Byzantine evidence beside the others.
-- Migrations are forever: never edit once merged.
ALTER TABLE nodes ADD COLUMN malicious_patterns BIGINT NOT NULL DEFAULT 0;
