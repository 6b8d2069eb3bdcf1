-- The floor's fixture, on a database `wabot migrate run` made: one business number,
-- :nconv customers each with a keyed conversation and an active chatbot context
-- (what a customer in the middle of a chat has), and floor_convs, the numbered list
-- the turn script picks its batches from. Run by benches/floor/run.sh.
\set ON_ERROR_STOP on
BEGIN;
DROP TABLE IF EXISTS floor_convs;
INSERT INTO users (id, "phoneNumber", name, role)
VALUES ('00000000-0000-0000-0000-00000000f100', '15550001111', 'Floor Business', 'admin')
ON CONFLICT DO NOTHING;
INSERT INTO chatbots (id, "userId", name, nodes, edges, "isActive")
VALUES ('00000000-0000-0000-0000-00000000f1b0', '00000000-0000-0000-0000-00000000f100',
        'floor echo', '[]', '[]', true)
ON CONFLICT DO NOTHING;
CREATE TABLE floor_convs AS
SELECT n, gen_random_uuid() AS conversation_id, gen_random_uuid() AS customer_id,
       gen_random_uuid() AS context_id, (49150000000 + n)::text AS wa_id
FROM generate_series(0, :nconv - 1) AS n;
ALTER TABLE floor_convs ADD PRIMARY KEY (n);
INSERT INTO users (id, "phoneNumber", name, role)
SELECT customer_id, wa_id, 'Customer ' || n, 'user' FROM floor_convs;
INSERT INTO conversations (id, "lastMessageAt") SELECT conversation_id, now() FROM floor_convs;
INSERT INTO conversation_participants ("conversationId", "userId")
SELECT conversation_id, customer_id FROM floor_convs
UNION ALL
SELECT conversation_id, '00000000-0000-0000-0000-00000000f100' FROM floor_convs;
INSERT INTO conversation_keys (business_phone_number_id, customer_wa_id, conversation_id)
SELECT '15550001111', wa_id, conversation_id FROM floor_convs;
INSERT INTO conversation_contexts (id, "conversationId", "chatbotId", "currentNodeId", variables,
                                   "nodeHistory", "nodeOutputs", "isActive", status)
SELECT context_id, conversation_id, '00000000-0000-0000-0000-00000000f1b0', 'question-1',
       '{"__wabot": {"version": "floor"}, "answer": "hello"}', '["start", "question-1"]', '{}',
       true, 'waiting'
FROM floor_convs;
COMMIT;
VACUUM ANALYZE;
