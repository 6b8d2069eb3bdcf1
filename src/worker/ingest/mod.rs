//! The ingest stage: verified webhooks in, one transaction per batch, verdicts out.
//!
//! A webhook handler reads Meta's envelope into rows ([`rows`]) and hands them to
//! the stage with [`IngestHandle::submit`], then awaits the verdict. The stage's
//! writers each take every webhook waiting (up to `WABOT_INGEST_BATCH`; no fixed
//! delay, so a lone webhook is not slowed: a batch is whatever queued while the
//! previous commit was in flight), store them with `store::ingest::ingest_batch`,
//! and answer each one. A batch the database refuses is retried member by member,
//! so one poisonous webhook gets its own error and the others are stored. The turn
//! jobs a batch leased to this process go straight to the turn stage.
//!
//! The queue in front of the stage is bounded: when it is full the handler answers
//! 503 at once (Meta delivers again later) instead of piling up memory and sockets.

pub mod content;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::sync::CancellationToken;

use crate::store::ingest::{
    self, BatchOutcome, CustomerIds, InboundRow, IngestError, IngestOutcome, Lease, RawEvent,
    WebhookRows, BSUID_MAX_CHARS, NAME_MAX_CHARS, PHONE_MAX_CHARS, WAMID_MAX_CHARS,
};
use crate::store::statuses::StatusRow;
use crate::text::truncate_chars;
use crate::whatsapp::outbound::CALLBACK_DATA;
use crate::whatsapp::webhook::statuses::{RawStatus, StatusOnly};
use crate::whatsapp::webhook::{
    is_bsuid, ApiError, Envelope, Message, MessageKind, Status, StatusKind,
};
use crate::worker::turns::{TurnSink, TurnWork};
use crate::worker::AppContext;

/// Why a webhook was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The stage's queue is full: shed the webhook (503), Meta delivers it again.
    #[error("the ingest queue is full")]
    Overloaded,
    /// The stage has stopped (shutdown).
    #[error("the ingest stage has stopped")]
    Stopped,
    #[error(transparent)]
    Store(#[from] IngestError),
}

type Reply = oneshot::Sender<Result<IngestOutcome, IngestError>>;

struct Submission {
    rows: WebhookRows,
    reply: Reply,
}

/// The handlers' way into the ingest stage.
#[derive(Clone)]
pub struct IngestHandle {
    tx: mpsc::Sender<Submission>,
}

impl IngestHandle {
    /// Whether a webhook submitted now would be queued (handlers shed early, before
    /// doing any work, when it would not).
    pub fn has_room(&self) -> bool {
        self.tx.capacity() > 0
    }

    /// Webhooks waiting for a writer.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Queues a webhook and waits until it is committed (or refused).
    pub async fn submit(&self, rows: WebhookRows) -> Result<IngestOutcome, SubmitError> {
        let (reply, verdict) = oneshot::channel();
        self.tx
            .try_send(Submission { rows, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SubmitError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => SubmitError::Stopped,
            })?;
        match verdict.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SubmitError::Stopped),
        }
    }
}

/// Starts the stage's writers; the handle closes the stage when every clone of it is
/// dropped (the writers then finish what is queued and return).
/// Starts the stage's writers. They stop once `close` is cancelled and what was
/// queued by then is stored; later submissions are refused as `Stopped`. Without a
/// turn stage (`turns` is `None`) no job is leased: they wait for a process that
/// runs turns.
pub fn start(
    ctx: Arc<AppContext>,
    turns: Option<TurnSink>,
    close: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
    kill: &CancellationToken,
) -> IngestHandle {
    let options = &ctx.config.pipeline;
    let (tx, rx) = mpsc::channel(options.ingest_queue.max(1));
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..options.ingest_writers.max(1) {
        let task = writer(ctx.clone(), rx.clone(), turns.clone(), close.clone());
        crate::worker::spawn_tracked(tracker, kill, task);
    }
    IngestHandle { tx }
}

async fn writer(
    ctx: Arc<AppContext>,
    rx: Arc<Mutex<mpsc::Receiver<Submission>>>,
    turns: Option<TurnSink>,
    close: CancellationToken,
) {
    let max = ctx.config.pipeline.ingest_batch.max(1);
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            let received = tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, max) => n,
                _ = close.cancelled() => {
                    // Closing: take what is queued now, and refuse what comes later.
                    while batch.len() < max {
                        match rx.try_recv() {
                            Ok(s) => batch.push(s),
                            Err(_) => break,
                        }
                    }
                    if batch.is_empty() {
                        rx.close();
                    }
                    batch.len()
                }
            };
            if received == 0 {
                return;
            }
        }
        store(&ctx, batch, turns.as_ref()).await;
    }
}

/// Stores a batch and answers its members; on a refusal, each member alone.
async fn store(ctx: &AppContext, batch: Vec<Submission>, turns: Option<&TurnSink>) {
    let lease = turns.map(|_| Lease {
        holder: &ctx.holder,
        duration: ctx.lease(),
    });
    let (rows, replies): (Vec<WebhookRows>, Vec<Reply>) =
        batch.into_iter().map(|s| (s.rows, s.reply)).unzip();
    let started = std::time::Instant::now();
    match ingest::ingest_batch(&ctx.pool, &rows, lease, ctx.events.get()).await {
        Ok(outcome) => {
            observe(&rows, &outcome, started.elapsed());
            wake_media(ctx, &rows);
            answer(replies, &rows, outcome, turns).await
        }
        Err(e) if replies.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(e));
            }
        }
        Err(IngestError::Unavailable(e)) => {
            // The database is not there: every member would fail the same way.
            tracing::warn!(error = %e, webhooks = replies.len(), "ingest batch: database unavailable");
            for reply in replies {
                let _ = reply.send(Err(IngestError::Unavailable(clone_error(&e))));
            }
        }
        Err(IngestError::Database(e)) => {
            tracing::warn!(error = %e, webhooks = replies.len(), "ingest batch refused; storing its webhooks one by one");
            for (one, reply) in rows.chunks(1).zip(replies) {
                let started = std::time::Instant::now();
                match ingest::ingest_batch(&ctx.pool, one, lease, ctx.events.get()).await {
                    Ok(outcome) => {
                        observe(one, &outcome, started.elapsed());
                        wake_media(ctx, one);
                        answer(vec![reply], one, outcome, turns).await
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }
}

/// Wakes the media stage when a committed batch held media (its download jobs were
/// queued in the batch's transaction).
fn wake_media(ctx: &AppContext, rows: &[WebhookRows]) {
    let media = |r: &WebhookRows| {
        r.messages
            .iter()
            .any(|m| crate::store::media::KINDS.contains(&m.db_type))
    };
    if rows.iter().any(media) {
        ctx.wake.media.notify_one();
    }
}

/// Counts what a committed batch stored.
fn observe(rows: &[WebhookRows], outcome: &BatchOutcome, took: std::time::Duration) {
    let mut counts = crate::metrics::IngestCounts::default();
    for o in &outcome.webhooks {
        counts.messages_new += u64::from(o.messages_new);
        counts.messages_duplicate += u64::from(
            o.messages_total
                .saturating_sub(o.messages_new)
                .saturating_sub(o.messages_skipped),
        );
        counts.statuses_new += u64::from(o.statuses_new);
        counts.statuses_duplicate += u64::from(o.statuses_total.saturating_sub(o.statuses_new));
    }
    crate::metrics::ingest_batch(rows.len(), took, counts);
}

async fn answer(
    replies: Vec<Reply>,
    rows: &[WebhookRows],
    outcome: BatchOutcome,
    turns: Option<&TurnSink>,
) {
    for (reply, o) in replies.into_iter().zip(outcome.webhooks) {
        let _ = reply.send(Ok(o));
    }
    let Some(turns) = turns else {
        return;
    };
    // When the webhook that brought each new message arrived: the turn latency
    // histogram measures from there.
    let received: std::collections::HashMap<&str, DateTime<Utc>> = rows
        .iter()
        .flat_map(|r| r.messages.iter().map(|m| (m.wamid.as_str(), r.received_at)))
        .collect();
    let mut works = Vec::with_capacity(outcome.turns.len());
    for t in outcome.turns {
        if let Some(token) = t.lease {
            let received_at = t.raw["id"]
                .as_str()
                .and_then(|wamid| received.get(wamid).copied());
            let mut work =
                TurnWork::inbound(t.job_id, token, t.conversation_id, t.message_id, t.raw);
            work.received_at = received_at;
            works.push(work);
        }
    }
    turns.push_all(works).await;
}

/// The `message_template_status_update` changes of a webhook, to apply to the
/// template catalogue in the batch's transaction.
fn template_updates(envelope: &Envelope) -> Vec<crate::store::templates::StatusUpdateRow> {
    envelope
        .entry
        .iter()
        .flat_map(|e| e.changes.iter())
        .filter(|c| c.field == "message_template_status_update")
        .filter_map(|c| match &c.value {
            crate::whatsapp::webhook::ChangeValue::Other(v) => {
                crate::whatsapp::templates::status_update(v)
            }
            _ => None,
        })
        .map(|u| crate::store::templates::StatusUpdateRow {
            event: u.event,
            meta_id: u.meta_id,
            name: u.name,
            language: u.language,
            reason: u.reason,
        })
        .collect()
}

/// sqlx errors are not `Clone`; the copy keeps what the logs and the status code need.
fn clone_error(e: &sqlx::Error) -> sqlx::Error {
    sqlx::Error::Protocol(e.to_string())
}

/// The keys of Meta's status object that `StatusRow`'s columns already hold.
const STATUS_COLUMNS: [&str; 5] = ["id", "status", "timestamp", "recipient_id", "errors"];

/// One status's parts, read from the general envelope or the status-only path.
struct StatusIn {
    id: Option<String>,
    kind: StatusKind,
    type_name: Option<String>,
    timestamp: Option<i64>,
    recipient_id: Option<String>,
    recipient_user_id: Option<String>,
    errors: Vec<ApiError>,
    /// Meta's status object without what the columns hold, as JSON text.
    extra: Option<String>,
    /// `biz_opaque_callback_data`, when a string.
    callback: Option<String>,
}

impl StatusIn {
    fn of(status: &Status) -> StatusIn {
        StatusIn {
            id: status.id.clone(),
            kind: status.status.clone(),
            type_name: status.type_name.clone(),
            timestamp: status.timestamp,
            recipient_id: status.recipient_id.clone(),
            recipient_user_id: status.recipient_user_id.clone(),
            errors: status.errors.clone(),
            extra: status_extra(&status.raw).map(|v| v.to_string()),
            callback: status
                .raw
                .get(CALLBACK_DATA)
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }

    fn of_raw(status: &RawStatus<'_>) -> StatusIn {
        const WITH_BSUID: [&str; 6] = [
            "id",
            "status",
            "timestamp",
            "recipient_id",
            "errors",
            "recipient_user_id",
        ];
        // As `status_extra`: the BSUID is in the column when no wa_id is named.
        let except: &[&str] = if status.has("recipient_id") {
            &STATUS_COLUMNS
        } else {
            &WITH_BSUID
        };
        StatusIn {
            id: status.id(),
            kind: status.status(),
            type_name: status.type_name(),
            timestamp: status.timestamp(),
            recipient_id: status.recipient_id(),
            recipient_user_id: status.recipient_user_id(),
            errors: status.errors(),
            extra: status.rest(except),
            callback: status.str(CALLBACK_DATA),
        }
    }
}

/// A status as its row; `None` when it cannot be one (no wamid, or one too long to
/// index): it stays in the raw event.
fn status_row(status: StatusIn) -> Option<StatusRow> {
    let wamid = status
        .id
        .filter(|id| !id.is_empty() && id.chars().count() <= WAMID_MAX_CHARS)?;
    let is_delivery = status.type_name.as_deref().map_or(true, |t| t == "message");
    // Statuses of other kinds (a payment's) are kept apart from delivery
    // statuses, so they neither dedupe against them nor move the message.
    let key = match status.type_name.as_deref() {
        Some(kind) if !is_delivery => format!("{kind}:{}", status.kind.as_str()),
        _ => status.kind.as_str().to_owned(),
    };
    Some(StatusRow {
        wamid,
        key,
        message_status: status
            .kind
            .db_status()
            .filter(|_| is_delivery)
            .map(str::to_owned),
        meta_timestamp: status
            .timestamp
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0)),
        recipient_id: status.recipient_id.or(status.recipient_user_id),
        errors: content::errors_json(&status.errors),
        extra: status.extra,
        sent_message: status
            .callback
            .as_deref()
            .and_then(crate::whatsapp::outbound::message_of_callback),
    })
}

/// Meta's status object without what the typed columns hold; `None` when nothing
/// is left (a `read` status usually). `recipient_user_id` is held by the
/// `recipient_id` column when the status names no wa_id (a customer known only by
/// BSUID), and kept here otherwise.
fn status_extra(raw: &Value) -> Option<Value> {
    let map = raw.as_object()?;
    let bsuid_in_column = map.get("recipient_id").is_none();
    let rest: serde_json::Map<String, Value> = map
        .iter()
        .filter(|(k, _)| !STATUS_COLUMNS.contains(&k.as_str()))
        .filter(|(k, _)| !(bsuid_in_column && k.as_str() == "recipient_user_id"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!rest.is_empty()).then_some(Value::Object(rest))
}

/// Reads a verified webhook that holds statuses only ([`StatusOnly`]) into rows: the
/// rows [`rows`] makes of the same body. When every status became a row and none
/// has `errors` (kept as `[{code, title, message, details}]`, not verbatim), the
/// rows are the whole record (a status's columns and `extra` hold all of Meta's
/// object) and no raw event is stored ([`RawEvent::InStatuses`]); otherwise the
/// webhook's text is kept as the raw event, as for any other webhook.
pub fn status_rows(body: &StatusOnly<'_>, text: &str, received_at: DateTime<Utc>) -> WebhookRows {
    let mut out = WebhookRows {
        received_at,
        object: body.object.clone(),
        fields: vec!["messages".to_owned()],
        raw: RawEvent::InStatuses,
        messages: Vec::new(),
        messages_skipped: 0,
        statuses: Vec::with_capacity(body.statuses.len()),
        statuses_skipped: 0,
        errors: Value::Array(Vec::new()),
        errors_count: 0,
        template_updates: Vec::new(),
    };
    let mut whole = true;
    for status in &body.statuses {
        let row = StatusIn::of_raw(status);
        whole &= row.errors.is_empty() && status.get("errors").map_or(true, |e| e.get() == "[]");
        match status_row(row) {
            Some(row) => out.statuses.push(row),
            None => out.statuses_skipped += 1,
        }
    }
    if out.statuses_skipped > 0 || !whole {
        out.raw = RawEvent::New(text.to_owned());
    }
    out
}

/// Whether `id` can be a business number's phone_number_id: Meta's are digits. A
/// JSON number Meta never sends (`1e30`, read leniently as "1e+30") is refused;
/// placeholder ids of sample payloads (`PHONE_NUMBER_ID`) are kept as they are.
fn is_business_id(id: &str) -> bool {
    id.bytes().all(|b| b.is_ascii_digit())
        || (id.parse::<f64>().is_err() && !id.chars().any(|c| c.is_whitespace() || c.is_control()))
}

/// An `smb_message_echoes` item as the business's outbound message to the customer
/// it was sent to (`to`), in the conversation of that business number and that
/// customer; `None` (kept in the raw event only) when its id, recipient or business
/// number is missing or malformed. An echo never gets a turn: the business wrote it.
fn echo_row(
    echo: &Message,
    business: Option<&str>,
    received_at: DateTime<Utc>,
) -> Option<InboundRow> {
    let wamid = echo.id.clone().filter(|s| !s.trim().is_empty());
    // A customer known only by BSUID is addressed by it (`to`, or `to_user_id`).
    let phone = echo
        .recipient_wa_id()
        .filter(|to| to.bytes().all(|b| b.is_ascii_digit()));
    let ids = echo
        .recipient_user_id()
        .and_then(|bsuid| customer_ids(Some(bsuid), None, None));
    let customer = phone.or_else(|| ids.as_ref().map(|i| i.bsuid.clone()));
    let (Some(wamid), Some(customer), Some(business)) = (wamid, customer, business) else {
        tracing::warn!(
            "a webhook echo lacks its id, recipient or business number; kept in the raw event only"
        );
        return None;
    };
    let phone_too_long = ids.as_ref().map_or(true, |i| i.bsuid != customer)
        && customer.chars().count() > PHONE_MAX_CHARS;
    if phone_too_long
        || business.chars().count() > PHONE_MAX_CHARS
        || wamid.chars().count() > WAMID_MAX_CHARS
        || !is_business_id(business)
    {
        tracing::warn!(
            "a webhook echo's recipient, business number or id is too long or malformed; kept in the raw event only"
        );
        return None;
    }
    let stored = content::build(echo, &wamid, None);
    let reacted_wamid = match &echo.kind {
        MessageKind::Reaction(r) => r.message_id.clone(),
        _ => None,
    };
    Some(InboundRow {
        customer_name: truncate_chars(&customer, NAME_MAX_CHARS),
        rename: false,
        business: business.to_owned(),
        customer,
        ids,
        wamid,
        db_type: stored.db_type,
        content: stored.content,
        at: echo
            .timestamp
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
            .unwrap_or(received_at),
        preview: stored.preview,
        reacted_wamid,
        turn: false,
        echo: true,
    })
}

/// Whether a customer's message is something to answer. A reaction, an edit or a
/// deletion of an earlier message is stored and starts no turn: it answers no
/// question, and a chatbot greeting a thumbs-up would be noise. Meta delivers edits
/// and deletions as `unsupported` with the inner `type` (error 131051). A `system`
/// notice (the customer changed their number) is not something the customer said.
fn starts_turn(kind: &MessageKind) -> bool {
    let edit_or_revoke = |t: &str| matches!(t, "edit" | "revoke");
    match kind {
        MessageKind::Reaction(_) | MessageKind::System(_) => false,
        MessageKind::Unsupported(u) => !u.kind.as_deref().is_some_and(edit_or_revoke),
        MessageKind::Unknown { type_name } => !edit_or_revoke(type_name),
        _ => true,
    }
}

/// A customer's BSUID with what comes with it; `None` without one, or when it
/// does not have a BSUID's shape (`whatsapp::webhook::is_bsuid`: sends tell a BSUID
/// from a phone number by it).
fn customer_ids(
    bsuid: Option<String>,
    parent: Option<String>,
    username: Option<String>,
) -> Option<CustomerIds> {
    let valid = |id: &str| id.chars().count() <= BSUID_MAX_CHARS && is_bsuid(id);
    let bsuid = bsuid
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())?;
    if !valid(&bsuid) {
        tracing::warn!(
            "a webhook's BSUID is too long or malformed; the customer is kept by wa_id only"
        );
        return None;
    }
    Some(CustomerIds {
        bsuid,
        parent_bsuid: parent
            .map(|s| s.trim().to_owned())
            .filter(|p| !p.is_empty() && valid(p)),
        username: username
            .map(|u| truncate_chars(u.trim(), NAME_MAX_CHARS))
            .filter(|u| !u.is_empty()),
    })
}

/// Reads a verified webhook into rows. `served` is the business number wabot
/// answers for (the credentials' phone_number_id): a message addressed to another
/// number is stored but gets no turn (no chatbot answers it, nothing is sent), with
/// a warning naming the number. The business's echoes (`smb_message_echoes`) become
/// its outbound messages (see `echo_row`). A business number that cannot be a phone_number_id
/// (see `is_business_id`) stays in the raw event only and never becomes a user.
pub fn rows(
    envelope: &Envelope,
    raw: RawEvent,
    received_at: DateTime<Utc>,
    served: Option<&str>,
) -> WebhookRows {
    let mut out = WebhookRows {
        received_at,
        object: envelope.object.clone(),
        fields: envelope.fields(),
        raw,
        messages: Vec::new(),
        messages_skipped: 0,
        statuses: Vec::new(),
        statuses_skipped: 0,
        errors: Value::Array(Vec::new()),
        errors_count: 0,
        template_updates: template_updates(envelope),
    };
    let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.trim().is_empty());
    let mut errors = Vec::new();
    for value in envelope.messages_values() {
        let business = non_empty(&value.metadata.phone_number_id);
        for message in &value.messages {
            // The sender: their wa_id, their BSUID, or both. A customer who adopted a
            // username may come with no `from` and no `wa_id`: their BSUID is enough.
            let contact = value.contact_of(message);
            let phone = non_empty(&message.from)
                .or_else(|| contact.and_then(|c| non_empty(&c.wa_id)))
                .filter(|p| p.chars().count() <= PHONE_MAX_CHARS);
            let ids = customer_ids(
                non_empty(&message.from_user_id)
                    .or_else(|| contact.and_then(|c| non_empty(&c.user_id))),
                non_empty(&message.from_parent_user_id)
                    .or_else(|| contact.and_then(|c| non_empty(&c.parent_user_id))),
                contact.and_then(|c| c.username()).map(str::to_owned),
            );
            let from = phone.or_else(|| ids.as_ref().map(|i| i.bsuid.clone()));
            let (Some(wamid), Some(from), Some(business)) =
                (non_empty(&message.id), from, business.clone())
            else {
                tracing::warn!(
                    "a webhook message lacks its id, sender (wa_id or BSUID) or business number; kept in the raw event only"
                );
                out.messages_skipped += 1;
                continue;
            };
            if business.chars().count() > PHONE_MAX_CHARS
                || wamid.chars().count() > WAMID_MAX_CHARS
                || !is_business_id(&business)
            {
                tracing::warn!(
                    "a webhook message's business number or id is too long or malformed; kept in the raw event only"
                );
                out.messages_skipped += 1;
                continue;
            }
            let turn = match served.filter(|s| !s.is_empty()) {
                Some(served) if served != business => {
                    tracing::warn!(
                        phone_number_id = %business, served = %served,
                        "a message for a business number wabot does not serve: stored, not answered"
                    );
                    false
                }
                _ => true,
            } && starts_turn(&message.kind);
            let profile_name = contact.and_then(|c| c.name().or(c.username()));
            let stored = content::build(message, &wamid, None);
            let reacted_wamid = match &message.kind {
                MessageKind::Reaction(r) => r.message_id.clone(),
                _ => None,
            };
            out.messages.push(InboundRow {
                customer_name: truncate_chars(profile_name.unwrap_or(&from), NAME_MAX_CHARS),
                rename: profile_name.is_some(),
                business,
                customer: from,
                ids,
                wamid,
                db_type: stored.db_type,
                content: stored.content,
                at: message
                    .timestamp
                    .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))
                    .unwrap_or(received_at),
                preview: stored.preview,
                reacted_wamid,
                turn,
                echo: false,
            });
        }
        for echo in &value.message_echoes {
            if let Some(row) = echo_row(echo, business.as_deref(), received_at) {
                out.messages.push(row);
            } else {
                out.messages_skipped += 1;
            }
        }
        for status in &value.statuses {
            match status_row(StatusIn::of(status)) {
                Some(row) => out.statuses.push(row),
                None => out.statuses_skipped += 1,
            }
        }
        if !value.errors.is_empty() {
            for e in &value.errors {
                tracing::warn!(
                    code = e.code,
                    title = e.title.as_deref().unwrap_or(""),
                    details = e.details().unwrap_or(""),
                    phone_number_id = value.metadata.phone_number_id.as_deref().unwrap_or(""),
                    "Meta reported an error in a webhook"
                );
            }
            out.errors_count += value.errors.len() as u32;
            errors.push(json!({
                "phone_number_id": value.metadata.phone_number_id,
                "display_phone_number": value.metadata.display_phone_number,
                "errors": content::errors_json(&value.errors),
            }));
        }
    }
    // One customer's messages keep Meta's order; different customers' order does
    // not matter, and sorting lets concurrent batches take their locks in one order.
    out.messages
        .sort_by(|a, b| (&a.business, &a.customer).cmp(&(&b.business, &b.customer)));
    out.errors = Value::Array(errors);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_echo_becomes_the_business_s_row_to_its_recipient_without_a_turn() {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
        {"field": "smb_message_echoes", "value": {
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "message_echoes": [
                {"from": "15550783881", "to": "+1 650-555-1234", "id": "wamid.E1",
                 "timestamp": "1739321024", "type": "text", "text": {"body": "On my way"}},
                {"from": "15550783881", "id": "wamid.E2", "type": "text", "text": {"body": "?"}}
            ]}}]}]});
        let envelope = Envelope::from_value(&body).unwrap();
        let rows = rows(
            &envelope,
            RawEvent::New(body.to_string()),
            Utc::now(),
            Some("106540352242922"),
        );
        assert_eq!((rows.messages.len(), rows.messages_skipped), (1, 1));
        let row = &rows.messages[0];
        assert!(row.echo && !row.turn && !row.rename);
        assert_eq!(
            (
                row.business.as_str(),
                row.customer.as_str(),
                row.wamid.as_str()
            ),
            ("106540352242922", "16505551234", "wamid.E1")
        );
        assert_eq!((row.db_type, row.preview.as_str()), ("text", "On my way"));
        assert_eq!(row.content["whatsappMessageId"], "wamid.E1");
        assert_eq!(row.at.timestamp(), 1_739_321_024);
        assert_eq!(rows.fields, ["smb_message_echoes"]);
    }

    #[test]
    fn a_message_by_bsuid_alone_is_a_customer_message_and_a_bad_bsuid_is_ignored() {
        let body = json!({"object": "whatsapp_business_account", "entry": [{"changes": [
        {"field": "messages", "value": {
            "metadata": {"phone_number_id": "106540352242922"},
            "contacts": [{"user_id": "US.13491208655302741918",
                          "profile": {"username": "mert.bakes"}}],
            "messages": [
                {"from_user_id": "US.13491208655302741918", "id": "wamid.U1",
                 "type": "text", "text": {"body": "hi"}},
                {"from": "905320000007", "from_user_id": "not a bsuid", "id": "wamid.U2",
                 "type": "text", "text": {"body": "hi"}},
                {"from_user_id": "905320000007", "id": "wamid.U3", "type": "text"}
            ],
            "statuses": [{"id": "wamid.O", "status": "read",
                          "recipient_user_id": "US.13491208655302741918"}]}}]}]});
        let envelope = Envelope::from_value(&body).unwrap();
        let rows = rows(
            &envelope,
            RawEvent::New(body.to_string()),
            Utc::now(),
            Some("106540352242922"),
        );
        // The third names no phone and a BSUID that is a phone number's shape.
        assert_eq!((rows.messages.len(), rows.messages_skipped), (2, 1));
        let by_bsuid = rows
            .messages
            .iter()
            .find(|m| m.wamid == "wamid.U1")
            .unwrap();
        assert_eq!(by_bsuid.customer, "US.13491208655302741918");
        assert_eq!(by_bsuid.phone(), None);
        assert_eq!(
            by_bsuid.ids,
            Some(CustomerIds {
                bsuid: "US.13491208655302741918".into(),
                parent_bsuid: None,
                username: Some("mert.bakes".into()),
            })
        );
        // No profile name: the username names the customer.
        assert!(by_bsuid.turn && by_bsuid.rename);
        assert_eq!(by_bsuid.customer_name, "mert.bakes");
        let by_phone = rows
            .messages
            .iter()
            .find(|m| m.wamid == "wamid.U2")
            .unwrap();
        assert_eq!(
            (by_phone.phone(), by_phone.ids.as_ref()),
            (Some("905320000007"), None)
        );
        // A status by BSUID only keeps it as its recipient, not twice.
        assert_eq!(
            rows.statuses[0].recipient_id.as_deref(),
            Some("US.13491208655302741918")
        );
        assert_eq!(rows.statuses[0].extra, None);
    }

    /// Every body the status-only path reads, read both ways.
    fn both_ways(body: &str) -> Option<(WebhookRows, WebhookRows)> {
        let fast = StatusOnly::parse(body)?;
        let fast = status_rows(&fast, body, Utc::now());
        let value: Value = serde_json::from_str(body).unwrap();
        let envelope = Envelope::from_value(&value).unwrap();
        let slow = rows(
            &envelope,
            RawEvent::New(body.to_owned()),
            fast.received_at,
            Some("106540352242922"),
        );
        Some((fast, slow))
    }

    /// The same rows, `extra` compared as JSON (the fast path keeps Meta's text).
    fn assert_same(fast: &WebhookRows, slow: &WebhookRows, name: &str) {
        let parsed = |rows: &WebhookRows| -> Vec<StatusRow> {
            rows.statuses
                .iter()
                .map(|r| StatusRow {
                    extra: r.extra.as_deref().map(|x| {
                        serde_json::from_str::<Value>(x)
                            .unwrap_or_else(|e| panic!("{name}: extra {x} is not JSON: {e}"))
                            .to_string()
                    }),
                    ..r.clone()
                })
                .collect()
        };
        assert_eq!(parsed(fast), parsed(slow), "{name}: statuses");
        assert_eq!(fast.statuses_skipped, slow.statuses_skipped, "{name}");
        assert_eq!(
            (&fast.object, &fast.fields, &fast.errors, fast.errors_count),
            (&slow.object, &slow.fields, &slow.errors, slow.errors_count),
            "{name}"
        );
        assert!(
            slow.messages.is_empty() && slow.messages_skipped == 0,
            "{name}"
        );
        assert!(slow.template_updates.is_empty(), "{name}");
        let whole = fast.statuses_skipped == 0
            && fast
                .statuses
                .iter()
                .all(|s| s.errors == Value::Array(Vec::new()));
        match (&fast.raw, whole) {
            (RawEvent::InStatuses, true) => {}
            (RawEvent::New(text), false) => assert!(!text.is_empty()),
            _ => panic!("{name}: raw event {:?}", fast.raw),
        }
    }

    #[test]
    fn the_status_only_path_reads_every_status_fixture_as_the_envelope_does() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut read = 0;
        for dir in [
            root.join("fixtures/webhooks"),
            root.join("../shared/whatsapp/samples/meta-docs"),
            root.join("../shared/whatsapp/samples/meta-postman/webhooks"),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(body) = std::fs::read_to_string(entry.path()) else {
                    continue;
                };
                if !name.ends_with(".json") || serde_json::from_str::<Value>(&body).is_err() {
                    continue;
                }
                let is_statuses = name.starts_with("status_") || name.contains("_status_");
                match both_ways(&body) {
                    Some((fast, slow)) => {
                        assert_same(&fast, &slow, &name);
                        read += 1;
                    }
                    // Only status bodies are read so; a body with anything else is not.
                    None => assert!(
                        !is_statuses,
                        "{name}: a status fixture the fast path did not read"
                    ),
                }
            }
        }
        assert!(read >= 4, "only {read} status bodies found");
    }

    fn status_body(statuses: Value) -> String {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
            {"field": "messages", "value": {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550783881",
                          "phone_number_id": "106540352242922"},
             "statuses": statuses}}]}]})
        .to_string()
    }

    #[test]
    fn the_status_only_path_is_as_lenient_as_the_envelope() {
        let callback = format!("wabot:{}", uuid::Uuid::nil());
        let bodies = [
            // Numbers where strings belong and the reverse, a BSUID alone, a payment,
            // a status wabot does not know, members of any shape, a missing id.
            json!([{"id": 12345, "status": "delivered", "timestamp": 1764000020,
                    "recipient_id": 905320000001u64, "biz_opaque_callback_data": callback}]),
            json!([{"id": "wamid.B", "status": "read", "timestamp": " 1764000020 ",
                    "recipient_user_id": "US.13491208655302741918"}]),
            json!([{"id": "wamid.C", "status": "read", "timestamp": "<TIMESTAMP>",
                    "recipient_id": null, "recipient_user_id": "US.13491208655302741918"}]),
            json!([{"id": "wamid.D", "type": "payment", "status": "captured",
                    "payment": {"reference_id": "R", "amount": {"value": 1.5, "offset": 100}},
                    "recipient_id": "905320000001"}]),
            json!([{"id": "wamid.E", "status": "deleted", "type": "message",
                    "errors": [{"code": "131051", "title": "Unsupported", "error_data": {"details": "x"}},
                               "not an error"],
                    "new_key": [1, {"a": "é \" \n"}], "biz_opaque_callback_data": 7}]),
            json!([{"status": "sent"}, {"id": "", "status": "sent"},
                   {"id": "wamid.F", "status": "failed", "errors": {"code": 1}}]),
            json!([{"id": "wamid.G", "status": ["sent"], "timestamp": 1.5e9}]),
        ];
        for (i, statuses) in bodies.into_iter().enumerate() {
            let body = status_body(statuses);
            let (fast, slow) = both_ways(&body).unwrap_or_else(|| panic!("body {i} not read"));
            assert_same(&fast, &slow, &format!("body {i}"));
        }
    }

    #[test]
    fn the_status_only_path_leaves_any_other_body_to_the_envelope() {
        let status = json!({"id": "wamid.A", "status": "sent"});
        let change = |value: Value| {
            json!({"object": "whatsapp_business_account",
                   "entry": [{"id": "W", "changes": [{"field": "messages", "value": value}]}]})
            .to_string()
        };
        let refused = [
            change(json!({"statuses": [status], "messages": []})),
            change(json!({"statuses": [status], "errors": [{"code": 1}]})),
            change(json!({"statuses": [status], "contacts": []})),
            change(json!({"statuses": [status], "metadata": {"phone_number_id": "1", "x": 1}})),
            change(json!({"statuses": []})),
            change(json!({"statuses": {"0": status}})),
            change(json!({"statuses": [status, "not an object"]})),
            change(json!({"statuses": [status]})).replace("\"sent\"", "\"sent\",\"status\":\"read\""),
            change(json!({"statuses": [{"id": "wamid.A", "stXtus": "sent"}]}))
                .replace("stXtus", "st\\u0061tus"),
            change(json!({"statuses": [{"id": "wamid.A", "status": "sent"}]}))
                .replace("\"field\":\"messages\"", "\"field\":\"smb_message_echoes\""),
            change(json!({"statuses": [status]})).replace("\"object\"", "\"extra\":1,\"object\""),
            r#"{"entry": [{"changes": [{"field": "messages", "value": {"statuses": [{"id": "w", "id": "v"}]}}]}]}"#.to_owned(),
            "[]".to_owned(),
            "{".to_owned(),
        ];
        for body in refused {
            assert!(StatusOnly::parse(&body).is_none(), "read: {body}");
        }
        // The plain shape is read.
        assert!(StatusOnly::parse(&change(json!({"statuses": [status]}))).is_some());
    }
}
