//! The durable send queue: outbound `messages` rows and their `send_jobs`.
//!
//! A reply is stored twice over in one transaction with the turn that made it: as a
//! `messages` row sent by the business user (status `pending`, content in WhatsApp
//! Builder's shape, so its UI shows it) and as a send job holding the exact Graph API
//! body. The sender claims jobs with a lease, one per conversation at a time and in
//! `id` order: a conversation's next message is sent only after the previous one was
//! accepted or failed. Different conversations are sent in parallel.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::engine::Outgoing;
use crate::whatsapp::outbound;

/// A claimed send job, with what the sender needs to decide and send.
#[derive(Debug, Clone)]
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
}

/// The `messages.type` and `messages.content` WhatsApp Builder stores for an outbound
/// message. Its backend stores text as `{body}` (its database design says `{text}`:
/// both keys are written, as ingest does for inbound text) and interactive messages
/// as Meta's `interactive` object (`{type, header?, body:{text}, footer?, action}`),
/// which is what its chat UI reads; a Flow also carries `whatsappFlowId`, as the
/// database design describes.
pub fn message_content(msg: &Outgoing) -> (&'static str, Value) {
    match msg {
        Outgoing::Text { body } => {
            let text = outbound::truncate(body, outbound::limits::TEXT_BODY);
            ("text", json!({ "body": text, "text": text }))
        }
        Outgoing::Flow { flow_id, .. } => {
            let mut content = outbound::interactive(msg);
            content["whatsappFlowId"] = json!(flow_id);
            ("interactive", content)
        }
        Outgoing::Buttons { .. } | Outgoing::List { .. } => {
            ("interactive", outbound::interactive(msg))
        }
    }
}

/// Stores an outbound message and its send job; returns the message id. Runs inside
/// the caller's transaction (the turn's), so the reply exists exactly when the turn
/// committed.
///
/// The message's timestamp is `now`, nudged past the newest message of the
/// conversation so that replies made in one turn keep their order in any view that
/// sorts by timestamp.
#[tracing::instrument(skip(conn, msg))]
pub async fn enqueue(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    sender_user_id: Uuid,
    recipient: &str,
    msg: &Outgoing,
    now: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    let (kind, content) = message_content(msg);
    let body = outbound::graph_body(recipient, msg);
    // The message and its send job in one statement: one round trip a reply.
    let message_id: Uuid = sqlx::query_scalar(
        "WITH m AS ( \
            INSERT INTO messages \
                (\"conversationId\", \"senderId\", type, content, status, \"timestamp\", \
                 \"createdAt\", \"updatedAt\") \
            VALUES ($1, $2, $3::messages_type_enum, $4, 'pending', \
                GREATEST($5, (SELECT max(x.\"timestamp\") + interval '1 microsecond' \
                              FROM messages x WHERE x.\"conversationId\" = $1)), \
                $5, $5) \
            RETURNING id) \
         INSERT INTO send_jobs \
            (message_id, conversation_id, recipient, body, next_attempt_at, created_at) \
         SELECT m.id, $1, $6, $7, $5, $5 FROM m \
         RETURNING message_id",
    )
    .bind(conversation_id)
    .bind(sender_user_id)
    .bind(kind)
    .bind(&content)
    .bind(now)
    .bind(recipient)
    .bind(&body)
    .fetch_one(&mut *conn)
    .await?;
    Ok(message_id)
}

/// Claims up to `limit` due jobs for `worker` until `lease_until`: of each
/// conversation only the oldest unfinished job, and only when no one holds it. One
/// statement selects, locks (`FOR UPDATE SKIP LOCKED`) and leases, so two senders
/// never claim the same job, nor two jobs of one conversation.
#[tracing::instrument(skip(pool))]
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<SendJob>, sqlx::Error> {
    type Row = (i64, Uuid, Uuid, String, Value, i32, Option<DateTime<Utc>>);
    let rows: Vec<Row> = sqlx::query_as(
        "UPDATE send_jobs j \
         SET locked_by = $1, locked_until = $3 \
         FROM conversations c \
         WHERE c.id = j.conversation_id \
           AND j.id IN ( \
             SELECT s.id FROM send_jobs s \
             WHERE s.done_at IS NULL \
               AND s.next_attempt_at <= $2 \
               AND (s.locked_until IS NULL OR s.locked_until < $2) \
               AND NOT EXISTS ( \
                 SELECT 1 FROM send_jobs e \
                 WHERE e.conversation_id = s.conversation_id \
                   AND e.done_at IS NULL AND e.id < s.id) \
             ORDER BY s.next_attempt_at, s.id \
             LIMIT $4 \
             FOR UPDATE OF s SKIP LOCKED) \
         RETURNING j.id, j.message_id, j.conversation_id, j.recipient, j.body, j.attempts, \
                   c.\"lastCustomerMessageAt\"",
    )
    .bind(worker)
    .bind(now)
    .bind(lease_until)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut jobs: Vec<SendJob> = rows
        .into_iter()
        .map(
            |(id, message_id, conversation_id, recipient, body, attempts, last)| SendJob {
                id,
                message_id,
                conversation_id,
                recipient,
                body,
                attempts,
                last_customer_message_at: last,
            },
        )
        .collect();
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

/// Extends `worker`'s lease on a job; `false` when the lease is no longer ours (it
/// expired and another sender took the job, or the job is finished), in which case
/// the job must not be sent.
#[tracing::instrument(skip(pool))]
pub async fn renew(
    pool: &PgPool,
    job_id: i64,
    worker: &str,
    lease_until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE send_jobs SET locked_until = $3 \
         WHERE id = $1 AND locked_by = $2 AND done_at IS NULL",
    )
    .bind(job_id)
    .bind(worker)
    .bind(lease_until)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Records Meta's acceptance: the wamid goes into `content.whatsappMessageId`, the
/// message moves from `pending` to `sent`, and the job is done. Returns `false` when
/// the job was already finished (another sender completed it after our lease
/// expired), in which case nothing is changed.
#[tracing::instrument(skip(pool))]
pub async fn complete(
    pool: &PgPool,
    job: &SendJob,
    wamid: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The job is finished and its message moves to `sent` in one statement; only
    // `pending` moves, so a status applied meanwhile is never undone.
    let done = sqlx::query(
        "WITH j AS ( \
            UPDATE send_jobs \
            SET done_at = $2, attempts = attempts + 1, locked_by = NULL, locked_until = NULL \
            WHERE id = $1 AND done_at IS NULL \
            RETURNING message_id) \
         UPDATE messages \
         SET content = content || jsonb_build_object('whatsappMessageId', $3::text), \
             status = CASE WHEN status = 'pending' THEN 'sent'::messages_status_enum \
                           ELSE status END, \
             \"updatedAt\" = $2 \
         FROM j WHERE messages.id = j.message_id",
    )
    .bind(job.id)
    .bind(now)
    .bind(wamid)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    // A status Meta reported before this wamid was stored is applied now, after
    // `sent`, so that an early `delivered` or `read` is not lost nor overwritten.
    crate::store::statuses::apply_early_statuses(&mut tx, job.message_id, wamid).await?;
    tx.commit().await?;
    Ok(true)
}

/// A retryable failure: the job goes back to the queue, due at `next_attempt_at`,
/// with the error kept. The conversation's later jobs wait behind it.
#[tracing::instrument(skip(pool, error))]
pub async fn retry_later(
    pool: &PgPool,
    job_id: i64,
    worker: &str,
    next_attempt_at: DateTime<Utc>,
    error: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE send_jobs \
         SET attempts = attempts + 1, next_attempt_at = $3, last_error = $4, \
             locked_by = NULL, locked_until = NULL \
         WHERE id = $1 AND locked_by = $2 AND done_at IS NULL",
    )
    .bind(job_id)
    .bind(worker)
    .bind(next_attempt_at)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Hands a job back without counting an attempt (sending is on hold because the
/// token is invalid): it is due again at once, for whoever sends next.
#[tracing::instrument(skip(pool, error))]
pub async fn release(
    pool: &PgPool,
    job_id: i64,
    worker: &str,
    error: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE send_jobs SET last_error = $3, locked_by = NULL, locked_until = NULL \
         WHERE id = $1 AND locked_by = $2 AND done_at IS NULL",
    )
    .bind(job_id)
    .bind(worker)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// A permanent failure: the message is `failed` with the error kept in
/// `content.error`, and the job is done with `attempts` calls made in all. The
/// conversation's next job becomes claimable.
#[tracing::instrument(skip(pool, error))]
pub async fn fail(
    pool: &PgPool,
    job: &SendJob,
    attempts: i32,
    error: &Value,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE send_jobs \
         SET done_at = $2, attempts = $3, last_error = $4, locked_by = NULL, locked_until = NULL \
         WHERE id = $1 AND done_at IS NULL",
    )
    .bind(job.id)
    .bind(now)
    .bind(attempts)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(());
    }
    sqlx::query(
        "UPDATE messages \
         SET status = 'failed', content = content || jsonb_build_object('error', $2::jsonb), \
             \"updatedAt\" = $3 \
         WHERE id = $1",
    )
    .bind(job.message_id)
    .bind(error)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // A Flow message that cannot be sent leaves its chatbot waiting for a reply
    // that will never come: queue a turn that takes the node's `error` edge. The
    // conversation row is locked first, as ingest does, so that turn job ids follow
    // commit order within the conversation.
    sqlx::query("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE")
        .bind(job.conversation_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO turn_jobs (conversation_id, kind, payload) \
         SELECT m.\"conversationId\", 'flow_failed', \
                jsonb_build_object('flowToken', m.content #>> '{action,parameters,flow_token}', \
                                   'error', $2::jsonb) \
         FROM messages m WHERE m.id = $1 AND m.content ->> 'type' = 'flow'",
    )
    .bind(job.message_id)
    .bind(error)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Whether any job is waiting, due or not, for tests and the shutdown log.
pub async fn open_jobs(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM send_jobs WHERE done_at IS NULL")
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Choice, FlowAction};

    #[test]
    fn contents_have_whatsapp_builders_shapes() {
        let (kind, content) = message_content(&Outgoing::Text {
            body: "Merhaba".into(),
        });
        assert_eq!(kind, "text");
        assert_eq!(content, json!({"body": "Merhaba", "text": "Merhaba"}));

        let (kind, content) = message_content(&Outgoing::Buttons {
            header: None,
            body: "Seçin".into(),
            footer: Some("alt".into()),
            buttons: vec![Choice {
                id: "btn-0".into(),
                title: "Evet".into(),
                description: None,
            }],
        });
        assert_eq!(kind, "interactive");
        assert_eq!(
            content,
            json!({"type": "button", "body": {"text": "Seçin"}, "footer": {"text": "alt"},
                   "action": {"buttons": [{"type": "reply", "reply": {"id": "btn-0", "title": "Evet"}}]}})
        );

        let (kind, content) = message_content(&Outgoing::Flow {
            header: None,
            body: "Form".into(),
            footer: None,
            flow_id: "1234".into(),
            flow_cta: "Aç".into(),
            flow_token: "ctx:node".into(),
            flow_action: FlowAction::Navigate,
            screen: None,
            data: None,
        });
        assert_eq!(kind, "interactive");
        assert_eq!(content["type"], "flow");
        assert_eq!(content["whatsappFlowId"], "1234");
        assert_eq!(content["body"]["text"], "Form");
        assert_eq!(content["action"]["parameters"]["flow_id"], "1234");
        assert_eq!(content["action"]["parameters"]["flow_cta"], "Aç");
    }
}
