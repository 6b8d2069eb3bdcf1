DROP TABLE IF EXISTS public.turn_jobs;
DROP TABLE IF EXISTS public.message_statuses;
DROP TABLE IF EXISTS public.conversation_keys;
DROP TABLE IF EXISTS public.webhook_events;
