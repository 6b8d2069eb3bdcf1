-- Signed webhooks wabot could not read (not JSON, a lone surrogate escape, a number
-- out of range, a BOM, invalid UTF-8, not an object...). The signature proves Meta
-- sent them, so they are acknowledged (a refusal would make Meta redeliver them for
-- days) and kept here whole, with the reason, for an operator to look at.
CREATE TABLE IF NOT EXISTS public.webhook_unreadable (
    id bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    raw bytea NOT NULL,
    error text NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_webhook_unreadable_received_at
    ON public.webhook_unreadable (received_at);
