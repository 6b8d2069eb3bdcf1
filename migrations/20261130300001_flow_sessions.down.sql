DROP TABLE IF EXISTS public.wabot_flow_sessions;
