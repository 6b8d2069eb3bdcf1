DROP TABLE IF EXISTS public.wabot_chatbot_versions;
