DROP TABLE IF EXISTS public.wabot_processes;
