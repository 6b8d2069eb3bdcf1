//! Conversations, as an operator sees them: which one a phone number or an id
//! names, its transcript (what `wabot conversation show` prints and `GET
//! /v1/conversations/{id}` returns), the list the API filters, and an operator's
//! pause and resume. The CLI and the operator API both call these.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::engine::context::STATE_KEY;
use crate::service::NotFound;
use crate::store;
use crate::store::events::Subscribed;
use crate::store::ops::{ConversationRow, MessageRow, TurnJobRow, TurnLogEntry};
use crate::store::people::{Handover, OptOut};
use crate::text::truncate_chars;

/// What `show` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    pub conversation: ConversationRow,
    /// The customer's other conversations (other business numbers), most recent first.
    pub other_conversations: Vec<Uuid>,
    /// Who has the conversation besides the bot (`None`: the bot has it; state
    /// `released`: an operator resumed it and the customer's next message starts the
    /// chatbot afresh).
    pub handover: Option<Handover>,
    /// The customer's opt-out of this conversation's business number (`None`: not
    /// opted out).
    pub opt_out: Option<OptOut>,
    /// The active context, else the last one.
    pub context: Option<ContextView>,
    /// Items in all, before `--limit`.
    pub total_items: usize,
    /// In order; the most recent `--limit` of them.
    pub items: Vec<Item>,
    /// Turn jobs not finished yet: timers waiting, messages queued or retrying.
    pub pending: Vec<TurnJobRow>,
}

/// The conversation's context with its variables apart from wabot's bookkeeping.
#[derive(Debug, Clone, Serialize)]
pub struct ContextView {
    pub id: Uuid,
    pub chatbot_id: Uuid,
    pub chatbot_name: Option<String>,
    pub current_node_id: String,
    pub status: String,
    pub is_active: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub completion_reason: Option<String>,
    pub variables: Value,
    /// `variables.__wabot`: retries, the wait's deadline, the step count.
    pub engine_state: Option<Value>,
}

/// One line of the transcript.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "item", rename_all = "snake_case")]
pub enum Item {
    Message(MessageItem),
    Turn(TurnItem),
    /// A turn job given up after failing again and again (no turn ran).
    GivenUp(TurnJobRow),
}

impl Item {
    /// The time the transcript orders and shows it by.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Item::Message(m) if m.direction == "in" => m.received_at,
            Item::Message(m) => m.at,
            Item::Turn(t) => t.at,
            Item::GivenUp(j) => j.done_at.unwrap_or(j.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageItem {
    /// Meta's time for an inbound message; when it was queued for an outbound one.
    pub at: DateTime<Utc>,
    /// When wabot stored it: what orders an inbound message among the turns, as
    /// Meta's timestamps have whole seconds.
    pub received_at: DateTime<Utc>,
    pub id: Uuid,
    /// `in` (from the customer) or `out`.
    pub direction: &'static str,
    #[serde(rename = "type")]
    pub kind: String,
    /// The text, or a short summary of other content.
    pub summary: String,
    pub wamid: Option<String>,
    pub status: String,
    /// `[{status, at, received_at, errors}]` as Meta reported them.
    pub statuses: Value,
    /// Why it failed (`content.error`), when it did.
    pub error: Option<Value>,
    /// The send job (attempts, last error), while it is kept.
    pub send: Option<Value>,
    /// `messages.content` without Meta's raw message.
    pub content: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct TurnItem {
    pub at: DateTime<Utc>,
    pub id: i64,
    pub job_id: i64,
    /// `inbound`, `timeout` (a timer firing) or `flow_failed`.
    pub kind: String,
    /// The inbound message it answered.
    pub message_id: Option<Uuid>,
    pub chatbot_id: Option<Uuid>,
    pub nodes: Vec<String>,
    pub steps: i32,
    /// The context after the turn.
    pub current_node_id: Option<String>,
    pub status: Option<String>,
    pub completion_reason: Option<String>,
    pub variables: Option<Value>,
    pub engine_state: Option<Value>,
    /// Replies it queued.
    pub sends: i32,
    /// Why nothing ran, or what went wrong.
    pub note: Option<String>,
}

/// What the user named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Id(Uuid),
    /// Digits only.
    Phone(String),
    /// A customer's business-scoped user id (`US.13491208655302741918`).
    Bsuid(String),
}

impl Target {
    /// A conversation id, a customer's BSUID, or a phone number: digits, with an
    /// optional leading `+` and spaces, dashes, dots or parentheses between them.
    pub fn parse(who: &str) -> anyhow::Result<Target> {
        let who = who.trim();
        if let Ok(id) = Uuid::parse_str(who) {
            return Ok(Target::Id(id));
        }
        if crate::whatsapp::webhook::is_bsuid(who) {
            return Ok(Target::Bsuid(who.to_owned()));
        }
        let rest = who.strip_prefix('+').unwrap_or(who);
        let digits: String = rest
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect();
        if digits.is_empty() || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
            anyhow::bail!(
                "`{who}` is neither a phone number (digits, optionally with a leading +), a \
                 BSUID (like US.13491208655302741918) nor a conversation id"
            );
        }
        Ok(Target::Phone(digits))
    }
}

const READ: &str = "cannot read the conversation (is the database migrated? `wabot migrate run`)";

/// The conversation `target` names (of a phone number: the most recently active)
/// and the customer's other conversations; an error when there is none.
pub async fn find(pool: &PgPool, target: &Target) -> anyhow::Result<(ConversationRow, Vec<Uuid>)> {
    let read = READ;
    Ok(match target {
        Target::Id(id) => match store::ops::conversation_by_id(pool, *id)
            .await
            .context(read)?
        {
            Some(c) => (c, Vec::new()),
            None => return Err(NotFound(format!("no conversation has the id {id}")).into()),
        },
        Target::Phone(phone) => {
            let mut found = store::ops::conversations_by_phone(pool, phone)
                .await
                .context(read)?
                .into_iter();
            match found.next() {
                Some(c) => (c, found.map(|c| c.id).collect()),
                None => return Err(NotFound(format!("no conversation with +{phone}")).into()),
            }
        }
        Target::Bsuid(bsuid) => {
            let mut found = store::ops::conversations_by_bsuid(pool, bsuid)
                .await
                .context(read)?
                .into_iter();
            match found.next() {
                Some(c) => (c, found.map(|c| c.id).collect()),
                None => {
                    return Err(
                        NotFound(format!("no conversation with the customer {bsuid}")).into(),
                    )
                }
            }
        }
    })
}

/// Reads the transcript of the conversation `target` names; an error when there is
/// none.
pub async fn show(
    pool: &PgPool,
    target: &Target,
    limit: Option<usize>,
) -> anyhow::Result<Transcript> {
    let read = READ;
    let (conversation, other_conversations) = find(pool, target).await?;
    let id = conversation.id;
    let handover = store::people::handover(pool, id).await.context(read)?;
    let opt_out = match (
        &conversation.business_phone_number_id,
        conversation
            .customer_key
            .as_ref()
            .or(conversation.customer_phone.as_ref()),
    ) {
        (Some(business), Some(customer)) => store::people::opt_outs(pool, customer)
            .await
            .context(read)?
            .into_iter()
            .find(|o| &o.business_phone_number_id == business),
        _ => None,
    };
    let customer = conversation.customer_phone.clone();
    let messages = store::ops::messages(pool, id, customer.as_deref())
        .await
        .context(read)?;
    let turns = store::ops::turn_log(pool, id).await.context(read)?;
    let given_up = store::ops::given_up_turn_jobs(pool, id)
        .await
        .context(read)?;
    let pending = store::ops::open_turn_jobs(pool, id).await.context(read)?;
    let context = store::ops::latest_context(pool, id)
        .await
        .context(read)?
        .map(|c| {
            let (variables, engine_state) = split_variables(Some(c.variables));
            ContextView {
                id: c.id,
                chatbot_id: c.chatbot_id,
                chatbot_name: c.chatbot_name,
                current_node_id: c.current_node_id,
                status: c.status,
                is_active: c.is_active,
                expires_at: c.expires_at,
                completion_reason: c.completion_reason,
                variables: variables.unwrap_or(Value::Object(Map::new())),
                engine_state,
            }
        });
    let items = timeline(messages, turns, given_up);
    let total_items = items.len();
    let skip = limit.map_or(0, |n| total_items.saturating_sub(n));
    Ok(Transcript {
        conversation,
        other_conversations,
        handover,
        opt_out,
        context,
        total_items,
        items: items.into_iter().skip(skip).collect(),
        pending,
    })
}

/// Variables without wabot's bookkeeping, and the bookkeeping.
pub(crate) fn split_variables(variables: Option<Value>) -> (Option<Value>, Option<Value>) {
    match variables {
        Some(Value::Object(mut map)) => {
            let state = map.remove(STATE_KEY);
            (Some(Value::Object(map)), state)
        }
        other => (other, None),
    }
}

/// Messages, turns and given-up jobs in one order: by time, each turn after the
/// message it answered (and before the replies it queued, which its commit stamped
/// after itself).
fn timeline(
    messages: Vec<MessageRow>,
    turns: Vec<TurnLogEntry>,
    given_up: Vec<TurnJobRow>,
) -> Vec<Item> {
    let mut keyed: Vec<(DateTime<Utc>, u8, usize, Item)> = Vec::new();
    let answered_at = |id: Option<Uuid>| {
        id.and_then(|id| messages.iter().find(|m| m.id == id))
            .map(order_time)
    };
    for (n, t) in turns.into_iter().enumerate() {
        let turn = t.turn;
        let at = answered_at(turn.message_id).map_or(t.created_at, |m| m.max(t.created_at));
        let (variables, engine_state) = split_variables(turn.variables);
        keyed.push((
            at,
            1,
            n,
            Item::Turn(TurnItem {
                at: t.created_at,
                id: t.id,
                job_id: t.job_id,
                kind: turn.kind,
                message_id: turn.message_id,
                chatbot_id: turn.chatbot_id,
                nodes: turn.nodes,
                steps: turn.steps,
                current_node_id: turn.current_node_id,
                status: turn.status,
                completion_reason: turn.completion_reason,
                variables,
                engine_state,
                sends: t.sends,
                note: t.note,
            }),
        ));
    }
    for (n, j) in given_up.into_iter().enumerate() {
        let at = answered_at(j.message_id)
            .map_or(j.created_at, |m| m.max(j.done_at.unwrap_or(j.created_at)));
        keyed.push((at, 1, usize::MAX / 2 + n, Item::GivenUp(j)));
    }
    for (n, m) in messages.into_iter().enumerate() {
        let error = m.content.get("error").cloned();
        keyed.push((
            order_time(&m),
            0,
            n,
            Item::Message(MessageItem {
                at: m.timestamp,
                received_at: m.created_at,
                id: m.id,
                direction: if m.inbound { "in" } else { "out" },
                summary: summarize(&m.kind, &m.content),
                kind: m.kind,
                wamid: m.wamid,
                status: m.status,
                statuses: m.statuses,
                error,
                send: m.send,
                content: m.content,
            }),
        ));
    }
    keyed.sort_by_key(|a| (a.0, a.1, a.2));
    keyed.into_iter().map(|(_, _, _, item)| item).collect()
}

/// Where a message sits among the turns: an inbound one when wabot received it (the
/// turn it starts commits after that), an outbound one at its queued time (after
/// the turn that made it: the commit stamps its replies past its own time).
fn order_time(m: &MessageRow) -> DateTime<Utc> {
    if m.inbound {
        m.created_at
    } else {
        m.timestamp
    }
}

/// A message's text, or a short description of what else it holds.
pub fn summarize(kind: &str, content: &Value) -> String {
    let s = |path: &str| content.pointer(path).and_then(Value::as_str);
    let titles = |items: Option<&Value>, path: &str| -> Vec<String> {
        items
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.pointer(path).and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let summary = match kind {
        "text" => s("/text").or(s("/body")).unwrap_or("").to_owned(),
        "interactive" => match (s("/type"), content.get("action")) {
            (Some("button_reply"), _) => format!(
                "[button] {} ({})",
                s("/buttonTitle").unwrap_or(""),
                s("/buttonId").unwrap_or("")
            ),
            (Some("list_reply"), _) => format!(
                "[list reply] {} ({})",
                s("/listTitle").unwrap_or(""),
                s("/listId").unwrap_or("")
            ),
            (Some("nfm_reply"), _) => format!(
                "[flow reply] {}",
                content
                    .get("flowResponse")
                    .filter(|v| !v.is_null())
                    .map(Value::to_string)
                    .unwrap_or_default()
            ),
            (Some("button"), Some(action)) => format!(
                "{} [buttons: {}]",
                s("/body/text").unwrap_or(""),
                titles(action.get("buttons"), "/reply/title").join(" | ")
            ),
            (Some("list"), Some(action)) => {
                let rows: Vec<String> = action
                    .get("sections")
                    .and_then(Value::as_array)
                    .map(|sections| {
                        sections
                            .iter()
                            .flat_map(|sec| titles(sec.get("rows"), "/title"))
                            .collect()
                    })
                    .unwrap_or_default();
                format!(
                    "{} [list \"{}\": {}]",
                    s("/body/text").unwrap_or(""),
                    action.get("button").and_then(Value::as_str).unwrap_or(""),
                    rows.join(" | ")
                )
            }
            (Some("flow"), _) => format!(
                "{} [flow {}]",
                s("/body/text").unwrap_or(""),
                s("/whatsappFlowId")
                    .or(s("/action/parameters/flow_id"))
                    .unwrap_or("")
            ),
            (other, _) => format!("[interactive {}]", other.unwrap_or("?")),
        },
        "button" => format!("[button] {}", s("/text").unwrap_or("")),
        "image" | "video" | "document" | "audio" | "sticker" => format!(
            "[{kind}] {}",
            s("/caption").or(s("/filename")).unwrap_or("")
        ),
        "location" => format!("[location] {}", s("/name").or(s("/address")).unwrap_or("")),
        "reaction" => format!("[reaction] {}", s("/emoji").unwrap_or("")),
        "contacts" => "[contacts]".to_owned(),
        "order" => "[order]".to_owned(),
        "system" => format!("[system] {}", s("/body").unwrap_or("")),
        other => format!("[{other}]"),
    };
    let summary = summary.trim().to_owned();
    let short = truncate_chars(&summary, 160);
    if short.len() < summary.len() {
        format!("{short}…")
    } else {
        short
    }
}

/// Pauses the bot in the conversation `target` names (an agent takes it): the
/// conversation and the handover state the pause replaced (`None`: the bot had it).
pub async fn pause(
    pool: &PgPool,
    target: &Target,
    events: Subscribed,
) -> anyhow::Result<(ConversationRow, Option<String>)> {
    let (c, _) = find(pool, target).await?;
    let before = store::people::pause(pool, c.id, events)
        .await
        .context("cannot pause the conversation (is the database migrated? `wabot migrate run`)")?;
    Ok((c, before))
}

/// Gives the conversation `target` names back to the bot: the conversation and the
/// handover row as it was (`None`: the bot had it already).
pub async fn resume(
    pool: &PgPool,
    target: &Target,
    events: Subscribed,
) -> anyhow::Result<(ConversationRow, Option<Handover>)> {
    let (c, _) = find(pool, target).await?;
    let gone = store::people::resume(pool, c.id, events).await.context(
        "cannot resume the conversation (is the database migrated? `wabot migrate run`)",
    )?;
    Ok((c, gone))
}

/// Conversations, most recently active first: in a handover state (`requested`,
/// `paused`, `agent`), with an active run, of a customer.
pub async fn list(
    pool: &PgPool,
    handover: Option<&str>,
    active_only: bool,
    customer: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<store::api::ConversationListed>> {
    store::api::conversations(pool, handover, active_only, customer, limit)
        .await
        .context(READ)
}
