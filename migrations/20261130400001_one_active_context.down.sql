DROP INDEX IF EXISTS public."UQ_conversation_contexts_one_active";
