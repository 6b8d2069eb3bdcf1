-- A Flow message Meta refused for good wakes its conversation's chatbot, which
-- leaves the waiting whatsapp_flow node by its `error` edge: a third kind of turn job.
ALTER TABLE public.turn_jobs DROP CONSTRAINT IF EXISTS turn_jobs_kind_check;
ALTER TABLE public.turn_jobs ADD CONSTRAINT turn_jobs_kind_check
    CHECK (kind IN ('inbound', 'timeout', 'flow_failed'));
