//! Read-only queries for operators: `wabot status` (queues, leases, processes,
//! recent errors) and `wabot conversation show` (one conversation's transcript).
//! Plain rows out; nothing here writes. Ages are measured on the database's clock,
//! as the leases are.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::chatbots::ChatbotRow;
use crate::store::turns::TurnLogRow;

/// Most groups listed per error kind, so that the screen stays bounded.
pub const ERROR_GROUPS_PER_KIND: i64 = 10;

/// The active chatbots, oldest first (the order a new conversation's chatbot is
/// chosen in), with how many contexts of each are active now.
pub async fn active_chatbots(pool: &PgPool) -> Result<Vec<(ChatbotRow, i64)>, sqlx::Error> {
    let rows: Vec<ChatbotRow> = sqlx::query_as(
        "SELECT id, name, description, nodes, edges, \"isActive\", status::text AS status, \
                metadata, \"createdAt\", \"updatedAt\" \
         FROM chatbots WHERE \"isActive\" = true ORDER BY \"createdAt\", id",
    )
    .fetch_all(pool)
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let counts: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT \"chatbotId\", count(*) FROM conversation_contexts \
         WHERE \"chatbotId\" = ANY($1) AND \"isActive\" GROUP BY \"chatbotId\"",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let n = counts
                .iter()
                .find(|(id, _)| *id == row.id)
                .map_or(0, |(_, n)| *n);
            (row, n)
        })
        .collect())
}

/// How many `whatsapp_config` rows there are, and how many of them are active.
pub async fn whatsapp_config_counts(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE is_active) FROM whatsapp_config")
        .fetch_one(pool)
        .await
}

/// One queue's unfinished jobs of one kind.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct QueueDepth {
    /// `turn` or `send`.
    pub queue: String,
    /// The turn job's kind (`inbound`, `timeout`, `flow_failed`); `message` for sends.
    pub kind: String,
    /// Unfinished jobs.
    pub open: i64,
    /// Due, and held by nobody: waiting for a worker.
    pub waiting: i64,
    /// Held under a live lease.
    pub leased: i64,
    /// Not due yet (timers; sends backing off).
    pub scheduled: i64,
    /// Whose lease ran out without the job finishing (a stopped process's).
    pub expired_leases: i64,
    /// Unfinished with an error from an earlier attempt.
    pub retrying: i64,
    /// Seconds the longest-waiting due, unheld job has been due.
    pub oldest_waiting_secs: Option<f64>,
    /// Seconds since the oldest unfinished job was created.
    pub oldest_open_secs: Option<f64>,
}

/// Unfinished jobs of both queues, by queue and kind.
pub async fn queue_depths(pool: &PgPool) -> Result<Vec<QueueDepth>, sqlx::Error> {
    sqlx::query_as(
        "SELECT 'turn' AS queue, kind, count(*) AS open, \
                count(*) FILTER (WHERE run_at <= now() AND NOT coalesce(locked_until > now(), false)) \
                    AS waiting, \
                count(*) FILTER (WHERE locked_until > now()) AS leased, \
                count(*) FILTER (WHERE run_at > now() AND NOT coalesce(locked_until > now(), false)) \
                    AS scheduled, \
                count(*) FILTER (WHERE locked_by IS NOT NULL AND locked_until <= now()) \
                    AS expired_leases, \
                count(*) FILTER (WHERE last_error IS NOT NULL) AS retrying, \
                extract(epoch FROM now() - min(run_at) FILTER ( \
                    WHERE run_at <= now() AND NOT coalesce(locked_until > now(), false)))::float8 \
                    AS oldest_waiting_secs, \
                extract(epoch FROM now() - min(created_at))::float8 AS oldest_open_secs \
         FROM turn_jobs WHERE done_at IS NULL GROUP BY kind \
         UNION ALL \
         SELECT 'send', 'message', count(*), \
                count(*) FILTER (WHERE next_attempt_at <= now() \
                                 AND NOT coalesce(locked_until > now(), false)), \
                count(*) FILTER (WHERE locked_until > now()), \
                count(*) FILTER (WHERE next_attempt_at > now() \
                                 AND NOT coalesce(locked_until > now(), false)), \
                count(*) FILTER (WHERE locked_by IS NOT NULL AND locked_until <= now()), \
                count(*) FILTER (WHERE last_error IS NOT NULL), \
                extract(epoch FROM now() - min(next_attempt_at) FILTER ( \
                    WHERE next_attempt_at <= now() \
                      AND NOT coalesce(locked_until > now(), false)))::float8, \
                extract(epoch FROM now() - min(created_at))::float8 \
         FROM send_jobs WHERE done_at IS NULL HAVING count(*) > 0 \
         UNION ALL \
         SELECT 'media', 'download', count(*), \
                count(*) FILTER (WHERE run_at <= now() AND NOT coalesce(locked_until > now(), false)), \
                count(*) FILTER (WHERE locked_until > now()), \
                count(*) FILTER (WHERE run_at > now() AND NOT coalesce(locked_until > now(), false)), \
                count(*) FILTER (WHERE locked_by IS NOT NULL AND locked_until <= now()), \
                count(*) FILTER (WHERE last_error IS NOT NULL), \
                extract(epoch FROM now() - min(run_at) FILTER ( \
                    WHERE run_at <= now() AND NOT coalesce(locked_until > now(), false)))::float8, \
                extract(epoch FROM now() - min(created_at))::float8 \
         FROM wabot_media_jobs WHERE done_at IS NULL HAVING count(*) > 0 \
         ORDER BY 1 DESC, 2",
    )
    .fetch_all(pool)
    .await
}

/// Live leases of one holder in one queue.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LeaseGroup {
    /// The lease holder: the prefix of the lease tokens (`p<pid>-<hex>`).
    pub holder: String,
    /// `turn` or `send`.
    pub queue: String,
    pub jobs: i64,
    /// When the first of them runs out unless renewed.
    pub first_expiry: DateTime<Utc>,
}

/// Unfinished jobs under a live lease, grouped by the holder prefix of the token.
pub async fn leases(pool: &PgPool) -> Result<Vec<LeaseGroup>, sqlx::Error> {
    sqlx::query_as(
        "SELECT split_part(locked_by, ':', 1) AS holder, 'turn' AS queue, count(*) AS jobs, \
                min(locked_until) AS first_expiry \
         FROM turn_jobs WHERE done_at IS NULL AND locked_until > now() GROUP BY 1 \
         UNION ALL \
         SELECT split_part(locked_by, ':', 1), 'send', count(*), min(locked_until) \
         FROM send_jobs WHERE done_at IS NULL AND locked_until > now() GROUP BY 1 \
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
}

/// One `wabot_processes` row, with how long ago it reported.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ProcessRow {
    pub holder: String,
    pub pid: i32,
    pub hostname: Option<String>,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
    /// Seconds since `seen_at`, on the database's clock.
    pub seen_secs_ago: f64,
    pub send_hold: Option<String>,
    pub send_hold_since: Option<DateTime<Utc>>,
    /// `token_rejected` or `graph_unreachable` (NULL on rows of older versions).
    pub send_hold_kind: Option<String>,
    pub turn_leases: i32,
    pub send_leases: i32,
    /// When it signed off after a graceful drain (`None`: running, or killed).
    pub stopped_at: Option<DateTime<Utc>>,
}

/// The processes that reported, most recently seen first (at most 50).
pub async fn processes(pool: &PgPool) -> Result<Vec<ProcessRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT holder, pid, hostname, version, started_at, seen_at, \
                extract(epoch FROM now() - seen_at)::float8 AS seen_secs_ago, \
                send_hold, send_hold_since, send_hold_kind, turn_leases, send_leases, \
                stopped_at \
         FROM wabot_processes ORDER BY seen_at DESC, holder LIMIT 50",
    )
    .fetch_all(pool)
    .await
}

/// A group of like errors.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ErrorGroup {
    /// What failed: `turn_given_up`, `turn_retrying`, `turn_skipped`, `turn_ended`,
    /// `send_refused`, `send_retrying`, `delivery_failed`, `webhook_error`,
    /// `webhook_unreadable`.
    pub kind: String,
    /// Meta's error code, a completion reason, a note: what the group shares.
    pub code: Option<String>,
    pub count: i64,
    pub last_at: Option<DateTime<Utc>>,
    /// The most recent one's message.
    pub example: Option<String>,
}

/// Errors of the last `window_secs` by kind (and of now, for jobs retrying),
/// at most [`ERROR_GROUPS_PER_KIND`] groups per kind, the biggest first.
/// `benign_notes` are turn-log notes that need no operator (a stale timer);
/// `bad_endings` the completion reasons that are failures.
pub async fn recent_errors(
    pool: &PgPool,
    window_secs: f64,
    benign_notes: &[&str],
    bad_endings: &[&str],
) -> Result<Vec<ErrorGroup>, sqlx::Error> {
    let benign: Vec<&str> = benign_notes.to_vec();
    let bad: Vec<&str> = bad_endings.to_vec();
    sqlx::query_as(
        "WITH since AS (SELECT now() - make_interval(secs => $1) AS t), \
         g AS ( \
           SELECT 'turn_given_up' AS kind, NULL::text AS code, count(*) AS count, \
                  max(done_at) AS last_at, \
                  (array_agg(last_error ORDER BY done_at DESC))[1] AS example \
           FROM turn_jobs WHERE done_at > (SELECT t FROM since) AND last_error LIKE 'given up%' \
           HAVING count(*) > 0 \
         UNION ALL \
           SELECT 'turn_retrying', kind, count(*), max(created_at), \
                  (array_agg(last_error ORDER BY id DESC))[1] \
           FROM turn_jobs WHERE done_at IS NULL AND last_error IS NOT NULL GROUP BY kind \
         UNION ALL \
           SELECT 'turn_skipped', note, count(*), max(created_at), NULL \
           FROM wabot_turn_log WHERE created_at > (SELECT t FROM since) AND note IS NOT NULL \
             AND NOT note = ANY($2) GROUP BY note \
         UNION ALL \
           SELECT 'turn_ended', completion_reason, count(*), max(created_at), \
                  (array_agg(coalesce(current_node_id, '') ORDER BY id DESC))[1] \
           FROM wabot_turn_log WHERE created_at > (SELECT t FROM since) \
             AND completion_reason = ANY($3) GROUP BY completion_reason \
         UNION ALL \
           SELECT CASE WHEN content ? 'statusErrors' THEN 'delivery_failed' \
                       ELSE 'send_refused' END, \
                  coalesce(content #>> '{error,code}', content #>> '{error,reason}'), \
                  count(*), max(\"updatedAt\"), \
                  (array_agg(coalesce(content #>> '{error,message}', \
                                      content #>> '{error,title}') \
                             ORDER BY \"updatedAt\" DESC))[1] \
           FROM messages WHERE status = 'failed' AND \"updatedAt\" > (SELECT t FROM since) \
           GROUP BY 1, 2 \
         UNION ALL \
           SELECT 'send_retrying', coalesce(last_error ->> 'code', last_error ->> 'reason'), \
                  count(*), max(created_at), \
                  (array_agg(coalesce(last_error ->> 'message', last_error ->> 'reason') \
                             ORDER BY id DESC))[1] \
           FROM send_jobs WHERE done_at IS NULL AND last_error IS NOT NULL GROUP BY 2 \
         UNION ALL \
           SELECT 'webhook_error', e ->> 'code', count(*), max(w.received_at), \
                  (array_agg(coalesce(e ->> 'details', e ->> 'message', e ->> 'title') \
                             ORDER BY w.id DESC))[1] \
           FROM webhook_events w, \
                jsonb_array_elements(CASE WHEN jsonb_typeof(w.errors) = 'array' \
                                          THEN w.errors ELSE '[]' END) c, \
                jsonb_array_elements(CASE WHEN jsonb_typeof(c -> 'errors') = 'array' \
                                          THEN c -> 'errors' ELSE '[]' END) e \
           WHERE w.received_at > (SELECT t FROM since) AND w.errors <> '[]'::jsonb GROUP BY 2 \
         UNION ALL \
           SELECT 'webhook_unreadable', NULL, count(*), max(received_at), \
                  (array_agg(error ORDER BY id DESC))[1] \
           FROM webhook_unreadable WHERE received_at > (SELECT t FROM since) \
           HAVING count(*) > 0), \
         ranked AS ( \
           SELECT g.*, row_number() OVER (PARTITION BY kind ORDER BY count DESC, last_at DESC) \
                  AS n FROM g) \
         SELECT kind, code, count, last_at, left(example, 300) AS example FROM ranked \
         WHERE n <= $4 ORDER BY kind, count DESC, last_at DESC",
    )
    .bind(window_secs)
    .bind(&benign)
    .bind(&bad)
    .bind(ERROR_GROUPS_PER_KIND)
    .fetch_all(pool)
    .await
}

/// A conversation and the customer and business number it is between.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ConversationRow {
    pub id: Uuid,
    /// The customer's wa_id (`users."phoneNumber"`), or their BSUID when the
    /// phone number is unknown (a customer known only by username).
    pub customer_phone: Option<String>,
    /// The conversation key's customer (a wa_id, or the BSUID when the
    /// conversation began without a phone number): what opt-outs are kept by.
    pub customer_key: Option<String>,
    pub customer_name: Option<String>,
    /// The business number's phone_number_id, when wabot keyed the conversation.
    pub business_phone_number_id: Option<String>,
    pub last_message_at: Option<DateTime<Utc>>,
    pub last_customer_message_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const CONVERSATION_COLUMNS: &str = "c.id, \
     coalesce(cu.\"phoneNumber\", k.customer_wa_id) AS customer_phone, \
     k.customer_wa_id::text AS customer_key, cu.name AS customer_name, \
     k.business_phone_number_id, c.\"lastMessageAt\" AS last_message_at, \
     c.\"lastCustomerMessageAt\" AS last_customer_message_at, c.\"createdAt\" AS created_at";

/// The customer of a conversation: its key's wa_id or BSUID, else (a conversation
/// WhatsApp Builder made) the participant who wrote last.
const CUSTOMER_JOIN: &str = "LEFT JOIN conversation_keys k ON k.conversation_id = c.id \
     LEFT JOIN wabot_customer_ids kb ON kb.bsuid = k.customer_wa_id \
     LEFT JOIN LATERAL ( \
        SELECT u.\"phoneNumber\", u.name FROM users u \
        WHERE u.\"phoneNumber\" = k.customer_wa_id OR u.id = kb.user_id \
           OR (k.customer_wa_id IS NULL AND u.id IN ( \
                 SELECT p.\"userId\" FROM conversation_participants p \
                 WHERE p.\"conversationId\" = c.id)) \
        ORDER BY (u.\"phoneNumber\" = k.customer_wa_id OR u.id = kb.user_id) DESC NULLS LAST, \
                 (SELECT max(m.\"timestamp\") FROM messages m \
                  WHERE m.\"conversationId\" = c.id AND m.\"senderId\" = u.id \
                    AND m.content ? 'raw') DESC NULLS LAST \
        LIMIT 1) cu ON true";

/// The conversation `id`.
pub async fn conversation_by_id(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<ConversationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations c {CUSTOMER_JOIN} WHERE c.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The conversations of the customer whose wa_id is `phone` (digits only), the
/// most recently active first: keyed ones, then those the user takes part in.
pub async fn conversations_by_phone(
    pool: &PgPool,
    phone: &str,
) -> Result<Vec<ConversationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations c {CUSTOMER_JOIN} \
         WHERE c.id IN (SELECT conversation_id FROM conversation_keys WHERE customer_wa_id = $1 \
                        UNION \
                        SELECT p.\"conversationId\" FROM conversation_participants p \
                        JOIN users u ON u.id = p.\"userId\" WHERE u.\"phoneNumber\" = $1) \
         ORDER BY c.\"lastMessageAt\" DESC NULLS LAST, c.\"createdAt\" DESC, c.id"
    ))
    .bind(phone)
    .fetch_all(pool)
    .await
}

/// The conversations of the customer whose BSUID is `bsuid`, the most recently
/// active first: keyed by it, or by the phone number of the user it names, or
/// those that user takes part in.
pub async fn conversations_by_bsuid(
    pool: &PgPool,
    bsuid: &str,
) -> Result<Vec<ConversationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM conversations c {CUSTOMER_JOIN} \
         WHERE c.id IN (SELECT conversation_id FROM conversation_keys WHERE customer_wa_id = $1 \
                        UNION \
                        SELECT p.\"conversationId\" FROM conversation_participants p \
                        JOIN wabot_customer_ids i ON i.user_id = p.\"userId\" \
                        WHERE i.bsuid = $1) \
         ORDER BY c.\"lastMessageAt\" DESC NULLS LAST, c.\"createdAt\" DESC, c.id"
    ))
    .bind(bsuid)
    .fetch_all(pool)
    .await
}

/// The conversation key's customer that `who` (a wa_id or a BSUID) names: `who`
/// itself when a conversation is keyed by it, else the BSUID of the customer whose
/// number it is, or the number of the customer whose BSUID it is; `None` when no
/// conversation is keyed by any of them.
pub async fn customer_key(pool: &PgPool, who: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT k.customer_wa_id::text FROM conversation_keys k \
         WHERE k.customer_wa_id = $1 \
            OR k.customer_wa_id IN (SELECT i.bsuid FROM wabot_customer_ids i \
                                    JOIN users u ON u.id = i.user_id \
                                    WHERE u.\"phoneNumber\" = $1) \
            OR k.customer_wa_id IN (SELECT u.\"phoneNumber\" FROM wabot_customer_ids i \
                                    JOIN users u ON u.id = i.user_id WHERE i.bsuid = $1) \
         ORDER BY k.customer_wa_id = $1 DESC LIMIT 1",
    )
    .bind(who)
    .fetch_optional(pool)
    .await
}

/// A conversation's context (the active one, else the latest).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ContextSummary {
    pub id: Uuid,
    pub chatbot_id: Uuid,
    pub chatbot_name: Option<String>,
    pub current_node_id: String,
    pub status: String,
    pub is_active: bool,
    pub variables: Value,
    pub expires_at: Option<DateTime<Utc>>,
    pub completion_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// The conversation's active context, else its most recent one.
pub async fn latest_context(
    pool: &PgPool,
    conversation_id: Uuid,
) -> Result<Option<ContextSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT x.id, x.\"chatbotId\" AS chatbot_id, b.name AS chatbot_name, \
                x.\"currentNodeId\"::text AS current_node_id, x.status::text AS status, \
                x.\"isActive\" AS is_active, x.variables, x.\"expiresAt\" AS expires_at, \
                x.\"completionReason\"::text AS completion_reason, x.\"updatedAt\" AS updated_at \
         FROM conversation_contexts x LEFT JOIN chatbots b ON b.id = x.\"chatbotId\" \
         WHERE x.\"conversationId\" = $1 \
         ORDER BY x.\"isActive\" DESC, x.\"updatedAt\" DESC, x.id LIMIT 1",
    )
    .bind(conversation_id)
    .fetch_optional(pool)
    .await
}

/// One message of a conversation with its status history and send job.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MessageRow {
    pub id: Uuid,
    /// Whether the customer sent it (else the business did).
    pub inbound: bool,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub content: Value,
    pub wamid: Option<String>,
    pub status: String,
    /// Meta's time for an inbound message (whole seconds); when queued for outbound.
    pub timestamp: DateTime<Utc>,
    /// When wabot stored it.
    pub created_at: DateTime<Utc>,
    /// `[{status, at, received_at, errors}]`, in the order Meta's statuses arrived.
    pub statuses: Value,
    /// The send job's attempts, error and completion, while it is kept.
    pub send: Option<Value>,
}

/// The conversation's messages, oldest first. `customer_phone` (a wa_id or a
/// BSUID) tells inbound from outbound.
pub async fn messages(
    pool: &PgPool,
    conversation_id: Uuid,
    customer_phone: Option<&str>,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.id, coalesce(u.\"phoneNumber\" = $2 OR EXISTS ( \
                    SELECT 1 FROM wabot_customer_ids i WHERE i.user_id = u.id AND i.bsuid = $2), \
                    m.content ? 'raw') AS inbound, \
                m.type::text AS type, m.content - 'raw' AS content, \
                m.content ->> 'whatsappMessageId' AS wamid, m.status::text AS status, \
                m.\"timestamp\", m.\"createdAt\" AS created_at, \
                coalesce((SELECT jsonb_agg(jsonb_build_object( \
                              'status', s.status, 'at', s.meta_timestamp, \
                              'received_at', s.received_at, 'errors', s.errors) \
                              ORDER BY s.received_at, s.meta_timestamp) \
                          FROM message_statuses s \
                          WHERE s.wamid = m.content ->> 'whatsappMessageId'), '[]') AS statuses, \
                (SELECT jsonb_build_object('attempts', j.attempts, 'last_error', j.last_error, \
                                           'next_attempt_at', j.next_attempt_at, \
                                           'done_at', j.done_at) \
                 FROM send_jobs j WHERE j.message_id = m.id) AS send \
         FROM messages m LEFT JOIN users u ON u.id = m.\"senderId\" \
         WHERE m.\"conversationId\" = $1 ORDER BY m.\"timestamp\", m.\"createdAt\", m.id",
    )
    .bind(conversation_id)
    .bind(customer_phone)
    .fetch_all(pool)
    .await
}

/// One `wabot_turn_log` row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TurnLogEntry {
    pub id: i64,
    pub job_id: i64,
    /// What the turn did, as the commit wrote it.
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub turn: TurnLogRow,
    pub sends: i32,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The conversation's finished turns, in order.
pub async fn turn_log(
    pool: &PgPool,
    conversation_id: Uuid,
) -> Result<Vec<TurnLogEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, job_id, kind, message_id, chatbot_id, context_id, nodes, steps, \
                current_node_id, status, completion_reason, variables, sends, note, created_at \
         FROM wabot_turn_log WHERE conversation_id = $1 ORDER BY id",
    )
    .bind(conversation_id)
    .fetch_all(pool)
    .await
}

/// A turn job of a conversation: unfinished (a timer waiting, a message queued) or
/// given up.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TurnJobRow {
    pub id: i64,
    pub kind: String,
    pub message_id: Option<Uuid>,
    pub run_at: DateTime<Utc>,
    pub attempts: i32,
    pub leased: bool,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
}

/// The conversation's unfinished turn jobs, in order.
pub async fn open_turn_jobs(
    pool: &PgPool,
    conversation_id: Uuid,
) -> Result<Vec<TurnJobRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, message_id, run_at, attempts, \
                coalesce(locked_until > now(), false) AS leased, last_error, created_at, done_at \
         FROM turn_jobs WHERE conversation_id = $1 AND done_at IS NULL ORDER BY id",
    )
    .bind(conversation_id)
    .fetch_all(pool)
    .await
}

/// Turn jobs of the conversation that finished without a turn-log row: given up
/// after repeated failures (kept until finished jobs are purged).
pub async fn given_up_turn_jobs(
    pool: &PgPool,
    conversation_id: Uuid,
) -> Result<Vec<TurnJobRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, message_id, run_at, attempts, false AS leased, last_error, \
                created_at, done_at \
         FROM turn_jobs t WHERE conversation_id = $1 AND done_at IS NOT NULL \
           AND last_error LIKE 'given up%' \
           AND NOT EXISTS (SELECT 1 FROM wabot_turn_log l WHERE l.job_id = t.id) \
         ORDER BY id",
    )
    .bind(conversation_id)
    .fetch_all(pool)
    .await
}
