ALTER TABLE public.turn_jobs RESET (autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_threshold, autovacuum_analyze_threshold);
ALTER TABLE public.send_jobs RESET (autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_threshold, autovacuum_analyze_threshold);
