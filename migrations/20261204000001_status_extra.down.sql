-- Rebuilds `raw` from the typed columns and `extra` (the timestamp as Meta sends
-- it, epoch seconds in a string; a payment's status without its `kind:` prefix).
ALTER TABLE public.message_statuses ADD COLUMN IF NOT EXISTS raw jsonb;
UPDATE public.message_statuses
   SET raw = coalesce(extra, '{}'::jsonb) || jsonb_strip_nulls(jsonb_build_object(
        'id', wamid,
        'status', CASE WHEN position(':' IN status) > 0 THEN split_part(status, ':', 2)
                       ELSE status END,
        'timestamp', extract(epoch FROM meta_timestamp)::bigint::text,
        'recipient_id', recipient_id,
        'errors', CASE WHEN errors = '[]'::jsonb THEN NULL ELSE errors END));
ALTER TABLE public.message_statuses ALTER COLUMN raw SET NOT NULL;
ALTER TABLE public.message_statuses DROP COLUMN extra;
