//! Events out: the endpoints operators register (`wabot_event_endpoints`) and the
//! durable outbox of events for them (`wabot_event_outbox`).
//!
//! An event is written in the transaction of what it reports, by one set-based
//! `INSERT ... SELECT` that fans it out to the endpoints taking its type. The caller
//! passes the [`Subscribed`] set it keeps in memory, so a batch runs that statement
//! only when some endpoint takes one of the batch's event types: a box without
//! endpoints pays nothing per turn. A set that is briefly too wide costs a statement
//! that inserts nothing; the statement itself decides who gets what.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The events wabot reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    MessageReceived,
    MessageFailed,
    ConversationCompleted,
    ConversationHandoverRequested,
    ConversationPaused,
    ConversationResumed,
    CustomerOptedOut,
    CustomerOptedIn,
    CampaignFinished,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::MessageReceived,
        EventKind::MessageFailed,
        EventKind::ConversationCompleted,
        EventKind::ConversationHandoverRequested,
        EventKind::ConversationPaused,
        EventKind::ConversationResumed,
        EventKind::CustomerOptedOut,
        EventKind::CustomerOptedIn,
        EventKind::CampaignFinished,
    ];

    /// The event's `type`, as endpoints subscribe to it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageReceived => "message.received",
            EventKind::MessageFailed => "message.failed",
            EventKind::ConversationCompleted => "conversation.completed",
            EventKind::ConversationHandoverRequested => "conversation.handover_requested",
            EventKind::ConversationPaused => "conversation.paused",
            EventKind::ConversationResumed => "conversation.resumed",
            EventKind::CustomerOptedOut => "customer.opted_out",
            EventKind::CustomerOptedIn => "customer.opted_in",
            EventKind::CampaignFinished => "campaign.finished",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of event kinds (the ones some endpoint takes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subscribed(u16);

impl Subscribed {
    pub const NONE: Subscribed = Subscribed(0);
    pub const ALL: Subscribed = Subscribed(u16::MAX);

    pub fn of(kinds: impl IntoIterator<Item = EventKind>) -> Subscribed {
        Subscribed(kinds.into_iter().fold(0, |bits, k| bits | k.bit()))
    }

    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// The subscribed set a process keeps in memory, shared by the stages that write
/// events; refreshed by the event stage and at once by the API's changes.
#[derive(Debug, Clone)]
pub struct Subscriptions(Arc<AtomicU16>);

impl Default for Subscriptions {
    fn default() -> Self {
        // Until the first read says otherwise, every event is written: an event
        // missed is worse than a statement that inserts nothing.
        Subscriptions(Arc::new(AtomicU16::new(u16::MAX)))
    }
}

impl Subscriptions {
    pub fn get(&self) -> Subscribed {
        Subscribed(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, set: Subscribed) {
        self.0.store(set.0, Ordering::Relaxed);
    }

    /// Reads the set from the endpoints table and keeps it.
    pub async fn refresh(&self, pool: &PgPool) -> Result<Subscribed, sqlx::Error> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT unnest(events) FROM wabot_event_endpoints")
                .fetch_all(pool)
                .await?;
        let set = Subscribed::of(names.iter().filter_map(|n| EventKind::parse(n)));
        self.set(set);
        Ok(set)
    }
}

/// One event to write: its kind, the conversation it orders with, and its `data`.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: EventKind,
    pub conversation_id: Option<Uuid>,
    pub data: Value,
}

/// Writes `events` (those `subscribed` takes) for every endpoint that takes their
/// type, in one statement inside the caller's transaction; none when nothing is
/// subscribed.
pub async fn emit(
    conn: &mut PgConnection,
    subscribed: Subscribed,
    events: &[NewEvent],
) -> Result<(), sqlx::Error> {
    let events: Vec<&NewEvent> = events
        .iter()
        .filter(|e| subscribed.contains(e.kind))
        .collect();
    if events.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let convs: Vec<Option<Uuid>> = events.iter().map(|e| e.conversation_id).collect();
    let data: Vec<&Value> = events.iter().map(|e| &e.data).collect();
    sqlx::query(
        "INSERT INTO wabot_event_outbox (endpoint_id, type, conversation_id, payload) \
         SELECT e.id, u.kind, u.conv, \
                jsonb_build_object('type', u.kind, 'timestamp', \
                    to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                    'data', u.data) \
         FROM unnest($1::text[], $2::uuid[], $3::jsonb[]) WITH ORDINALITY AS u(kind, conv, data, n) \
         JOIN wabot_event_endpoints e ON u.kind = ANY(e.events) \
         ORDER BY u.n, e.id",
    )
    .bind(&kinds)
    .bind(&convs)
    .bind(&data)
    .execute(conn)
    .await?;
    Ok(())
}

/// `message.received` or `message.failed` for stored messages: the event's data is
/// read from the rows (the conversation's key names the customer and the number).
pub async fn emit_messages(
    conn: &mut PgConnection,
    subscribed: Subscribed,
    kind: EventKind,
    messages: &[Uuid],
) -> Result<(), sqlx::Error> {
    if messages.is_empty() || !subscribed.contains(kind) {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO wabot_event_outbox (endpoint_id, type, conversation_id, payload) \
         SELECT e.id, $1, m.\"conversationId\", \
                jsonb_build_object('type', $1::text, 'timestamp', \
                    to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                    'data', jsonb_strip_nulls(jsonb_build_object( \
                        'message_id', m.id, 'conversation_id', m.\"conversationId\", \
                        'customer', k.customer_wa_id, \
                        'business_phone_number_id', k.business_phone_number_id, \
                        'type', m.type, 'status', m.status, \
                        'wamid', m.content ->> 'whatsappMessageId', \
                        'text', m.content ->> 'text', \
                        'error', m.content -> 'error', \
                        'timestamp', m.\"timestamp\"))) \
         FROM unnest($2::uuid[]) WITH ORDINALITY AS u(id, n) \
         JOIN messages m ON m.id = u.id \
         LEFT JOIN conversation_keys k ON k.conversation_id = m.\"conversationId\" \
         JOIN wabot_event_endpoints e ON $1 = ANY(e.events) \
         ORDER BY u.n, e.id",
    )
    .bind(kind.as_str())
    .bind(messages)
    .execute(conn)
    .await?;
    Ok(())
}

/// A registered endpoint.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    #[serde(skip)]
    pub secret: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Events not delivered yet.
    #[sqlx(default)]
    pub pending: i64,
    /// Events given up on (re-sendable).
    #[sqlx(default)]
    pub failed: i64,
    /// The latest error of a delivery, when the latest attempt failed.
    #[sqlx(default)]
    pub last_error: Option<String>,
}

const ENDPOINT_COLUMNS: &str = "e.id, e.url, e.events, e.secret, e.description, e.created_at, \
     (SELECT count(*) FROM wabot_event_outbox o \
      WHERE o.endpoint_id = e.id AND o.state = 'pending') AS pending, \
     (SELECT count(*) FROM wabot_event_outbox o \
      WHERE o.endpoint_id = e.id AND o.state = 'failed') AS failed, \
     (SELECT o.last_error FROM wabot_event_outbox o \
      WHERE o.endpoint_id = e.id AND o.attempts > 0 \
      ORDER BY coalesce(o.done_at, o.next_attempt_at) DESC LIMIT 1) AS last_error";

pub async fn add_endpoint(
    pool: &PgPool,
    url: &str,
    events: &[&str],
    secret: &str,
    description: Option<&str>,
) -> Result<Endpoint, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO wabot_event_endpoints (id, url, events, secret, description) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(url)
    .bind(events)
    .bind(secret)
    .bind(description)
    .execute(pool)
    .await?;
    Ok(endpoint(pool, id)
        .await?
        .expect("the endpoint was just inserted"))
}

pub async fn endpoint(pool: &PgPool, id: Uuid) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM wabot_event_endpoints e WHERE e.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn endpoints(pool: &PgPool) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM wabot_event_endpoints e ORDER BY e.created_at, e.id"
    ))
    .fetch_all(pool)
    .await
}

/// Removes an endpoint and its undelivered events; whether it existed.
pub async fn remove_endpoint(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM wabot_event_endpoints WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Endpoints with events given up on, or whose latest attempt failed: `wabot status`.
pub async fn failing_endpoints(pool: &PgPool) -> Result<Vec<Endpoint>, sqlx::Error> {
    Ok(endpoints(pool)
        .await?
        .into_iter()
        .filter(|e| e.failed > 0 || (e.pending > 0 && e.last_error.is_some()))
        .collect())
}

/// One event for one endpoint, as `wabot webhook deliveries` lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: String,
    pub endpoint_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub conversation_id: Option<Uuid>,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub done_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub payload: Value,
}

/// The latest deliveries, newest first, of one endpoint or all, of one state or all.
pub async fn deliveries(
    pool: &PgPool,
    endpoint: Option<Uuid>,
    state: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, webhook_id, endpoint_id, type AS kind, conversation_id, state, attempts, \
                created_at, next_attempt_at, done_at, last_status, last_error, payload \
         FROM wabot_event_outbox \
         WHERE ($1::uuid IS NULL OR endpoint_id = $1) AND ($2::text IS NULL OR state = $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind(endpoint)
    .bind(state)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Queues deliveries again (given up on, or delivered and wanted again): due at
/// once, with a fresh retry time. Returns the ids queued; one still pending is left
/// as it is.
pub async fn resend(pool: &PgPool, ids: &[i64]) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE wabot_event_outbox \
         SET state = 'pending', attempts = 0, next_attempt_at = now(), retry_from = now(), \
             done_at = NULL, locked_by = NULL, locked_until = NULL \
         WHERE id = ANY($1) AND state <> 'pending' RETURNING id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// Every delivery given up on, of one endpoint or all, queued again.
pub async fn resend_failed(pool: &PgPool, endpoint: Option<Uuid>) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE wabot_event_outbox \
         SET state = 'pending', attempts = 0, next_attempt_at = now(), retry_from = now(), \
             done_at = NULL, locked_by = NULL, locked_until = NULL \
         WHERE state = 'failed' AND ($1::uuid IS NULL OR endpoint_id = $1) RETURNING id",
    )
    .bind(endpoint)
    .fetch_all(pool)
    .await
}

/// A delivery the event stage holds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub id: i64,
    pub webhook_id: String,
    pub endpoint_id: Uuid,
    pub kind: String,
    pub payload: Value,
    pub attempts: i32,
    pub retry_from: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub url: String,
    pub secret: String,
    pub token: String,
}

/// Claims up to `limit` due deliveries for `holder`: of each endpoint's
/// conversation only the oldest pending one (an event without a conversation
/// stands alone), and none that another holder's lease covers.
pub async fn claim(
    pool: &PgPool,
    holder: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as(&format!(
        "WITH picked AS ( \
             SELECT o.id FROM wabot_event_outbox o \
             WHERE o.state = 'pending' AND o.next_attempt_at <= now() \
               AND (o.locked_until IS NULL OR o.locked_until < now()) \
               AND (o.conversation_id IS NULL OR NOT EXISTS ( \
                   SELECT 1 FROM wabot_event_outbox e \
                   WHERE e.endpoint_id = o.endpoint_id AND e.conversation_id = o.conversation_id \
                     AND e.state = 'pending' AND e.id < o.id)) \
             ORDER BY o.next_attempt_at, o.id LIMIT $3 \
             FOR UPDATE OF o SKIP LOCKED), \
         j AS ( \
             UPDATE wabot_event_outbox u \
             SET locked_by = {token}, locked_until = now() + make_interval(secs => $2) \
             FROM picked WHERE u.id = picked.id RETURNING u.*) \
         SELECT j.id, j.webhook_id, j.endpoint_id, j.type AS kind, j.payload, j.attempts, \
                j.retry_from, j.created_at, e.url, e.secret, j.locked_by AS token \
         FROM j JOIN wabot_event_endpoints e ON e.id = j.endpoint_id ORDER BY j.id",
        token = crate::store::CLAIM_TOKEN_SQL,
    ))
    .bind(holder)
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// What became of one attempt.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// Failed: due again at `next_attempt_at`, or given up when `give_up`.
    Failed {
        status: Option<u16>,
        error: String,
        next_attempt_at: DateTime<Utc>,
        give_up: bool,
    },
}

/// Records an attempt of a delivery still held under `token`.
pub async fn record(
    pool: &PgPool,
    id: i64,
    token: &str,
    attempt: &Attempt,
) -> Result<(), sqlx::Error> {
    match attempt {
        Attempt::Delivered { status } => {
            sqlx::query(
                "UPDATE wabot_event_outbox \
                 SET state = 'delivered', attempts = attempts + 1, done_at = now(), \
                     last_status = $3, last_error = NULL, locked_by = NULL, locked_until = NULL \
                 WHERE id = $1 AND locked_by = $2 AND state = 'pending'",
            )
            .bind(id)
            .bind(token)
            .bind(i32::from(*status))
            .execute(pool)
            .await?;
        }
        Attempt::Failed {
            status,
            error,
            next_attempt_at,
            give_up,
        } => {
            sqlx::query(
                "UPDATE wabot_event_outbox \
                 SET state = CASE WHEN $6 THEN 'failed' ELSE 'pending' END, \
                     done_at = CASE WHEN $6 THEN now() END, \
                     attempts = attempts + 1, next_attempt_at = $5, \
                     last_status = $3, last_error = $4, locked_by = NULL, locked_until = NULL \
                 WHERE id = $1 AND locked_by = $2 AND state = 'pending'",
            )
            .bind(id)
            .bind(token)
            .bind(status.map(i32::from))
            .bind(error)
            .bind(next_attempt_at)
            .bind(give_up)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// Deletes delivered events older than `keep`, at most `limit` at a time.
pub async fn purge_delivered(
    pool: &PgPool,
    keep: Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM wabot_event_outbox WHERE id IN ( \
             SELECT id FROM wabot_event_outbox \
             WHERE state = 'delivered' AND done_at < now() - make_interval(secs => $1) \
             LIMIT $2)",
    )
    .bind(keep.as_secs_f64())
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
