-- The bot never speaks while an agent has the conversation (DESIGN.md, invariant 13),
-- including replies it queued before the agent came in: a reply waiting behind a
-- retry, a hold (an expired token) or a full sender would otherwise reach the
-- customer after the agent's message. When a conversation becomes an agent's, or an
-- operator pauses the bot, the bot's unsent replies in it are finished as failed,
-- with the reason, in the same transaction. Messages the business starts (templates,
-- campaigns, timers: send_jobs.business_initiated) are the operator's and stay.
-- 'requested' (the customer asked for a person) does not: the bot's answer to that
-- request must still go.
CREATE OR REPLACE FUNCTION public.wabot_handover_silences_bot() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    why jsonb := jsonb_build_object(
        'reason', 'handover',
        'message', CASE NEW.state WHEN 'paused' THEN 'not sent: an operator paused the bot'
                                  ELSE 'not sent: an agent has the conversation' END);
BEGIN
    WITH j AS (
        UPDATE public.send_jobs s
        SET done_at = now(), last_error = why, locked_by = NULL, locked_until = NULL
        WHERE s.conversation_id = NEW.conversation_id AND s.done_at IS NULL
          AND NOT s.business_initiated
        RETURNING s.message_id)
    UPDATE public.messages m
    SET status = 'failed', content = m.content || jsonb_build_object('error', why),
        "updatedAt" = now()
    FROM j WHERE m.id = j.message_id AND m.status = 'pending';
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS wabot_handover_silences_bot ON public.wabot_handover;
CREATE TRIGGER wabot_handover_silences_bot
    AFTER INSERT OR UPDATE OF state ON public.wabot_handover
    FOR EACH ROW
    WHEN (NEW.state IN ('agent', 'paused'))
    EXECUTE FUNCTION public.wabot_handover_silences_bot();
