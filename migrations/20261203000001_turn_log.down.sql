DROP TABLE IF EXISTS public.wabot_turn_log;
