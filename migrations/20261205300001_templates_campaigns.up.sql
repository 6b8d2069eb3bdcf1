-- Message templates, sends the business starts, and campaigns (issue 19).
--
-- wabot_templates: the business account's templates as `wabot templates sync` last
-- read them (GET /{WABA-ID}/message_templates), kept current by the periodic sync and
-- the `message_template_status_update` webhook. `parameters` is what a send must
-- fill, per component (see whatsapp::templates::Parameters).
CREATE TABLE IF NOT EXISTS public.wabot_templates (
    name text NOT NULL,
    language text NOT NULL,
    meta_id text,
    category text,
    status text NOT NULL,
    -- POSITIONAL or NAMED.
    parameter_format text NOT NULL DEFAULT 'POSITIONAL',
    components jsonb NOT NULL DEFAULT '[]',
    parameters jsonb NOT NULL DEFAULT '{}',
    -- Why Meta rejected, paused or disabled it (the webhook's reason).
    reason text,
    synced_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, language)
);
CREATE INDEX IF NOT EXISTS wabot_templates_meta_id ON public.wabot_templates (meta_id);

-- A template send's idempotency key (`wabot send --idempotency-key`): the first
-- command's message is the answer of every repeat.
CREATE TABLE IF NOT EXISTS public.wabot_sends (
    idempotency_key text PRIMARY KEY,
    message_id uuid NOT NULL,
    conversation_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.wabot_campaigns (
    id bigserial PRIMARY KEY,
    template_name text NOT NULL,
    language text NOT NULL,
    chatbot_id uuid REFERENCES public.chatbots (id) ON DELETE SET NULL,
    node_id text,
    business_phone_number_id text NOT NULL,
    -- Messages per second it is paced at; `current_rate` is what throughput errors
    -- slowed it to (it climbs back to `rate` while Meta accepts).
    rate double precision NOT NULL,
    current_rate double precision NOT NULL,
    -- loading, running, paused, cancelled, finished.
    state text NOT NULL DEFAULT 'loading',
    pause_reason text,
    total integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- One row per recipient, created in batches. A recipient moves from `pending` to
-- `queued` (its message and send job made in the same transaction: never twice),
-- or to `skipped` (opted out) or `invalid`, with the reason.
CREATE TABLE IF NOT EXISTS public.wabot_campaign_recipients (
    campaign_id bigint NOT NULL REFERENCES public.wabot_campaigns (id) ON DELETE CASCADE,
    n integer NOT NULL,
    recipient text NOT NULL,
    params jsonb NOT NULL DEFAULT '{}',
    state text NOT NULL DEFAULT 'pending',
    reason text,
    message_id uuid,
    conversation_id uuid,
    queued_at timestamptz,
    PRIMARY KEY (campaign_id, n),
    UNIQUE (campaign_id, recipient)
);
CREATE INDEX IF NOT EXISTS wabot_campaign_recipients_pending
    ON public.wabot_campaign_recipients (campaign_id, n) WHERE state = 'pending';
-- The campaign stage's look at its recent sends (throttling, the messaging limit)
-- reads the recently queued only, however long the list.
CREATE INDEX IF NOT EXISTS wabot_campaign_recipients_recent
    ON public.wabot_campaign_recipients (campaign_id, queued_at) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS wabot_campaign_recipients_message
    ON public.wabot_campaign_recipients (message_id) WHERE message_id IS NOT NULL;
