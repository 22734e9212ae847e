-- askee coordinator: protocol violations a node committed (for example,
-- reporting a result for another node's assignment), Byzantine evidence
-- beside wrong results and invalid signatures.
-- Migrations are forever: never edit once merged.
ALTER TABLE nodes ADD COLUMN policy_violations BIGINT NOT NULL DEFAULT 0;
