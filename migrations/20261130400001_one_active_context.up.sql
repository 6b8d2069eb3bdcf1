-- One active context per conversation: the turn worker relies on it, and the unique
-- index makes a second concurrent start fail instead of forking the conversation.
-- WhatsApp Builder did not enforce this, so older databases may hold several active
-- contexts of one conversation: keep the most recently updated one.
UPDATE public.conversation_contexts AS c
SET "isActive" = false,
    status = CASE WHEN c.status IN ('completed', 'expired', 'stopped') THEN c.status ELSE 'stopped' END,
    "completionReason" = COALESCE(c."completionReason", 'superseded'),
    "completedAt" = COALESCE(c."completedAt", now())
WHERE c."isActive"
  AND EXISTS (
      SELECT 1 FROM public.conversation_contexts AS newer
      WHERE newer."conversationId" = c."conversationId"
        AND newer."isActive"
        AND (newer."updatedAt", newer.id) > (c."updatedAt", c.id)
  );

CREATE UNIQUE INDEX IF NOT EXISTS "UQ_conversation_contexts_one_active"
    ON public.conversation_contexts USING btree ("conversationId") WHERE "isActive";
