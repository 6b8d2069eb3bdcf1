DELETE FROM public.turn_jobs WHERE kind = 'flow_failed';
ALTER TABLE public.turn_jobs DROP CONSTRAINT IF EXISTS turn_jobs_kind_check;
ALTER TABLE public.turn_jobs ADD CONSTRAINT turn_jobs_kind_check
    CHECK (kind IN ('inbound', 'timeout'));
