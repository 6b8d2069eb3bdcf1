-- What the user has submitted so far in one open WhatsApp Flow, keyed by the flow
-- token. Meta's data_exchange requests carry only the current screen's payload, and
-- a cascade (brand → products → ...) needs the earlier picks too; the row lives as
-- long as the conversation context that issued the token.
CREATE TABLE IF NOT EXISTS public.wabot_flow_sessions (
    flow_token text NOT NULL,
    context_id uuid NOT NULL,
    data jsonb DEFAULT '{}'::jsonb NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT wabot_flow_sessions_pkey PRIMARY KEY (flow_token),
    CONSTRAINT wabot_flow_sessions_context_fkey FOREIGN KEY (context_id)
        REFERENCES public.conversation_contexts(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS wabot_flow_sessions_context_idx
    ON public.wabot_flow_sessions USING btree (context_id);
