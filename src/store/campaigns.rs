//! `wabot_campaigns` and `wabot_campaign_recipients`: a campaign's row, one row per
//! recipient, what the campaign stage takes and marks, and the counts of
//! `wabot campaign status`.
//!
//! A recipient leaves `pending` once, in the transaction that stores its message
//! and send job (`queued`) or records why not (`skipped`): taken `FOR UPDATE SKIP
//! LOCKED`, so neither a second process nor a restart after a kill sends it again.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::store::events::{self, EventKind, NewEvent, Subscribed};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A campaign to create.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    pub template_name: String,
    pub language: String,
    pub chatbot_id: Option<Uuid>,
    pub node_id: Option<String>,
    pub business_phone_number_id: String,
    pub rate: f64,
}

/// One recipient to create: its CSV line, WhatsApp id and parameters.
#[derive(Debug, Clone)]
pub struct NewRecipient {
    pub n: i32,
    pub recipient: String,
    pub params: Value,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CampaignRow {
    pub id: i64,
    pub template_name: String,
    pub language: String,
    pub chatbot_id: Option<Uuid>,
    pub node_id: Option<String>,
    pub business_phone_number_id: String,
    pub rate: f64,
    pub current_rate: f64,
    pub state: String,
    pub pause_reason: Option<String>,
    pub total: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, template_name, language, chatbot_id, node_id, business_phone_number_id, \
                       rate, current_rate, state, pause_reason, total, created_at, updated_at, \
                       finished_at";

/// Recipients inserted per statement.
const BATCH: usize = 1000;

/// Creates a campaign and its recipients in one transaction, the recipients in
/// batches; a recipient listed twice is kept once. Returns the id and the
/// recipients kept. The campaign is `running` when this commits: never half made.
pub async fn create(
    pool: &PgPool,
    new: &NewCampaign,
    recipients: &[NewRecipient],
) -> Result<(i64, u64), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO wabot_campaigns (template_name, language, chatbot_id, node_id, \
                                      business_phone_number_id, rate, current_rate, state) \
         VALUES ($1, $2, $3, $4, $5, $6, $6, 'loading') RETURNING id",
    )
    .bind(&new.template_name)
    .bind(&new.language)
    .bind(new.chatbot_id)
    .bind(&new.node_id)
    .bind(&new.business_phone_number_id)
    .bind(new.rate)
    .fetch_one(&mut *tx)
    .await?;
    let mut kept = 0;
    for chunk in recipients.chunks(BATCH) {
        let ns: Vec<i32> = chunk.iter().map(|r| r.n).collect();
        let who: Vec<&str> = chunk.iter().map(|r| r.recipient.as_str()).collect();
        let params: Vec<&Value> = chunk.iter().map(|r| &r.params).collect();
        kept += sqlx::query(
            "INSERT INTO wabot_campaign_recipients (campaign_id, n, recipient, params) \
             SELECT $1, * FROM unnest($2::int[], $3::text[], $4::jsonb[]) \
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(&ns)
        .bind(&who)
        .bind(&params)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    sqlx::query(
        "UPDATE wabot_campaigns SET state = 'running', total = $2, updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(kept as i32)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((id, kept))
}

pub async fn load(pool: &PgPool, id: i64) -> Result<Option<CampaignRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM wabot_campaigns WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Every campaign, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<CampaignRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM wabot_campaigns ORDER BY id DESC"
    ))
    .fetch_all(pool)
    .await
}

/// The campaigns sending now.
pub async fn running(pool: &PgPool) -> Result<Vec<CampaignRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM wabot_campaigns WHERE state = 'running' ORDER BY id"
    ))
    .fetch_all(pool)
    .await
}

/// Moves a campaign from one of `from` to `to` (with `reason` kept, or cleared);
/// the state it was in, or `None` when there is no such campaign. It moved when
/// the state returned is one of `from`.
pub async fn set_state(
    pool: &PgPool,
    id: i64,
    from: &[&str],
    to: &str,
    reason: Option<&str>,
) -> Result<Option<String>, sqlx::Error> {
    let from: Vec<&str> = from.to_vec();
    sqlx::query_scalar(
        "WITH old AS (SELECT id, state FROM wabot_campaigns WHERE id = $1 FOR UPDATE), \
         u AS (UPDATE wabot_campaigns c SET state = $3, pause_reason = $4, updated_at = now(), \
                      finished_at = CASE WHEN $3 IN ('cancelled', 'finished') THEN now() END \
               FROM old WHERE c.id = old.id AND old.state = ANY($2) RETURNING c.id) \
         SELECT old.state FROM old",
    )
    .bind(id)
    .bind(&from)
    .bind(to)
    .bind(reason)
    .fetch_optional(pool)
    .await
}

/// The campaign's sends not finished yet, and how many of them Meta throttled
/// (130429, 131056) at their last attempt. Read from the open send jobs (few: the
/// stage keeps about two seconds of sends outstanding), not the recipients.
pub async fn outstanding(pool: &PgPool, id: i64) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        // From the open send jobs (few, by the partial index) to their recipients,
        // never the other way: recipients stay `queued` once sent, so starting from
        // them walks everyone sent so far (3 s a call at 75,000, docs/perf-campaigns.md).
        "WITH open AS MATERIALIZED ( \
             SELECT message_id, last_error FROM send_jobs WHERE done_at IS NULL) \
         SELECT count(*), \
                count(*) FILTER (WHERE o.last_error ->> 'code' IN ('130429', '131056')) \
         FROM open o JOIN wabot_campaign_recipients r ON r.message_id = o.message_id \
         WHERE r.campaign_id = $1 AND r.state = 'queued'",
    )
    .bind(id)
    .fetch_one(pool)
    .await
}

/// When a send of the campaign failed on the number's messaging limit (131048) (a
/// permanent error: it fails at its first call, so the recently queued are read),
/// pauses the campaign with the reason and puts the recipients Meta refused back
/// to `pending` (nothing reached them), for `resume`. Returns the reason.
pub async fn pause_on_limit(pool: &PgPool, id: i64) -> Result<Option<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let refused: Vec<(i32, String)> = sqlx::query_as(
        "UPDATE wabot_campaign_recipients r \
         SET state = 'pending', message_id = NULL, conversation_id = NULL, queued_at = NULL, \
             reason = 'refused by Meta (131048), to send again' \
         FROM send_jobs j \
         WHERE r.campaign_id = $1 AND r.state = 'queued' \
           AND r.queued_at > now() - interval '15 minutes' AND j.message_id = r.message_id \
           AND j.done_at IS NOT NULL AND j.last_error ->> 'code' = '131048' \
         RETURNING r.n, coalesce(j.last_error ->> 'message', '')",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let Some((_, message)) = refused.first() else {
        return Ok(None);
    };
    let reason = format!(
        "Meta's messaging limit for this number was reached (131048: {message}); {} \
         recipient(s) will be sent again on resume",
        refused.len()
    );
    sqlx::query(
        "UPDATE wabot_campaigns SET state = 'paused', pause_reason = $2, updated_at = now() \
         WHERE id = $1 AND state = 'running'",
    )
    .bind(id)
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(reason))
}

pub async fn set_current_rate(pool: &PgPool, id: i64, rate: f64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE wabot_campaigns SET current_rate = $2 WHERE id = $1")
        .bind(id)
        .bind(rate)
        .execute(pool)
        .await?;
    Ok(())
}

/// A recipient taken to send.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Pending {
    pub n: i32,
    pub recipient: String,
    pub params: Value,
}

/// Up to `limit` pending recipients, in file order, locked until the caller's
/// transaction ends (others skip them).
pub async fn take_pending(
    conn: &mut PgConnection,
    id: i64,
    limit: i64,
) -> Result<Vec<Pending>, sqlx::Error> {
    sqlx::query_as(
        "SELECT n, recipient, params FROM wabot_campaign_recipients \
         WHERE campaign_id = $1 AND state = 'pending' ORDER BY n LIMIT $2 \
         FOR UPDATE SKIP LOCKED",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Marks taken recipients: `queued` with their message and conversation, or
/// `skipped` / `invalid` with the reason.
pub async fn mark(
    conn: &mut PgConnection,
    id: i64,
    queued: &[(i32, Uuid, Uuid)],
    not_sent: &[(i32, &str, String)],
) -> Result<(), sqlx::Error> {
    if !queued.is_empty() {
        let ns: Vec<i32> = queued.iter().map(|q| q.0).collect();
        let messages: Vec<Uuid> = queued.iter().map(|q| q.1).collect();
        let conversations: Vec<Uuid> = queued.iter().map(|q| q.2).collect();
        sqlx::query(
            "UPDATE wabot_campaign_recipients r \
             SET state = 'queued', message_id = u.m, conversation_id = u.c, queued_at = now(), \
                 reason = NULL \
             FROM unnest($2::int[], $3::uuid[], $4::uuid[]) AS u(n, m, c) \
             WHERE r.campaign_id = $1 AND r.n = u.n",
        )
        .bind(id)
        .bind(&ns)
        .bind(&messages)
        .bind(&conversations)
        .execute(&mut *conn)
        .await?;
    }
    if !not_sent.is_empty() {
        let ns: Vec<i32> = not_sent.iter().map(|q| q.0).collect();
        let states: Vec<&str> = not_sent.iter().map(|q| q.1).collect();
        let reasons: Vec<&str> = not_sent.iter().map(|q| q.2.as_str()).collect();
        sqlx::query(
            "UPDATE wabot_campaign_recipients r SET state = u.s, reason = u.why \
             FROM unnest($2::int[], $3::text[], $4::text[]) AS u(n, s, why) \
             WHERE r.campaign_id = $1 AND r.n = u.n",
        )
        .bind(id)
        .bind(&ns)
        .bind(&states)
        .bind(&reasons)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Ends the active contexts of these conversations (a campaign placing its
/// recipients in a chatbot starts them afresh there).
pub async fn end_contexts(
    conn: &mut PgConnection,
    conversations: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE conversation_contexts SET \"isActive\" = false, status = 'stopped', \
                \"completionReason\" = 'restarted', \"completedAt\" = now(), \"expiresAt\" = NULL, \
                \"updatedAt\" = now() \
         WHERE \"conversationId\" = ANY($1) AND \"isActive\"",
    )
    .bind(conversations)
    .execute(conn)
    .await?;
    Ok(())
}

/// A running campaign with no pending recipient left is `finished` (its last
/// sends may still be on their way); `campaign.finished` is written in the same
/// transaction when some endpoint takes it.
pub async fn finish_if_done(
    pool: &PgPool,
    id: i64,
    events: Subscribed,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done: Option<(String, String, i32)> = sqlx::query_as(
        "UPDATE wabot_campaigns c SET state = 'finished', finished_at = now(), updated_at = now() \
         WHERE c.id = $1 AND c.state = 'running' AND NOT EXISTS ( \
             SELECT 1 FROM wabot_campaign_recipients r \
             WHERE r.campaign_id = c.id AND r.state = 'pending') \
         RETURNING c.template_name, c.language, c.total",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((template, language, total)) = done else {
        tx.rollback().await?;
        return Ok(false);
    };
    let event = NewEvent {
        kind: EventKind::CampaignFinished,
        conversation_id: None,
        data: json!({"campaign_id": id, "template": template, "language": language,
                     "recipients": total}),
    };
    events::emit(&mut tx, events, &[event]).await?;
    tx.commit().await?;
    Ok(true)
}

/// A campaign's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Counts {
    pub total: i64,
    pub pending: i64,
    /// Queued and not yet accepted by Meta.
    pub queued: i64,
    /// Accepted by Meta (sent, delivered or read).
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
    /// Opted-out customers, not sent to.
    pub skipped: i64,
    /// Customers who wrote after the campaign's message was stored (Meta's
    /// timestamps are whole seconds: `createdAt` orders them).
    pub replied: i64,
}

pub async fn counts(pool: &PgPool, id: i64) -> Result<Counts, sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*) AS total, \
                count(*) FILTER (WHERE r.state = 'pending') AS pending, \
                count(*) FILTER (WHERE r.state = 'queued' AND m.status = 'pending') AS queued, \
                count(*) FILTER (WHERE m.status IN ('sent', 'delivered', 'read')) AS sent, \
                count(*) FILTER (WHERE m.status IN ('delivered', 'read')) AS delivered, \
                count(*) FILTER (WHERE m.status = 'read') AS read, \
                count(*) FILTER (WHERE m.status = 'failed') AS failed, \
                count(*) FILTER (WHERE r.state = 'skipped') AS skipped, \
                count(*) FILTER (WHERE EXISTS ( \
                    SELECT 1 FROM messages x \
                    WHERE x.\"conversationId\" = r.conversation_id \
                      AND x.\"senderId\" <> m.\"senderId\" \
                      AND x.\"createdAt\" > m.\"createdAt\")) AS replied \
         FROM wabot_campaign_recipients r LEFT JOIN messages m ON m.id = r.message_id \
         WHERE r.campaign_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
}
