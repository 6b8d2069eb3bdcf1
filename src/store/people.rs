//! People in conversations, the operator's side: who has a conversation besides the
//! bot (`wabot_handover`: an agent, a customer waiting for one, an operator's pause)
//! and who opted out of the messages a business starts (`wabot_opt_outs`).
//!
//! The turn stage reads both tables in its batch read and writes a customer's own
//! request or STOP; the functions here are what an operator's commands, `wabot
//! status`, the monitor and the sender's guard use. Nothing here marks anyone opted
//! out because of a send error: only the customer's word or an operator does.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::events::{self, EventKind, NewEvent, Subscribed};

/// The handover states in which someone besides the bot has the conversation, as
/// `wabot_handover.state` holds them. A fourth, `released` (an operator resumed the
/// bot; the turn stage starts the chatbot afresh at the customer's next message and
/// deletes the row), is the bot's.
pub const STATES: [&str; 3] = ["agent", "requested", "paused"];

/// The state `resume` leaves: the bot has the conversation back.
pub const RELEASED: &str = "released";

/// A conversation's `wabot_handover` row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Handover {
    pub conversation_id: Uuid,
    /// `agent`, `requested`, `paused`, or `released` (resumed; the bot has it).
    pub state: String,
    /// `inbox`, `echo`, `operator`, `keyword` or `node`.
    pub source: String,
    pub since: DateTime<Utc>,
    /// The agent's latest message (for `requested` and `paused`: when it was asked).
    pub last_agent_at: DateTime<Utc>,
    /// Seconds since `since`, on the database's clock.
    pub age_secs: f64,
}

const HANDOVER_COLUMNS: &str = "h.conversation_id, h.state, h.source, h.since, h.last_agent_at, \
     extract(epoch FROM now() - h.since)::float8 AS age_secs";

/// The conversation's handover row, if any.
pub async fn handover(pool: &PgPool, conversation: Uuid) -> Result<Option<Handover>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {HANDOVER_COLUMNS} FROM wabot_handover h WHERE h.conversation_id = $1"
    ))
    .bind(conversation)
    .fetch_optional(pool)
    .await
}

/// Pauses the bot in `conversation` (an operator's pause: only [`resume`] ends it),
/// whatever the row said before; returns the state it replaced (`None`: the bot had
/// the conversation). The conversation's row is locked first, as a turn commit
/// locks it, so a turn that commits after this sees the pause.
pub async fn pause(
    pool: &PgPool,
    conversation: Uuid,
    events: Subscribed,
) -> Result<Option<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    crate::store::lock_conversations(&mut tx, &[conversation]).await?;
    let before: Option<String> =
        sqlx::query_scalar("SELECT state FROM wabot_handover WHERE conversation_id = $1")
            .bind(conversation)
            .fetch_optional(&mut *tx)
            .await?;
    sqlx::query(
        "INSERT INTO wabot_handover (conversation_id, state, source, since, last_agent_at) \
         VALUES ($1, 'paused', 'operator', now(), now()) \
         ON CONFLICT (conversation_id) DO UPDATE \
         SET state = 'paused', source = 'operator', since = now(), last_agent_at = now()",
    )
    .bind(conversation)
    .execute(&mut *tx)
    .await?;
    let event = NewEvent {
        kind: EventKind::ConversationPaused,
        conversation_id: Some(conversation),
        data: json!({"conversation_id": conversation, "source": "operator", "was": before}),
    };
    events::emit(&mut tx, events, &[event]).await?;
    tx.commit().await?;
    Ok(before)
}

/// Gives `conversation` back to the bot: its handover row becomes `released` (the
/// turn stage starts the chatbot afresh at the customer's next message, and deletes
/// the row); returns the row as it was (`None`: the bot had it already: no row, or
/// released). Contexts are left to the turn stage.
pub async fn resume(
    pool: &PgPool,
    conversation: Uuid,
    events: Subscribed,
) -> Result<Option<Handover>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    crate::store::lock_conversations(&mut tx, &[conversation]).await?;
    let before: Option<Handover> = sqlx::query_as(&format!(
        "SELECT {HANDOVER_COLUMNS} FROM wabot_handover h \
         WHERE h.conversation_id = $1 AND h.state <> $2"
    ))
    .bind(conversation)
    .bind(RELEASED)
    .fetch_optional(&mut *tx)
    .await?;
    if before.is_some() {
        sqlx::query(
            "UPDATE wabot_handover \
             SET state = $2, source = 'operator', since = now(), last_agent_at = now() \
             WHERE conversation_id = $1",
        )
        .bind(conversation)
        .bind(RELEASED)
        .execute(&mut *tx)
        .await?;
        let event = NewEvent {
            kind: EventKind::ConversationResumed,
            conversation_id: Some(conversation),
            data: json!({
                "conversation_id": conversation, "source": "operator",
                "was": before.as_ref().map(|h| h.state.as_str()),
            }),
        };
        events::emit(&mut tx, events, &[event]).await?;
    }
    tx.commit().await?;
    Ok(before)
}

/// A conversation someone besides the bot has, with its customer.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Waiting {
    pub conversation_id: Uuid,
    /// The customer's wa_id: the conversation key's, else (a conversation WhatsApp
    /// Builder made) the sender of its latest message from Meta.
    pub customer_wa_id: Option<String>,
    pub business_phone_number_id: Option<String>,
    pub state: String,
    pub source: String,
    pub since: DateTime<Utc>,
    pub last_agent_at: DateTime<Utc>,
    /// Seconds since `since`, on the database's clock.
    pub age_secs: f64,
}

/// Conversations in one of `states`, the longest-waiting first, at most `limit`.
pub async fn waiting(
    pool: &PgPool,
    states: &[&str],
    limit: i64,
) -> Result<Vec<Waiting>, sqlx::Error> {
    let states: Vec<&str> = states.to_vec();
    sqlx::query_as(
        "SELECT h.conversation_id, \
                coalesce(k.customer_wa_id, ( \
                    SELECT u.\"phoneNumber\" FROM messages m \
                    JOIN users u ON u.id = m.\"senderId\" \
                    WHERE m.\"conversationId\" = h.conversation_id AND m.content ? 'raw' \
                    ORDER BY m.\"timestamp\" DESC LIMIT 1)) AS customer_wa_id, \
                k.business_phone_number_id, h.state, h.source, h.since, h.last_agent_at, \
                extract(epoch FROM now() - h.since)::float8 AS age_secs \
         FROM wabot_handover h \
         LEFT JOIN conversation_keys k ON k.conversation_id = h.conversation_id \
         WHERE h.state = ANY($1) \
         ORDER BY h.since, h.conversation_id LIMIT $2",
    )
    .bind(&states)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How many conversations are in each handover state; every state of [`STATES`] is
/// there, 0 when none is in it.
pub async fn counts(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let found: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM wabot_handover GROUP BY state")
            .fetch_all(pool)
            .await?;
    Ok(STATES
        .iter()
        .map(|s| {
            let n = found.iter().find(|(f, _)| f == s).map_or(0, |(_, n)| *n);
            ((*s).to_owned(), n)
        })
        .collect())
}

/// A `wabot_opt_outs` row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct OptOut {
    pub business_phone_number_id: String,
    pub customer_wa_id: String,
    pub opted_out_at: DateTime<Utc>,
    /// `keyword` (the customer's word) or `operator`.
    pub source: String,
    /// The word the customer wrote, when it was theirs.
    pub word: Option<String>,
}

/// Opts `customer` out of what `business` starts, as an operator; returns the row
/// that was there already (`None`: this made it), which is left as it was.
pub async fn opt_out(
    pool: &PgPool,
    business: &str,
    customer: &str,
    events: Subscribed,
) -> Result<Option<OptOut>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let made = sqlx::query(
        "INSERT INTO wabot_opt_outs (business_phone_number_id, customer_wa_id, source) \
         VALUES ($1, $2, 'operator') ON CONFLICT DO NOTHING",
    )
    .bind(business)
    .bind(customer)
    .execute(&mut *tx)
    .await?;
    if made.rows_affected() == 1 {
        let kind = EventKind::CustomerOptedOut;
        customer_event(&mut tx, events, kind, business, customer).await?;
        tx.commit().await?;
        return Ok(None);
    }
    tx.rollback().await?;
    Ok(opt_outs(pool, customer)
        .await?
        .into_iter()
        .find(|o| o.business_phone_number_id == business))
}

/// Opts `customer` in again for `business`; returns the row it deleted.
pub async fn opt_in(
    pool: &PgPool,
    business: &str,
    customer: &str,
    events: Subscribed,
) -> Result<Option<OptOut>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let gone: Option<OptOut> = sqlx::query_as(
        "DELETE FROM wabot_opt_outs \
         WHERE business_phone_number_id = $1 AND customer_wa_id = $2 \
         RETURNING business_phone_number_id, customer_wa_id, opted_out_at, source, word",
    )
    .bind(business)
    .bind(customer)
    .fetch_optional(&mut *tx)
    .await?;
    if gone.is_some() {
        let kind = EventKind::CustomerOptedIn;
        customer_event(&mut tx, events, kind, business, customer).await?;
    }
    tx.commit().await?;
    Ok(gone)
}

/// An operator's opt-out or opt-in, as an event: ordered with the customer's
/// conversation on that number when there is one.
async fn customer_event(
    conn: &mut sqlx::PgConnection,
    events: Subscribed,
    kind: EventKind,
    business: &str,
    customer: &str,
) -> Result<(), sqlx::Error> {
    if !events.contains(kind) {
        return Ok(());
    }
    let conversation_id: Option<Uuid> = sqlx::query_scalar(
        "SELECT conversation_id FROM conversation_keys \
         WHERE business_phone_number_id = $1 AND customer_wa_id = $2",
    )
    .bind(business)
    .bind(customer)
    .fetch_optional(&mut *conn)
    .await?;
    let event = NewEvent {
        kind,
        conversation_id,
        data: json!({
            "conversation_id": conversation_id, "customer": customer,
            "business_phone_number_id": business, "source": "operator",
        }),
    };
    events::emit(conn, events, &[event]).await
}

/// The customer's opt-outs, one per business number.
pub async fn opt_outs(pool: &PgPool, customer: &str) -> Result<Vec<OptOut>, sqlx::Error> {
    sqlx::query_as(
        "SELECT business_phone_number_id, customer_wa_id, opted_out_at, source, word \
         FROM wabot_opt_outs WHERE customer_wa_id = $1 ORDER BY business_phone_number_id",
    )
    .bind(customer)
    .fetch_all(pool)
    .await
}

/// Which of the (business number, customer wa_id) pairs are opted out, in one
/// statement.
pub async fn opted_out_among(
    pool: &PgPool,
    pairs: &[(&str, &str)],
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let businesses: Vec<&str> = pairs.iter().map(|(b, _)| *b).collect();
    let customers: Vec<&str> = pairs.iter().map(|(_, c)| *c).collect();
    sqlx::query_as(
        "SELECT o.business_phone_number_id::text, o.customer_wa_id::text \
         FROM unnest($1::text[], $2::text[]) AS i(business, customer) \
         JOIN wabot_opt_outs o \
           ON o.business_phone_number_id = i.business AND o.customer_wa_id = i.customer",
    )
    .bind(&businesses)
    .bind(&customers)
    .fetch_all(pool)
    .await
}

/// The business numbers `customer` has conversations with (the conversation keys).
pub async fn business_numbers_of(
    pool: &PgPool,
    customer: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT business_phone_number_id::text FROM conversation_keys \
         WHERE customer_wa_id = $1 ORDER BY 1",
    )
    .bind(customer)
    .fetch_all(pool)
    .await
}
