DROP TABLE IF EXISTS public.wabot_opt_outs;
ALTER TABLE public.send_jobs DROP COLUMN IF EXISTS business_initiated;
DROP TRIGGER IF EXISTS wabot_agent_message ON public.messages;
DROP FUNCTION IF EXISTS public.wabot_note_agent_message();
DROP TABLE IF EXISTS public.wabot_handover;
