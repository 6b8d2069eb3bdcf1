-- message_statuses kept Meta's whole status object in `raw`: a second copy of what
-- webhook_events already holds (which retention purges after WABOT_RETENTION_DAYS).
-- Keep only what the typed columns do not: `extra` is the status object without
-- id, status, timestamp, recipient_id and errors (the conversation and pricing
-- objects, biz_opaque_callback_data, a payment's details ...), NULL when nothing
-- is left.
ALTER TABLE public.message_statuses ADD COLUMN IF NOT EXISTS extra jsonb;
UPDATE public.message_statuses
   SET extra = nullif(raw - '{id,status,timestamp,recipient_id,errors}'::text[], '{}'::jsonb);
ALTER TABLE public.message_statuses DROP COLUMN raw;
