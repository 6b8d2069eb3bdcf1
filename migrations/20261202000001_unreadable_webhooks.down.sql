DROP TABLE IF EXISTS public.webhook_unreadable;
