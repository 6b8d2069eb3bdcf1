DROP TABLE IF EXISTS public.wabot_campaign_recipients;
DROP TABLE IF EXISTS public.wabot_campaigns;
DROP TABLE IF EXISTS public.wabot_sends;
DROP TABLE IF EXISTS public.wabot_templates;
