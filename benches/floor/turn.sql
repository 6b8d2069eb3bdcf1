-- The floor: what PostgreSQL does for :batch turns of the echo bot with Meta's
-- statuses on, in wabot's schema and batch shapes (main of 4 December 2026, 3450461:
-- the status path and the 6-round-trip turn commit). The statements are the ones the
-- daemon ran in the server log of `e2e_load --users 20 --messages 50 --pg-log`
-- (store/ingest, store/turns, store/outbox, store/statuses), each transaction as one
-- stage commits it for a batch, with the batch's rows built in SQL where the daemon
-- binds arrays. One run of this script is one batch of turns: turns/s =
-- transactions/s x :batch. Set by run.sh: :batch, :nconv, :clients, :statuses (0: no
-- status webhooks). A turn here: 1 message webhook in (message, turn job,
-- conversation, raw event), the turn's read, its commit (context, 2 replies and their
-- send jobs, the timer replaced, preview, job done, turn log, next job), the 2 sends
-- recorded, and Meta's sent, delivered and read for each reply as three status
-- batches (a status row each and the message's move; no raw event: a status-only
-- webhook has none). Where the daemon binds ids it was handed (turn and send job ids,
-- reply ids), the script finds them by an index lookup; the replies' ids are derived
-- from the batch's tag so that the statuses can name them (wabot's callback data).
-- One round trip more than the daemon: the commit's BEGIN and its lock are one simple
-- query in wabot, two commands here (pgbench prepares one statement a command).
\set chunks :nconv / :batch
\set chunk :client_id + :clients * random(0, :chunks / :clients - 1)
\set lo :chunk * :batch
\set hi :lo + :batch
\set tag random(1, 999999999999)

-- 1. Ingest: the batch's message webhooks (store/ingest::ingest_batch): customers,
-- keys, then the conversations' lock, messages + turn jobs, conversations, raw events.
BEGIN;
SELECT u.id, u."phoneNumber"::text, u.name::text, i.bsuid::text, i.parent_bsuid::text, i.username::text
FROM users u LEFT JOIN wabot_customer_ids i ON i.user_id = u.id
WHERE u."phoneNumber" = ANY(ARRAY(SELECT '15550001111' UNION ALL SELECT wa_id FROM floor_convs WHERE n >= :lo AND n < :hi))
UNION ALL
SELECT u.id, u."phoneNumber"::text, u.name::text, i.bsuid::text, i.parent_bsuid::text, i.username::text
FROM wabot_customer_ids i JOIN users u ON u.id = i.user_id WHERE i.bsuid = ANY('{}'::text[]);
SELECT k.business_phone_number_id::text, k.customer_wa_id::text, k.conversation_id FROM conversation_keys k
JOIN (SELECT '15550001111' AS b, wa_id AS c FROM floor_convs WHERE n >= :lo AND n < :hi) AS q
  ON k.business_phone_number_id = q.b AND k.customer_wa_id = q.c;
SELECT 1 FROM conversations WHERE id = ANY(ARRAY(SELECT conversation_id FROM floor_convs WHERE n >= :lo AND n < :hi)) ORDER BY id FOR UPDATE;
WITH input AS (
    SELECT f.conversation_id AS conv, f.customer_id AS sender, 'text' AS kind,
           jsonb_build_object('whatsappMessageId', 'wamid.in.' || :tag::text || '.' || f.n,
               'text', 'message ' || :tag::text,
               'raw', jsonb_build_object('from', f.wa_id, 'id', 'wamid.in.' || :tag::text || '.' || f.n,
                   'timestamp', extract(epoch FROM now())::bigint::text, 'type', 'text',
                   'text', jsonb_build_object('body', 'message ' || :tag::text))) AS content,
           now() AS at, NULL::text AS reacted, 'floor:' || md5(f.n::text || :tag::text) AS token,
           true AS turn, false AS echo, f.n
    FROM floor_convs f WHERE f.n >= :lo AND f.n < :hi),
 m AS (
    INSERT INTO messages ("conversationId", "senderId", type, content, status, "timestamp")
    SELECT i.conv, i.sender, i.kind::messages_type_enum, i.content,
           CASE WHEN i.echo THEN 'sent' ELSE 'delivered' END::messages_status_enum, i.at
    FROM input i ORDER BY i.n
    ON CONFLICT DO NOTHING
    RETURNING id, "conversationId" AS conv, content ->> 'whatsappMessageId' AS wamid),
 new AS (
    SELECT m.id, m.conv, m.wamid, i.n, i.token, i.turn,
           row_number() OVER (PARTITION BY m.conv ORDER BY i.n) AS nth,
           NOT EXISTS (SELECT 1 FROM turn_jobs e
                       WHERE e.conversation_id = m.conv AND e.done_at IS NULL
                         AND (e.kind <> 'timeout' OR e.locked_until >= now())) AS free
    FROM m JOIN input i ON i.content ->> 'whatsappMessageId' = m.wamid),
 j AS (
    INSERT INTO turn_jobs (conversation_id, message_id, kind, locked_by, locked_until, attempts)
    SELECT conv, id, 'inbound',
           CASE WHEN nth = 1 AND free AND token IS NOT NULL THEN token END,
           CASE WHEN nth = 1 AND free AND token IS NOT NULL THEN now() + make_interval(secs => 30) END,
           CASE WHEN nth = 1 AND free AND token IS NOT NULL THEN 1 ELSE 0 END
    FROM new WHERE turn ORDER BY n
    RETURNING id, conversation_id, message_id, locked_by)
SELECT new.wamid, j.id, new.conv, new.id, j.locked_by, new.n
FROM new LEFT JOIN j ON new.id = j.message_id ORDER BY new.n;
UPDATE conversations c SET
    "lastMessage" = CASE WHEN c."lastMessageAt" IS NULL OR c."lastMessageAt" <= u.at THEN u.preview ELSE c."lastMessage" END,
    "lastMessageAt" = GREATEST(c."lastMessageAt", u.at),
    "lastCustomerMessageAt" = GREATEST(c."lastCustomerMessageAt", u.customer_at),
    "isWindowOpen" = COALESCE(GREATEST(c."lastCustomerMessageAt", u.customer_at) > now() - interval '24 hours', c."isWindowOpen"),
    "updatedAt" = now()
FROM (SELECT conversation_id AS id, now() AS at, 'message ' || :tag::text AS preview, now() AS customer_at
      FROM floor_convs WHERE n >= :lo AND n < :hi) AS u
WHERE c.id = u.id;
INSERT INTO webhook_events (received_at, object, fields, body, messages_total, messages_new,
                            messages_skipped, statuses_total, statuses_new, errors)
SELECT now(), 'whatsapp_business_account', ARRAY['messages'],
       jsonb_build_object('object', 'whatsapp_business_account', 'entry', jsonb_build_array(
           jsonb_build_object('id', '102290129340398', 'changes', jsonb_build_array(jsonb_build_object(
               'field', 'messages', 'value', jsonb_build_object(
                   'messaging_product', 'whatsapp',
                   'metadata', jsonb_build_object('display_phone_number', '15550001111', 'phone_number_id', '15550001111'),
                   'contacts', jsonb_build_array(jsonb_build_object('profile', jsonb_build_object('name', 'Customer ' || n), 'wa_id', wa_id)),
                   'messages', jsonb_build_array(jsonb_build_object('from', wa_id, 'id', 'wamid.in.' || :tag::text || '.' || n,
                       'timestamp', extract(epoch FROM now())::bigint::text, 'type', 'text',
                       'text', jsonb_build_object('body', 'message ' || :tag::text))))))))),
       1, 1, 0, 0, 0, '[]'
FROM floor_convs WHERE n >= :lo AND n < :hi ORDER BY n;
COMMIT;

-- 2. The turns' read (store/turns::load_batch).
SELECT k.conversation_id, b.id, k.business_phone_number_id::text, c.id, k.customer_wa_id::text, c.name,
       (SELECT to_jsonb(x) FROM conversation_contexts x WHERE x."conversationId" = k.conversation_id AND x."isActive" LIMIT 1),
       (SELECT ch."updatedAt" FROM conversation_contexts x JOIN chatbots ch ON ch.id = x."chatbotId"
        WHERE x."conversationId" = k.conversation_id AND x."isActive" LIMIT 1),
       (SELECT count(*)::text || ':' || coalesce(max("updatedAt")::text, '') || ':' || coalesce(sum(hashtext(id::text))::text, '')
        FROM chatbots WHERE "isActive"),
       h.state, h.last_agent_at,
       EXISTS (SELECT 1 FROM wabot_opt_outs o WHERE o.business_phone_number_id = k.business_phone_number_id
                                               AND o.customer_wa_id = k.customer_wa_id),
       c."phoneNumber"::text, ci.bsuid::text, ci.username::text
FROM conversation_keys k
JOIN users b ON b."phoneNumber" = k.business_phone_number_id
JOIN LATERAL (SELECT u.id, u.name, u."phoneNumber" FROM users u WHERE u."phoneNumber" = k.customer_wa_id
              UNION ALL
              SELECT u.id, u.name, u."phoneNumber" FROM wabot_customer_ids kb JOIN users u ON u.id = kb.user_id
              WHERE kb.bsuid = k.customer_wa_id LIMIT 1) c ON true
LEFT JOIN LATERAL (SELECT i.bsuid, i.username FROM wabot_customer_ids i WHERE i.user_id = c.id
                   ORDER BY i.bsuid = k.customer_wa_id DESC, i.updated_at DESC LIMIT 1) ci ON true
LEFT JOIN wabot_handover h ON h.conversation_id = k.conversation_id
WHERE k.conversation_id = ANY(ARRAY(SELECT conversation_id FROM floor_convs WHERE n >= :lo AND n < :hi));

-- 3. The turns' commit (store/turns::commit_batch): BEGIN with the conversations'
-- lock; the jobs still held and the contexts read (one statement); the contexts; the
-- replies and their send jobs (store/outbox::enqueue_batch); store/turns::finish
-- (the old timer out, the new one in, previews, jobs done, turn log, next jobs);
-- COMMIT.
BEGIN;
SELECT 1 FROM conversations WHERE id IN (SELECT conversation_id FROM floor_convs WHERE n >= :lo AND n < :hi) ORDER BY id FOR UPDATE;
WITH held AS (
    SELECT t.id, h.state, h.last_agent_at FROM turn_jobs t
    JOIN floor_convs f ON t.conversation_id = f.conversation_id AND t.locked_by = 'floor:' || md5(f.n::text || :tag::text)
    LEFT JOIN wabot_handover h ON h.conversation_id = t.conversation_id
    WHERE f.n >= :lo AND f.n < :hi AND t.done_at IS NULL ORDER BY t.id FOR UPDATE OF t),
 guarded AS (
    SELECT id, "updatedAt" FROM conversation_contexts
    WHERE id = ANY(ARRAY(SELECT context_id FROM floor_convs WHERE n >= :lo AND n < :hi)) ORDER BY id FOR UPDATE)
SELECT id, state, last_agent_at, NULL::uuid FROM held
UNION ALL
SELECT NULL, NULL, "updatedAt", id FROM guarded;
INSERT INTO conversation_contexts (id, "conversationId", "chatbotId", "currentNodeId", variables, "nodeHistory",
                                   "nodeOutputs", "isActive", status, "expiresAt", "completedAt", "completionReason")
SELECT f.context_id, f.conversation_id, '00000000-0000-0000-0000-00000000f1b0', 'question-1',
       jsonb_build_object('__wabot', jsonb_build_object('steps', 2, 'version', md5('floor') || md5('bot'),
                             'deadline', to_jsonb(now() + interval '1 day')),
                         'customer_id', '', 'customer_name', 'Customer ' || f.n, 'customer_phone', f.wa_id,
                         'customer_username', '', 'answer', 'message ' || :tag::text),
       '["start", "question-1", "echo", "question-1"]', '{}', true, 'waiting_input', now() + interval '1 day', NULL, NULL
FROM floor_convs f WHERE f.n >= :lo AND f.n < :hi ORDER BY f.n
ON CONFLICT (id) DO UPDATE SET
    "currentNodeId" = EXCLUDED."currentNodeId", variables = EXCLUDED.variables,
    "nodeHistory" = EXCLUDED."nodeHistory", "nodeOutputs" = EXCLUDED."nodeOutputs",
    "isActive" = EXCLUDED."isActive", status = EXCLUDED.status, "expiresAt" = EXCLUDED."expiresAt",
    "completedAt" = EXCLUDED."completedAt", "completionReason" = EXCLUDED."completionReason",
    "updatedAt" = now();
WITH input AS (
    SELECT md5('floor.' || :tag::text || '.' || f.n || '.' || r)::uuid AS id, f.conversation_id AS conv, '00000000-0000-0000-0000-00000000f100'::uuid AS sender,
           'text' AS kind,
           jsonb_build_object('body', CASE r WHEN 1 THEN 'echo: message ' || :tag::text ELSE 'Say something' END,
                              'text', CASE r WHEN 1 THEN 'echo: message ' || :tag::text ELSE 'Say something' END) AS content,
           f.wa_id AS recipient,
           jsonb_build_object('to', f.wa_id, 'text', jsonb_build_object('body', CASE r WHEN 1 THEN 'echo: message ' || :tag::text ELSE 'Say something' END,
                                                                        'preview_url', false),
                              'type', 'text', 'recipient_type', 'individual', 'messaging_product', 'whatsapp',
                              'biz_opaque_callback_data', 'wabot:' || md5('floor.' || :tag::text || '.' || f.n || '.' || r)::uuid) AS body,
           'floor:' || md5(f.n::text || :tag::text || r) AS token, false AS initiated,
           row_number() OVER (ORDER BY f.n, r) AS n
    FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r WHERE f.n >= :lo AND f.n < :hi),
 m AS (
    INSERT INTO messages (id, "conversationId", "senderId", type, content, status, "timestamp", "createdAt", "updatedAt")
    SELECT i.id, i.conv, i.sender, i.kind::messages_type_enum, i.content, 'pending',
           GREATEST(now(), (SELECT max(x."timestamp") FROM messages x WHERE x."conversationId" = i.conv))
             + i.n * interval '1 microsecond', now(), now()
    FROM input i ORDER BY i.n RETURNING id),
 free AS (
    SELECT c.conv, NOT EXISTS (
        SELECT 1 FROM send_jobs e WHERE e.conversation_id = c.conv AND e.done_at IS NULL
          AND NOT coalesce(e.locked_by LIKE 'floor' || ':%' AND e.locked_until > now(), false)) AS free
    FROM (SELECT DISTINCT conv FROM input) c),
 j AS (
    INSERT INTO send_jobs (message_id, conversation_id, recipient, body, locked_by, locked_until,
                           next_attempt_at, created_at, business_initiated)
    SELECT i.id, i.conv, i.recipient, i.body, CASE WHEN f.free THEN i.token END,
           CASE WHEN f.free THEN now() + make_interval(secs => 30) END, now(), now(), i.initiated
    FROM input i JOIN free f ON f.conv = i.conv JOIN m ON m.id = i.id ORDER BY i.n
    RETURNING *)
SELECT j.id, j.message_id, j.conversation_id, j.recipient, j.body, j.attempts, j.locked_by, j.business_initiated
FROM j ORDER BY j.id;
WITH jobs AS (
    SELECT f.conversation_id AS c, t.id AS j, t.message_id AS m, f.context_id AS x, f.n, f.wa_id
    FROM floor_convs f JOIN turn_jobs t ON t.conversation_id = f.conversation_id AND t.done_at IS NULL
                                         AND t.locked_by = 'floor:' || md5(f.n::text || :tag::text)
    WHERE f.n >= :lo AND f.n < :hi),
 gone AS (
    DELETE FROM turn_jobs WHERE conversation_id = ANY(ARRAY(SELECT c FROM jobs)) AND kind = 'timeout'
      AND done_at IS NULL AND id <> ALL(ARRAY(SELECT j FROM jobs))),
 timers AS (
    INSERT INTO turn_jobs (conversation_id, kind, payload, run_at)
    SELECT c, 'timeout', jsonb_build_object('nodeId', 'question-1', 'deadline', to_jsonb(now() + interval '1 day'),
                                            'contextId', x), now() + interval '1 day'
    FROM jobs),
 previews AS (
    UPDATE conversations c SET "lastMessage" = 'Say something', "lastMessageAt" = now(), "updatedAt" = now()
    FROM jobs u WHERE c.id = u.c AND (c."lastMessageAt" IS NULL OR c."lastMessageAt" <= now())),
 finished AS (
    UPDATE turn_jobs t SET done_at = now(), locked_until = NULL, last_error = NULL FROM jobs u WHERE t.id = u.j),
 log AS (
    INSERT INTO wabot_turn_log (conversation_id, job_id, kind, message_id, chatbot_id, context_id, nodes, steps,
                                current_node_id, status, completion_reason, variables, sends, note)
    SELECT u.c, u.j, 'inbound', u.m, '00000000-0000-0000-0000-00000000f1b0', u.x,
           ARRAY(SELECT jsonb_array_elements_text('["question-1", "echo", "question-1"]'::jsonb)), 3, 'question-1',
           'waiting_input', NULL, jsonb_build_object('__wabot', jsonb_build_object('steps', 2, 'version', md5('floor') || md5('bot'),
                             'deadline', to_jsonb(now() + interval '1 day')),
                         'customer_id', '', 'customer_name', 'Customer ' || u.n, 'customer_phone', u.wa_id,
                         'customer_username', '', 'answer', 'message ' || :tag::text), 2, NULL
    FROM jobs u),
 head AS (
    SELECT DISTINCT ON (conversation_id) id, run_at, locked_until FROM turn_jobs
    WHERE conversation_id = ANY(ARRAY(SELECT c FROM jobs)) AND done_at IS NULL AND kind <> 'timeout'
      AND id <> ALL(ARRAY(SELECT j FROM jobs))
    ORDER BY conversation_id, id),
 t AS (
    UPDATE turn_jobs u
       SET locked_by = 'floor' || ':' || replace(gen_random_uuid()::text, '-', ''),
           locked_until = now() + make_interval(secs => 30),
           attempts = u.attempts + 1
      FROM head h
     WHERE u.id = h.id AND h.run_at <= now()
       AND (h.locked_until IS NULL OR h.locked_until < now())
    RETURNING u.*)
SELECT t.id, t.conversation_id, t.message_id, t.kind, t.payload, t.attempts, t.last_error, t.locked_by AS token,
       m.content -> 'raw' AS raw, m.content #> '{media,stored}' AS stored_media
FROM t LEFT JOIN messages m ON m.id = t.message_id ORDER BY t.id;
COMMIT;

-- 4. The sends' outcomes (store/outbox::record_batch): the wamids' locks, the jobs
-- done and the replies `sent` with Meta's wamid, the statuses that came first
-- (store/statuses::apply_early: none here).
BEGIN;
SELECT count(pg_advisory_xact_lock(hashtextextended(w, 7)))
FROM unnest(ARRAY(SELECT 'wamid.out.' || :tag::text || '.' || f.n || '.' || r FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r
                  WHERE f.n >= :lo AND f.n < :hi ORDER BY 1)) WITH ORDINALITY AS t(w, n);
WITH u AS (SELECT s.id AS job, 'wamid.out.' || :tag::text || '.' || f.n || '.' || r AS wamid
           FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r
           JOIN send_jobs s ON s.message_id = md5('floor.' || :tag::text || '.' || f.n || '.' || r)::uuid
           WHERE f.n >= :lo AND f.n < :hi),
 j AS (
    UPDATE send_jobs s SET done_at = now(), attempts = attempts + 1, locked_by = NULL, locked_until = NULL
    FROM u WHERE s.id = u.job AND s.done_at IS NULL
    RETURNING s.message_id, u.wamid)
UPDATE messages m
SET content = m.content || jsonb_build_object('whatsappMessageId', j.wamid),
    status = CASE WHEN m.status = 'pending' THEN 'sent'::messages_status_enum ELSE m.status END,
    "updatedAt" = now()
FROM j WHERE m.id = j.message_id
RETURNING m.id, j.wamid;
SELECT wamid, status, errors FROM message_statuses
WHERE wamid = ANY(ARRAY(SELECT 'wamid.out.' || :tag::text || '.' || f.n || '.' || r FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r
                  WHERE f.n >= :lo AND f.n < :hi ORDER BY 1)) AND applied_at IS NULL ORDER BY received_at;
COMMIT;

\if :statuses
-- 5. Meta's `sent` for both replies, a batch of status-only webhooks
-- (store/statuses::record_batch): the wamids' locks, the unrecorded sends confirmed
-- (none here), then messages locked + statuses inserted + messages moved in one
-- statement.
BEGIN;
SELECT count(pg_advisory_xact_lock(hashtextextended(w, 7)))
FROM unnest(ARRAY(SELECT 'wamid.out.' || :tag::text || '.' || f.n || '.' || r FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r
                  WHERE f.n >= :lo AND f.n < :hi ORDER BY 1)) WITH ORDINALITY AS t(w, n);
WITH u AS (SELECT DISTINCT ON (m) m, w
           FROM (SELECT md5('floor.' || :tag::text || '.' || f.n || '.' || r)::uuid AS m, 'wamid.out.' || :tag::text || '.' || f.n || '.' || r AS w
                 FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r WHERE f.n >= :lo AND f.n < :hi) AS u
           ORDER BY m),
 j AS (
    UPDATE send_jobs s
    SET done_at = now(), attempts = attempts + 1, locked_by = NULL, locked_until = NULL, last_error = NULL
    FROM u WHERE s.message_id = u.m AND s.done_at IS NULL
    RETURNING s.message_id, u.w)
UPDATE messages m
SET content = m.content || jsonb_build_object('whatsappMessageId', j.w),
    status = CASE WHEN m.status = 'pending' THEN 'sent'::messages_status_enum ELSE m.status END,
    "updatedAt" = now()
FROM j WHERE m.id = j.message_id AND m.content ->> 'whatsappMessageId' IS NULL;
WITH u AS (
    SELECT 'wamid.out.' || :tag::text || '.' || f.n || '.' || r AS w, 'sent'::text AS st, date_trunc('second', now()) AS ts, f.wa_id AS r, '[]'::jsonb AS e,
           jsonb_build_object('biz_opaque_callback_data', 'wabot:' || md5('floor.' || :tag::text || '.' || f.n || '.' || r)::uuid,
               'conversation', jsonb_build_object('id', 'conv-' || f.wa_id, 'origin', jsonb_build_object('type', 'service'),
                                                  'expiration_timestamp', (extract(epoch FROM now())::bigint + 86400)::text),
               'pricing', jsonb_build_object('billable', false, 'pricing_model', 'PMP', 'type', 'free_customer_service',
                                             'category', 'service'))::text AS x,
           row_number() OVER (ORDER BY f.n, r) AS n
    FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r WHERE f.n >= :lo AND f.n < :hi),
 m AS MATERIALIZED (
    SELECT id, content ->> 'whatsappMessageId' AS w FROM messages
    WHERE content ->> 'whatsappMessageId' = ANY(ARRAY(SELECT w FROM u)) ORDER BY id FOR UPDATE),
 ins AS (
    INSERT INTO message_statuses (wamid, status, meta_timestamp, recipient_id, errors, extra, message_id, applied_at)
    SELECT u.w, u.st, u.ts, u.r, u.e,
           CASE WHEN m.id IS NOT NULL AND u.x::jsonb ->> 'biz_opaque_callback_data' = 'wabot:' || m.id
                THEN nullif(u.x::jsonb - 'biz_opaque_callback_data', '{}') ELSE u.x::jsonb END,
           m.id, CASE WHEN m.id IS NULL THEN NULL ELSE now() END
    FROM u LEFT JOIN m ON m.w = u.w ORDER BY u.n
    ON CONFLICT DO NOTHING RETURNING wamid, status, message_id, errors),
 mv AS (
    SELECT DISTINCT ON (message_id) message_id AS id, status::messages_status_enum AS s, errors
    FROM ins WHERE message_id IS NOT NULL AND status IN ('sent', 'delivered', 'read', 'played', 'failed')
    ORDER BY message_id, status::messages_status_enum DESC),
 upd AS (
    UPDATE messages msg SET status = mv.s,
           content = CASE WHEN mv.s = 'failed'
                          THEN msg.content || jsonb_build_object('failed', true, 'error', mv.errors -> 0, 'statusErrors', mv.errors)
                          ELSE msg.content END,
           "updatedAt" = now()
    FROM mv WHERE msg.id = mv.id AND msg.status <> 'failed' AND msg.status < mv.s)
SELECT true, wamid, status FROM ins
UNION ALL SELECT false, w, NULL FROM m;
COMMIT;

-- 5. Meta's `delivered` for both replies, a batch of status-only webhooks
-- (store/statuses::record_batch): the wamids' locks, the unrecorded sends confirmed
-- (none here), then messages locked + statuses inserted + messages moved in one
-- statement.
BEGIN;
SELECT count(pg_advisory_xact_lock(hashtextextended(w, 7)))
FROM unnest(ARRAY(SELECT 'wamid.out.' || :tag::text || '.' || f.n || '.' || r FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r
                  WHERE f.n >= :lo AND f.n < :hi ORDER BY 1)) WITH ORDINALITY AS t(w, n);
WITH u AS (SELECT DISTINCT ON (m) m, w
           FROM (SELECT md5('floor.' || :tag::text || '.' || f.n || '.' || r)::uuid AS m, 'wamid.out.' || :tag::text || '.' || f.n || '.' || r AS w
                 FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r WHERE f.n >= :lo AND f.n < :hi) AS u
           ORDER BY m),
 j AS (
    UPDATE send_jobs s
    SET done_at = now(), attempts = attempts + 1, locked_by = NULL, locked_until = NULL, last_error = NULL
    FROM u WHERE s.message_id = u.m AND s.done_at IS NULL
    RETURNING s.message_id, u.w)
UPDATE messages m
SET content = m.content || jsonb_build_object('whatsappMessageId', j.w),
    status = CASE WHEN m.status = 'pending' THEN 'sent'::messages_status_enum ELSE m.status END,
    "updatedAt" = now()
FROM j WHERE m.id = j.message_id AND m.content ->> 'whatsappMessageId' IS NULL;
WITH u AS (
    SELECT 'wamid.out.' || :tag::text || '.' || f.n || '.' || r AS w, 'delivered'::text AS st, date_trunc('second', now()) AS ts, f.wa_id AS r, '[]'::jsonb AS e,
           jsonb_build_object('biz_opaque_callback_data', 'wabot:' || md5('floor.' || :tag::text || '.' || f.n || '.' || r)::uuid,
               'conversation', jsonb_build_object('id', 'conv-' || f.wa_id, 'origin', jsonb_build_object('type', 'service'),
                                                  'expiration_timestamp', (extract(epoch FROM now())::bigint + 86400)::text),
               'pricing', jsonb_build_object('billable', false, 'pricing_model', 'PMP', 'type', 'free_customer_service',
                                             'category', 'service'))::text AS x,
           row_number() OVER (ORDER BY f.n, r) AS n
    FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r WHERE f.n >= :lo AND f.n < :hi),
 m AS MATERIALIZED (
    SELECT id, content ->> 'whatsappMessageId' AS w FROM messages
    WHERE content ->> 'whatsappMessageId' = ANY(ARRAY(SELECT w FROM u)) ORDER BY id FOR UPDATE),
 ins AS (
    INSERT INTO message_statuses (wamid, status, meta_timestamp, recipient_id, errors, extra, message_id, applied_at)
    SELECT u.w, u.st, u.ts, u.r, u.e,
           CASE WHEN m.id IS NOT NULL AND u.x::jsonb ->> 'biz_opaque_callback_data' = 'wabot:' || m.id
                THEN nullif(u.x::jsonb - 'biz_opaque_callback_data', '{}') ELSE u.x::jsonb END,
           m.id, CASE WHEN m.id IS NULL THEN NULL ELSE now() END
    FROM u LEFT JOIN m ON m.w = u.w ORDER BY u.n
    ON CONFLICT DO NOTHING RETURNING wamid, status, message_id, errors),
 mv AS (
    SELECT DISTINCT ON (message_id) message_id AS id, status::messages_status_enum AS s, errors
    FROM ins WHERE message_id IS NOT NULL AND status IN ('sent', 'delivered', 'read', 'played', 'failed')
    ORDER BY message_id, status::messages_status_enum DESC),
 upd AS (
    UPDATE messages msg SET status = mv.s,
           content = CASE WHEN mv.s = 'failed'
                          THEN msg.content || jsonb_build_object('failed', true, 'error', mv.errors -> 0, 'statusErrors', mv.errors)
                          ELSE msg.content END,
           "updatedAt" = now()
    FROM mv WHERE msg.id = mv.id AND msg.status <> 'failed' AND msg.status < mv.s)
SELECT true, wamid, status FROM ins
UNION ALL SELECT false, w, NULL FROM m;
COMMIT;

-- 5. Meta's `read` for both replies, a batch of status-only webhooks
-- (store/statuses::record_batch): the wamids' locks, the unrecorded sends confirmed
-- (none here), then messages locked + statuses inserted + messages moved in one
-- statement.
BEGIN;
SELECT count(pg_advisory_xact_lock(hashtextextended(w, 7)))
FROM unnest(ARRAY(SELECT 'wamid.out.' || :tag::text || '.' || f.n || '.' || r FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r
                  WHERE f.n >= :lo AND f.n < :hi ORDER BY 1)) WITH ORDINALITY AS t(w, n);
WITH u AS (SELECT DISTINCT ON (m) m, w
           FROM (SELECT md5('floor.' || :tag::text || '.' || f.n || '.' || r)::uuid AS m, 'wamid.out.' || :tag::text || '.' || f.n || '.' || r AS w
                 FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r WHERE f.n >= :lo AND f.n < :hi) AS u
           ORDER BY m),
 j AS (
    UPDATE send_jobs s
    SET done_at = now(), attempts = attempts + 1, locked_by = NULL, locked_until = NULL, last_error = NULL
    FROM u WHERE s.message_id = u.m AND s.done_at IS NULL
    RETURNING s.message_id, u.w)
UPDATE messages m
SET content = m.content || jsonb_build_object('whatsappMessageId', j.w),
    status = CASE WHEN m.status = 'pending' THEN 'sent'::messages_status_enum ELSE m.status END,
    "updatedAt" = now()
FROM j WHERE m.id = j.message_id AND m.content ->> 'whatsappMessageId' IS NULL;
WITH u AS (
    SELECT 'wamid.out.' || :tag::text || '.' || f.n || '.' || r AS w, 'read'::text AS st, date_trunc('second', now()) AS ts, f.wa_id AS r, '[]'::jsonb AS e,
           jsonb_build_object('biz_opaque_callback_data', 'wabot:' || md5('floor.' || :tag::text || '.' || f.n || '.' || r)::uuid,
               'conversation', jsonb_build_object('id', 'conv-' || f.wa_id, 'origin', jsonb_build_object('type', 'service'),
                                                  'expiration_timestamp', (extract(epoch FROM now())::bigint + 86400)::text),
               'pricing', jsonb_build_object('billable', false, 'pricing_model', 'PMP', 'type', 'free_customer_service',
                                             'category', 'service'))::text AS x,
           row_number() OVER (ORDER BY f.n, r) AS n
    FROM floor_convs f CROSS JOIN generate_series(1, 2) AS r WHERE f.n >= :lo AND f.n < :hi),
 m AS MATERIALIZED (
    SELECT id, content ->> 'whatsappMessageId' AS w FROM messages
    WHERE content ->> 'whatsappMessageId' = ANY(ARRAY(SELECT w FROM u)) ORDER BY id FOR UPDATE),
 ins AS (
    INSERT INTO message_statuses (wamid, status, meta_timestamp, recipient_id, errors, extra, message_id, applied_at)
    SELECT u.w, u.st, u.ts, u.r, u.e,
           CASE WHEN m.id IS NOT NULL AND u.x::jsonb ->> 'biz_opaque_callback_data' = 'wabot:' || m.id
                THEN nullif(u.x::jsonb - 'biz_opaque_callback_data', '{}') ELSE u.x::jsonb END,
           m.id, CASE WHEN m.id IS NULL THEN NULL ELSE now() END
    FROM u LEFT JOIN m ON m.w = u.w ORDER BY u.n
    ON CONFLICT DO NOTHING RETURNING wamid, status, message_id, errors),
 mv AS (
    SELECT DISTINCT ON (message_id) message_id AS id, status::messages_status_enum AS s, errors
    FROM ins WHERE message_id IS NOT NULL AND status IN ('sent', 'delivered', 'read', 'played', 'failed')
    ORDER BY message_id, status::messages_status_enum DESC),
 upd AS (
    UPDATE messages msg SET status = mv.s,
           content = CASE WHEN mv.s = 'failed'
                          THEN msg.content || jsonb_build_object('failed', true, 'error', mv.errors -> 0, 'statusErrors', mv.errors)
                          ELSE msg.content END,
           "updatedAt" = now()
    FROM mv WHERE msg.id = mv.id AND msg.status <> 'failed' AND msg.status < mv.s)
SELECT true, wamid, status FROM ins
UNION ALL SELECT false, w, NULL FROM m;
COMMIT;
\endif
