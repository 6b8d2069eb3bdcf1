//! The reads of `wabot replay`: stored webhooks in a time range (optionally those of
//! one customer), page by page, and a conversation's messages as they were stored.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// Which stored webhooks to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// `received_at >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `received_at < until`.
    pub until: Option<DateTime<Utc>>,
    /// Only webhooks with a message from this wa_id or a status addressed to it.
    pub customer: Option<String>,
}

/// One `webhook_events` row.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub body: Value,
}

/// A page of stored webhooks in the order they were received (id order), the first
/// `limit` after the event `after` (0 for the first page).
pub async fn events_page(
    pool: &PgPool,
    filter: &EventFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows: Vec<(i64, DateTime<Utc>, Value)> = sqlx::query_as(
        "SELECT id, received_at, body FROM webhook_events \
         WHERE id > $1 \
           AND ($2::timestamptz IS NULL OR received_at >= $2) \
           AND ($3::timestamptz IS NULL OR received_at < $3) \
           AND ($4::text IS NULL OR jsonb_path_exists(body, \
                '$.entry[*].changes[*].value ? ( \
                    exists(@.messages[*] ? (@.from == $c || @.from_user_id == $c)) \
                    || exists(@.statuses[*] ? (@.recipient_id == $c || @.recipient_user_id == $c)))', \
                jsonb_build_object('c', $4::text))) \
         ORDER BY id LIMIT $5",
    )
    .bind(after)
    .bind(filter.since)
    .bind(filter.until)
    .bind(filter.customer.as_deref())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, received_at, body)| StoredEvent {
            id,
            received_at,
            body,
        })
        .collect())
}

/// One message of a conversation as stored.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Meta's wamid (`content.whatsappMessageId`; a reply has it once it was sent).
    pub wamid: Option<String>,
    /// Sent by the business (a reply), not by the customer.
    pub outbound: bool,
    /// `messages.type`.
    pub kind: String,
    pub content: Value,
    pub status: String,
    pub at: DateTime<Utc>,
}

/// The messages of the conversation between `business` (its phone_number_id) and
/// `customer` (a wa_id) from `since` on, in the order they were stored (Meta's
/// timestamps have whole seconds only: a customer who answers within the second
/// of a reply would otherwise sort before it); empty when there is no such
/// conversation.
pub async fn conversation_messages(
    pool: &PgPool,
    business: &str,
    customer: &str,
    since: DateTime<Utc>,
) -> Result<Vec<StoredMessage>, sqlx::Error> {
    type Row = (Option<String>, bool, String, Value, String, DateTime<Utc>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT m.content ->> 'whatsappMessageId', u.\"phoneNumber\" IS DISTINCT FROM $2, \
                m.type::text, m.content, m.status::text, m.\"timestamp\" \
         FROM conversation_keys k \
         JOIN messages m ON m.\"conversationId\" = k.conversation_id \
         LEFT JOIN users u ON u.id = m.\"senderId\" \
         WHERE k.business_phone_number_id = $1 AND k.customer_wa_id = $2 \
           AND m.\"timestamp\" >= $3 \
         ORDER BY m.\"createdAt\", m.\"timestamp\", m.id",
    )
    .bind(business)
    .bind(customer)
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(wamid, outbound, kind, content, status, at)| StoredMessage {
                wamid,
                outbound,
                kind,
                content,
                status,
                at,
            },
        )
        .collect())
}
