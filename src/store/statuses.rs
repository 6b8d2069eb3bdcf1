//! Delivery statuses of outbound messages: recorded once per (wamid, status), applied
//! forward only, and kept until their message is known when they arrive first.
//!
//! A status can race wabot's own record of the send: Meta may report `sent` or even
//! `delivered` before the sender has stored the wamid Meta returned. Both sides take
//! a transaction-scoped advisory lock on the wamid before looking at the other's
//! rows, so whichever commits second sees what the first wrote: either the webhook
//! finds the message, or the sender finds the waiting status.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::ingest::content::errors_json;
use crate::whatsapp::webhook::Status;

/// What became of one reported status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutcome {
    /// Weighed against its message (which moved forward, or was already further).
    Applied,
    /// Its message is not known yet; kept until `apply_early_statuses`.
    Pending,
    /// The same (wamid, status) was recorded before.
    Duplicate,
    /// No wamid: nothing to record it against (it stays in the raw event).
    Skipped,
}

/// Records one status from a webhook inside the caller's transaction.
#[tracing::instrument(skip_all, fields(status = %status.status.as_str()))]
pub async fn record(
    conn: &mut PgConnection,
    status: &Status,
) -> Result<StatusOutcome, sqlx::Error> {
    let Some(wamid) = status
        .id
        .as_deref()
        .filter(|id| !id.is_empty() && id.chars().count() <= super::ingest::WAMID_MAX_CHARS)
    else {
        return Ok(StatusOutcome::Skipped);
    };
    lock_wamid(conn, wamid).await?;
    let meta_timestamp = status
        .timestamp
        .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0));
    let errors = errors_json(&status.errors);
    // Statuses of other kinds (a payment's) are kept apart from delivery statuses,
    // so they neither dedupe against them nor get applied to the message later.
    let key = match status.type_name.as_deref() {
        Some(kind) if !status.is_delivery() => format!("{kind}:{}", status.status.as_str()),
        _ => status.status.as_str().to_owned(),
    };
    let inserted = sqlx::query(
        "INSERT INTO message_statuses (wamid, status, meta_timestamp, recipient_id, errors, raw) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(wamid)
    .bind(&key)
    .bind(meta_timestamp)
    .bind(status.recipient_id.as_deref())
    .bind(&errors)
    .bind(&status.raw)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(StatusOutcome::Duplicate);
    }
    let message_id: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM messages WHERE content ->> 'whatsappMessageId' = $1 FOR UPDATE",
    )
    .bind(wamid)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(message_id) = message_id else {
        return Ok(StatusOutcome::Pending);
    };
    // A payment's `failed` is not the message's: only delivery statuses move it.
    if let (Some(db_status), true) = (status.status.db_status(), status.is_delivery()) {
        apply_status(conn, message_id, db_status, &errors).await?;
    }
    sqlx::query(
        "UPDATE message_statuses SET applied_at = now(), message_id = $3 \
         WHERE wamid = $1 AND status = $2",
    )
    .bind(wamid)
    .bind(&key)
    .bind(message_id)
    .execute(&mut *conn)
    .await?;
    Ok(StatusOutcome::Applied)
}

/// Applies the statuses that arrived for `wamid` before its message was known. The
/// sender calls this in the transaction that records the wamid Meta returned for
/// `message_id`, after setting the message's own `sent` status, so that a
/// `delivered` or `read` that came first is not overwritten. Returns how many
/// waiting statuses it weighed.
#[tracing::instrument(skip(conn))]
pub async fn apply_early_statuses(
    conn: &mut PgConnection,
    message_id: Uuid,
    wamid: &str,
) -> Result<u64, sqlx::Error> {
    lock_wamid(conn, wamid).await?;
    let waiting: Vec<(String, Value)> = sqlx::query_as(
        "SELECT status, errors FROM message_statuses \
         WHERE wamid = $1 AND applied_at IS NULL ORDER BY received_at",
    )
    .bind(wamid)
    .fetch_all(&mut *conn)
    .await?;
    for (status, errors) in &waiting {
        if is_message_status(status) {
            apply_status(conn, message_id, status, errors).await?;
        }
    }
    if !waiting.is_empty() {
        sqlx::query(
            "UPDATE message_statuses SET applied_at = now(), message_id = $2 \
             WHERE wamid = $1 AND applied_at IS NULL",
        )
        .bind(wamid)
        .bind(message_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(waiting.len() as u64)
}

/// Moves `message_id` to `status` when that is forward (pending < sent < delivered <
/// read < played, the order of `messages_status_enum`); `failed` is final and keeps
/// Meta's errors in `content.error` (the first, as WhatsApp Builder does) and
/// `content.statusErrors` (all). Returns whether the message changed.
pub async fn apply_status(
    conn: &mut PgConnection,
    message_id: Uuid,
    status: &str,
    errors: &Value,
) -> Result<bool, sqlx::Error> {
    let failure = if status == "failed" {
        let first = errors.get(0).cloned().unwrap_or(Value::Null);
        json!({"failed": true, "error": first, "statusErrors": errors})
    } else {
        json!({})
    };
    let changed = sqlx::query(
        "UPDATE messages SET status = $2::messages_status_enum, content = content || $3, \
                \"updatedAt\" = now() \
         WHERE id = $1 AND status <> 'failed' AND status < $2::messages_status_enum",
    )
    .bind(message_id)
    .bind(status)
    .bind(failure)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(changed > 0)
}

fn is_message_status(status: &str) -> bool {
    matches!(status, "sent" | "delivered" | "read" | "played" | "failed")
}

/// Serialises everyone who looks at or writes the statuses of one wamid, until the
/// transaction ends.
async fn lock_wamid(conn: &mut PgConnection, wamid: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
        .bind(wamid)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}
