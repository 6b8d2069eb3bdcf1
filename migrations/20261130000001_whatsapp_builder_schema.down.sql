-- Reverts the WhatsApp Builder schema: every table and type the up migration
-- creates, children first.
DROP TABLE IF EXISTS public.whatsapp_flows;
DROP TABLE IF EXISTS public.data_source_connections;
DROP TABLE IF EXISTS public.data_sources;
DROP TABLE IF EXISTS public.whatsapp_config;
DROP TABLE IF EXISTS public.conversation_contexts;
DROP TABLE IF EXISTS public.chatbots;
DROP TABLE IF EXISTS public.messages;
DROP TABLE IF EXISTS public.conversation_participants;
DROP TABLE IF EXISTS public.conversations;
DROP TABLE IF EXISTS public.users;
DROP TYPE IF EXISTS public.whatsapp_flows_status_enum;
DROP TYPE IF EXISTS public.messages_type_enum;
DROP TYPE IF EXISTS public.messages_status_enum;
DROP TYPE IF EXISTS public.data_sources_type_enum;
DROP TYPE IF EXISTS public.data_sources_auth_type_enum;
DROP TYPE IF EXISTS public.data_source_connections_method_enum;
DROP TYPE IF EXISTS public.chatbots_status_enum;
