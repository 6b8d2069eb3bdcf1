DROP TABLE IF EXISTS public.send_jobs;
