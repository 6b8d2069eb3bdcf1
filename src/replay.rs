//! `wabot replay`: stored webhooks (`webhook_events`) fed through ingest again, or
//! through the engine alone with another chatbot (a dry run).
//!
//! * [`into_database`] reads the selected webhooks page by page, builds their rows
//!   with the same `worker::ingest::rows` the webhook handler uses, and stores them
//!   with `store::ingest::ingest_batch`: what was stored stays (the unique wamid and
//!   status keys make it a no-op), a message that was lost is stored again and its
//!   turn job queued, unleased, for a running daemon's recovery poll. No second raw
//!   event is written (`RawEvent::Stored`).
//! * [`dry_run`] writes nothing: for each customer, in the order received, each
//!   inbound message goes through `engine::run_turn` with the given chatbot the way
//!   the turn stage would run it (a fresh context at the first message, restarts,
//!   skip words, trigger keywords), next to the replies that were actually stored
//!   after that message. A wait whose deadline passed before the customer's next
//!   message (or before the end of the replayed range) is delivered at its deadline,
//!   as the daemon's timer was. rest_api calls and data-source connections are
//!   answered with an error (the node's error edge handles it) unless real HTTP is
//!   asked for.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::engine::context::reason;
use crate::engine::{
    self, compile::choose_chatbot, CompiledChatbot, Context, ContextStatus, Customer, EngineLimits,
    Event, HttpClient, HttpError, HttpRequest, HttpResponse, Inbound,
};
use crate::session::{self, Decision, Input, Rules, Skip};
use crate::store::events::Subscribed;
use crate::store::ingest::{self, InboundRow, IngestError, RawEvent, WebhookRows};
use crate::store::replay::{self as stored, EventFilter, StoredEvent, StoredMessage};
use crate::whatsapp::webhook::Envelope;
use crate::worker::turns::{inbound_from_meta, message_content};

/// Stored webhooks read (and stored again) together.
pub const PAGE: i64 = 200;

/// Which stored webhooks to replay.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub filter: EventFilter,
    /// At most this many webhooks.
    pub limit: Option<u64>,
}

/// A stored webhook read back into rows.
struct Replayed {
    event_id: i64,
    rows: WebhookRows,
}

/// Reads the next page of the selection after event `after`; `None` when done.
/// `read` counts webhooks read so far (for the limit); bodies that are no longer
/// an envelope are counted in `unreadable` and skipped.
async fn next_page(
    pool: &PgPool,
    selection: &Selection,
    served: Option<&str>,
    after: &mut i64,
    read: &mut u64,
    unreadable: &mut u64,
) -> Result<Option<Vec<Replayed>>, sqlx::Error> {
    let left = selection
        .limit
        .map_or(PAGE as u64, |l| l.saturating_sub(*read));
    if left == 0 {
        return Ok(None);
    }
    let events = stored::events_page(
        pool,
        &selection.filter,
        *after,
        left.min(PAGE as u64) as i64,
    )
    .await?;
    if events.is_empty() {
        return Ok(None);
    }
    let mut page = Vec::with_capacity(events.len());
    for StoredEvent {
        id,
        received_at,
        body,
    } in events
    {
        *after = id;
        *read += 1;
        let envelope = match Envelope::from_value(&body) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(event_id = id, error = %e, "a stored webhook is not an envelope; skipped");
                *unreadable += 1;
                continue;
            }
        };
        let mut rows =
            crate::worker::ingest::rows(&envelope, RawEvent::Stored(id), received_at, served);
        if let Some(customer) = selection.filter.customer.as_deref() {
            rows.messages
                .retain(|m| m.customer == customer || m.bsuid() == Some(customer));
            rows.statuses
                .retain(|s| s.recipient_id.as_deref() == Some(customer));
        }
        page.push(Replayed { event_id: id, rows });
    }
    Ok(Some(page))
}

/// What a replay into the database did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IngestSummary {
    /// Stored webhooks read.
    pub events: u64,
    /// Of those, bodies that could not be read as an envelope (skipped).
    pub unreadable: u64,
    /// Webhooks the database refused (each logged).
    pub failed: u64,
    /// Messages stored now (they were missing).
    pub messages_new: u64,
    /// Messages that were already stored.
    pub messages_duplicate: u64,
    /// Statuses recorded now.
    pub statuses_new: u64,
    /// Statuses that were already recorded.
    pub statuses_duplicate: u64,
    /// Turn jobs created for the new messages, left for the daemon to run.
    pub jobs_queued: u64,
}

/// Stores the selected webhooks again; see the module docs. `served` is the
/// business number wabot answers for, as in the webhook handler.
pub async fn into_database(
    pool: &PgPool,
    selection: &Selection,
    served: Option<&str>,
) -> Result<IngestSummary, IngestError> {
    let mut summary = IngestSummary::default();
    let (mut after, mut read) = (0, 0);
    while let Some(page) = next_page(
        pool,
        selection,
        served,
        &mut after,
        &mut read,
        &mut summary.unreadable,
    )
    .await?
    {
        let rows: Vec<WebhookRows> = page.into_iter().map(|r| r.rows).collect();
        match ingest::ingest_batch(pool, &rows, None, Subscribed::ALL).await {
            Ok(outcome) => add(&mut summary, &rows, &outcome),
            Err(IngestError::Unavailable(e)) => return Err(IngestError::Unavailable(e)),
            Err(IngestError::Database(e)) => {
                tracing::warn!(error = %e, "a replayed batch was refused; storing its webhooks one by one");
                for one in rows.chunks(1) {
                    match ingest::ingest_batch(pool, one, None, Subscribed::ALL).await {
                        Ok(outcome) => add(&mut summary, one, &outcome),
                        Err(IngestError::Unavailable(e)) => {
                            return Err(IngestError::Unavailable(e))
                        }
                        Err(IngestError::Database(e)) => {
                            tracing::warn!(event_id = one[0].replay_of(), error = %e, "a replayed webhook was refused");
                            summary.failed += 1;
                        }
                    }
                }
            }
        }
    }
    summary.events = read;
    Ok(summary)
}

fn add(summary: &mut IngestSummary, rows: &[WebhookRows], outcome: &ingest::BatchOutcome) {
    for (w, o) in rows.iter().zip(&outcome.webhooks) {
        summary.messages_new += u64::from(o.messages_new);
        summary.messages_duplicate +=
            (w.messages.len() as u64).saturating_sub(o.messages_new.into());
        summary.statuses_new += u64::from(o.statuses_new);
        summary.statuses_duplicate +=
            (w.statuses.len() as u64).saturating_sub(o.statuses_new.into());
    }
    summary.jobs_queued += outcome.turns.len() as u64;
}

/// How a dry run answers the engine's HTTP requests.
pub enum DryRunHttp {
    /// Every rest_api call and data-source connection fails with an error (the
    /// node's error edge handles it); the URLs are reported.
    Refuse,
    /// Real calls, through the same guarded clients the daemon uses.
    Real(crate::datasource::EngineHttp),
}

/// One reply, as the inbox stores it and as text for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    /// `messages.type`.
    pub kind: String,
    /// What a person reads: the body, the header and footer, the choices.
    pub text: String,
    /// Set on the replies of a wait that ran out (delivered at its deadline).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub after_timeout: bool,
}

/// One inbound message with what the new chatbot answers and what was answered.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    pub customer: String,
    pub wamid: String,
    pub at: DateTime<Utc>,
    /// The stored webhook the message came in.
    pub event_id: i64,
    /// What the customer sent, as text.
    pub sent: String,
    /// The new chatbot's replies.
    pub new: Vec<Reply>,
    /// The replies stored after this message (up to the customer's next message);
    /// `None` when the message itself is not in the database.
    pub then: Option<Vec<Reply>>,
    /// The new replies read the same as the stored ones.
    pub same: bool,
    /// rest_api calls answered with an error, chatbot starts that did not happen,
    /// waits that ran out.
    pub notes: Vec<String>,
}

/// What a dry run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DryRunReport {
    pub events: u64,
    pub unreadable: u64,
    pub customers: u64,
    pub exchanges: Vec<Exchange>,
}

impl DryRunReport {
    pub fn differing(&self) -> usize {
        self.exchanges.iter().filter(|e| !e.same).count()
    }
}

/// The chatbot a dry run answers with, and how.
#[derive(Clone, Copy)]
pub struct DryRun<'a> {
    pub bot: &'a CompiledChatbot,
    /// The chatbot document's metadata: its trigger keywords decide whether it
    /// starts, as for the daemon.
    pub metadata: Option<&'a Value>,
    pub limits: &'a EngineLimits,
    pub http: &'a DryRunHttp,
    /// The session rules the daemon runs with (opt-out words, ...).
    pub rules: &'a Rules,
    /// Where the replayed range ends (for waits that ran out after the last
    /// message).
    pub end: DateTime<Utc>,
}

/// Runs the selected conversations through the chatbot alone; writes nothing.
pub async fn dry_run(
    pool: &PgPool,
    selection: &Selection,
    served: Option<&str>,
    run: &DryRun<'_>,
) -> Result<DryRunReport, sqlx::Error> {
    let DryRun {
        bot,
        metadata,
        limits,
        http,
        rules,
        end,
    } = *run;
    let mut report = DryRunReport::default();
    // Each customer's messages in the order received, a wamid once (Meta redelivers).
    let mut order: Vec<(String, String)> = Vec::new();
    let mut conversations: HashMap<(String, String), Vec<(i64, InboundRow)>> = HashMap::new();
    let mut seen = HashSet::new();
    let (mut after, mut read) = (0, 0);
    while let Some(page) = next_page(
        pool,
        selection,
        served,
        &mut after,
        &mut read,
        &mut report.unreadable,
    )
    .await?
    {
        for Replayed { event_id, rows } in page {
            for m in rows.messages {
                if !m.turn || !seen.insert(m.wamid.clone()) {
                    continue;
                }
                let key = (m.business.clone(), m.customer.clone());
                let list = conversations.entry(key.clone()).or_default();
                if list.is_empty() {
                    order.push(key);
                }
                list.push((event_id, m));
            }
        }
    }
    report.events = read;
    report.customers = order.len() as u64;
    let tracker = HttpLog {
        http,
        refused: Mutex::new(Vec::new()),
    };
    for key in order {
        let messages = conversations.remove(&key).unwrap_or_default();
        let Some(first) = messages.first().map(|(_, m)| m.at) else {
            continue;
        };
        let history = stored::conversation_messages(pool, &key.0, &key.1, first).await?;
        let mut sim = Simulation {
            bot,
            metadata,
            limits,
            http: &tracker,
            rules,
            context: None,
            deadline: None,
            opted_out: false,
        };
        let count = messages.len();
        for (i, (event_id, m)) in messages.into_iter().enumerate() {
            let raw = m.content.get("raw").cloned().unwrap_or(Value::Null);
            let inbound = inbound_from_meta(&raw);
            let customer = Customer {
                phone: m.phone().unwrap_or_default().to_owned(),
                name: Some(m.customer_name.clone()).filter(|_| m.rename),
                username: m.ids.as_ref().and_then(|i| i.username.clone()),
                id: m.bsuid().map(str::to_owned),
            };
            let mut exchange = Exchange {
                customer: m.customer.clone(),
                wamid: m.wamid.clone(),
                at: m.at,
                event_id,
                sent: describe_inbound(&inbound, m.db_type),
                new: Vec::new(),
                then: stored_replies(&history, &m.wamid),
                same: false,
                notes: Vec::new(),
            };
            let previous = report.exchanges.len().checked_sub(1).filter(|_| i > 0);
            // A wait that ran out before this message was answered at its deadline.
            if let Some((replies, notes)) = sim.time_out_before(m.at, &customer).await {
                match previous {
                    Some(p) => {
                        report.exchanges[p].new.extend(replies);
                        report.exchanges[p].notes.extend(notes);
                    }
                    None => exchange.new.extend(replies),
                }
            }
            let (replies, notes) = sim.message(inbound.into_event(), m.at, &customer).await;
            exchange.new.extend(replies);
            exchange.notes.extend(notes);
            if i + 1 == count {
                if let Some((replies, notes)) = sim.time_out_before(end, &customer).await {
                    exchange.new.extend(replies);
                    exchange.notes.extend(notes);
                }
            }
            report.exchanges.push(exchange);
        }
        // The comparison, once the waits of each exchange are known.
        for exchange in report.exchanges.iter_mut().rev().take(count) {
            exchange.same = exchange
                .then
                .as_ref()
                .is_some_and(|then| texts(then) == texts(&exchange.new));
        }
    }
    Ok(report)
}

fn texts(replies: &[Reply]) -> Vec<&str> {
    replies.iter().map(|r| r.text.as_str()).collect()
}

/// The replies stored after the message `wamid`, up to the customer's next message.
fn stored_replies(history: &[StoredMessage], wamid: &str) -> Option<Vec<Reply>> {
    let at = history
        .iter()
        .position(|m| !m.outbound && m.wamid.as_deref() == Some(wamid))?;
    Some(
        history[at + 1..]
            .iter()
            .take_while(|m| m.outbound)
            .map(|m| Reply {
                kind: m.kind.clone(),
                text: describe(&m.kind, &m.content),
                after_timeout: false,
            })
            .collect(),
    )
}

/// One customer's conversation with the new chatbot, as the turn stage runs it.
struct Simulation<'a, H> {
    bot: &'a CompiledChatbot,
    metadata: Option<&'a Value>,
    limits: &'a EngineLimits,
    http: &'a H,
    rules: &'a Rules,
    /// The active context, if any.
    context: Option<Context>,
    deadline: Option<DateTime<Utc>>,
    /// The customer said an opt-out word (and no opt-in word since).
    opted_out: bool,
}

type Step = (Vec<Reply>, Vec<String>);

impl<H: HttpClient + Refusals> Simulation<'_, H> {
    fn start(&self, customer: &Customer) -> Context {
        Context::start(Uuid::new_v4(), Uuid::nil(), Uuid::nil(), self.bot, customer)
    }

    /// Delivers the wait's timeout when its deadline is at or before `at`.
    async fn time_out_before(&mut self, at: DateTime<Utc>, customer: &Customer) -> Option<Step> {
        let deadline = self.deadline.filter(|d| *d <= at)?;
        let context = self.context.take()?;
        self.deadline = None;
        let mut notes = vec![format!(
            "the wait at node `{}` ran out at {}",
            context.current_node_id,
            deadline.to_rfc3339()
        )];
        let (mut replies, more) = self
            .run(context, Event::WaitTimedOut, deadline, customer, false)
            .await;
        for r in &mut replies {
            r.after_timeout = true;
        }
        notes.extend(more);
        Some((replies, notes))
    }

    /// A customer's message, as the turn stage handles it: the session rules
    /// decide (a dry run knows no agent: stored traffic has no handover).
    async fn message(&mut self, event: Event, at: DateTime<Utc>, customer: &Customer) -> Step {
        let state = session::State {
            has_context: self.context.is_some(),
            handover: None,
            opted_out: self.opted_out,
        };
        let input = Input::Message(&event);
        let skip_word = session::is_skip_word(input);
        match session::decide(self.rules, &state, input, at) {
            Decision::Skip(why) => (Vec::new(), vec![why.note().to_owned()]),
            decision @ (Decision::OptOut { .. } | Decision::OptIn { .. }) => {
                let out = matches!(decision, Decision::OptOut { .. });
                self.opted_out = out;
                let mut notes = Vec::new();
                if out {
                    if let Some(mut context) = self.context.take() {
                        context.finish(ContextStatus::Completed, reason::OPTED_OUT, at);
                        notes.push("the customer opts out: the conversation ends".to_owned());
                    }
                    self.deadline = None;
                }
                let text = if out {
                    &self.rules.opt_out_message
                } else {
                    &self.rules.opt_in_message
                };
                let replies = vec![Reply {
                    kind: "text".to_owned(),
                    text: text.clone(),
                    after_timeout: false,
                }];
                (replies, notes)
            }
            Decision::Continue => match self.context.take() {
                Some(context) => {
                    self.deadline = None;
                    self.run(context, event, at, customer, skip_word).await
                }
                None => (Vec::new(), vec![Skip::NoActiveContext.note().to_owned()]),
            },
            Decision::Start { .. } => {
                let text = match &event {
                    Event::InboundMessage { text, .. } => text.as_deref(),
                    _ => None,
                };
                if choose_chatbot([((), self.metadata)], text).is_none() {
                    return (
                        Vec::new(),
                        vec![format!(
                            "{}: the chatbot's trigger keywords do not match",
                            Skip::NoActiveChatbot.note()
                        )],
                    );
                }
                let context = self.start(customer);
                self.run(context, Event::ConversationStarted, at, customer, false)
                    .await
            }
        }
    }

    /// Runs one turn (and the fresh start a restart asks for); keeps the context
    /// while it is active.
    async fn run(
        &mut self,
        context: Context,
        event: Event,
        now: DateTime<Utc>,
        customer: &Customer,
        skip_word: bool,
    ) -> Step {
        let mut result =
            engine::run_turn(self.bot, context, event, now, self.http, self.limits).await;
        let mut sends = std::mem::take(&mut result.sends);
        let mut notes = Vec::new();
        if session::after_run(skip_word, result.restart, result.context.status) {
            notes.push("the chatbot starts over".to_owned());
            let fresh = self.start(customer);
            let mut again = engine::run_turn(
                self.bot,
                fresh,
                Event::ConversationStarted,
                now,
                self.http,
                self.limits,
            )
            .await;
            sends.append(&mut again.sends);
            result = again;
        }
        if result.context.is_active {
            self.deadline = result.wait_deadline;
            self.context = Some(result.context);
        } else {
            notes.push(format!(
                "the conversation ends: {} ({})",
                result.context.status.as_str(),
                result.context.completion_reason.as_deref().unwrap_or("-")
            ));
            self.deadline = None;
            self.context = None;
        }
        notes.extend(self.http.take_refused().into_iter().map(|url| {
            format!("rest_api call to {url} answered with an error (not made in a dry run; --real-http makes it)")
        }));
        let replies = sends
            .iter()
            .map(|msg| {
                let (kind, content) = message_content(msg);
                Reply {
                    kind: kind.to_owned(),
                    text: describe(kind, &content),
                    after_timeout: false,
                }
            })
            .collect();
        (replies, notes)
    }
}

/// The URLs a dry run refused since the last call.
trait Refusals {
    fn take_refused(&self) -> Vec<String>;
}

struct HttpLog<'a> {
    http: &'a DryRunHttp,
    refused: Mutex<Vec<String>>,
}

impl Refusals for HttpLog<'_> {
    fn take_refused(&self) -> Vec<String> {
        self.refused
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }
}

impl HttpClient for HttpLog<'_> {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        match self.http {
            DryRunHttp::Refuse => {
                let url = crate::text::redact_url(&request.url).to_string();
                if let Ok(mut refused) = self.refused.lock() {
                    refused.push(url);
                }
                Err(HttpError::Forbidden(
                    "rest_api calls are not made in a dry run".to_owned(),
                ))
            }
            DryRunHttp::Real(http) => http.send(request).await,
        }
    }
}

/// What the customer sent, as text.
fn describe_inbound(inbound: &Inbound, db_type: &str) -> String {
    match inbound {
        Inbound::Text { body } => body.clone(),
        Inbound::ButtonReply { id, title } => format!("[button {id}] {title}"),
        Inbound::ListReply { id, title } => format!("[list row {id}] {title}"),
        Inbound::QuickReply { payload, text } => format!("[quick reply {payload}] {text}"),
        Inbound::FlowReply { response_json } => format!("[Flow reply] {response_json}"),
        Inbound::Media(m) => match &m.caption {
            Some(c) => format!("[{db_type}] {c}"),
            None => format!("[{db_type}]"),
        },
        Inbound::Location {
            latitude,
            longitude,
            name,
            ..
        } => format!(
            "[location {}, {}] {}",
            latitude.unwrap_or_default(),
            longitude.unwrap_or_default(),
            name.as_deref().unwrap_or_default()
        )
        .trim_end()
        .to_owned(),
        Inbound::Contacts { .. } | Inbound::Other { .. } => format!("[{db_type}]"),
    }
}

/// A stored or new message (WhatsApp Builder's `type` and `content`) as one line
/// of text: the same function reads both sides, so equal texts mean equal replies
/// for a reader (ids, tokens and wamids aside).
pub fn describe(kind: &str, content: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    match kind {
        "text" => {
            let body = content.get("body").or_else(|| content.get("text"));
            body.map(s).unwrap_or_default()
        }
        "interactive" => {
            let mut parts = Vec::new();
            if let Some(h) = content["header"]["text"].as_str() {
                parts.push(format!("*{h}*"));
            }
            parts.push(s(&content["body"]["text"]));
            if let Some(f) = content["footer"]["text"].as_str() {
                parts.push(format!("_{f}_"));
            }
            let action = &content["action"];
            match content["type"].as_str() {
                Some("button") => {
                    let titles: Vec<String> = action["buttons"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|b| s(&b["reply"]["title"]))
                        .collect();
                    parts.push(format!("[{}]", titles.join(" | ")));
                }
                Some("list") => {
                    let rows: Vec<String> = action["sections"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|sec| sec["rows"].as_array().into_iter().flatten())
                        .map(|r| s(&r["title"]))
                        .collect();
                    parts.push(format!("[{}: {}]", s(&action["button"]), rows.join(" | ")));
                }
                Some("flow") => {
                    parts.push(format!("[Flow: {}]", s(&action["parameters"]["flow_cta"])));
                }
                other => parts.push(format!("[{}]", other.unwrap_or("interactive"))),
            }
            parts.retain(|p| !p.is_empty());
            parts.join(" ")
        }
        other => {
            let caption = content.get("caption").and_then(Value::as_str);
            match caption {
                Some(c) => format!("[{other}] {c}"),
                None => format!("[{other}]"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Outgoing;
    use serde_json::json;

    #[test]
    fn replies_read_the_same_from_both_sides() {
        let buttons = Outgoing::Buttons {
            header: Some("Menu".into()),
            body: "Pick one".into(),
            footer: None,
            buttons: vec![
                engine::Choice {
                    id: "a".into(),
                    title: "Hours".into(),
                    description: None,
                },
                engine::Choice {
                    id: "b".into(),
                    title: "Prices".into(),
                    description: None,
                },
            ],
        };
        let (kind, content) = message_content(&buttons);
        assert_eq!(describe(kind, &content), "*Menu* Pick one [Hours | Prices]");
        let (kind, content) = message_content(&Outgoing::Text { body: "Hi".into() });
        assert_eq!(describe(kind, &content), "Hi");
        // A stored reply carries its wamid too; it reads the same.
        let stored = json!({"body": "Hi", "text": "Hi", "whatsappMessageId": "wamid.X"});
        assert_eq!(describe("text", &stored), "Hi");
        assert_eq!(describe("image", &json!({"caption": "cat"})), "[image] cat");
    }
}
