//! Webhook ingest: a batch of webhooks, stored in one transaction with set-based
//! statements.
//!
//! For every webhook of the batch, the raw event, the customer and business users,
//! the 1:1 conversation and its participants, each new message, its turn job, the
//! conversation's preview and 24-hour window, and every status commit together or
//! not at all, so a 200 to Meta always means "stored". A batch costs about eight
//! statements and one commit however many webhooks it holds; the caller (the ingest
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

use crate::store::statuses::{self, StatusOutcome, StatusRow};

/// Meta's wamids are under a hundred characters; a far longer one could not be
/// indexed (btree entries are limited to about 2.7 kB) and would fail the whole POST
/// on every retry.
pub const WAMID_MAX_CHARS: usize = 512;
/// users."phoneNumber" (and the conversation key's columns) are varchar(20).
pub const PHONE_MAX_CHARS: usize = 20;
/// users.name is a varchar(100).
pub const NAME_MAX_CHARS: usize = 100;
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
}

impl WebhookRows {
    /// The stored event these rows were read again from, if they were.
    pub fn replay_of(&self) -> Option<i64> {
        match self.raw {
            RawEvent::Stored(id) => Some(id),
            RawEvent::New(_) => None,
        }
    }
}

/// One inbound message (or a coexistence echo: `echo`), ready to store.
#[derive(Debug, Clone)]
pub struct InboundRow {
    /// The business number's phone_number_id (the business user's "phoneNumber").
    pub business: String,
    /// The customer's wa_id.
    pub customer: String,
    /// The customer's profile name, or the wa_id.
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

/// What one webhook did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
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
) -> Result<BatchOutcome, IngestError> {
    let mut attempt = 1;
    loop {
        let result = async {
            let mut tx = pool.begin().await?;
            let outcome = store_batch(&mut tx, batch, lease).await?;
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
        let users = resolve_users(conn, &inbound).await?;
        let conversations = resolve_conversations(conn, &inbound, &users).await?;
        // Concurrent batches of one conversation queue here until this transaction
        // ends (in id order, so batches never deadlock on them): turn job ids, which
        // order a conversation's turns, follow commit order, and whether a job can be
        // leased at once is decided on committed facts.
        let ids: Vec<Uuid> = conversations.values().copied().collect();
        crate::store::lock_conversations(conn, &ids).await?;
        let (inserted, new_turns) =
            insert_messages(conn, &inbound, &users, &conversations, lease).await?;
        turns = new_turns;
        // The newest new message of each conversation moves its preview; the newest
        // new customer message, its window.
        let mut latest: BTreeMap<Uuid, Latest> = BTreeMap::new();
        let mut agents: BTreeSet<Uuid> = BTreeSet::new();
        for (i, m) in &inbound {
            if !inserted.contains(&m.wamid) {
                continue;
            }
            outcomes[*i].messages_new += 1;
            let conversation = conversations[&(m.business.as_str(), m.customer.as_str())];
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

/// The ids of every business and customer user of the batch, creating the missing
/// ones and renaming customers whose profile name changed. The common case, where
/// all exist and nobody was renamed, is one read that locks nothing (a locked user
/// row would serialise every webhook of that business number).
async fn resolve_users(
    conn: &mut PgConnection,
    inbound: &[(usize, &InboundRow)],
) -> Result<HashMap<String, Uuid>, sqlx::Error> {
    // phone → (name, role, rename); the business users first, named "Business".
    let mut wanted: BTreeMap<&str, (&str, &str, bool)> = BTreeMap::new();
    for (_, m) in inbound {
        wanted
            .entry(m.business.as_str())
            .or_insert(("Business", "business", false));
    }
    for (_, m) in inbound {
        let entry = wanted.entry(m.customer.as_str()).or_insert((
            m.customer_name.as_str(),
            "user",
            m.rename,
        ));
        // The newest profile name in the batch wins.
        if m.rename && entry.1 == "user" {
            *entry = (m.customer_name.as_str(), "user", true);
        }
    }
    let phones: Vec<&str> = wanted.keys().copied().collect();
    let existing: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT id, \"phoneNumber\", name FROM users WHERE \"phoneNumber\" = ANY($1)",
    )
    .bind(&phones)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids: HashMap<String, Uuid> = HashMap::new();
    let mut renames: Vec<(Uuid, &str)> = Vec::new();
    for (id, phone, name) in existing {
        if let Some(&(wanted_name, _, rename)) = wanted.get(phone.as_str()) {
            if rename && name != wanted_name {
                renames.push((id, wanted_name));
            }
        }
        ids.insert(phone, id);
    }
    let missing: Vec<(&str, &str, &str)> = wanted
        .iter()
        .filter(|(phone, _)| !ids.contains_key(**phone))
        .map(|(phone, (name, role, _))| (*phone, *name, *role))
        .collect();
    if !missing.is_empty() {
        let phones: Vec<&str> = missing.iter().map(|m| m.0).collect();
        let names: Vec<&str> = missing.iter().map(|m| m.1).collect();
        let roles: Vec<&str> = missing.iter().map(|m| m.2).collect();
        let created: Vec<(Uuid, String)> = sqlx::query_as(
            "INSERT INTO users (\"phoneNumber\", name, role) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
             ON CONFLICT (\"phoneNumber\") DO NOTHING RETURNING id, \"phoneNumber\"",
        )
        .bind(&phones)
        .bind(&names)
        .bind(&roles)
        .fetch_all(&mut *conn)
        .await?;
        ids.extend(created.into_iter().map(|(id, phone)| (phone, id)));
        // Users a concurrent transaction created first; its insert has committed
        // (ours waited for it), so this read sees them.
        let raced: Vec<&str> = phones
            .iter()
            .copied()
            .filter(|p| !ids.contains_key(*p))
            .collect();
        if !raced.is_empty() {
            let found: Vec<(Uuid, String)> = sqlx::query_as(
                "SELECT id, \"phoneNumber\" FROM users WHERE \"phoneNumber\" = ANY($1)",
            )
            .bind(&raced)
            .fetch_all(&mut *conn)
            .await?;
            ids.extend(found.into_iter().map(|(id, phone)| (phone, id)));
        }
    }
    if !renames.is_empty() {
        renames.sort();
        let (uids, names): (Vec<Uuid>, Vec<&str>) = renames.into_iter().unzip();
        sqlx::query(
            "UPDATE users SET name = u.name, \"updatedAt\" = now() \
             FROM unnest($1::uuid[], $2::text[]) AS u(id, name) WHERE users.id = u.id",
        )
        .bind(&uids)
        .bind(&names)
        .execute(&mut *conn)
        .await?;
    }
    Ok(ids)
}

type ConversationMap<'a> = HashMap<(&'a str, &'a str), Uuid>;

/// The 1:1 conversation of each (business number, customer) pair of the batch. The
/// key row is the claim: of two transactions inserting it, the second waits for the
/// first and then reads the first one's conversation. A conversation WhatsApp
/// Builder created before wabot (both users as participants, no key yet) is adopted.
async fn resolve_conversations<'a>(
    conn: &mut PgConnection,
    inbound: &[(usize, &'a InboundRow)],
    users: &HashMap<String, Uuid>,
) -> Result<ConversationMap<'a>, sqlx::Error> {
    let pairs: BTreeSet<(&'a str, &'a str)> = inbound
        .iter()
        .map(|(_, m)| (m.business.as_str(), m.customer.as_str()))
        .collect();
    let mut found = select_keys(conn, pairs.iter().copied()).await?;
    let missing: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|p| !found.contains_key(p))
        .collect();
    if missing.is_empty() {
        return Ok(found);
    }

    let user = |phone: &str| users.get(phone).copied().unwrap_or_else(Uuid::nil);
    let customers: Vec<Uuid> = missing.iter().map(|(_, c)| user(c)).collect();
    let businesses: Vec<Uuid> = missing.iter().map(|(b, _)| user(b)).collect();
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
    let keys_c: Vec<&str> = missing.iter().map(|p| p.1).collect();
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
    for (i, pair) in missing.iter().enumerate() {
        let id = candidates[i];
        if !claimed.contains(&id) {
            continue;
        }
        found.insert(*pair, id);
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
    let raced: Vec<(&str, &str)> = missing
        .iter()
        .copied()
        .filter(|p| !found.contains_key(p))
        .collect();
    if !raced.is_empty() {
        found.extend(select_keys(conn, raced.into_iter()).await?);
    }
    Ok(found)
}

async fn select_keys<'a>(
    conn: &mut PgConnection,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<ConversationMap<'a>, sqlx::Error> {
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
    users: &HashMap<String, Uuid>,
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
    for (_, m) in inbound {
        // An echo never gets a turn, whatever its row says.
        turn.push(m.turn && !m.echo);
        echo.push(m.echo);
        conv.push(conversations[&(m.business.as_str(), m.customer.as_str())]);
        // An echo is the business's message.
        let from = if m.echo { &m.business } else { &m.customer };
        sender.push(users.get(from).copied().unwrap_or_else(Uuid::nil));
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
