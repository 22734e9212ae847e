-- askee coordinator (issue 5, throughput): PostgreSQL's 0007 tunes vacuum and
-- page fill for the lease and result tables; SQLite has neither setting (it
-- reuses freed pages itself), so this migration only keeps the numbering of
-- both backends in step.
-- Migrations are forever: never edit once merged.
SELECT 1;
