-- The operator API and events out (issue 20).

-- Bearer tokens of the operator API. Only a SHA-256 of each token is kept (they are
-- 256 random bits, so a plain hash is enough); `hint` is the token's first
-- characters, to tell tokens apart in `wabot token list`.
CREATE TABLE wabot_api_tokens (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    scopes text[] NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    hint text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE UNIQUE INDEX wabot_api_tokens_live_name ON wabot_api_tokens (name)
    WHERE revoked_at IS NULL;

-- `Idempotency-Key`s of the API's sends, per token: the request's hash and the
-- answer it got, written in the transaction that queued the send.
CREATE TABLE wabot_api_idempotency (
    token_id uuid NOT NULL REFERENCES wabot_api_tokens (id) ON DELETE CASCADE,
    key text NOT NULL,
    request_hash bytea NOT NULL,
    status smallint NOT NULL,
    response jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_id, key)
);
CREATE INDEX wabot_api_idempotency_age ON wabot_api_idempotency (created_at);

-- Where events go: each endpoint with the events it takes and its signing secret
-- (`whsec_` + base64, as the Standard Webhooks specification has it).
CREATE TABLE wabot_event_endpoints (
    id uuid PRIMARY KEY,
    url text NOT NULL,
    events text[] NOT NULL,
    secret text NOT NULL,
    description text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The durable outbox of events: one row per event and endpoint, written in the
-- transaction of what it reports. An endpoint's events of one conversation are
-- delivered in id order, one at a time.
CREATE TABLE wabot_event_outbox (
    id bigserial PRIMARY KEY,
    -- `webhook-id`: the same on every attempt, so receivers can drop repeats.
    webhook_id text NOT NULL DEFAULT 'msg_' || replace(gen_random_uuid()::text, '-', ''),
    endpoint_id uuid NOT NULL REFERENCES wabot_event_endpoints (id) ON DELETE CASCADE,
    type text NOT NULL,
    conversation_id uuid,
    -- The body posted: {type, timestamp, data}.
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Retries run for a bounded time from here (its creation, or a re-send).
    retry_from timestamptz NOT NULL DEFAULT now(),
    locked_by text,
    locked_until timestamptz,
    last_status integer,
    last_error text,
    done_at timestamptz
);
CREATE INDEX wabot_event_outbox_due ON wabot_event_outbox (next_attempt_at, id)
    WHERE state = 'pending';
CREATE INDEX wabot_event_outbox_order ON wabot_event_outbox (endpoint_id, conversation_id, id)
    WHERE state = 'pending';
CREATE INDEX wabot_event_outbox_endpoint ON wabot_event_outbox (endpoint_id, id);
