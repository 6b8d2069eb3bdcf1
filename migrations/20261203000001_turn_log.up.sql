-- What every finished turn did, for `wabot conversation show` and operators: the
-- nodes it walked, the variables after it, how the context stood, why nothing ran.
-- Written by the turn stage's batch commit (one set-based insert per batch); purged
-- with the raw webhook events after the retention age. `job_id` is not a foreign
-- key: finished turn jobs are purged within the hour, the log outlives them.
CREATE TABLE IF NOT EXISTS public.wabot_turn_log (
    id bigserial PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES public.conversations (id) ON DELETE CASCADE,
    job_id bigint NOT NULL,
    -- 'inbound', 'timeout' or 'flow_failed' (turn_jobs.kind).
    kind text NOT NULL,
    -- The inbound message the turn answered (NULL for timers and failed Flows).
    message_id uuid REFERENCES public.messages (id) ON DELETE SET NULL,
    -- The chatbot that ran (NULL when nothing ran).
    chatbot_id uuid REFERENCES public.chatbots (id) ON DELETE SET NULL,
    context_id uuid,
    -- The node ids executed in this turn, in order.
    nodes text[] NOT NULL DEFAULT '{}',
    steps integer NOT NULL DEFAULT 0,
    -- After the turn: the context's node, status, completion reason and variables.
    current_node_id text,
    status text,
    completion_reason text,
    variables jsonb,
    -- Replies the turn queued.
    sends integer NOT NULL DEFAULT 0,
    -- Why nothing ran, or what went wrong.
    note text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_wabot_turn_log_conversation
    ON public.wabot_turn_log (conversation_id, id);
CREATE INDEX IF NOT EXISTS idx_wabot_turn_log_created_at
    ON public.wabot_turn_log (created_at);
