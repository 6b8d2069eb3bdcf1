-- The work queues churn: every job is inserted, updated and finished within seconds.
-- Vacuum them far more eagerly than the defaults so that the claim's index scans do
-- not wade through dead entries.
ALTER TABLE public.turn_jobs SET (autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000, autovacuum_analyze_threshold = 1000);
ALTER TABLE public.send_jobs SET (autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000, autovacuum_analyze_threshold = 1000);
