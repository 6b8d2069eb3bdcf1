//! The media download queue (`wabot_media_jobs`): created by ingest with the message,
//! claimed and finished by the media stage, purged by retention.
//!
//! Leases work as in the turn and send queues: a claim marks the rows it picks
//! (`FOR UPDATE SKIP LOCKED`) with a token of its own (`holder:<uuid>`) and an
//! expiry on the database's clock; every later write checks the token, so a
//! process whose lease was taken over writes nothing. A finished download is one
//! statement: the job done and the stored location in the message's content
//! (`content.media.stored`), or the reason it was given up (`content.media.failed`).

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::store::ingest::InboundRow;
use crate::store::CLAIM_TOKEN_SQL as NEW_TOKEN;

/// The message types whose media is downloaded.
pub const KINDS: [&str; 5] = ["image", "audio", "video", "document", "sticker"];

/// `content.media` when it is an object, else an empty one: what wabot adds about
/// a message's media lives there, beside WhatsApp Builder's keys.
const MEDIA_OBJECT: &str = "(CASE WHEN jsonb_typeof(content -> 'media') = 'object' \
                            THEN content -> 'media' ELSE '{}'::jsonb END)";

/// Creates a download job for each message of `messages` that was inserted now
/// (`inserted` holds their wamids) and carries media with an id, inside the
/// caller's (ingest's) transaction. One statement for the batch's media, none when
/// the batch has none; a message stored before gets no second job.
pub async fn enqueue_batch<'a>(
    conn: &mut PgConnection,
    messages: impl IntoIterator<Item = &'a InboundRow>,
    inserted: &HashSet<String>,
) -> Result<u64, sqlx::Error> {
    let mut wamids = Vec::new();
    let mut media_ids = Vec::new();
    let mut kinds = Vec::new();
    let mut mimes = Vec::new();
    let mut sums = Vec::new();
    for m in messages {
        if !KINDS.contains(&m.db_type) || !inserted.contains(&m.wamid) {
            continue;
        }
        // WhatsApp Builder's keys for a media message (worker/ingest/content.rs).
        let Some(id) = m.content.get("id").and_then(Value::as_str) else {
            continue;
        };
        let text = |key: &str| m.content.get(key).and_then(Value::as_str);
        wamids.push(m.wamid.as_str());
        media_ids.push(id);
        kinds.push(m.db_type);
        mimes.push(text("mimeType"));
        sums.push(text("sha256"));
    }
    if wamids.is_empty() {
        return Ok(0);
    }
    // The messages were inserted by this transaction; the wamid index finds them.
    let done = sqlx::query(
        "INSERT INTO wabot_media_jobs (message_id, media_id, kind, mime_type, sha256) \
         SELECT m.id, i.media_id, i.kind, i.mime, i.sha \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
              WITH ORDINALITY AS i(wamid, media_id, kind, mime, sha, n) \
         JOIN messages m ON m.content ->> 'whatsappMessageId' = i.wamid \
         ORDER BY i.n \
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(&wamids)
    .bind(&media_ids)
    .bind(&kinds)
    .bind(&mimes)
    .bind(&sums)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// A download job this process holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MediaJob {
    pub id: i64,
    /// `None` when the message was deleted since.
    pub message_id: Option<Uuid>,
    pub media_id: String,
    pub kind: String,
    /// What the webhook said.
    pub mime_type: Option<String>,
    pub sha256: Option<String>,
    /// Attempts so far, this one included.
    pub attempts: i32,
    pub token: String,
    pub created_at: DateTime<Utc>,
    /// The job had a lease that expired (its process died or stalled).
    pub taken_over: bool,
}

/// Claims up to `limit` due jobs for `holder`, oldest due first. One statement:
/// selecting and leasing happen together, so no two processes get the same job.
pub async fn claim(
    pool: &PgPool,
    holder: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<MediaJob>, sqlx::Error> {
    if limit <= 0 {
        return Ok(Vec::new());
    }
    sqlx::query_as(&format!(
        "WITH picked AS ( \
             SELECT id, locked_until IS NOT NULL AS taken_over FROM wabot_media_jobs \
             WHERE done_at IS NULL AND run_at <= now() \
               AND (locked_until IS NULL OR locked_until < now()) \
             ORDER BY run_at, id LIMIT $3 \
             FOR UPDATE SKIP LOCKED), \
         j AS ( \
             UPDATE wabot_media_jobs u \
                SET locked_by = {NEW_TOKEN}, \
                    locked_until = now() + make_interval(secs => $2), \
                    attempts = u.attempts + 1 \
               FROM picked WHERE u.id = picked.id \
             RETURNING u.*, picked.taken_over) \
         SELECT id, message_id, media_id, kind, mime_type, sha256, attempts, \
                locked_by AS token, created_at, taken_over \
         FROM j ORDER BY id"
    ))
    .bind(holder)
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Extends every lease in `tokens` still held (downloads running here); rows being
/// finished right now are skipped, never waited for.
pub async fn keep_leases(
    pool: &PgPool,
    tokens: &[String],
    lease: Duration,
) -> Result<u64, sqlx::Error> {
    crate::store::keep_leases(pool, crate::store::Queue::Media, tokens, lease).await
}

/// Where a download was stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub store_kind: String,
    pub key: String,
    pub size: i64,
    /// The content: `content.media.stored` of the message (store, key, size,
    /// sha256, mime type, when).
    pub content: Value,
}

/// Finishes a job as stored and puts the location into its message's content, in
/// one statement; `false` when the lease is no longer ours (nothing written).
pub async fn finish_stored(
    pool: &PgPool,
    id: i64,
    token: &str,
    stored: &Stored,
) -> Result<bool, sqlx::Error> {
    let done: i64 = sqlx::query_scalar(&format!(
        "WITH j AS ( \
             UPDATE wabot_media_jobs SET done_at = now(), locked_until = NULL, \
                    result = 'stored', store_kind = $3, store_key = $4, size_bytes = $5, \
                    last_error = NULL \
             WHERE id = $1 AND locked_by = $2 AND done_at IS NULL \
             RETURNING message_id), \
         m AS ( \
             UPDATE messages SET content = jsonb_set(content, '{{media}}', \
                    ({MEDIA_OBJECT} - 'failed') || jsonb_build_object('stored', $6::jsonb)) \
             FROM j WHERE messages.id = j.message_id RETURNING 1) \
         SELECT count(*) FROM j"
    ))
    .bind(id)
    .bind(token)
    .bind(&stored.store_kind)
    .bind(&stored.key)
    .bind(stored.size)
    .bind(&stored.content)
    .fetch_one(pool)
    .await?;
    Ok(done == 1)
}

/// Finishes a job as given up, with `reason` (a stable phrase: "too large",
/// "checksum mismatch", ...) and `detail` in the job and in its message's content
/// (`content.media.failed`), in one statement; `false` when the lease is no longer
/// ours.
pub async fn give_up(
    pool: &PgPool,
    id: i64,
    token: &str,
    reason: &str,
    detail: &str,
) -> Result<bool, sqlx::Error> {
    let done: i64 = sqlx::query_scalar(&format!(
        "WITH j AS ( \
             UPDATE wabot_media_jobs SET done_at = now(), locked_until = NULL, \
                    result = 'given_up', last_error = $3 || ': ' || $4 \
             WHERE id = $1 AND locked_by = $2 AND done_at IS NULL \
             RETURNING message_id, attempts), \
         m AS ( \
             UPDATE messages SET content = jsonb_set(content, '{{media}}', \
                    {MEDIA_OBJECT} || jsonb_build_object('failed', jsonb_build_object( \
                        'reason', $3::text, 'detail', $4::text, 'attempts', j.attempts, \
                        'at', now()))) \
             FROM j WHERE messages.id = j.message_id RETURNING 1) \
         SELECT count(*) FROM j"
    ))
    .bind(id)
    .bind(token)
    .bind(reason)
    .bind(detail)
    .fetch_one(pool)
    .await?;
    Ok(done == 1)
}

/// Hands a job back to run again after `delay` (on the database's clock), keeping
/// the error.
pub async fn retry_later(
    pool: &PgPool,
    id: i64,
    token: &str,
    error: &str,
    delay: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE wabot_media_jobs SET locked_by = NULL, locked_until = NULL, last_error = $3, \
                run_at = now() + make_interval(secs => $4) \
         WHERE id = $1 AND locked_by = $2 AND done_at IS NULL",
    )
    .bind(id)
    .bind(token)
    .bind(error)
    .bind(delay.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives back every job `holder` still holds (shutdown), without counting the
/// attempt: due again at once for whoever runs next.
pub async fn release_all(pool: &PgPool, holder: &str) -> Result<u64, sqlx::Error> {
    crate::store::release_all(pool, crate::store::Queue::Media, holder).await
}

/// The queue at a glance: unfinished jobs, those due now, and how long the oldest
/// due one has waited.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct QueueStats {
    pub depth: i64,
    pub due: i64,
    pub oldest_due_secs: Option<f64>,
}

pub async fn queue_stats(pool: &PgPool) -> Result<QueueStats, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) AS depth, \
                count(*) FILTER (WHERE run_at <= now()) AS due, \
                extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8 \
                    AS oldest_due_secs \
         FROM wabot_media_jobs WHERE done_at IS NULL",
    )
    .fetch_one(pool)
    .await
}

/// A finished job retention holds: its file, if it stored one.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Expired {
    pub id: i64,
    pub store_kind: Option<String>,
    pub store_key: Option<String>,
}

/// Leases up to `limit` finished jobs created before `before` to `holder` for
/// `lease` (retention deletes their files, then [`forget`]s them): two processes
/// never purge the same rows. The claim's token comes back with the rows.
pub async fn claim_expired(
    pool: &PgPool,
    holder: &str,
    before: DateTime<Utc>,
    limit: i64,
    lease: Duration,
) -> Result<(String, Vec<Expired>), sqlx::Error> {
    let token = crate::store::claim_token(holder);
    let rows = sqlx::query_as(
        "UPDATE wabot_media_jobs u SET locked_by = $1, \
                locked_until = now() + make_interval(secs => $4) \
         WHERE u.id IN ( \
             SELECT id FROM wabot_media_jobs \
             WHERE done_at IS NOT NULL AND created_at < $2 \
               AND (locked_until IS NULL OR locked_until < now()) \
             ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
         RETURNING u.id, u.store_kind, u.store_key",
    )
    .bind(&token)
    .bind(before)
    .bind(limit.max(1))
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok((token, rows))
}

/// Deletes the jobs `ids` leased under `token` (their files are gone) and notes in
/// each message that had a stored file that retention removed it
/// (`content.media.purged`); how many jobs it deleted.
pub async fn forget(pool: &PgPool, ids: &[i64], token: &str) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let done: i64 = sqlx::query_scalar(&format!(
        "WITH d AS ( \
             DELETE FROM wabot_media_jobs WHERE id = ANY($1) AND locked_by = $2 \
             RETURNING message_id, store_key), \
         m AS ( \
             UPDATE messages SET content = jsonb_set(content, '{{media}}', \
                    ({MEDIA_OBJECT} - 'stored') || jsonb_build_object('purged', \
                        jsonb_build_object('reason', 'retention', 'at', now()))) \
             FROM d WHERE messages.id = d.message_id AND d.store_key IS NOT NULL \
             RETURNING 1) \
         SELECT count(*) FROM d"
    ))
    .bind(ids)
    .bind(token)
    .fetch_one(pool)
    .await?;
    Ok(done as u64)
}
