DROP TRIGGER IF EXISTS wabot_handover_silences_bot ON public.wabot_handover;
DROP FUNCTION IF EXISTS public.wabot_handover_silences_bot();
