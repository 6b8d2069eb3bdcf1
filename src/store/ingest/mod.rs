//! Webhook ingest: a batch of webhooks, stored in one transaction with set-based
//! statements.
//!
//! For every webhook of the batch, the raw event, the customer and business users,
//! the 1:1 conversation and its participants, each new message, its turn job, the
//! conversation's preview and 24-hour window, and every status commit together or
//! not at all, so a 200 to Meta always means "stored". A batch costs about eight
//! statements and one commit however many webhooks it holds (a batch of status
//! webhooks: two, since their status rows are their record and no raw event is
//! written, see `RawEvent::InStatuses`); the caller (the ingest
//! stage) retries a failed batch member by member, so one poisonous webhook gets
//! its own error and the others are stored.
//!
//! Duplicates never get past the database: a message is inserted with `ON CONFLICT
//! DO NOTHING` against the unique wamid index, and its turn job is created only from
//! the rows that insert returned (one statement), so two deliveries of one wamid,
//! concurrent or not, make one row and one job. A new customer's conversation is
//! claimed through the `conversation_keys` primary key, on which a concurrent
//! transaction waits for the first one and then reads its row.
//!
//! A coexistence echo (the business's own message, typed in the WhatsApp Business
//! app) takes the same path as an inbound message, as the business's outbound
//! message: the business user is its sender, its status is `sent`, it gets no turn
//! job and leaves the 24-hour window alone. Each conversation where a batch stored
//! a new echo gets an agent (`wabot_handover`, source `echo`) in one more statement,
//! which a batch without a new echo does not run. A repeated echo, or an echo of a
//! wamid already stored (a message wabot sent itself), inserts nothing and so marks
//! nothing.
//!
//! The rows come in plain: the caller has read Meta's envelope (`whatsapp/`) and
//! built WhatsApp Builder's message content; this module knows only tables.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::store::events::{self, EventKind, Subscribed};
use crate::store::statuses::{self, StatusOutcome, StatusRow};

/// Meta's wamids are under a hundred characters; a far longer one could not be
/// indexed (btree entries are limited to about 2.7 kB) and would fail the whole POST
/// on every retry.
pub const WAMID_MAX_CHARS: usize = 512;
/// users."phoneNumber" (and the conversation key's columns) are varchar(20).
pub const PHONE_MAX_CHARS: usize = 20;
/// users.name is a varchar(100).
pub const NAME_MAX_CHARS: usize = 100;
/// wabot_customer_ids.bsuid (and a conversation key's customer) is a varchar(64);
/// Meta's BSUIDs are about 25 characters.
pub const BSUID_MAX_CHARS: usize = 64;
/// How often a transaction that lost a deadlock or serialization race is re-run.
const MAX_ATTEMPTS: u32 = 3;

/// One signature-verified webhook, as rows.
#[derive(Debug, Clone)]
pub struct WebhookRows {
    pub received_at: DateTime<Utc>,
    pub object: Option<String>,
    /// The distinct `field`s of its changes.
    pub fields: Vec<String>,
    /// The raw event: the webhook's JSON text, or the stored event these rows were
    /// read again from.
    pub raw: RawEvent,
    pub messages: Vec<InboundRow>,
    /// Messages that cannot become rows (no wamid, sender or business number, or a
    /// number wabot does not serve); they stay in the raw event.
    pub messages_skipped: u32,
    pub statuses: Vec<StatusRow>,
    /// Statuses that cannot be recorded (no wamid).
    pub statuses_skipped: u32,
    /// `value.errors[]` of every change, with the change's metadata.
    pub errors: Value,
    pub errors_count: u32,
    /// `message_template_status_update` changes, applied to `wabot_templates`.
    pub template_updates: Vec<crate::store::templates::StatusUpdateRow>,
}

/// A webhook's raw event.
#[derive(Debug, Clone)]
pub enum RawEvent {
    /// A webhook as received: its JSON text, stored as a new `webhook_events` row.
    /// The text Meta signed goes to PostgreSQL as it is (it parses jsonb itself):
    /// building it again from the parsed value cost more CPU than the parse. It must
    /// hold no `\u0000`, which jsonb refuses (see [`make_storable`]).
    New(String),
    /// The rows are read again from the stored `webhook_events` row with this id
    /// (`wabot replay`): no second raw event is inserted, and the outcome's
    /// `event_id` is that row's.
    Stored(i64),
    /// A webhook of statuses only, every one of which is a row: each
    /// `message_statuses` row holds its status whole (the columns, and `extra` for
    /// the rest of Meta's object), so no raw event is stored and the outcome's
    /// `event_id` is 0. Six webhooks in seven are such.
    InStatuses,
}

impl WebhookRows {
    /// The stored event these rows were read again from, if they were.
    pub fn replay_of(&self) -> Option<i64> {
        match self.raw {
            RawEvent::Stored(id) => Some(id),
            RawEvent::New(_) | RawEvent::InStatuses => None,
        }
    }
}

/// One inbound message (or a coexistence echo: `echo`), ready to store.
#[derive(Debug, Clone)]
pub struct InboundRow {
    /// The business number's phone_number_id (the business user's "phoneNumber").
    pub business: String,
    /// The customer as the message names them: their wa_id (phone number) when it
    /// has one, else their BSUID (`ids.bsuid`).
    pub customer: String,
    /// The customer's business-scoped user id, with their parent BSUID and
    /// username, when Meta sent it.
    pub ids: Option<CustomerIds>,
    /// The customer's profile name (or username), or the wa_id / BSUID.
    pub customer_name: String,
    /// Whether `customer_name` is a profile name that should rename the user.
    pub rename: bool,
    pub wamid: String,
    /// `messages.type`.
    pub db_type: &'static str,
    /// `messages.content` (WhatsApp Builder's keys and Meta's message under `raw`).
    pub content: Value,
    pub at: DateTime<Utc>,
    /// The conversation's `lastMessage` for this message.
    pub preview: String,
    /// The wamid a reaction refers to: `content.reactedMessageId` is set to that
    /// message's row id when it is stored.
    pub reacted_wamid: Option<String>,
    /// Whether the message gets a turn job (false for a business number wabot does
    /// not serve: the message is kept, no chatbot answers it; false for an echo).
    pub turn: bool,
    /// A message the business sent to `customer` from the WhatsApp Business app (an
    /// `smb_message_echoes` item): stored as the business user's outbound message,
    /// status `sent`; when new, an agent has the conversation from now on.
    pub echo: bool,
}

/// Who a customer is, beyond their phone number (`wabot_customer_ids`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerIds {
    pub bsuid: String,
    pub parent_bsuid: Option<String>,
    pub username: Option<String>,
}

impl InboundRow {
    /// The customer's wa_id, when the message names it.
    pub fn phone(&self) -> Option<&str> {
        match &self.ids {
            Some(ids) if ids.bsuid == self.customer => None,
            _ => Some(&self.customer),
        }
    }

    pub fn bsuid(&self) -> Option<&str> {
        self.ids.as_ref().map(|i| i.bsuid.as_str())
    }
}

/// What one webhook did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// The `webhook_events` row; 0 when none was stored (`RawEvent::InStatuses`).
    pub event_id: i64,
    /// Messages and echoes in the POST.
    pub messages_total: u32,
    /// Messages and echoes inserted now (each message of a served number with a
    /// turn job).
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

/// A turn job created by a batch.
#[derive(Debug, Clone)]
pub struct NewTurn {
    pub job_id: i64,
    pub conversation_id: Uuid,
    pub message_id: Uuid,
    /// The lease token when the job was created leased to the caller (its
    /// conversation had nothing older unfinished); `None` when it waits its turn.
    pub lease: Option<String>,
    /// Meta's message as received (`content.raw`).
    pub raw: Value,
}

/// What a committed batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// One per webhook, in order.
    pub webhooks: Vec<IngestOutcome>,
    pub turns: Vec<NewTurn>,
}

/// Who new turn jobs are leased to: `holder` is a prefix (the process); each job
/// gets `holder:<uuid>`, a token of its own claim.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    pub holder: &'a str,
    pub duration: Duration,
}

/// Why a batch could not be stored. Either way Meta must get a non-200 and retry.
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

/// Stores a batch of webhooks in one transaction and commits. New turn jobs are
/// leased to `lease`, when given, where their conversation has nothing older
/// unfinished.
pub async fn ingest_batch(
    pool: &PgPool,
    batch: &[WebhookRows],
    lease: Option<Lease<'_>>,
    events: Subscribed,
) -> Result<BatchOutcome, IngestError> {
    let mut attempt = 1;
    loop {
        let result = async {
            let mut tx = pool.begin().await?;
            let outcome = store_batch(&mut tx, batch, lease, events).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(outcome)
        }
        .await;
        match result {
            Err(e) if attempt < MAX_ATTEMPTS && is_lost_race(&e) => {
                tracing::info!(attempt, error = %e, "ingest lost a lock race; retrying");
                attempt += 1;
            }
            result => return result.map_err(IngestError::from),
        }
    }
}

async fn store_batch(
    conn: &mut PgConnection,
    batch: &[WebhookRows],
    lease: Option<Lease<'_>>,
    events: Subscribed,
) -> Result<BatchOutcome, sqlx::Error> {
    let mut outcomes: Vec<IngestOutcome> = batch
        .iter()
        .map(|w| IngestOutcome {
            messages_total: w.messages.len() as u32 + w.messages_skipped,
            messages_skipped: w.messages_skipped,
            statuses_total: w.statuses.len() as u32 + w.statuses_skipped,
            errors: w.errors_count,
            ..IngestOutcome::default()
        })
        .collect();

    // The messages of the batch, a wamid once (the first delivery wins; a repeat in
    // the same batch is a duplicate like any other), in Meta's order per webhook.
    let updates: Vec<_> = batch
        .iter()
        .flat_map(|w| w.template_updates.iter().cloned())
        .collect();
    crate::store::templates::apply_status_updates(conn, &updates).await?;

    let mut seen = HashSet::new();
    let mut inbound: Vec<(usize, &InboundRow)> = Vec::new();
    for (i, webhook) in batch.iter().enumerate() {
        for m in &webhook.messages {
            if seen.insert(m.wamid.as_str()) {
                inbound.push((i, m));
            }
        }
    }
    let mut turns = Vec::new();
    if !inbound.is_empty() {
        let parties = resolve_users(conn, &inbound).await?;
        let conversations = resolve_conversations(conn, &inbound, &parties).await?;
        // Concurrent batches of one conversation queue here until this transaction
        // ends (in id order, so batches never deadlock on them): turn job ids, which
        // order a conversation's turns, follow commit order, and whether a job can be
        // leased at once is decided on committed facts.
        let ids: Vec<Uuid> = conversations.values().copied().collect();
        crate::store::lock_conversations(conn, &ids).await?;
        update_users(conn, &parties).await?;
        let (inserted, new_turns) =
            insert_messages(conn, &inbound, &parties, &conversations, lease).await?;
        turns = new_turns;
        // A customer's new message is what a turn job is made for.
        if events.contains(EventKind::MessageReceived) && !turns.is_empty() {
            let ids: Vec<Uuid> = turns.iter().map(|t| t.message_id).collect();
            events::emit_messages(conn, events, EventKind::MessageReceived, &ids).await?;
        }
        // Media messages get their download job in this transaction (none: no statement).
        crate::store::media::enqueue_batch(conn, inbound.iter().map(|(_, m)| *m), &inserted)
            .await?;
        // The newest new message of each conversation moves its preview; the newest
        // new customer message, its window.
        let mut latest: BTreeMap<Uuid, Latest> = BTreeMap::new();
        let mut agents: BTreeSet<Uuid> = BTreeSet::new();
        for ((i, m), customer) in inbound.iter().zip(&parties.customers) {
            if !inserted.contains(&m.wamid) {
                continue;
            }
            outcomes[*i].messages_new += 1;
            let Some(&conversation) = conversations.get(&(m.business.as_str(), *customer)) else {
                continue;
            };
            let entry = latest.entry(conversation).or_insert(Latest {
                at: m.at,
                preview: &m.preview,
                customer_at: None,
            });
            if m.at >= entry.at {
                (entry.at, entry.preview) = (m.at, &m.preview);
            }
            if m.echo {
                agents.insert(conversation);
            } else {
                entry.customer_at = entry.customer_at.max(Some(m.at));
            }
        }
        update_conversations(conn, &latest).await?;
        if !agents.is_empty() {
            note_agents(conn, &agents).await?;
        }
    }

    let statuses: Vec<(usize, &StatusRow)> = batch
        .iter()
        .enumerate()
        .flat_map(|(i, w)| w.statuses.iter().map(move |s| (i, s)))
        .collect();
    if !statuses.is_empty() {
        let rows: Vec<&StatusRow> = statuses.iter().map(|(_, s)| *s).collect();
        let recorded = statuses::record_batch(conn, &rows).await?;
        for ((i, _), outcome) in statuses.iter().zip(recorded) {
            match outcome {
                StatusOutcome::Applied => outcomes[*i].statuses_new += 1,
                StatusOutcome::Pending => {
                    outcomes[*i].statuses_new += 1;
                    outcomes[*i].statuses_pending += 1;
                }
                StatusOutcome::Duplicate => {}
            }
        }
    }

    // Replayed webhooks keep the event they were read from; only new ones get a row.
    let mut fresh: Vec<(usize, &str)> = Vec::new();
    for (i, webhook) in batch.iter().enumerate() {
        match &webhook.raw {
            RawEvent::New(text) => fresh.push((i, text)),
            RawEvent::Stored(id) => outcomes[i].event_id = *id,
            RawEvent::InStatuses => {}
        }
    }
    if !fresh.is_empty() {
        let rows: Vec<&WebhookRows> = fresh.iter().map(|&(i, _)| &batch[i]).collect();
        let bodies: Vec<&str> = fresh.iter().map(|&(_, text)| text).collect();
        let counts: Vec<&IngestOutcome> = fresh.iter().map(|&(i, _)| &outcomes[i]).collect();
        let ids = insert_events(conn, &rows, &bodies, &counts).await?;
        for (&(i, _), id) in fresh.iter().zip(ids) {
            outcomes[i].event_id = id;
        }
    }
    Ok(BatchOutcome {
        webhooks: outcomes,
        turns,
    })
}

/// The conversation of each (business number, customer phone number or BSUID: those
/// in `bsuids`) pair, and the
/// business number's user: made (users, conversation, key) as ingest makes them when
/// the customer writes first, for a send the business starts (templates,
/// campaigns).
pub async fn conversations_for(
    conn: &mut PgConnection,
    pairs: &[(String, String)],
    bsuids: &HashSet<String>,
) -> Result<HashMap<(String, String), (Uuid, Uuid)>, sqlx::Error> {
    let rows: Vec<InboundRow> = pairs
        .iter()
        .map(|(business, customer)| InboundRow {
            business: business.clone(),
            customer: customer.clone(),
            // A customer known only by their BSUID is keyed by it.
            ids: bsuids.contains(customer).then(|| CustomerIds {
                bsuid: customer.clone(),
                parent_bsuid: None,
                username: None,
            }),
            customer_name: customer.clone(),
            rename: false,
            wamid: String::new(),
            db_type: "text",
            content: Value::Null,
            at: chrono::Utc::now(),
            preview: String::new(),
            reacted_wamid: None,
            turn: false,
            echo: false,
        })
        .collect();
    let inbound: Vec<(usize, &InboundRow)> = rows.iter().enumerate().collect();
    let parties = resolve_users(conn, &inbound).await?;
    let conversations = resolve_conversations(conn, &inbound, &parties).await?;
    update_users(conn, &parties).await?;
    let mut found = HashMap::with_capacity(rows.len());
    for ((_, m), customer) in inbound.iter().zip(&parties.customers) {
        let conversation = conversations.get(&(m.business.as_str(), *customer));
        let business = parties.businesses.get(&m.business);
        if let (Some(&conversation), Some(&business)) = (conversation, business) {
            found.insert(
                (m.business.clone(), m.customer.clone()),
                (conversation, business),
            );
        }
    }
    Ok(found)
}

/// The users of a batch: each business number's, and each message's customer.
struct Parties {
    /// Business phone_number_id → users.id.
    businesses: HashMap<String, Uuid>,
    /// The customer's users.id of each message of the batch, in order.
    customers: Vec<Uuid>,
    /// Each customer's addresses as now known: what finds their conversation.
    addresses: HashMap<Uuid, Addresses>,
    /// Existing users that get a name or a phone number: (name, phone).
    updates: BTreeMap<Uuid, (Option<String>, Option<String>)>,
}

#[derive(Debug, Default)]
struct Addresses {
    phone: Option<String>,
    bsuids: Vec<String>,
}

/// A users row as read, with one of its BSUIDs (if any).
type UserRow = (
    Uuid,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The users of every business and customer of the batch, creating the missing
/// ones, renaming customers whose profile name changed, and joining what Meta says
/// about a customer: a message that names a phone number and a BSUID makes them one
/// person (the BSUID's user gets the phone number when it had none; the phone's
/// user gets the BSUID when it had none; when each already names a different user,
/// the BSUID's wins, as the id Meta sends on every message). The common case, where
/// all exist and nothing changed, is one read that locks nothing (a locked user row
/// would serialise every webhook of that business number); BSUIDs add one
/// statement only when one is new or its username or parent changed.
async fn resolve_users(
    conn: &mut PgConnection,
    inbound: &[(usize, &InboundRow)],
) -> Result<Parties, sqlx::Error> {
    let mut phones: BTreeSet<&str> = BTreeSet::new();
    let mut bsuids: BTreeSet<&str> = BTreeSet::new();
    for (_, m) in inbound {
        phones.insert(m.business.as_str());
        phones.extend(m.phone());
        bsuids.extend(m.bsuid());
    }
    let phones: Vec<&str> = phones.into_iter().collect();
    let bsuids: Vec<&str> = bsuids.into_iter().collect();
    // One read for both: without BSUIDs the second half finds nothing at once.
    let rows: Vec<UserRow> = sqlx::query_as(
        "SELECT u.id, u.\"phoneNumber\"::text, u.name::text, i.bsuid::text, \
                i.parent_bsuid::text, i.username::text \
         FROM users u LEFT JOIN wabot_customer_ids i ON i.user_id = u.id \
         WHERE u.\"phoneNumber\" = ANY($1) \
         UNION ALL \
         SELECT u.id, u.\"phoneNumber\"::text, u.name::text, i.bsuid::text, \
                i.parent_bsuid::text, i.username::text \
         FROM wabot_customer_ids i JOIN users u ON u.id = i.user_id \
         WHERE i.bsuid = ANY($2)",
    )
    .bind(&phones)
    .bind(&bsuids)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_phone: HashMap<String, Uuid> = HashMap::new();
    let mut by_bsuid: HashMap<String, (Uuid, Option<String>, Option<String>)> = HashMap::new();
    let mut names: HashMap<Uuid, String> = HashMap::new();
    let mut addresses: HashMap<Uuid, Addresses> = HashMap::new();
    for (id, phone, name, bsuid, parent, username) in rows {
        let known = addresses.entry(id).or_default();
        if let Some(phone) = phone {
            known.phone = Some(phone.clone());
            by_phone.insert(phone, id);
        }
        if let Some(bsuid) = bsuid {
            if !known.bsuids.contains(&bsuid) {
                known.bsuids.push(bsuid.clone());
            }
            by_bsuid.insert(bsuid, (id, parent, username));
        }
        names.insert(id, name);
    }

    // Business users, then each message's customer: found, or to be created (one
    // new user per person of the batch, whichever of their addresses comes first).
    let mut new_users: BTreeMap<Uuid, NewUser> = BTreeMap::new();
    let mut businesses = HashMap::new();
    for (_, m) in inbound {
        let id = match by_phone.get(&m.business) {
            Some(id) => *id,
            None => {
                let id = Uuid::new_v4();
                by_phone.insert(m.business.clone(), id);
                new_users.insert(id, NewUser::business(&m.business));
                id
            }
        };
        businesses.insert(m.business.clone(), id);
    }
    let mut customers = Vec::with_capacity(inbound.len());
    // BSUID rows to write: new ones, and those whose parent or username changed.
    let mut ids_rows: BTreeMap<&str, (Uuid, Option<&str>, Option<&str>)> = BTreeMap::new();
    // Existing users that get a name or a phone number.
    let mut updates: BTreeMap<Uuid, (Option<String>, Option<String>)> = BTreeMap::new();
    let mut new_bsuid_of: HashMap<&str, Uuid> = HashMap::new();
    for (_, m) in inbound {
        let by_id = m.bsuid().and_then(|b| {
            by_bsuid
                .get(b)
                .map(|x| x.0)
                .or(new_bsuid_of.get(b).copied())
        });
        let by_number = m.phone().and_then(|p| by_phone.get(p).copied());
        let id = match (by_id, by_number) {
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => {
                let id = Uuid::new_v4();
                new_users.insert(id, NewUser::customer(m.phone(), &m.customer_name));
                if let Some(phone) = m.phone() {
                    by_phone.insert(phone.to_owned(), id);
                }
                id
            }
        };
        if let (Some(a), Some(b)) = (by_id, by_number) {
            if a != b {
                tracing::warn!(
                    "a message names a phone number and a BSUID of two different users; it goes to the BSUID's"
                );
            }
        }
        customers.push(id);
        let known = addresses.entry(id).or_default();
        if let Some(ids) = &m.ids {
            if !known.bsuids.contains(&ids.bsuid) {
                known.bsuids.push(ids.bsuid.clone());
            }
            let stored = by_bsuid.get(ids.bsuid.as_str());
            let changed = match stored {
                None => true,
                Some((_, parent, username)) => {
                    (ids.parent_bsuid.is_some() && ids.parent_bsuid != *parent)
                        || (ids.username.is_some() && ids.username != *username)
                }
            };
            if stored.is_none() {
                new_bsuid_of.insert(&ids.bsuid, id);
            }
            if changed {
                // The newest in the batch wins.
                let entry = ids_rows.entry(&ids.bsuid).or_insert((id, None, None));
                entry.1 = ids.parent_bsuid.as_deref().or(entry.1);
                entry.2 = ids.username.as_deref().or(entry.2);
            }
        }
        if let Some(new) = new_users.get_mut(&id) {
            if known.phone.is_none() {
                known.phone.clone_from(&new.phone);
            }
            if m.rename {
                new.name = m.customer_name.clone();
            }
            continue;
        }
        let wants_phone = m
            .phone()
            .filter(|p| known.phone.is_none() && !by_phone.contains_key(*p));
        let wants_name = Some(m.customer_name.as_str())
            .filter(|n| m.rename && names.get(&id).map(String::as_str) != Some(*n));
        if let Some(phone) = wants_phone {
            known.phone = Some(phone.to_owned());
            by_phone.insert(phone.to_owned(), id);
        }
        if wants_phone.is_some() || wants_name.is_some() {
            let entry = updates.entry(id).or_insert((None, None));
            if let Some(name) = wants_name {
                entry.0 = Some(name.to_owned());
            }
            if let Some(phone) = wants_phone {
                entry.1 = Some(phone.to_owned());
            }
        }
    }

    // The BSUIDs first: the primary key is the claim on a new customer, and the
    // rows that come back say whose each BSUID is (a concurrent batch's claim wins).
    if !ids_rows.is_empty() {
        let keys: Vec<&str> = ids_rows.keys().copied().collect();
        let users: Vec<Uuid> = ids_rows.values().map(|v| v.0).collect();
        let parents: Vec<Option<&str>> = ids_rows.values().map(|v| v.1).collect();
        let usernames: Vec<Option<&str>> = ids_rows.values().map(|v| v.2).collect();
        let owners: Vec<(String, Uuid)> = sqlx::query_as(
            "INSERT INTO wabot_customer_ids AS w (bsuid, user_id, parent_bsuid, username) \
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[]) \
             ON CONFLICT (bsuid) DO UPDATE \
                 SET parent_bsuid = coalesce(EXCLUDED.parent_bsuid, w.parent_bsuid), \
                     username = coalesce(EXCLUDED.username, w.username), \
                     updated_at = now() \
             RETURNING bsuid::text, user_id",
        )
        .bind(&keys)
        .bind(&users)
        .bind(&parents)
        .bind(&usernames)
        .fetch_all(&mut *conn)
        .await?;
        let mut raced_owners = Vec::new();
        for (bsuid, owner) in owners {
            let ours = ids_rows.get(bsuid.as_str()).map(|v| v.0);
            let Some(ours) = ours.filter(|ours| *ours != owner) else {
                continue;
            };
            raced_owners.push(owner);
            // A concurrent batch created this customer first: theirs it is.
            if let Some(lost) = new_users.remove(&ours) {
                if let Some(phone) = lost.phone {
                    updates.entry(owner).or_insert((None, None)).1 = Some(phone);
                }
            }
            for c in customers.iter_mut().filter(|c| **c == ours) {
                *c = owner;
            }
            if let Some(known) = addresses.remove(&ours) {
                let theirs = addresses.entry(owner).or_default();
                theirs.phone = theirs.phone.take().or(known.phone);
                theirs.bsuids.extend(known.bsuids);
            }
        }
        if !raced_owners.is_empty() {
            // Their phone numbers find the conversation a concurrent batch keyed by
            // one (it has committed: ours waited for its claim).
            let phones: Vec<(Uuid, String)> = sqlx::query_as(
                "SELECT id, \"phoneNumber\"::text FROM users \
                 WHERE id = ANY($1) AND \"phoneNumber\" IS NOT NULL",
            )
            .bind(&raced_owners)
            .fetch_all(&mut *conn)
            .await?;
            for (owner, phone) in phones {
                let known = addresses.entry(owner).or_default();
                known.phone = Some(phone.clone());
                by_phone.insert(phone, owner);
            }
        }
    }

    if !new_users.is_empty() {
        // In phone number order, like every batch: two batches creating the same
        // users wait on each other instead of deadlocking.
        let mut order: Vec<(&Uuid, &NewUser)> = new_users.iter().collect();
        order.sort_by(|a, b| {
            (a.1.phone.is_none(), &a.1.phone).cmp(&(b.1.phone.is_none(), &b.1.phone))
        });
        let ids: Vec<Uuid> = order.iter().map(|(id, _)| **id).collect();
        let phones: Vec<Option<&str>> = order.iter().map(|(_, u)| u.phone.as_deref()).collect();
        let names: Vec<&str> = order.iter().map(|(_, u)| u.name.as_str()).collect();
        let roles: Vec<&str> = order.iter().map(|(_, u)| u.role).collect();
        let created: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO users (id, \"phoneNumber\", name, role) \
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) \
             ON CONFLICT (\"phoneNumber\") DO NOTHING RETURNING id",
        )
        .bind(&ids)
        .bind(&phones)
        .bind(&names)
        .bind(&roles)
        .fetch_all(&mut *conn)
        .await?;
        let created: HashSet<Uuid> = created.into_iter().collect();
        let raced: Vec<(Uuid, &NewUser)> = new_users
            .iter()
            .filter(|(id, _)| !created.contains(id))
            .map(|(id, u)| (*id, u))
            .collect();
        if !raced.is_empty() {
            let parties = (&mut businesses, customers.as_mut_slice(), &mut addresses);
            resolve_raced_users(conn, &raced, &new_bsuid_of, parties).await?;
        }
    }

    Ok(Parties {
        businesses,
        customers,
        addresses,
        updates,
    })
}

/// Renames the batch's customers and gives a phone number to those who had none
/// (`Parties::updates`). Run once the batch holds its conversations' locks: adding
/// a phone number locks the user's row against the key-share lock of every message
/// insert naming them, so a batch that did it before queuing for the conversation
/// would deadlock with the batch holding it.
async fn update_users(conn: &mut PgConnection, parties: &Parties) -> Result<(), sqlx::Error> {
    let updates = &parties.updates;
    if !updates.is_empty() {
        let ids: Vec<Uuid> = updates.keys().copied().collect();
        let names: Vec<Option<&str>> = updates.values().map(|u| u.0.as_deref()).collect();
        let phones: Vec<Option<&str>> = updates.values().map(|u| u.1.as_deref()).collect();
        // A phone number is only ever added, never changed: Meta's system message
        // about a new number says more than a message can.
        sqlx::query(
            "UPDATE users SET name = coalesce(u.name, users.name), \
                 \"phoneNumber\" = coalesce(users.\"phoneNumber\", u.phone), \"updatedAt\" = now() \
             FROM unnest($1::uuid[], $2::text[], $3::text[]) AS u(id, name, phone) \
             WHERE users.id = u.id",
        )
        .bind(&ids)
        .bind(&names)
        .bind(&phones)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A user the batch creates.
#[derive(Debug)]
struct NewUser {
    phone: Option<String>,
    name: String,
    role: &'static str,
}

impl NewUser {
    fn business(phone_number_id: &str) -> NewUser {
        NewUser {
            phone: Some(phone_number_id.to_owned()),
            name: "Business".to_owned(),
            role: "business",
        }
    }

    fn customer(phone: Option<&str>, name: &str) -> NewUser {
        NewUser {
            phone: phone.map(str::to_owned),
            name: name.to_owned(),
            role: "user",
        }
    }
}

/// Users a concurrent transaction created first, by phone number (its insert has
/// committed: ours waited for it). A user the batch claimed by BSUID is still
/// created, without the phone number the other one took (its BSUID row names it).
async fn resolve_raced_users(
    conn: &mut PgConnection,
    raced: &[(Uuid, &NewUser)],
    new_bsuid_of: &HashMap<&str, Uuid>,
    (businesses, customers, addresses): (
        &mut HashMap<String, Uuid>,
        &mut [Uuid],
        &mut HashMap<Uuid, Addresses>,
    ),
) -> Result<(), sqlx::Error> {
    let claimed: HashSet<Uuid> = new_bsuid_of.values().copied().collect();
    type Raced<'a, 'b> = Vec<&'a (Uuid, &'b NewUser)>;
    let (keep, adopt): (Raced, Raced) = raced.iter().partition(|(id, _)| claimed.contains(id));
    if !keep.is_empty() {
        let ids: Vec<Uuid> = keep.iter().map(|(id, _)| *id).collect();
        let names: Vec<&str> = keep.iter().map(|(_, u)| u.name.as_str()).collect();
        sqlx::query(
            "INSERT INTO users (id, name, role) \
             SELECT i, n, 'user' FROM unnest($1::uuid[], $2::text[]) AS u(i, n)",
        )
        .bind(&ids)
        .bind(&names)
        .execute(&mut *conn)
        .await?;
    }
    if adopt.is_empty() {
        return Ok(());
    }
    let phones: Vec<&str> = adopt
        .iter()
        .filter_map(|(_, u)| u.phone.as_deref())
        .collect();
    let found: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, \"phoneNumber\"::text FROM users WHERE \"phoneNumber\" = ANY($1)",
    )
    .bind(&phones)
    .fetch_all(&mut *conn)
    .await?;
    let found: HashMap<String, Uuid> = found.into_iter().map(|(id, p)| (p, id)).collect();
    for (ours, user) in adopt {
        let Some(theirs) = user.phone.as_deref().and_then(|p| found.get(p)) else {
            continue;
        };
        for id in businesses.values_mut().chain(customers.iter_mut()) {
            if id == ours {
                *id = *theirs;
            }
        }
        if let Some(known) = addresses.remove(ours) {
            addresses.entry(*theirs).or_default().phone = known.phone;
        }
    }
    Ok(())
}

/// Each (business number, customer user) pair's conversation.
type ConversationMap<'a> = HashMap<(&'a str, Uuid), Uuid>;

/// The 1:1 conversation of each (business number, customer) pair of the batch,
/// found by any of the customer's addresses (a conversation keyed by their BSUID
/// before their phone number was known is still theirs once it is). A new one is
/// keyed by the phone number when known, else by the BSUID. The key row is the
/// claim: of two transactions inserting it, the second waits for the first and
/// then reads the first one's conversation. A conversation WhatsApp Builder created
/// before wabot (both users as participants, no key yet) is adopted.
async fn resolve_conversations<'a>(
    conn: &mut PgConnection,
    inbound: &[(usize, &'a InboundRow)],
    parties: &Parties,
) -> Result<ConversationMap<'a>, sqlx::Error> {
    let pairs: BTreeSet<(&'a str, Uuid)> = inbound
        .iter()
        .zip(&parties.customers)
        .map(|((_, m), c)| (m.business.as_str(), *c))
        .collect();
    let no_addresses = Addresses::default();
    let addresses = |c: &Uuid| parties.addresses.get(c).unwrap_or(&no_addresses);
    let lookups: Vec<(&str, &str)> = pairs
        .iter()
        .flat_map(|(b, c)| {
            let a = addresses(c);
            a.bsuids
                .iter()
                .chain(&a.phone)
                .map(move |x| (*b, x.as_str()))
        })
        .collect();
    let keys = select_keys(conn, lookups.into_iter()).await?;
    let mut found: ConversationMap<'a> = HashMap::new();
    let mut missing: Vec<(&'a str, Uuid, &str)> = Vec::new();
    for (b, c) in pairs {
        let a = addresses(&c);
        // A BSUID's conversation first, as the BSUID's user won in resolve_users.
        let hit = a
            .bsuids
            .iter()
            .chain(&a.phone)
            .find_map(|x| keys.get(&(b, x.as_str())));
        match (hit, a.phone.as_ref().or(a.bsuids.first())) {
            (Some(id), _) => {
                found.insert((b, c), *id);
            }
            (None, Some(key)) => missing.push((b, c, key.as_str())),
            (None, None) => {}
        }
    }
    if missing.is_empty() {
        return Ok(found);
    }

    let user = |phone: &str| {
        parties
            .businesses
            .get(phone)
            .copied()
            .unwrap_or_else(Uuid::nil)
    };
    let customers: Vec<Uuid> = missing.iter().map(|m| m.1).collect();
    let businesses: Vec<Uuid> = missing.iter().map(|m| user(m.0)).collect();
    let adopted: Vec<(i64, Uuid)> = sqlx::query_as(
        "SELECT DISTINCT ON (q.n) q.n, c.id \
         FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS q(customer, business, n) \
         JOIN conversation_participants a ON a.\"userId\" = q.customer \
         JOIN conversation_participants b ON b.\"conversationId\" = a.\"conversationId\" \
                                         AND b.\"userId\" = q.business \
         JOIN conversations c ON c.id = a.\"conversationId\" \
         WHERE q.customer <> q.business \
           AND NOT EXISTS (SELECT 1 FROM conversation_keys k WHERE k.conversation_id = c.id) \
         ORDER BY q.n, c.\"createdAt\"",
    )
    .bind(&customers)
    .bind(&businesses)
    .fetch_all(&mut *conn)
    .await?;
    let adopted: HashMap<usize, Uuid> = adopted
        .into_iter()
        .map(|(n, id)| (n as usize - 1, id))
        .collect();
    let candidates: Vec<Uuid> = (0..missing.len())
        .map(|i| adopted.get(&i).copied().unwrap_or_else(Uuid::new_v4))
        .collect();
    let keys_b: Vec<&str> = missing.iter().map(|p| p.0).collect();
    let keys_c: Vec<&str> = missing.iter().map(|p| p.2).collect();
    let claimed: Vec<(String, String, Uuid)> = sqlx::query_as(
        "INSERT INTO conversation_keys (business_phone_number_id, customer_wa_id, conversation_id) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[]) \
         ON CONFLICT DO NOTHING \
         RETURNING business_phone_number_id::text, customer_wa_id::text, conversation_id",
    )
    .bind(&keys_b)
    .bind(&keys_c)
    .bind(&candidates)
    .fetch_all(&mut *conn)
    .await?;
    let claimed: HashSet<Uuid> = claimed.into_iter().map(|(_, _, id)| id).collect();
    let mut fresh: Vec<(Uuid, Uuid, Uuid)> = Vec::new();
    for (i, (b, c, _)) in missing.iter().enumerate() {
        let id = candidates[i];
        if !claimed.contains(&id) {
            continue;
        }
        found.insert((*b, *c), id);
        if !adopted.contains_key(&i) {
            fresh.push((id, customers[i], businesses[i]));
        }
    }
    if !fresh.is_empty() {
        let ids: Vec<Uuid> = fresh.iter().map(|f| f.0).collect();
        sqlx::query("INSERT INTO conversations (id) SELECT unnest($1::uuid[])")
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
        let mut conv = Vec::with_capacity(fresh.len() * 2);
        let mut who = Vec::with_capacity(fresh.len() * 2);
        for (id, customer, business) in &fresh {
            conv.extend([*id, *id]);
            who.extend([*customer, *business]);
        }
        sqlx::query(
            "INSERT INTO conversation_participants (\"conversationId\", \"userId\") \
             SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT DO NOTHING",
        )
        .bind(&conv)
        .bind(&who)
        .execute(&mut *conn)
        .await?;
    }
    // Keys a concurrent transaction claimed first (it has committed: ours waited).
    let raced: Vec<(&'a str, Uuid, &str)> = missing
        .iter()
        .copied()
        .filter(|(b, c, _)| !found.contains_key(&(*b, *c)))
        .collect();
    if !raced.is_empty() {
        let theirs = select_keys(conn, raced.iter().map(|(b, _, key)| (*b, *key))).await?;
        for (b, c, key) in raced {
            if let Some(id) = theirs.get(&(b, key)) {
                found.insert((b, c), *id);
            }
        }
    }
    Ok(found)
}

/// The conversations of these (business number, customer address) keys.
async fn select_keys<'a>(
    conn: &mut PgConnection,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<HashMap<(&'a str, &'a str), Uuid>, sqlx::Error> {
    let pairs: Vec<(&'a str, &'a str)> = pairs.collect();
    let b: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    let c: Vec<&str> = pairs.iter().map(|p| p.1).collect();
    let rows: Vec<(String, String, Uuid)> = sqlx::query_as(
        "SELECT k.business_phone_number_id::text, k.customer_wa_id::text, k.conversation_id \
         FROM conversation_keys k \
         JOIN unnest($1::text[], $2::text[]) AS q(b, c) \
           ON k.business_phone_number_id = q.b AND k.customer_wa_id = q.c",
    )
    .bind(&b)
    .bind(&c)
    .fetch_all(&mut *conn)
    .await?;
    let mut found = HashMap::new();
    for (b, c, id) in rows {
        if let Some(pair) = pairs.iter().find(|p| p.0 == b && p.1 == c) {
            found.insert(*pair, id);
        }
    }
    Ok(found)
}

/// Inserts the messages and, in the same statement, a turn job for each message
/// the insert returned that wants one; returns the wamids inserted and the jobs (a duplicate wamid inserts nothing and so gets no job). The
/// first new job of a conversation is leased to the caller when the conversation
/// has nothing older unfinished (a timer not yet due, or one nobody runs, does not
/// count: the turn replaces the wait).
async fn insert_messages(
    conn: &mut PgConnection,
    inbound: &[(usize, &InboundRow)],
    parties: &Parties,
    conversations: &ConversationMap<'_>,
    lease: Option<Lease<'_>>,
) -> Result<(HashSet<String>, Vec<NewTurn>), sqlx::Error> {
    let n = inbound.len();
    let mut conv = Vec::with_capacity(n);
    let mut sender = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut contents = Vec::with_capacity(n);
    let mut ats = Vec::with_capacity(n);
    let mut reacted = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    let mut turn = Vec::with_capacity(n);
    let mut echo = Vec::with_capacity(n);
    for ((_, m), customer) in inbound.iter().zip(&parties.customers) {
        // An echo never gets a turn, whatever its row says.
        turn.push(m.turn && !m.echo);
        echo.push(m.echo);
        let business = parties.businesses.get(&m.business).copied();
        conv.push(
            conversations
                .get(&(m.business.as_str(), *customer))
                .copied()
                .unwrap_or_else(Uuid::nil),
        );
        // An echo is the business's message.
        let from = if m.echo { business } else { Some(*customer) };
        sender.push(from.unwrap_or_else(Uuid::nil));
        kinds.push(m.db_type);
        contents.push(&m.content);
        ats.push(m.at);
        reacted.push(m.reacted_wamid.as_deref());
        tokens.push(lease.map(|l| crate::store::claim_token(l.holder)));
    }
    type Row = (String, Option<i64>, Uuid, Uuid, Option<String>, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "WITH input AS ( \
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[], \
                                 $5::timestamptz[], $6::text[], $7::text[], $9::bool[], \
                                 $10::bool[]) \
                WITH ORDINALITY AS i(conv, sender, kind, content, at, reacted, token, turn, \
                                     echo, n)), \
         m AS ( \
            INSERT INTO messages (\"conversationId\", \"senderId\", type, content, status, \"timestamp\") \
            SELECT i.conv, i.sender, i.kind::messages_type_enum, \
                   CASE WHEN i.reacted IS NULL THEN i.content \
                        ELSE i.content || jsonb_build_object('reactedMessageId', \
                             (SELECT x.id FROM messages x \
                              WHERE x.content ->> 'whatsappMessageId' = i.reacted)) END, \
                   CASE WHEN i.echo THEN 'sent' ELSE 'delivered' END::messages_status_enum, \
                   i.at \
            FROM input i ORDER BY i.n \
            ON CONFLICT DO NOTHING \
            RETURNING id, \"conversationId\" AS conv, content ->> 'whatsappMessageId' AS wamid), \
         new AS ( \
            SELECT m.id, m.conv, m.wamid, i.n, i.token, i.turn, \
                   row_number() OVER (PARTITION BY m.conv ORDER BY i.n) AS nth, \
                   NOT EXISTS (SELECT 1 FROM turn_jobs e \
                               WHERE e.conversation_id = m.conv AND e.done_at IS NULL \
                                 AND (e.kind <> 'timeout' OR e.locked_until >= now())) AS free \
            FROM m JOIN input i ON i.content ->> 'whatsappMessageId' = m.wamid), \
         j AS ( \
            INSERT INTO turn_jobs (conversation_id, message_id, kind, locked_by, locked_until, attempts) \
            SELECT conv, id, 'inbound', \
                   CASE WHEN nth = 1 AND free AND token IS NOT NULL THEN token END, \
                   CASE WHEN nth = 1 AND free AND token IS NOT NULL \
                        THEN now() + make_interval(secs => $8) END, \
                   CASE WHEN nth = 1 AND free AND token IS NOT NULL THEN 1 ELSE 0 END \
            FROM new WHERE turn ORDER BY n \
            RETURNING id, conversation_id, message_id, locked_by) \
         SELECT new.wamid, j.id, new.conv, new.id, j.locked_by, new.n \
         FROM new LEFT JOIN j ON new.id = j.message_id ORDER BY new.n",
    )
    .bind(&conv)
    .bind(&sender)
    .bind(&kinds)
    .bind(&contents)
    .bind(&ats)
    .bind(&reacted)
    .bind(&tokens)
    .bind(lease.map_or(0.0, |l| l.duration.as_secs_f64()))
    .bind(&turn)
    .bind(&echo)
    .fetch_all(&mut *conn)
    .await?;
    let mut inserted = HashSet::with_capacity(rows.len());
    let mut turns = Vec::with_capacity(rows.len());
    for (wamid, job_id, conversation_id, message_id, lease, n) in rows {
        inserted.insert(wamid);
        if let Some(job_id) = job_id {
            // Meta's message, from the row we inserted (`n` counts from 1).
            let raw = usize::try_from(n - 1)
                .ok()
                .and_then(|i| inbound.get(i))
                .and_then(|(_, m)| m.content.get("raw"))
                .cloned()
                .unwrap_or(Value::Null);
            turns.push(NewTurn {
                job_id,
                conversation_id,
                message_id,
                lease,
                raw,
            });
        }
    }
    turns.sort_by_key(|t| t.job_id);
    Ok((inserted, turns))
}

/// What a batch's new messages do to one conversation.
struct Latest<'a> {
    /// The newest new message (customer's or echo) and its preview.
    at: DateTime<Utc>,
    preview: &'a str,
    /// The newest new customer message: an echo does not open the window.
    customer_at: Option<DateTime<Utc>>,
}

/// Moves each conversation's preview and times forward (never back: deliveries come
/// in any order) and recomputes the 24-hour window from the newest customer message
/// (kept as it is while no customer message is known).
async fn update_conversations(
    conn: &mut PgConnection,
    latest: &BTreeMap<Uuid, Latest<'_>>,
) -> Result<(), sqlx::Error> {
    if latest.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = latest.keys().copied().collect();
    let ats: Vec<DateTime<Utc>> = latest.values().map(|v| v.at).collect();
    let previews: Vec<&str> = latest.values().map(|v| v.preview).collect();
    let customer_ats: Vec<Option<DateTime<Utc>>> = latest.values().map(|v| v.customer_at).collect();
    sqlx::query(
        "UPDATE conversations c SET \
            \"lastMessage\" = CASE WHEN c.\"lastMessageAt\" IS NULL OR c.\"lastMessageAt\" <= u.at \
                                   THEN u.preview ELSE c.\"lastMessage\" END, \
            \"lastMessageAt\" = GREATEST(c.\"lastMessageAt\", u.at), \
            \"lastCustomerMessageAt\" = GREATEST(c.\"lastCustomerMessageAt\", u.customer_at), \
            \"isWindowOpen\" = COALESCE(GREATEST(c.\"lastCustomerMessageAt\", u.customer_at) \
                                      > now() - interval '24 hours', c.\"isWindowOpen\"), \
            \"updatedAt\" = now() \
         FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::timestamptz[]) \
              AS u(id, at, preview, customer_at) \
         WHERE c.id = u.id",
    )
    .bind(&ids)
    .bind(&ats)
    .bind(&previews)
    .bind(&customer_ats)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An agent has each of these conversations now: the business wrote in them from
/// the WhatsApp Business app (a new echo). An operator's pause stays a pause; a
/// customer's request for a person becomes the agent's conversation; the idle clock
/// restarts. The conversations are locked by this transaction already.
async fn note_agents(conn: &mut PgConnection, ids: &BTreeSet<Uuid>) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = ids.iter().copied().collect();
    sqlx::query(
        "INSERT INTO wabot_handover AS h (conversation_id, state, source) \
         SELECT unnest($1::uuid[]), 'agent', 'echo' \
         ON CONFLICT (conversation_id) DO UPDATE \
             SET last_agent_at = now(), \
                 state = CASE WHEN h.state = 'paused' THEN 'paused' ELSE 'agent' END",
    )
    .bind(&ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One `webhook_events` row per webhook, with its JSON text (`bodies`, in the same
/// order), in order; their ids.
async fn insert_events(
    conn: &mut PgConnection,
    batch: &[&WebhookRows],
    bodies: &[&str],
    outcomes: &[&IngestOutcome],
) -> Result<Vec<i64>, sqlx::Error> {
    let received: Vec<DateTime<Utc>> = batch.iter().map(|w| w.received_at).collect();
    let objects: Vec<Option<&str>> = batch.iter().map(|w| w.object.as_deref()).collect();
    // Postgres has no arrays of arrays of different lengths: the fields go as JSON.
    let fields: Vec<Value> = batch
        .iter()
        .map(|w| Value::from(w.fields.clone()))
        .collect();
    let count = |f: fn(&IngestOutcome) -> u32| -> Vec<i32> {
        outcomes.iter().map(|o| f(o) as i32).collect()
    };
    let errors: Vec<&Value> = batch.iter().map(|w| &w.errors).collect();
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO webhook_events \
            (received_at, object, fields, body, messages_total, messages_new, \
             messages_skipped, statuses_total, statuses_new, errors) \
         SELECT received_at, object, \
                ARRAY(SELECT jsonb_array_elements_text(fields)), body::jsonb, \
                mt, mn, ms, st, sn, errors \
         FROM unnest($1::timestamptz[], $2::text[], $3::jsonb[], $4::text[], $5::int[], \
                     $6::int[], $7::int[], $8::int[], $9::int[], $10::jsonb[]) WITH ORDINALITY \
              AS e(received_at, object, fields, body, mt, mn, ms, st, sn, errors, n) \
         ORDER BY n RETURNING id",
    )
    .bind(&received)
    .bind(&objects)
    .bind(&fields)
    .bind(bodies)
    .bind(count(|o| o.messages_total))
    .bind(count(|o| o.messages_new))
    .bind(count(|o| o.messages_skipped))
    .bind(count(|o| o.statuses_total))
    .bind(count(|o| o.statuses_new))
    .bind(&errors)
    .fetch_all(&mut *conn)
    .await?;
    // Ids are drawn in insertion order, which is the batch's order.
    ids.sort_unstable();
    Ok(ids)
}

/// Keeps a signed webhook that could not be read, whole, with the reason; its id.
pub async fn store_unreadable(
    pool: &PgPool,
    received_at: DateTime<Utc>,
    raw: &[u8],
    error: &str,
) -> Result<i64, IngestError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO webhook_unreadable (received_at, raw, error) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(received_at)
    .bind(raw)
    .bind(error)
    .fetch_one(pool)
    .await?)
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
