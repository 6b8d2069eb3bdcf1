//! The operator API's `Idempotency-Key`s (`wabot_api_idempotency`): a request's
//! key is taken in the transaction that does its work, and its answer is stored
//! there too, so a retried request gets the first answer and does nothing again.

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// What a key says when a request takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    /// The key is new: this transaction does the work and calls [`answer`].
    New,
    /// The key answered before: its status and body.
    Answered {
        request_hash: Vec<u8>,
        status: i16,
        response: Value,
    },
}

/// Takes `key` for `token` inside the caller's transaction. A concurrent request
/// with the same key waits here until the first one commits, then reads its answer.
pub async fn take(
    conn: &mut PgConnection,
    token: Uuid,
    key: &str,
    request_hash: &[u8],
) -> Result<Taken, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO wabot_api_idempotency (token_id, key, request_hash, status, response) \
         VALUES ($1, $2, $3, 0, 'null') ON CONFLICT DO NOTHING",
    )
    .bind(token)
    .bind(key)
    .bind(request_hash)
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Taken::New);
    }
    let (request_hash, status, response): (Vec<u8>, i16, Value) = sqlx::query_as(
        "SELECT request_hash, status, response FROM wabot_api_idempotency \
         WHERE token_id = $1 AND key = $2",
    )
    .bind(token)
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Taken::Answered {
        request_hash,
        status,
        response,
    })
}

/// Stores the answer of a request that took `key`.
pub async fn answer(
    conn: &mut PgConnection,
    token: Uuid,
    key: &str,
    status: i16,
    response: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE wabot_api_idempotency SET status = $3, response = $4 \
         WHERE token_id = $1 AND key = $2",
    )
    .bind(token)
    .bind(key)
    .bind(status)
    .bind(response)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Forgets keys older than `keep_secs`.
pub async fn purge(pool: &PgPool, keep_secs: f64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM wabot_api_idempotency WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(keep_secs)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// A conversation as the API lists it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ConversationListed {
    pub id: Uuid,
    /// The customer's wa_id (the conversation key's).
    pub customer: Option<String>,
    pub business_phone_number_id: Option<String>,
    /// Who has it besides the bot: `agent`, `requested` (waiting for an agent),
    /// `paused`, `released`; `None`: the bot.
    pub handover: Option<String>,
    pub handover_since: Option<chrono::DateTime<chrono::Utc>>,
    /// A chatbot run is active in it.
    pub active: bool,
    pub last_message_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_customer_message_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Conversations, most recently active first, filtered by handover state, an
/// active run, and the customer.
pub async fn conversations(
    pool: &PgPool,
    handover: Option<&str>,
    active_only: bool,
    customer: Option<&str>,
    limit: i64,
) -> Result<Vec<ConversationListed>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, k.customer_wa_id::text AS customer, \
                k.business_phone_number_id::text AS business_phone_number_id, \
                h.state AS handover, h.since AS handover_since, \
                EXISTS (SELECT 1 FROM conversation_contexts x \
                        WHERE x.\"conversationId\" = c.id AND x.\"isActive\") AS active, \
                c.\"lastMessageAt\" AS last_message_at, \
                c.\"lastCustomerMessageAt\" AS last_customer_message_at \
         FROM conversations c \
         LEFT JOIN conversation_keys k ON k.conversation_id = c.id \
         LEFT JOIN wabot_handover h ON h.conversation_id = c.id \
         WHERE ($1::text IS NULL OR h.state = $1) \
           AND (NOT $2 OR EXISTS (SELECT 1 FROM conversation_contexts x \
                                  WHERE x.\"conversationId\" = c.id AND x.\"isActive\")) \
           AND ($3::text IS NULL OR k.customer_wa_id = $3) \
         ORDER BY c.\"lastMessageAt\" DESC NULLS LAST, c.id LIMIT $4",
    )
    .bind(handover)
    .bind(active_only)
    .bind(customer)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Where an operator's message to `customer` goes: the conversation (locked until
/// the transaction ends, as a turn commit locks it), its business user, when the
/// customer last wrote, and whether they opted out of that number.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SendTarget {
    pub conversation_id: Uuid,
    pub business_user_id: Uuid,
    pub business_phone_number_id: String,
    pub last_customer_message_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The database's clock.
    pub now: chrono::DateTime<chrono::Utc>,
    pub opted_out: bool,
}

/// The customer's conversation (on `business`, else the one they wrote in last),
/// locked; `None` when they have none.
pub async fn send_target(
    conn: &mut PgConnection,
    customer: &str,
    business: Option<&str>,
) -> Result<Option<SendTarget>, sqlx::Error> {
    sqlx::query_as(
        "SELECT k.conversation_id, b.id AS business_user_id, \
                k.business_phone_number_id::text AS business_phone_number_id, \
                c.\"lastCustomerMessageAt\" AS last_customer_message_at, now() AS now, \
                EXISTS (SELECT 1 FROM wabot_opt_outs o \
                        WHERE o.business_phone_number_id = k.business_phone_number_id \
                          AND o.customer_wa_id = k.customer_wa_id) AS opted_out \
         FROM conversation_keys k \
         JOIN conversations c ON c.id = k.conversation_id \
         JOIN users b ON b.\"phoneNumber\" = k.business_phone_number_id \
         WHERE k.customer_wa_id = $1 AND ($2::text IS NULL OR k.business_phone_number_id = $2) \
         ORDER BY c.\"lastCustomerMessageAt\" DESC NULLS LAST, c.id LIMIT 1 \
         FOR UPDATE OF c",
    )
    .bind(customer)
    .bind(business)
    .fetch_optional(conn)
    .await
}
