-- Room on every page for the updates a row gets after its insert, so PostgreSQL can
-- make them heap-only (HOT: no new index entries). An outbound message is updated
-- three or four times (the wamid Meta returned, then sent, delivered, read); a
-- context once per turn. With full pages only a third of the status updates of
-- `messages` were HOT, each other one inserting into all four of its indexes.
-- Storage parameters only: the columns and indexes stay WhatsApp Builder's. They
-- apply to pages written from now on.
ALTER TABLE public.messages SET (fillfactor = 80);
ALTER TABLE public.conversation_contexts SET (fillfactor = 80);
