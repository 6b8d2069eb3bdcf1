-- Customers by business-scoped user id (BSUID). Meta names a customer by a BSUID on
-- every messages webhook (`contacts[].user_id`, `from_user_id`), and a customer who
-- adopted a username may come with no phone number at all. WhatsApp Builder's
-- `users` keeps its meaning ("phoneNumber" is the phone, NULL when unknown); the
-- BSUID, the parent BSUID and the username live here.
--
-- The BSUID is the claim: of two transactions creating one new customer, the second
-- waits on this primary key and then reads the first one's user. The foreign key is
-- deferred because the claim is inserted before the user it names.
CREATE TABLE IF NOT EXISTS public.wabot_customer_ids (
    bsuid varchar(64) PRIMARY KEY,
    user_id uuid NOT NULL
        REFERENCES public.users (id) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED,
    -- `parent_user_id`, where the business enabled parent BSUIDs.
    parent_bsuid varchar(64),
    -- `contacts[].profile.username`, the newest Meta sent.
    username varchar(100),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- A user's BSUIDs (one per business portfolio that saw them).
CREATE INDEX IF NOT EXISTS idx_wabot_customer_ids_user
    ON public.wabot_customer_ids (user_id, updated_at DESC);

-- A conversation is keyed by the customer's wa_id, or by their BSUID when it began
-- without a phone number. Widening a varchar rewrites neither table nor index.
ALTER TABLE public.conversation_keys ALTER COLUMN customer_wa_id TYPE varchar(64);
