-- Conversations with people in them: human handover and opt-out (issue 17).

-- Who has a conversation besides the bot. No row: the bot has it. While a row says
-- so, the customer's messages are stored as always but no turn runs, no timer of the
-- conversation sends anything and the bot sends nothing.
CREATE TABLE IF NOT EXISTS public.wabot_handover (
    conversation_id uuid PRIMARY KEY
        REFERENCES public.conversations (id) ON DELETE CASCADE,
    -- 'agent':     an agent wrote in the conversation (WhatsApp Builder's inbox, or
    --              the WhatsApp Business app on a number in coexistence: an echo);
    --              the bot gets it back when the agent has been silent for
    --              WABOT_HANDOVER_IDLE_SECS, or on `wabot conversation resume`.
    -- 'requested': the customer asked for a person (a handover keyword or node) and
    --              waits for an agent; same idle rule, counted from the request.
    -- 'paused':    an operator paused the bot; only `resume` gives it back.
    -- 'released':  an operator resumed the bot: the customer's next message starts
    --              the chatbot afresh (and the row goes).
    state text NOT NULL CHECK (state IN ('agent', 'requested', 'paused', 'released')),
    since timestamptz NOT NULL DEFAULT now(),
    -- The agent's latest message (for 'requested' and 'paused': when it was asked);
    -- the idle clock runs from here.
    last_agent_at timestamptz NOT NULL DEFAULT now(),
    -- How it began: 'inbox', 'echo', 'operator', 'keyword', 'node'.
    source text NOT NULL
);
CREATE INDEX IF NOT EXISTS wabot_handover_by_state ON public.wabot_handover (state, since);

-- A messages row written by the business participant from a connection that is not
-- wabot's (wabot's connections identify themselves as application_name 'wabot') is
-- an agent's: WhatsApp Builder's inbox inserts such a row and sends the text itself.
-- The WHEN clause keeps wabot's own inserts free of any function call.
CREATE OR REPLACE FUNCTION public.wabot_note_agent_message() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM public.conversation_keys k
               JOIN public.users b ON b."phoneNumber" = k.business_phone_number_id
               WHERE k.conversation_id = NEW."conversationId" AND b.id = NEW."senderId") THEN
        INSERT INTO public.wabot_handover AS h (conversation_id, state, source)
        VALUES (NEW."conversationId", 'agent', 'inbox')
        ON CONFLICT (conversation_id) DO UPDATE
            SET last_agent_at = now(),
                -- An operator's pause stays a pause; a request an agent answers
                -- becomes the agent's conversation.
                state = CASE WHEN h.state = 'paused' THEN 'paused' ELSE 'agent' END;
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS wabot_agent_message ON public.messages;
CREATE TRIGGER wabot_agent_message AFTER INSERT ON public.messages
    FOR EACH ROW
    WHEN (current_setting('application_name', true) IS DISTINCT FROM 'wabot')
    EXECUTE FUNCTION public.wabot_note_agent_message();

-- Customers who said STOP (or whom an operator opted out), per business number. Only
-- the customer's own word or an operator changes a row: never a send error.
CREATE TABLE IF NOT EXISTS public.wabot_opt_outs (
    business_phone_number_id varchar(20) NOT NULL,
    customer_wa_id varchar(64) NOT NULL,
    opted_out_at timestamptz NOT NULL DEFAULT now(),
    -- 'keyword' (the customer's word) or 'operator'.
    source text NOT NULL,
    -- The word the customer wrote, when it was theirs.
    word text,
    PRIMARY KEY (business_phone_number_id, customer_wa_id)
);

-- A send the business starts (a timer's message; later templates and campaigns), as
-- opposed to a reply to the customer's message in the same turn: the sender refuses
-- the former to an opted-out customer.
ALTER TABLE public.send_jobs
    ADD COLUMN IF NOT EXISTS business_initiated boolean NOT NULL DEFAULT false;
