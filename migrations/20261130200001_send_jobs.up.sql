-- The durable send queue. An outbound message is a `messages` row (status 'pending'
-- until Meta accepts it) plus one send job holding the exact Graph API body. The turn
-- worker inserts both in the transaction that saves the turn; the sender claims jobs
-- with FOR UPDATE SKIP LOCKED and a lease, one conversation at a time and in `id`
-- order, so a conversation's replies reach Meta in the order the chatbot made them.
CREATE TABLE IF NOT EXISTS public.send_jobs (
    id bigserial PRIMARY KEY,
    message_id uuid NOT NULL UNIQUE
        REFERENCES public.messages(id) ON DELETE CASCADE,
    conversation_id uuid NOT NULL
        REFERENCES public.conversations(id) ON DELETE CASCADE,
    recipient text NOT NULL,
    -- The Graph API request body, rendered once when the turn committed.
    body jsonb NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The lease: who holds the job and until when. An expired lease is claimable
    -- again, so the jobs of a crashed process are not lost.
    locked_by text,
    locked_until timestamptz,
    last_error jsonb,
    done_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The head of each conversation's queue: the unfinished job with the lowest id.
CREATE INDEX IF NOT EXISTS send_jobs_open_by_conversation
    ON public.send_jobs (conversation_id, id) WHERE done_at IS NULL;
-- Due jobs, oldest first.
CREATE INDEX IF NOT EXISTS send_jobs_open_by_due
    ON public.send_jobs (next_attempt_at, id) WHERE done_at IS NULL;
