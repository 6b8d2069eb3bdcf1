DROP TABLE IF EXISTS wabot_event_outbox;
DROP TABLE IF EXISTS wabot_event_endpoints;
DROP TABLE IF EXISTS wabot_api_idempotency;
DROP TABLE IF EXISTS wabot_api_tokens;
