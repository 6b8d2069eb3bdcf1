-- Every distinct graph of a chatbot that wabot ran, named by the sha256 of its
-- canonical content (nodes, edges, metadata: `engine::version::hash`). A context
-- records the version it started on in `variables.__wabot.version` and every later
-- turn runs on that graph, whatever the editor did to `chatbots` meanwhile, so an
-- edit never strands a conversation waiting at a node it deleted. The turn commit
-- inserts a version the first time a context starts on it; maintenance deletes the
-- versions no live context needs and that are not the chatbot's graph any more.
-- `chatbots` itself keeps WhatsApp Builder's meaning: the graph being edited.
CREATE TABLE IF NOT EXISTS public.wabot_chatbot_versions (
    chatbot_id uuid NOT NULL REFERENCES public.chatbots (id) ON DELETE CASCADE,
    hash text NOT NULL,
    -- The chatbot's name when the version was first run (listings only).
    name text NOT NULL,
    nodes jsonb NOT NULL,
    edges jsonb NOT NULL,
    metadata jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chatbot_id, hash)
);
