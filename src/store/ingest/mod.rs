//! Webhook ingest: everything one POST carries, stored in one transaction.
//!
//! The raw event, the customer and business users, the 1:1 conversation and its
//! participants, each new message, its turn job, the conversation's preview and
//! 24-hour window, and every status commit together or not at all, so a 200 to Meta
//! always means "stored" and anything else makes Meta deliver again.
//!
//! Duplicates never get past the database: a message is inserted with `ON CONFLICT
//! DO NOTHING` against the unique wamid index, and its turn job is created only by
//! the insert that won (one statement), so two deliveries of one wamid, concurrent
//! or not, make one row and one job. A new customer's conversation is claimed
//! through the `conversation_keys` primary key, on which a concurrent transaction
//! waits for the first one and then reads its row.

pub mod content;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::store::statuses::{self, StatusOutcome};
use crate::text::truncate_chars;
use crate::whatsapp::webhook::{Envelope, Message, MessageKind, MessagesValue, Status};

/// users."phoneNumber" is a varchar(20); a longer sender id cannot be a wa_id.
const PHONE_MAX_CHARS: usize = 20;
/// Meta's wamids are under a hundred characters; a far longer one could not be
/// indexed (btree entries are limited to about 2.7 kB) and would fail the whole POST
/// on every retry.
pub const WAMID_MAX_CHARS: usize = 512;
/// users.name is a varchar(100).
const NAME_MAX_CHARS: usize = 100;
/// How often a transaction that lost a deadlock or serialization race is re-run.
const MAX_ATTEMPTS: u32 = 3;

/// What one POST did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub event_id: i64,
    pub messages_total: u32,
    /// Messages inserted now (each with a turn job).
    pub messages_new: u32,
    /// Messages that cannot become rows; they stay in the raw event.
    pub messages_skipped: u32,
    pub statuses_total: u32,
    /// Statuses recorded now, whether applied or waiting for their message.
    pub statuses_new: u32,
    /// Of those, the ones still waiting for their message.
    pub statuses_pending: u32,
    /// `value.errors[]` entries in the POST.
    pub errors: u32,
}

/// Why a POST could not be stored. Either way Meta must get a non-200 and retry.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The database cannot be reached (pool timeout, broken connection, server
    /// shutting down): a 503, so Meta retries.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database refused a statement: a bug or a schema problem.
    #[error("the database refused the webhook")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for IngestError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            IngestError::Unavailable(e)
        } else {
            IngestError::Database(e)
        }
    }
}

/// Stores a signature-verified webhook: `body` is the parsed JSON, `envelope` its
/// typed reading. Commits before returning `Ok`.
#[tracing::instrument(skip_all, fields(entries = envelope.entry.len()))]
pub async fn ingest(
    pool: &PgPool,
    body: &Value,
    envelope: &Envelope,
) -> Result<IngestOutcome, IngestError> {
    let received_at = Utc::now();
    let mut attempt = 1;
    loop {
        match ingest_once(pool, body, envelope, received_at).await {
            Err(e) if attempt < MAX_ATTEMPTS && is_lost_race(&e) => {
                tracing::info!(attempt, error = %e, "ingest lost a lock race; retrying");
                attempt += 1;
            }
            result => return result.map_err(IngestError::from),
        }
    }
}

async fn ingest_once(
    pool: &PgPool,
    body: &Value,
    envelope: &Envelope,
    received_at: DateTime<Utc>,
) -> Result<IngestOutcome, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut outcome = IngestOutcome::default();
    let mut cache = Cache::default();

    // Ordered by business number and customer so concurrent webhooks take their
    // user, key and conversation locks in one order; the sort is stable, so one
    // customer's messages keep Meta's order (and their turn jobs that order).
    let mut inbound: Vec<(&MessagesValue, &Message)> = envelope
        .messages_values()
        .flat_map(|v| v.messages.iter().map(move |m| (v, m)))
        .collect();
    inbound.sort_by(|a, b| {
        (a.0.metadata.phone_number_id.as_deref(), a.1.from.as_deref())
            .cmp(&(b.0.metadata.phone_number_id.as_deref(), b.1.from.as_deref()))
    });
    for (value, message) in inbound {
        outcome.messages_total += 1;
        match store_message(&mut tx, &mut cache, value, message, received_at).await? {
            Stored::New => outcome.messages_new += 1,
            Stored::Duplicate => {}
            Stored::Skipped => outcome.messages_skipped += 1,
        }
    }

    let mut updates: Vec<(Uuid, LatestMessage)> = cache.latest.into_iter().collect();
    updates.sort_by_key(|(id, _)| *id);
    for (conversation_id, latest) in updates {
        update_conversation(&mut tx, conversation_id, &latest).await?;
    }

    let mut reported: Vec<&Status> = envelope
        .messages_values()
        .flat_map(|v| &v.statuses)
        .collect();
    reported.sort_by(|a, b| a.id.cmp(&b.id));
    for status in reported {
        outcome.statuses_total += 1;
        match statuses::record(&mut tx, status).await? {
            StatusOutcome::Applied => outcome.statuses_new += 1,
            StatusOutcome::Pending => {
                outcome.statuses_new += 1;
                outcome.statuses_pending += 1;
            }
            StatusOutcome::Duplicate | StatusOutcome::Skipped => {}
        }
    }

    let mut errors = Vec::new();
    for value in envelope.messages_values().filter(|v| !v.errors.is_empty()) {
        for e in &value.errors {
            tracing::warn!(
                code = e.code,
                title = e.title.as_deref().unwrap_or(""),
                details = e.details().unwrap_or(""),
                phone_number_id = value.metadata.phone_number_id.as_deref().unwrap_or(""),
                "Meta reported an error in a webhook"
            );
        }
        outcome.errors += value.errors.len() as u32;
        errors.push(json!({
            "phone_number_id": value.metadata.phone_number_id,
            "display_phone_number": value.metadata.display_phone_number,
            "errors": content::errors_json(&value.errors),
        }));
    }

    outcome.event_id = sqlx::query_scalar(
        "INSERT INTO webhook_events \
            (received_at, object, fields, body, messages_total, messages_new, \
             messages_skipped, statuses_total, statuses_new, errors) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(received_at)
    .bind(envelope.object.as_deref())
    .bind(envelope.fields())
    .bind(body)
    .bind(outcome.messages_total as i32)
    .bind(outcome.messages_new as i32)
    .bind(outcome.messages_skipped as i32)
    .bind(outcome.statuses_total as i32)
    .bind(outcome.statuses_new as i32)
    .bind(Value::Array(errors))
    .fetch_one(&mut *tx)
    .await?;

    tx.commit().await?;
    Ok(outcome)
}

enum Stored {
    New,
    Duplicate,
    Skipped,
}

/// The newest new message of a conversation in this POST.
struct LatestMessage {
    at: DateTime<Utc>,
    preview: String,
}

/// Ids already resolved in this transaction.
#[derive(Default)]
struct Cache {
    business: HashMap<String, Uuid>,
    customers: HashMap<String, Uuid>,
    conversations: HashMap<(String, String), Uuid>,
    latest: HashMap<Uuid, LatestMessage>,
}

async fn store_message(
    conn: &mut PgConnection,
    cache: &mut Cache,
    value: &MessagesValue,
    message: &Message,
    received_at: DateTime<Utc>,
) -> Result<Stored, sqlx::Error> {
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    let (Some(wamid), Some(from), Some(business)) = (
        non_empty(&message.id),
        non_empty(&message.from),
        non_empty(&value.metadata.phone_number_id),
    ) else {
        tracing::warn!(
            "a webhook message lacks its id, sender or business number; kept in the raw event only"
        );
        return Ok(Stored::Skipped);
    };
    if from.chars().count() > PHONE_MAX_CHARS
        || business.chars().count() > PHONE_MAX_CHARS
        || wamid.chars().count() > WAMID_MAX_CHARS
    {
        tracing::warn!(
            "a webhook message's sender, business number or id is too long; kept in the raw event only"
        );
        return Ok(Stored::Skipped);
    }

    let business_user = match cache.business.get(&business) {
        Some(id) => *id,
        None => {
            let id = upsert_user(conn, &business, "Business", "business", false).await?;
            cache.business.insert(business.clone(), id);
            id
        }
    };
    let customer = match cache.customers.get(&from) {
        Some(id) => *id,
        None => {
            let profile_name = value.profile_name(&from);
            let name = truncate_chars(profile_name.unwrap_or(&from), NAME_MAX_CHARS);
            let id = upsert_user(conn, &from, &name, "user", profile_name.is_some()).await?;
            cache.customers.insert(from.clone(), id);
            id
        }
    };
    let key = (business.clone(), from.clone());
    let conversation = match cache.conversations.get(&key) {
        Some(id) => *id,
        None => {
            let id = find_or_create_conversation(conn, &business, &from, business_user, customer)
                .await?;
            // Concurrent webhooks of one conversation queue here until this
            // transaction ends, so turn job ids (which order the conversation's turns)
            // follow commit order: a job committed later never gets a smaller id.
            sqlx::query("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            cache.conversations.insert(key, id);
            id
        }
    };

    let reacted_row = match &message.kind {
        MessageKind::Reaction(r) => match r.message_id.as_deref() {
            Some(reacted) => {
                sqlx::query_scalar(
                    "SELECT id FROM messages WHERE content ->> 'whatsappMessageId' = $1",
                )
                .bind(reacted)
                .fetch_optional(&mut *conn)
                .await?
            }
            None => None,
        },
        _ => None,
    };
    let stored = content::build(message, &wamid, reacted_row);
    let at = message
        .timestamp
        .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
        .unwrap_or(received_at);

    // The turn job is created by the same statement that inserts the message, and
    // only when the insert happened.
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "WITH m AS ( \
            INSERT INTO messages (\"conversationId\", \"senderId\", type, content, status, \"timestamp\") \
            VALUES ($1, $2, $3::messages_type_enum, $4, 'delivered', $5) \
            ON CONFLICT DO NOTHING RETURNING id) \
         INSERT INTO turn_jobs (conversation_id, message_id, kind) \
         SELECT $1, id, 'inbound' FROM m RETURNING message_id",
    )
    .bind(conversation)
    .bind(customer)
    .bind(stored.db_type)
    .bind(&stored.content)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    if inserted.is_none() {
        return Ok(Stored::Duplicate);
    }
    let latest = cache.latest.entry(conversation).or_insert(LatestMessage {
        at,
        preview: String::new(),
    });
    if at >= latest.at {
        latest.at = at;
        latest.preview = stored.preview;
    }
    Ok(Stored::New)
}

/// The user with this phone number, created when missing. `update_name` renames an
/// existing user (a customer's new profile name); the business user's name is left
/// as whoever created it chose. The read comes first so the common case takes no
/// row lock: a locked user row would serialise every webhook of that number.
async fn upsert_user(
    conn: &mut PgConnection,
    phone: &str,
    name: &str,
    role: &str,
    update_name: bool,
) -> Result<Uuid, sqlx::Error> {
    let existing: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM users WHERE \"phoneNumber\" = $1")
            .bind(phone)
            .fetch_optional(&mut *conn)
            .await?;
    match existing {
        Some((id, current)) if !update_name || current == name => return Ok(id),
        Some((id, _)) => {
            sqlx::query("UPDATE users SET name = $2, \"updatedAt\" = now() WHERE id = $1")
                .bind(id)
                .bind(name)
                .execute(&mut *conn)
                .await?;
            return Ok(id);
        }
        None => {}
    }
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO users (\"phoneNumber\", name, role) VALUES ($1, $2, $3) \
         ON CONFLICT (\"phoneNumber\") DO NOTHING RETURNING id",
    )
    .bind(phone)
    .bind(name)
    .bind(role)
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(id) => Ok(id),
        // A concurrent transaction created the user first; its insert has committed
        // (ours waited for it), so this read sees the row.
        None => {
            sqlx::query_scalar("SELECT id FROM users WHERE \"phoneNumber\" = $1")
                .bind(phone)
                .fetch_one(&mut *conn)
                .await
        }
    }
}

/// The 1:1 conversation of a business number and a customer. The key row is the
/// claim: of two transactions inserting it, the second waits for the first and then
/// reads the first one's conversation. A conversation WhatsApp Builder created
/// before wabot (both users as participants, no key yet) is adopted.
async fn find_or_create_conversation(
    conn: &mut PgConnection,
    business: &str,
    customer_wa_id: &str,
    business_user: Uuid,
    customer: Uuid,
) -> Result<Uuid, sqlx::Error> {
    const SELECT_KEY: &str = "SELECT conversation_id FROM conversation_keys \
         WHERE business_phone_number_id = $1 AND customer_wa_id = $2";
    let keyed: Option<Uuid> = sqlx::query_scalar(SELECT_KEY)
        .bind(business)
        .bind(customer_wa_id)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(id) = keyed {
        return Ok(id);
    }
    let adopted: Option<Uuid> = sqlx::query_scalar(
        "SELECT c.id FROM conversations c \
         JOIN conversation_participants a ON a.\"conversationId\" = c.id AND a.\"userId\" = $1 \
         JOIN conversation_participants b ON b.\"conversationId\" = c.id AND b.\"userId\" = $2 \
         WHERE $1 <> $2 \
           AND NOT EXISTS (SELECT 1 FROM conversation_keys k WHERE k.conversation_id = c.id) \
         ORDER BY c.\"createdAt\" LIMIT 1",
    )
    .bind(customer)
    .bind(business_user)
    .fetch_optional(&mut *conn)
    .await?;
    let candidate = adopted.unwrap_or_else(Uuid::new_v4);
    let claimed: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO conversation_keys (business_phone_number_id, customer_wa_id, conversation_id) \
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING conversation_id",
    )
    .bind(business)
    .bind(customer_wa_id)
    .bind(candidate)
    .fetch_optional(&mut *conn)
    .await?;
    if claimed.is_none() {
        return sqlx::query_scalar(SELECT_KEY)
            .bind(business)
            .bind(customer_wa_id)
            .fetch_one(&mut *conn)
            .await;
    }
    if adopted.is_none() {
        sqlx::query("INSERT INTO conversations (id) VALUES ($1)")
            .bind(candidate)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO conversation_participants (\"conversationId\", \"userId\") \
             VALUES ($1, $2), ($1, $3) ON CONFLICT DO NOTHING",
        )
        .bind(candidate)
        .bind(customer)
        .bind(business_user)
        .execute(&mut *conn)
        .await?;
    }
    Ok(candidate)
}

/// Moves the conversation's preview and times forward (never back: deliveries come
/// in any order) and recomputes the 24-hour window from the newest customer message.
async fn update_conversation(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    latest: &LatestMessage,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE conversations SET \
            \"lastMessage\" = CASE WHEN \"lastMessageAt\" IS NULL OR \"lastMessageAt\" <= $2 \
                                   THEN $3 ELSE \"lastMessage\" END, \
            \"lastMessageAt\" = GREATEST(\"lastMessageAt\", $2), \
            \"lastCustomerMessageAt\" = GREATEST(\"lastCustomerMessageAt\", $2), \
            \"isWindowOpen\" = GREATEST(\"lastCustomerMessageAt\", $2) > now() - interval '24 hours', \
            \"updatedAt\" = now() \
         WHERE id = $1",
    )
    .bind(conversation_id)
    .bind(latest.at)
    .bind(&latest.preview)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// Replaces NUL characters in every string of `value` with U+FFFD. PostgreSQL's
/// jsonb and text cannot hold U+0000, and one such character would otherwise fail
/// the whole POST on every one of Meta's retries. Call it before parsing the
/// envelope, so the typed values are scrubbed too. Returns whether it changed
/// anything.
pub fn make_storable(value: &mut Value) -> bool {
    match value {
        Value::String(s) if s.contains('\0') => {
            *s = s.replace('\0', "\u{FFFD}");
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |c, v| make_storable(v) | c),
        Value::Object(map) => {
            let keys_with_nul: Vec<String> =
                map.keys().filter(|k| k.contains('\0')).cloned().collect();
            let changed = !keys_with_nul.is_empty();
            for key in keys_with_nul {
                if let Some(v) = map.remove(&key) {
                    map.insert(key.replace('\0', "\u{FFFD}"), v);
                }
            }
            map.values_mut().fold(changed, |c, v| make_storable(v) | c)
        }
        _ => false,
    }
}

/// Errors that mean "the database is not there right now" rather than "the
/// database says no".
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Connection exceptions, insufficient resources, operator intervention
            // (shutdown), and lock races that outlived the retries.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    }
}

fn is_lost_race(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("40001") | Some("40P01")))
}
