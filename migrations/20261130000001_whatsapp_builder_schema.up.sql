-- The ten tables of WhatsApp Builder's database design, with the table and column
-- names and types its own TypeORM entities create (reference-schema.sql), so that
-- wabot and WhatsApp Builder can share one database. Where the design document says
-- more than that dump (enum values, indexes, the partial unique index, delete rules),
-- the design document wins.
--
-- Every statement tolerates objects that already exist, so the migration also adopts
-- a database WhatsApp Builder created: tables and types it made are kept as they are
-- and only what is missing (enum values, indexes) is added.

CREATE EXTENSION IF NOT EXISTS "uuid-ossp";

DO $$ BEGIN
    CREATE TYPE public.chatbots_status_enum AS ENUM ('active', 'archived', 'draft');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN
    CREATE TYPE public.data_source_connections_method_enum AS ENUM ('GET', 'POST', 'PUT', 'PATCH', 'DELETE');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN
    CREATE TYPE public.data_sources_auth_type_enum AS ENUM ('NONE', 'BEARER', 'API_KEY', 'BASIC');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

DO $$ BEGIN
    CREATE TYPE public.data_sources_type_enum AS ENUM ('REST_API', 'STRAPI', 'GRAPHQL');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

-- `pending` is a message wabot has stored but Meta has not accepted yet; `played` is
-- the status Meta reports for voice messages after `read`. The order of the values is
-- the order a status may move in (failed is terminal and handled apart).
DO $$ BEGIN
    CREATE TYPE public.messages_status_enum AS ENUM ('sent', 'delivered', 'read');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
ALTER TYPE public.messages_status_enum ADD VALUE IF NOT EXISTS 'pending' BEFORE 'sent';
ALTER TYPE public.messages_status_enum ADD VALUE IF NOT EXISTS 'played' AFTER 'read';
ALTER TYPE public.messages_status_enum ADD VALUE IF NOT EXISTS 'failed' AFTER 'played';

-- Every message type the Cloud API delivers; `unknown` keeps anything newer.
DO $$ BEGIN
    CREATE TYPE public.messages_type_enum AS ENUM
        ('text', 'image', 'video', 'document', 'audio', 'sticker', 'interactive', 'reaction');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
ALTER TYPE public.messages_type_enum ADD VALUE IF NOT EXISTS 'button';
ALTER TYPE public.messages_type_enum ADD VALUE IF NOT EXISTS 'location';
ALTER TYPE public.messages_type_enum ADD VALUE IF NOT EXISTS 'contacts';
ALTER TYPE public.messages_type_enum ADD VALUE IF NOT EXISTS 'order';
ALTER TYPE public.messages_type_enum ADD VALUE IF NOT EXISTS 'system';
ALTER TYPE public.messages_type_enum ADD VALUE IF NOT EXISTS 'unsupported';
ALTER TYPE public.messages_type_enum ADD VALUE IF NOT EXISTS 'template';
ALTER TYPE public.messages_type_enum ADD VALUE IF NOT EXISTS 'unknown';

DO $$ BEGIN
    CREATE TYPE public.whatsapp_flows_status_enum AS ENUM
        ('DRAFT', 'PUBLISHED', 'DEPRECATED', 'THROTTLED', 'BLOCKED');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS public.users (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    "phoneNumber" character varying(20),
    name character varying(100) NOT NULL,
    avatar character varying(500),
    email character varying(255),
    password character varying(255),
    role character varying(20) DEFAULT 'user'::character varying NOT NULL,
    "isActive" boolean DEFAULT true NOT NULL,
    "lastLoginAt" timestamp with time zone,
    "createdAt" timestamp with time zone DEFAULT now() NOT NULL,
    "updatedAt" timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "PK_a3ffb1c0c8416b9fc6f907b7433" PRIMARY KEY (id),
    CONSTRAINT "UQ_1e3d0240b49c40521aaeb953293" UNIQUE ("phoneNumber"),
    CONSTRAINT "UQ_97672ac88f789774dd47f7c8be3" UNIQUE (email)
);

CREATE TABLE IF NOT EXISTS public.conversations (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    "lastMessage" character varying(1000),
    "lastMessageAt" timestamp with time zone,
    "lastCustomerMessageAt" timestamp with time zone,
    "isWindowOpen" boolean DEFAULT true NOT NULL,
    "createdAt" timestamp with time zone DEFAULT now() NOT NULL,
    "updatedAt" timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "PK_ee34f4f7ced4ec8681f26bf04ef" PRIMARY KEY (id)
);

CREATE TABLE IF NOT EXISTS public.conversation_participants (
    "conversationId" uuid NOT NULL,
    "userId" uuid NOT NULL,
    CONSTRAINT "PK_e43efbfa3b850160b5b2c50e3ec" PRIMARY KEY ("conversationId", "userId"),
    CONSTRAINT "FK_4453e20858b14ab765a09ad728c" FOREIGN KEY ("conversationId")
        REFERENCES public.conversations(id) ON UPDATE CASCADE ON DELETE CASCADE,
    CONSTRAINT "FK_18c4ba3b127461649e5f5039dbf" FOREIGN KEY ("userId")
        REFERENCES public.users(id) ON UPDATE CASCADE ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "IDX_18c4ba3b127461649e5f5039db"
    ON public.conversation_participants USING btree ("userId");
CREATE INDEX IF NOT EXISTS "IDX_4453e20858b14ab765a09ad728"
    ON public.conversation_participants USING btree ("conversationId");

CREATE TABLE IF NOT EXISTS public.messages (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    "conversationId" uuid NOT NULL,
    "senderId" uuid NOT NULL,
    type public.messages_type_enum DEFAULT 'text'::public.messages_type_enum NOT NULL,
    content jsonb NOT NULL,
    status public.messages_status_enum DEFAULT 'sent'::public.messages_status_enum NOT NULL,
    "timestamp" timestamp with time zone NOT NULL,
    "createdAt" timestamp with time zone DEFAULT now() NOT NULL,
    "updatedAt" timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "PK_18325f38ae6de43878487eff986" PRIMARY KEY (id),
    CONSTRAINT "FK_e5663ce0c730b2de83445e2fd19" FOREIGN KEY ("conversationId")
        REFERENCES public.conversations(id) ON DELETE CASCADE,
    CONSTRAINT "FK_2db9cf2b3ca111742793f6c37ce" FOREIGN KEY ("senderId")
        REFERENCES public.users(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "IDX_messages_conversation_timestamp"
    ON public.messages USING btree ("conversationId", "timestamp");
CREATE INDEX IF NOT EXISTS "IDX_messages_sender"
    ON public.messages USING btree ("senderId");
-- One wamid, one message row: enforced by the database, so two concurrent
-- deliveries of the same webhook cannot both insert.
CREATE UNIQUE INDEX IF NOT EXISTS "UQ_messages_whatsapp_message_id"
    ON public.messages USING btree ((content ->> 'whatsappMessageId'))
    WHERE (content ->> 'whatsappMessageId') IS NOT NULL;

CREATE TABLE IF NOT EXISTS public.chatbots (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    "userId" uuid,
    name character varying(255) NOT NULL,
    description text,
    nodes jsonb DEFAULT '[]'::jsonb NOT NULL,
    edges jsonb DEFAULT '[]'::jsonb NOT NULL,
    "isActive" boolean DEFAULT false NOT NULL,
    status public.chatbots_status_enum DEFAULT 'draft'::public.chatbots_status_enum NOT NULL,
    metadata jsonb,
    "createdAt" timestamp with time zone DEFAULT now() NOT NULL,
    "updatedAt" timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "PK_ec8923205b2059dbc8dfb6ef8e5" PRIMARY KEY (id),
    CONSTRAINT "FK_01ee27723100eff70700a8006c3" FOREIGN KEY ("userId")
        REFERENCES public.users(id) ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS "IDX_chatbots_active_status"
    ON public.chatbots USING btree ("isActive", status);
CREATE INDEX IF NOT EXISTS "IDX_chatbots_nodes_gin"
    ON public.chatbots USING gin (nodes);

CREATE TABLE IF NOT EXISTS public.conversation_contexts (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    "conversationId" uuid NOT NULL,
    "chatbotId" uuid NOT NULL,
    "currentNodeId" character varying(255) NOT NULL,
    variables jsonb DEFAULT '{}'::jsonb NOT NULL,
    "nodeHistory" jsonb DEFAULT '[]'::jsonb NOT NULL,
    "nodeOutputs" jsonb DEFAULT '{}'::jsonb NOT NULL,
    "isActive" boolean DEFAULT true NOT NULL,
    status character varying(50) DEFAULT 'running'::character varying NOT NULL,
    "expiresAt" timestamp with time zone,
    "completedAt" timestamp with time zone,
    "completionReason" character varying(100),
    "isTestSession" boolean DEFAULT false NOT NULL,
    "testMetadata" jsonb,
    "createdAt" timestamp with time zone DEFAULT now() NOT NULL,
    "updatedAt" timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "PK_57ab195661632be38c414b03502" PRIMARY KEY (id),
    CONSTRAINT "CHK_test_metadata_consistency" CHECK (((("isTestSession" = false) AND ("testMetadata" IS NULL)) OR ("isTestSession" = true))),
    CONSTRAINT "FK_f95561c2614cd8e515f2352d692" FOREIGN KEY ("conversationId")
        REFERENCES public.conversations(id) ON DELETE CASCADE,
    CONSTRAINT "FK_080a7703b5f03791f32962e48e5" FOREIGN KEY ("chatbotId")
        REFERENCES public.chatbots(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "IDX_conversation_contexts_test_session"
    ON public.conversation_contexts USING btree ("isTestSession") WHERE ("isTestSession" = true);
CREATE INDEX IF NOT EXISTS "IDX_conversation_contexts_conversation_active"
    ON public.conversation_contexts USING btree ("conversationId", "isActive");

CREATE TABLE IF NOT EXISTS public.whatsapp_config (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    phone_number_id character varying(255) NOT NULL,
    business_account_id character varying(255) NOT NULL,
    access_token text NOT NULL,
    webhook_verify_token character varying(255) NOT NULL,
    app_secret text,
    backend_url character varying(500),
    flow_endpoint_url character varying(500),
    api_version character varying(20) DEFAULT 'v24.0'::character varying NOT NULL,
    is_active boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "PK_26b345257d5e690dcef84c61550" PRIMARY KEY (id)
);
-- Only one active configuration at a time.
CREATE UNIQUE INDEX IF NOT EXISTS idx_whatsapp_config_active
    ON public.whatsapp_config USING btree (is_active) WHERE (is_active = true);

CREATE TABLE IF NOT EXISTS public.data_sources (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    name character varying(255) NOT NULL,
    description text,
    type public.data_sources_type_enum NOT NULL,
    base_url character varying(500) NOT NULL,
    auth_type public.data_sources_auth_type_enum DEFAULT 'NONE'::public.data_sources_auth_type_enum NOT NULL,
    auth_token text,
    auth_header_name character varying(100),
    headers jsonb,
    config jsonb,
    is_active boolean DEFAULT true NOT NULL,
    timeout integer,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "PK_dc70b1c6b641726739857fd938d" PRIMARY KEY (id)
);
CREATE INDEX IF NOT EXISTS "IDX_data_sources_type" ON public.data_sources USING btree (type);
CREATE INDEX IF NOT EXISTS "IDX_data_sources_is_active" ON public.data_sources USING btree (is_active);
CREATE INDEX IF NOT EXISTS "IDX_data_sources_created_at" ON public.data_sources USING btree (created_at DESC);

CREATE TABLE IF NOT EXISTS public.data_source_connections (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    name character varying(255) NOT NULL,
    description text,
    data_source_id uuid NOT NULL,
    endpoint character varying(500) NOT NULL,
    method public.data_source_connections_method_enum DEFAULT 'GET'::public.data_source_connections_method_enum NOT NULL,
    default_params jsonb,
    default_body jsonb,
    data_key character varying(255),
    transform_config jsonb,
    depends_on_connection_id uuid,
    param_mapping jsonb,
    is_active boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "PK_e958372bd9989393dd20aaa1f48" PRIMARY KEY (id),
    CONSTRAINT "FK_dca05c58ee80b2bac2f81ba311b" FOREIGN KEY (data_source_id)
        REFERENCES public.data_sources(id) ON DELETE CASCADE,
    CONSTRAINT "FK_9691a4e1f3a41a52e9b6291a613" FOREIGN KEY (depends_on_connection_id)
        REFERENCES public.data_source_connections(id) ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS "IDX_data_source_connections_data_source"
    ON public.data_source_connections USING btree (data_source_id);

CREATE TABLE IF NOT EXISTS public.whatsapp_flows (
    id uuid DEFAULT public.uuid_generate_v4() NOT NULL,
    whatsapp_flow_id character varying(255),
    name character varying(255) NOT NULL,
    description text,
    status public.whatsapp_flows_status_enum DEFAULT 'DRAFT'::public.whatsapp_flows_status_enum NOT NULL,
    categories jsonb DEFAULT '[]'::jsonb NOT NULL,
    "flowJson" jsonb NOT NULL,
    endpoint_uri character varying(500),
    preview_url text,
    is_active boolean DEFAULT true NOT NULL,
    metadata jsonb,
    data_source_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "PK_6e2ffaba71c99e597a36d73dce9" PRIMARY KEY (id),
    CONSTRAINT "UQ_84a89bb3949cf4371da4c59458b" UNIQUE (whatsapp_flow_id),
    CONSTRAINT "FK_df099b456e3a119fd3c5f9ad171" FOREIGN KEY (data_source_id)
        REFERENCES public.data_sources(id) ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS "IDX_whatsapp_flows_status" ON public.whatsapp_flows USING btree (status);
CREATE INDEX IF NOT EXISTS "IDX_whatsapp_flows_data_source" ON public.whatsapp_flows USING btree (data_source_id);
