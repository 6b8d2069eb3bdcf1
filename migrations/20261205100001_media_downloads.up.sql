-- Inbound media downloaded durably: one job per stored media message (image, audio,
-- video, document, sticker), inserted by ingest in the transaction that stores the
-- message. The media stage claims due jobs with FOR UPDATE SKIP LOCKED under a lease
-- (locked_by/locked_until, like turn_jobs), downloads the bytes to the media store
-- and records where they are in the job and in the message's content
-- (content.media.stored), or why it gave up (content.media.failed). Finished rows
-- stay: retention deletes the stored file and the row past
-- WABOT_MEDIA_RETENTION_DAYS.
CREATE TABLE IF NOT EXISTS public.wabot_media_jobs (
    id bigserial PRIMARY KEY,
    -- SET NULL, not CASCADE: a message deleted by someone else leaves the job, so
    -- that retention still finds (and deletes) the file it stored.
    message_id uuid UNIQUE REFERENCES public.messages (id) ON DELETE SET NULL,
    -- Meta's media id (valid for about 7 days) and what the webhook said of it.
    media_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('image', 'audio', 'video', 'document', 'sticker')),
    mime_type text,
    sha256 text,
    run_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    locked_by text,
    locked_until timestamptz,
    last_error text,
    done_at timestamptz,
    result text CHECK (result IN ('stored', 'given_up')),
    -- Where the bytes are: the store's kind (dir, s3, memory, ...) and the key.
    store_kind text,
    store_key text,
    size_bytes bigint,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Due jobs, oldest first (the claim).
CREATE INDEX IF NOT EXISTS wabot_media_jobs_due
    ON public.wabot_media_jobs (run_at, id) WHERE done_at IS NULL;
-- Finished jobs by age (retention).
CREATE INDEX IF NOT EXISTS wabot_media_jobs_finished
    ON public.wabot_media_jobs (created_at) WHERE done_at IS NOT NULL;

-- A small, hot queue: vacuumed often like the others.
ALTER TABLE public.wabot_media_jobs SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05
);
