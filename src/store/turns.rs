//! The turn queue (`turn_jobs`): claiming with leases, finishing inside the turn's
//! own transaction, timers, and the conversation facts a turn needs.
//!
//! A conversation's jobs run one at a time and in arrival order: a job is claimable
//! only when no older due job of its conversation is unfinished, and claiming sets a
//! lease (`locked_until`) under a token unique to that claim. A crashed worker's
//! lease runs out and the job is claimed again; a worker whose lease was taken over
//! finds its token gone when it tries to finish, and its transaction rolls back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A job this worker holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedTurn {
    pub id: i64,
    pub conversation_id: Uuid,
    pub message_id: Option<Uuid>,
    pub kind: String,
    pub payload: Value,
    pub attempts: i32,
    /// The error of the previous attempt, if it recorded one.
    pub last_error: Option<String>,
}

/// Claims up to `limit` jobs, at most one per conversation, each the oldest
/// unfinished job of its conversation (a timer not yet due does not hold the
/// conversation up; an inbound job waiting for its retry does). A conversation with a
/// job in flight (leased) is not claimed again, whatever the ids, and a timer waits
/// behind every unfinished message of its conversation: a reply that came in while
/// the timer was due ends the wait it was for. One statement: selecting and marking happen
/// together, so no two workers get the same job.
#[tracing::instrument(skip(pool))]
pub async fn claim(
    pool: &PgPool,
    token: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<ClaimedTurn>, sqlx::Error> {
    sqlx::query_as(
        "WITH candidates AS ( \
             SELECT j.id FROM turn_jobs j \
             WHERE j.done_at IS NULL AND j.run_at <= now() \
               AND (j.locked_until IS NULL OR j.locked_until < now()) \
               AND NOT EXISTS ( \
                   SELECT 1 FROM turn_jobs e \
                   WHERE e.conversation_id = j.conversation_id AND e.done_at IS NULL \
                     AND e.id <> j.id \
                     AND (e.locked_until >= now() \
                          OR (e.kind <> 'timeout' AND (e.id < j.id OR j.kind = 'timeout')) \
                          OR (e.kind = 'timeout' AND j.kind = 'timeout' AND e.id < j.id \
                              AND e.run_at <= now()))) \
             ORDER BY j.id \
             LIMIT $3 \
             FOR UPDATE SKIP LOCKED) \
         UPDATE turn_jobs t \
            SET locked_by = $1, \
                locked_until = now() + make_interval(secs => $2), \
                attempts = t.attempts + 1 \
           FROM candidates c WHERE t.id = c.id \
         RETURNING t.id, t.conversation_id, t.message_id, t.kind, t.payload, t.attempts, \
                   t.last_error",
    )
    .bind(token)
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Extends the lease of a job still held under `token`; false when it was lost.
pub async fn heartbeat(
    pool: &PgPool,
    id: i64,
    token: &str,
    lease: Duration,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE turn_jobs SET locked_until = now() + make_interval(secs => $3) \
         WHERE id = $1 AND locked_by = $2 AND done_at IS NULL",
    )
    .bind(id)
    .bind(token)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks the job done inside the turn's transaction; false when the lease was taken
/// over by another worker (the caller must then roll back).
pub async fn finish(
    conn: &mut PgConnection,
    id: i64,
    token: &str,
    note: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE turn_jobs SET done_at = now(), locked_until = NULL, last_error = $3 \
         WHERE id = $1 AND locked_by = $2 AND done_at IS NULL",
    )
    .bind(id)
    .bind(token)
    .bind(note)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Hands a job back to run again at `run_at`, keeping the error.
pub async fn retry_later(
    pool: &PgPool,
    id: i64,
    token: &str,
    error: &str,
    run_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE turn_jobs SET locked_by = NULL, locked_until = NULL, last_error = $3, run_at = $4 \
         WHERE id = $1 AND locked_by = $2 AND done_at IS NULL",
    )
    .bind(id)
    .bind(token)
    .bind(error)
    .bind(run_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives every job held under `token` back at once (graceful shutdown).
pub async fn release_all(pool: &PgPool, token: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE turn_jobs SET locked_by = NULL, locked_until = NULL, \
                attempts = greatest(attempts - 1, 0) \
         WHERE locked_by = $1 AND done_at IS NULL",
    )
    .bind(token)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Drops the conversation's pending timers (but the job `running`), inside the
/// turn's transaction: every turn replaces the wait it was for.
pub async fn cancel_timeouts(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    running: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM turn_jobs WHERE conversation_id = $1 AND kind = 'timeout' \
           AND done_at IS NULL AND id <> $2",
    )
    .bind(conversation_id)
    .bind(running)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Schedules a `timeout` job for the conversation, inside the turn's transaction.
pub async fn schedule_timeout(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    run_at: DateTime<Utc>,
    payload: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO turn_jobs (conversation_id, kind, payload, run_at) \
         VALUES ($1, 'timeout', $2, $3)",
    )
    .bind(conversation_id)
    .bind(payload)
    .bind(run_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Who a conversation is between.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConversationParties {
    pub business_user_id: Uuid,
    pub business_phone_number_id: String,
    pub customer_user_id: Uuid,
    pub customer_wa_id: String,
    pub customer_name: String,
}

/// The business and the customer of a conversation (the customer is who replies
/// go to: the participant that is not the business).
pub async fn parties(
    pool: &PgPool,
    conversation_id: Uuid,
) -> Result<Option<ConversationParties>, sqlx::Error> {
    sqlx::query_as(
        "SELECT b.id AS business_user_id, k.business_phone_number_id::text, \
                c.id AS customer_user_id, k.customer_wa_id::text, c.name AS customer_name \
         FROM conversation_keys k \
         JOIN users b ON b.\"phoneNumber\" = k.business_phone_number_id \
         JOIN users c ON c.\"phoneNumber\" = k.customer_wa_id \
         WHERE k.conversation_id = $1",
    )
    .bind(conversation_id)
    .fetch_optional(pool)
    .await
}

/// The stored inbound message a job is about: Meta's message as received.
pub async fn inbound_message(
    pool: &PgPool,
    message_id: Uuid,
) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar("SELECT content -> 'raw' FROM messages WHERE id = $1")
        .bind(message_id)
        .fetch_optional(pool)
        .await
        .map(Option::flatten)
}

/// Records the turn's last reply as the conversation's latest message (the preview
/// WhatsApp Builder's inbox shows), inside the turn's transaction.
pub async fn touch_conversation(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    preview: &str,
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    // "lastMessage" is a varchar(1000).
    let preview = crate::text::truncate_chars(preview, 1000);
    sqlx::query(
        "UPDATE conversations SET \"lastMessage\" = $2, \"lastMessageAt\" = $3, \"updatedAt\" = now() \
         WHERE id = $1 AND (\"lastMessageAt\" IS NULL OR \"lastMessageAt\" <= $3)",
    )
    .bind(conversation_id)
    .bind(preview)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes finished turn and send jobs older than `keep`, then vacuums both queues
/// so that the claim's index scans stay short even where autovacuum is off or slow.
pub async fn purge_finished(pool: &PgPool, keep: Duration) -> Result<u64, sqlx::Error> {
    let keep = keep.as_secs_f64();
    let turns =
        sqlx::query("DELETE FROM turn_jobs WHERE done_at < now() - make_interval(secs => $1)")
            .bind(keep)
            .execute(pool)
            .await?
            .rows_affected();
    let sends =
        sqlx::query("DELETE FROM send_jobs WHERE done_at < now() - make_interval(secs => $1)")
            .bind(keep)
            .execute(pool)
            .await?
            .rows_affected();
    // VACUUM cannot run inside a transaction; each is its own statement.
    sqlx::query("VACUUM (ANALYZE) turn_jobs")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM (ANALYZE) send_jobs")
        .execute(pool)
        .await?;
    Ok(turns + sends)
}

/// The `updatedAt` of a context row, locking it when `conn` is inside a transaction
/// (`FOR UPDATE`): a turn commits only if no other turn changed the context since it
/// was loaded.
pub async fn context_version(
    conn: &mut PgConnection,
    context_id: Uuid,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT \"updatedAt\" FROM conversation_contexts WHERE id = $1 FOR UPDATE")
        .bind(context_id)
        .fetch_optional(conn)
        .await
}
