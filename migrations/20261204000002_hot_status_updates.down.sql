ALTER TABLE public.messages RESET (fillfactor);
ALTER TABLE public.conversation_contexts RESET (fillfactor);
