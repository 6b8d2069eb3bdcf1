//! The durable send queue: outbound `messages` rows and their `send_jobs`.
//!
//! A reply is stored twice over in one transaction with the turn that made it: as a
//! `messages` row sent by the business user (status `pending`, content in WhatsApp
//! Builder's shape, so its UI shows it) and as a send job holding the exact Graph API
//! body, both rendered by the caller. A conversation's jobs are sent one at a time
//! and in `id` order: a job is leased to the process that made it when every older
//! unfinished job of its conversation is that process's too (its sender keeps them
//! in order in memory); otherwise it waits for `claim`, which hands out only the
//! oldest unfinished job of a conversation nobody holds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::store::events::{self, EventKind, Subscribed};
use crate::store::{claim_token, CLAIM_TOKEN_SQL as NEW_TOKEN};

/// A send job this process holds, with what the sender needs to decide and send.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SendJob {
    pub id: i64,
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub recipient: String,
    /// The Graph API request body.
    pub body: Value,
    /// Calls to Meta made so far.
    pub attempts: i32,
    /// When the customer last wrote: the 24-hour window is measured from here.
    pub last_customer_message_at: Option<DateTime<Utc>>,
    /// The lease token of this claim (`send_jobs.locked_by`); `None` for a job
    /// inserted unleased.
    pub token: Option<String>,
    /// Claimed after another lease on it expired (its process died or stalled).
    #[sqlx(default)]
    pub taken_over: bool,
    /// A send the business starts (a timer's message), not a reply to the customer:
    /// refused to a customer who opted out (`send_jobs.business_initiated`).
    #[sqlx(default)]
    pub business_initiated: bool,
}

/// An outbound message to store with its send job.
#[derive(Debug, Clone)]
pub struct OutboundRow {
    /// The `messages.id`, chosen by the caller.
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    pub sender_user_id: Uuid,
    pub recipient: String,
    /// `messages.type`.
    pub kind: &'static str,
    /// `messages.content`.
    pub content: Value,
    /// The Graph API request body.
    pub body: Value,
    /// The business starts this message (a timer's), rather than answering the
    /// customer's message in the same turn: never sent to an opted-out customer.
    pub business_initiated: bool,
}

const JOB_COLUMNS: &str =
    "j.id, j.message_id, j.conversation_id, j.recipient, j.body, j.attempts, \
     (SELECT c.\"lastCustomerMessageAt\" FROM conversations c WHERE c.id = j.conversation_id) \
        AS last_customer_message_at, j.locked_by AS token, j.business_initiated";

/// Stores outbound messages and their send jobs inside the caller's transaction (the
/// turn's), in order; returns the jobs, leased to `holder` for `lease` (when given)
/// where the conversation has no older unfinished job held by anyone else. Each message's timestamp is the
/// transaction's time nudged past the newest message of the conversation, so
/// replies keep their order in any view that sorts by timestamp.
pub async fn enqueue_batch(
    conn: &mut PgConnection,
    rows: &[OutboundRow],
    holder: &str,
    lease: Option<Duration>,
) -> Result<Vec<SendJob>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.message_id).collect();
    let convs: Vec<Uuid> = rows.iter().map(|r| r.conversation_id).collect();
    let senders: Vec<Uuid> = rows.iter().map(|r| r.sender_user_id).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind).collect();
    let contents: Vec<&Value> = rows.iter().map(|r| &r.content).collect();
    let recipients: Vec<&str> = rows.iter().map(|r| r.recipient.as_str()).collect();
    let bodies: Vec<&Value> = rows.iter().map(|r| &r.body).collect();
    let tokens: Vec<String> = rows.iter().map(|_| claim_token(holder)).collect();
    let initiated: Vec<bool> = rows.iter().map(|r| r.business_initiated).collect();
    let mut jobs: Vec<SendJob> = sqlx::query_as(&format!(
        "WITH input AS ( \
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::jsonb[], \
                                 $6::text[], $7::jsonb[], $8::text[], $11::bool[]) \
                WITH ORDINALITY \
                AS i(id, conv, sender, kind, content, recipient, body, token, initiated, n)), \
         m AS ( \
            INSERT INTO messages (id, \"conversationId\", \"senderId\", type, content, status, \
                                  \"timestamp\", \"createdAt\", \"updatedAt\") \
            SELECT i.id, i.conv, i.sender, i.kind::messages_type_enum, i.content, 'pending', \
                   GREATEST(now(), (SELECT max(x.\"timestamp\") FROM messages x \
                                    WHERE x.\"conversationId\" = i.conv)) \
                     + i.n * interval '1 microsecond', \
                   now(), now() \
            FROM input i ORDER BY i.n RETURNING id), \
         free AS ( \
            SELECT c.conv, NOT EXISTS ( \
                SELECT 1 FROM send_jobs e \
                WHERE e.conversation_id = c.conv AND e.done_at IS NULL \
                  AND NOT coalesce(e.locked_by LIKE $9 || ':%' AND e.locked_until > now(), \
                                   false)) AS free \
            FROM (SELECT DISTINCT conv FROM input) c), \
         j AS ( \
            INSERT INTO send_jobs (message_id, conversation_id, recipient, body, locked_by, \
                                   locked_until, next_attempt_at, created_at, \
                                   business_initiated) \
            SELECT i.id, i.conv, i.recipient, i.body, \
                   CASE WHEN f.free AND $10 IS NOT NULL THEN i.token END, \
                   CASE WHEN f.free AND $10 IS NOT NULL \
                        THEN now() + make_interval(secs => $10) END, now(), now(), \
                   i.initiated \
            FROM input i JOIN free f ON f.conv = i.conv JOIN m ON m.id = i.id \
            ORDER BY i.n \
            RETURNING *) \
         SELECT {JOB_COLUMNS} FROM j ORDER BY j.id"
    ))
    .bind(&ids)
    .bind(&convs)
    .bind(&senders)
    .bind(&kinds)
    .bind(&contents)
    .bind(&recipients)
    .bind(&bodies)
    .bind(&tokens)
    .bind(holder)
    .bind(lease.map(|l| l.as_secs_f64()))
    .bind(&initiated)
    .fetch_all(&mut *conn)
    .await?;
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

/// Stores one outbound message and its send job, unleased; returns the message id.
pub async fn enqueue(conn: &mut PgConnection, row: &OutboundRow) -> Result<Uuid, sqlx::Error> {
    enqueue_batch(conn, std::slice::from_ref(row), "", None).await?;
    Ok(row.message_id)
}

/// Claims up to `limit` due jobs for `holder` (each under a token of its own) until
/// `lease_until`: of each conversation only the oldest unfinished job, and only when
/// no one holds it. One statement selects, locks (`FOR UPDATE SKIP LOCKED`) and
/// leases, so two senders never claim the same job, nor two jobs of one
/// conversation. `now` is the database's clock unless given (tests move time).
pub async fn claim(
    pool: &PgPool,
    holder: &str,
    now: Option<DateTime<Utc>>,
    lease: Duration,
    limit: i64,
) -> Result<Vec<SendJob>, sqlx::Error> {
    let mut jobs: Vec<SendJob> = sqlx::query_as(&format!(
        "WITH t AS (SELECT coalesce($2::timestamptz, now()) AS now), \
         picked AS ( \
             SELECT s.id, s.locked_until IS NOT NULL AS taken_over FROM send_jobs s, t \
             WHERE s.done_at IS NULL \
               AND s.next_attempt_at <= t.now \
               AND (s.locked_until IS NULL OR s.locked_until < t.now) \
               AND NOT EXISTS ( \
                 SELECT 1 FROM send_jobs e \
                 WHERE e.conversation_id = s.conversation_id \
                   AND e.done_at IS NULL AND e.id < s.id) \
             ORDER BY s.next_attempt_at, s.id \
             LIMIT $4 \
             FOR UPDATE OF s SKIP LOCKED), \
         j AS ( \
             UPDATE send_jobs u \
             SET locked_by = {NEW_TOKEN}, \
                 locked_until = t.now + make_interval(secs => $3) \
             FROM picked, t WHERE u.id = picked.id \
             RETURNING u.*, picked.taken_over) \
         SELECT {JOB_COLUMNS}, j.taken_over FROM j ORDER BY j.id"
    ))
    .bind(holder)
    .bind(now)
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

/// Extends the lease of a job still held under `token`; `false` when the lease is no
/// longer ours (it expired and another sender took the job, or the job is finished),
/// in which case the job must not be sent.
pub async fn renew(
    pool: &PgPool,
    job_id: i64,
    token: &str,
    lease: Duration,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE send_jobs SET locked_until = now() + make_interval(secs => $3) \
         WHERE id = $1 AND locked_by = $2 AND done_at IS NULL",
    )
    .bind(job_id)
    .bind(token)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Whether the customer of a business-initiated `job` opted out of its business
/// number: the conversation key's number (`fallback_business`, the number sending,
/// for a conversation wabot did not key), for the job's recipient or the key's
/// customer. Asked only for jobs with `business_initiated`; replies never pay it.
pub async fn opted_out(
    pool: &PgPool,
    job: &SendJob,
    fallback_business: Option<&str>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS ( \
             SELECT 1 FROM wabot_opt_outs o \
             LEFT JOIN conversation_keys k ON k.conversation_id = $1 \
             WHERE o.business_phone_number_id = coalesce(k.business_phone_number_id, $3) \
               AND (o.customer_wa_id = $2 OR o.customer_wa_id = k.customer_wa_id))",
    )
    .bind(job.conversation_id)
    .bind(&job.recipient)
    .bind(fallback_business)
    .fetch_one(pool)
    .await
}

/// What became of one send, to record.
#[derive(Debug, Clone)]
pub enum SendRecord {
    /// Meta accepted the message: the wamid goes into `content.whatsappMessageId`,
    /// the message moves from `pending` to `sent`, the job is done, and statuses
    /// Meta reported before the wamid was known are applied.
    Sent {
        job_id: i64,
        message_id: Uuid,
        wamid: String,
    },
    /// A retryable failure: the job is due again at `next_attempt_at`, with the
    /// error kept; the conversation's later jobs wait behind it. With `release` the
    /// lease is handed back (whoever claims it then retries); without, the holder
    /// keeps it and retries itself.
    Retry {
        job_id: i64,
        token: String,
        next_attempt_at: DateTime<Utc>,
        error: Value,
        release: bool,
    },
    /// A permanent failure: the message is `failed` with the error kept in
    /// `content.error`, the job is done with `attempts` calls in all, and a Flow
    /// message that cannot be sent queues a `flow_failed` turn.
    Failed {
        job_id: i64,
        message_id: Uuid,
        conversation_id: Uuid,
        attempts: i32,
        error: Value,
    },
    /// The job goes back without counting an attempt (sending is on hold, or this
    /// process stops): due again at once, for whoever sends next.
    Release {
        job_id: i64,
        token: String,
        error: Value,
    },
}

/// Records a batch of send outcomes in one transaction. Every record is idempotent
/// (a job already finished is left alone), so a batch that failed can simply be
/// recorded again.
pub async fn record_batch(
    pool: &PgPool,
    records: &[SendRecord],
    events: Subscribed,
) -> Result<(), sqlx::Error> {
    if records.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    let mut failed = Vec::new();
    let mut sent_jobs = Vec::new();
    let mut wamids = Vec::new();
    for record in records {
        match record {
            SendRecord::Sent { job_id, wamid, .. } => {
                sent_jobs.push(*job_id);
                wamids.push(wamid.clone());
            }
            SendRecord::Retry {
                job_id,
                token,
                next_attempt_at,
                error,
                release,
            } => {
                sqlx::query(
                    "UPDATE send_jobs \
                     SET attempts = attempts + 1, next_attempt_at = $3, last_error = $4, \
                         locked_by = CASE WHEN $5 THEN NULL ELSE locked_by END, \
                         locked_until = CASE WHEN $5 THEN NULL ELSE locked_until END \
                     WHERE id = $1 AND locked_by = $2 AND done_at IS NULL",
                )
                .bind(job_id)
                .bind(token)
                .bind(next_attempt_at)
                .bind(error)
                .bind(release)
                .execute(&mut *tx)
                .await?;
            }
            SendRecord::Release {
                job_id,
                token,
                error,
            } => {
                sqlx::query(
                    "UPDATE send_jobs SET last_error = $3, locked_by = NULL, locked_until = NULL \
                     WHERE id = $1 AND locked_by = $2 AND done_at IS NULL",
                )
                .bind(job_id)
                .bind(token)
                .bind(error)
                .execute(&mut *tx)
                .await?;
            }
            SendRecord::Failed {
                job_id,
                message_id,
                conversation_id,
                attempts,
                error,
            } => {
                if fail(
                    &mut tx,
                    *job_id,
                    *message_id,
                    *conversation_id,
                    *attempts,
                    error,
                )
                .await?
                {
                    failed.push(*message_id);
                }
            }
        }
    }
    if !sent_jobs.is_empty() {
        // The wamids' status locks come first, as ingest takes them, so that a
        // status batch and this record never wait on each other in a cycle.
        crate::store::statuses::lock_wamids(&mut tx, wamids.iter().map(String::as_str)).await?;
        // The job is finished and its message moves to `sent` in one statement; only
        // `pending` moves, so a status applied meanwhile is never undone.
        let done: Vec<(Uuid, String)> = sqlx::query_as(
            "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::text[]) AS u(job, wamid)), \
             j AS ( \
                UPDATE send_jobs s \
                SET done_at = now(), attempts = attempts + 1, locked_by = NULL, locked_until = NULL \
                FROM u WHERE s.id = u.job AND s.done_at IS NULL \
                RETURNING s.message_id, u.wamid) \
             UPDATE messages m \
             SET content = m.content || jsonb_build_object('whatsappMessageId', j.wamid), \
                 status = CASE WHEN m.status = 'pending' THEN 'sent'::messages_status_enum \
                               ELSE m.status END, \
                 \"updatedAt\" = now() \
             FROM j WHERE m.id = j.message_id \
             RETURNING m.id, j.wamid",
        )
        .bind(&sent_jobs)
        .bind(&wamids)
        .fetch_all(&mut *tx)
        .await?;
        // A status Meta reported before this wamid was stored is applied now, after
        // `sent`, so that an early `delivered` or `read` is neither lost nor
        // overwritten.
        crate::store::statuses::apply_early(&mut tx, &done).await?;
    }
    events::emit_messages(&mut tx, events, EventKind::MessageFailed, &failed).await?;
    tx.commit().await
}

async fn fail(
    conn: &mut PgConnection,
    job_id: i64,
    message_id: Uuid,
    conversation_id: Uuid,
    attempts: i32,
    error: &Value,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE send_jobs \
         SET done_at = now(), attempts = $2, last_error = $3, locked_by = NULL, locked_until = NULL \
         WHERE id = $1 AND done_at IS NULL",
    )
    .bind(job_id)
    .bind(attempts)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE messages \
         SET status = 'failed', content = content || jsonb_build_object('error', $2::jsonb), \
             \"updatedAt\" = now() \
         WHERE id = $1",
    )
    .bind(message_id)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    // A Flow message that cannot be sent leaves its chatbot waiting for a reply
    // that will never come: queue a turn that takes the node's `error` edge. The
    // conversation row is locked first, as ingest does, so that turn job ids follow
    // commit order within the conversation.
    crate::store::lock_conversations(conn, &[conversation_id]).await?;
    sqlx::query(
        "INSERT INTO turn_jobs (conversation_id, kind, payload) \
         SELECT m.\"conversationId\", 'flow_failed', \
                jsonb_build_object('flowToken', m.content #>> '{action,parameters,flow_token}', \
                                   'error', $2::jsonb) \
         FROM messages m WHERE m.id = $1 AND m.content ->> 'type' = 'flow'",
    )
    .bind(message_id)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Extends every lease in `tokens` that is still held (the jobs this process keeps
/// in memory, waiting their turn or being retried); see
/// [`crate::store::keep_leases`].
pub async fn keep_leases(
    pool: &PgPool,
    tokens: &[String],
    lease: Duration,
) -> Result<u64, sqlx::Error> {
    crate::store::keep_leases(pool, crate::store::Queue::Sends, tokens, lease).await
}

/// Hands back every job `holder` still holds (graceful shutdown): due again at once,
/// for whoever sends next.
pub async fn release_all(pool: &PgPool, holder: &str) -> Result<u64, sqlx::Error> {
    crate::store::release_all(pool, crate::store::Queue::Sends, holder).await
}

/// Whether any job is waiting, due or not, for tests and the shutdown log.
pub async fn open_jobs(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM send_jobs WHERE done_at IS NULL")
        .fetch_one(pool)
        .await
}
