DROP TABLE IF EXISTS public.wabot_media_jobs;
