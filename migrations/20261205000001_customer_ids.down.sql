-- Conversations keyed by a BSUID cannot be keyed by a varchar(20): they lose their key
-- (the conversations and messages stay).
DELETE FROM public.conversation_keys WHERE length(customer_wa_id) > 20;
ALTER TABLE public.conversation_keys ALTER COLUMN customer_wa_id TYPE varchar(20);
DROP TABLE IF EXISTS public.wabot_customer_ids;
