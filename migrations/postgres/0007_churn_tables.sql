-- askee coordinator (issue 5, throughput): the lease and result tables are
-- rewritten at every lease and report, so dead row versions pile up faster
-- than the default autovacuum thresholds (20% of the table) clean them, and
-- every lease query then walks them. Vacuum these tables after 2% of their
-- rows changed, without throttling, and leave room in each page for updates
-- that keep their index entries (HOT). The cluster-wide autovacuum_naptime is
-- a server setting (deploy/README.md recommends 1 s for the coordinator).
-- Migrations are forever: never edit once merged.
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE assignments SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE nodes SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE node_events SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE nonces SET (autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0);
