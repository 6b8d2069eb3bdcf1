-- Webhook ingest: the received webhooks, the conversation keys that make finding or
-- creating a 1:1 conversation race-free, every status Meta reported (also those
-- that arrive before the message they are about), and the turn jobs the worker
-- claims.

-- Every signature-verified webhook, kept whole for audit and replay. `body` is the
-- parsed JSON (jsonb); the raw bytes are not kept because the signature is checked
-- before anything is stored and jsonb is what replays and queries need.
CREATE TABLE IF NOT EXISTS public.webhook_events (
    id bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    object text,
    -- The distinct `field`s of its changes (`messages`, `account_update`, ...).
    fields text[] NOT NULL DEFAULT '{}',
    body jsonb NOT NULL,
    messages_total integer NOT NULL DEFAULT 0,
    messages_new integer NOT NULL DEFAULT 0,
    -- Messages that could not be stored as rows (no wamid, no sender, a sender id
    -- longer than users."phoneNumber" allows); they stay in `body`.
    messages_skipped integer NOT NULL DEFAULT 0,
    statuses_total integer NOT NULL DEFAULT 0,
    statuses_new integer NOT NULL DEFAULT 0,
    -- `value.errors[]` of every change, with the change's metadata.
    errors jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS idx_webhook_events_received_at
    ON public.webhook_events (received_at);
CREATE INDEX IF NOT EXISTS idx_webhook_events_with_errors
    ON public.webhook_events (id) WHERE errors <> '[]'::jsonb;

-- The one 1:1 conversation between a business number (its phone_number_id, which
-- is also the business user's "phoneNumber") and a customer (their wa_id). The
-- primary key makes concurrent webhooks of a new customer agree on one
-- conversation: the loser of the insert race waits for the winner and reads its
-- row. The foreign key is deferred because the key row is inserted before the
-- conversation it names.
CREATE TABLE IF NOT EXISTS public.conversation_keys (
    business_phone_number_id varchar(20) NOT NULL,
    customer_wa_id varchar(20) NOT NULL,
    conversation_id uuid NOT NULL UNIQUE
        REFERENCES public.conversations (id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_phone_number_id, customer_wa_id)
);

-- Every status Meta reported, once per (wamid, status). `applied_at` is set once the
-- status has been weighed against its message (whether or not it moved it); a row
-- with `applied_at IS NULL` is a status whose message is not known yet, applied by
-- `store::statuses::apply_early_statuses` when the sender records that wamid.
CREATE TABLE IF NOT EXISTS public.message_statuses (
    wamid text NOT NULL,
    status text NOT NULL,
    meta_timestamp timestamptz,
    recipient_id text,
    errors jsonb NOT NULL DEFAULT '[]',
    raw jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    applied_at timestamptz,
    message_id uuid REFERENCES public.messages (id) ON DELETE CASCADE,
    PRIMARY KEY (wamid, status)
);
CREATE INDEX IF NOT EXISTS idx_message_statuses_pending
    ON public.message_statuses (wamid) WHERE applied_at IS NULL;

-- The work the turn worker claims: one `inbound` job per new inbound message, and
-- `timeout` jobs (message_id NULL) that the worker schedules itself. Claim the
-- oldest unfinished job of a conversation nobody holds (`locked_until` in the past
-- or NULL) with FOR UPDATE SKIP LOCKED, set locked_by/locked_until as the lease,
-- and set done_at when the turn's effects commit.
CREATE TABLE IF NOT EXISTS public.turn_jobs (
    id bigserial PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES public.conversations (id) ON DELETE CASCADE,
    message_id uuid UNIQUE REFERENCES public.messages (id) ON DELETE CASCADE,
    kind text NOT NULL CHECK (kind IN ('inbound', 'timeout')),
    payload jsonb NOT NULL DEFAULT '{}',
    run_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    locked_by text,
    locked_until timestamptz,
    last_error text,
    done_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_turn_jobs_open
    ON public.turn_jobs (conversation_id, id) WHERE done_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_turn_jobs_runnable
    ON public.turn_jobs (run_at, id) WHERE done_at IS NULL;
