-- askee coordinator (issue 5, throughput): a result batch stores a node's
-- consecutive events of one kind as one row with how many they are (`times`),
-- instead of one row each: an honest batch of 32 results wrote about 64 event
-- rows (each with a foreign-key check, a later delete and index upkeep), now
-- about one per node it names. The order between kinds is kept (a `wrong`
-- still resets the streak exactly where it fell). Rows written before this
-- migration count once.
-- Migrations are forever: never edit once merged.
ALTER TABLE node_events ADD COLUMN times BIGINT NOT NULL DEFAULT 1;
