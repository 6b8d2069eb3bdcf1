//! `wabot conversation show PHONE|ID`: one conversation's transcript from the
//! database: who has it (an agent, a customer waiting for one, an operator's pause)
//! and whether the customer opted out, inbound and outbound messages with their
//! status history, each turn after the message it answered (the nodes it walked,
//! the variables after it, why nothing ran), timers firing and waiting, send
//! failures. `--json` prints it as one JSON document.
//!
//! `wabot conversation pause PHONE|ID` keeps the bot silent in a conversation until
//! `wabot conversation resume PHONE|ID` gives it back.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::fmt::{count, Align, Table};
use crate::config::Config;
use crate::engine::context::STATE_KEY;
use crate::store;
use crate::store::ops::{ConversationRow, MessageRow, TurnJobRow, TurnLogEntry};
use crate::store::people::{Handover, OptOut};
use crate::text::truncate_chars;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a conversation's transcript: messages, statuses, turns, variables, errors.
    Show(ShowArgs),
    /// Pause the bot in a conversation (an agent takes it): the customer's messages
    /// are stored, but no turn runs and nothing is sent until `resume`.
    Pause(WhoArgs),
    /// Give a conversation back to the bot (after a pause, an agent, or a customer's
    /// request for one): the customer's next message starts the chatbot afresh.
    Resume(WhoArgs),
}

#[derive(Debug, Args)]
pub struct WhoArgs {
    /// The customer's phone number (their WhatsApp id, with or without `+`), their
    /// BSUID (a customer known by username) or a conversation id; a customer with
    /// several conversations names the most recent.
    #[arg(value_name = "PHONE|BSUID|ID")]
    pub who: String,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The customer's phone number (their WhatsApp id, with or without `+`), their
    /// BSUID (a customer known by username) or a conversation id.
    #[arg(value_name = "PHONE|BSUID|ID")]
    pub who: String,
    /// Only the most recent N items of the transcript.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print one JSON document instead of the transcript.
    #[arg(long)]
    pub json: bool,
}

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
    fn at(&self) -> DateTime<Utc> {
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

pub async fn run(config: Config, cmd: Command) -> anyhow::Result<ExitCode> {
    let who = match &cmd {
        Command::Show(args) => &args.who,
        Command::Pause(args) | Command::Resume(args) => &args.who,
    };
    let target = Target::parse(who)?;
    let pool = store::connect_existing(&config)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    match cmd {
        Command::Show(args) => {
            let transcript = show(&pool, &target, args.limit).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&transcript)?);
            } else {
                print!("{}", render(&transcript));
            }
        }
        Command::Pause(_) => println!("{}", pause(&pool, &target).await?),
        Command::Resume(_) => println!("{}", resume(&pool, &target).await?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Pauses the bot in the conversation `target` names; the line saying what changed.
pub async fn pause(pool: &PgPool, target: &Target) -> anyhow::Result<String> {
    let (c, _) = find(pool, target).await?;
    let before = store::people::pause(pool, c.id)
        .await
        .context("cannot pause the conversation (is the database migrated? `wabot migrate run`)")?;
    let was = match before.as_deref() {
        None | Some("released") => String::new(),
        Some("paused") => " (it was paused already; the pause now counts from now)".to_owned(),
        Some("agent") => " (an agent had it)".to_owned(),
        Some("requested") => " (the customer was waiting for an agent)".to_owned(),
        Some(other) => format!(" (it was `{other}`)"),
    };
    Ok(format!(
        "paused: the bot stays silent in conversation {} {} until `wabot conversation resume`{was}",
        c.id,
        with(&c)
    ))
}

/// Gives the conversation `target` names back to the bot; the line saying what
/// changed.
pub async fn resume(pool: &PgPool, target: &Target) -> anyhow::Result<String> {
    let (c, _) = find(pool, target).await?;
    let gone = store::people::resume(pool, c.id).await.context(
        "cannot resume the conversation (is the database migrated? `wabot migrate run`)",
    )?;
    Ok(match gone {
        Some(h) => format!(
            "resumed: the customer's next message starts the chatbot afresh (conversation {} \
             {}; was {} since {} UTC)",
            c.id,
            with(&c),
            handover_state(&h.state),
            time(&h.since)
        ),
        None => format!(
            "nothing to resume: the bot has conversation {} {} already",
            c.id,
            with(&c)
        ),
    })
}

/// A customer's wa_id as a phone number (`+905551112233`); a BSUID as it is.
pub(crate) fn display_customer(who: &str) -> String {
    if crate::whatsapp::webhook::is_bsuid(who) {
        who.to_owned()
    } else {
        format!("+{who}")
    }
}

/// `with +905551112233 on business number 106540352242922`.
fn with(c: &ConversationRow) -> String {
    format!(
        "with {}{}",
        c.customer_phone
            .as_deref()
            .map(display_customer)
            .unwrap_or_else(|| "an unknown customer".into()),
        c.business_phone_number_id
            .as_deref()
            .map(|b| format!(" on business number {b}"))
            .unwrap_or_default()
    )
}

/// A handover state as a person says it.
fn handover_state(state: &str) -> &'static str {
    match state {
        "agent" => "with an agent",
        "requested" => "waiting for an agent",
        "paused" => "paused",
        _ => "handed over",
    }
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
            None => anyhow::bail!("no conversation has the id {id}"),
        },
        Target::Phone(phone) => {
            let mut found = store::ops::conversations_by_phone(pool, phone)
                .await
                .context(read)?
                .into_iter();
            match found.next() {
                Some(c) => (c, found.map(|c| c.id).collect()),
                None => anyhow::bail!("no conversation with +{phone}"),
            }
        }
        Target::Bsuid(bsuid) => {
            let mut found = store::ops::conversations_by_bsuid(pool, bsuid)
                .await
                .context(read)?
                .into_iter();
            match found.next() {
                Some(c) => (c, found.map(|c| c.id).collect()),
                None => anyhow::bail!("no conversation with the customer {bsuid}"),
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
fn split_variables(variables: Option<Value>) -> (Option<Value>, Option<Value>) {
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

fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

fn compact(value: &Value, max: usize) -> String {
    let text = value.to_string();
    let short = truncate_chars(&text, max);
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        short
    }
}

/// A kept error (Meta's error object, a status's error, or wabot's own `reason`) as
/// one sentence: the code, what went wrong, Meta's details, the HTTP status. `--json`
/// has the object as it was stored; anything without a message is shown as JSON.
fn error_prose(error: &Value) -> String {
    fn text(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str).filter(|s| !s.is_empty())
    }
    let Some(what) = text(error.get("message"))
        .or(text(error.get("title")))
        .or(text(error.get("reason")))
    else {
        return compact(error, 300);
    };
    let mut prose = match error.get("code").and_then(Value::as_i64) {
        // Meta's messages often name their code already: `(#131047) ...`.
        Some(code) if !what.contains(&code.to_string()) => format!("{code} {what}"),
        _ => what.to_owned(),
    };
    let details = text(error.pointer("/error_data/details")).or(text(error.get("details")));
    if let Some(details) = details.filter(|d| !what.contains(d)) {
        let _ = write!(prose, " ({details})");
    }
    if let Some(status) = error.get("httpStatus").and_then(Value::as_i64) {
        let _ = write!(prose, ", HTTP {status}");
    }
    truncate_chars(&prose, 300)
}

/// The transcript as the terminal shows it.
pub fn render(t: &Transcript) -> String {
    let mut out = String::new();
    let c = &t.conversation;
    let _ = writeln!(
        out,
        "Conversation {} with {}{}{}",
        c.id,
        c.customer_phone
            .as_deref()
            .map(display_customer)
            .unwrap_or_else(|| "an unknown customer".into()),
        c.customer_name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        c.business_phone_number_id
            .as_deref()
            .map(|b| format!(" on business number {b}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  started {} UTC, last message {}, customer last wrote {}",
        time(&c.created_at),
        c.last_message_at
            .as_ref()
            .map(time)
            .unwrap_or_else(|| "-".into()),
        c.last_customer_message_at
            .as_ref()
            .map(time)
            .unwrap_or_else(|| "-".into())
    );
    if let Some(h) = &t.handover {
        let line = match h.state.as_str() {
            "agent" => format!(
                "AN AGENT HAS IT ({}) since {} UTC, agent last wrote {} UTC: the bot stays \
                 silent until the agent is idle or `wabot conversation resume`",
                h.source,
                time(&h.since),
                time(&h.last_agent_at)
            ),
            "requested" => format!(
                "WAITING FOR AN AGENT ({}) for {}, since {} UTC: the bot stays silent",
                h.source,
                super::status::age(h.age_secs),
                time(&h.since)
            ),
            "released" => format!(
                "RESUMED by an operator at {} UTC: the customer's next message starts the \
                 chatbot afresh",
                time(&h.since)
            ),
            "paused" => format!(
                "PAUSED by {} since {} UTC: the bot stays silent until `wabot conversation resume`",
                if h.source == "operator" {
                    "an operator".to_owned()
                } else {
                    h.source.clone()
                },
                time(&h.since)
            ),
            other => format!(
                "handed over ({other}, {}) since {} UTC",
                h.source,
                time(&h.since)
            ),
        };
        let _ = writeln!(out, "  {line}");
    }
    if let Some(o) = &t.opt_out {
        let _ = writeln!(
            out,
            "  OPTED OUT since {} UTC ({}): no message the business starts goes to this customer",
            time(&o.opted_out_at),
            match (o.source.as_str(), &o.word) {
                ("keyword", Some(word)) => format!("the customer wrote \"{word}\""),
                ("operator", _) => "by an operator".to_owned(),
                (source, _) => source.to_owned(),
            }
        );
    }
    if !t.other_conversations.is_empty() {
        let ids: Vec<String> = t.other_conversations.iter().map(Uuid::to_string).collect();
        let _ = writeln!(
            out,
            "  other conversations of this customer: {}",
            ids.join(", ")
        );
    }
    match &t.context {
        Some(x) => {
            let _ = writeln!(
                out,
                "  context: {} at node `{}`, {}{}{}",
                x.chatbot_name.as_deref().unwrap_or("(deleted chatbot)"),
                x.current_node_id,
                x.status,
                x.completion_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                x.expires_at
                    .as_ref()
                    .filter(|_| x.is_active)
                    .map(|e| format!(", expires {}", time(e)))
                    .unwrap_or_default()
            );
            let _ = writeln!(out, "  variables: {}", compact(&x.variables, 600));
        }
        None => {
            let _ = writeln!(out, "  no chatbot context");
        }
    }
    let _ = writeln!(out);
    if t.items.len() < t.total_items {
        let _ = writeln!(
            out,
            "({} not shown)",
            count(t.total_items - t.items.len(), "earlier item")
        );
    }
    if t.items.is_empty() {
        let _ = writeln!(out, "no messages");
    }
    // Message types as wide as the widest shown, so that every summary starts in
    // the same column.
    let kind_width = t
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Message(m) => Some(m.kind.chars().count()),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    for item in &t.items {
        let at = time(&item.at());
        match item {
            Item::Message(m) => {
                let arrow = if m.direction == "in" { "IN " } else { "OUT" };
                let _ = writeln!(
                    out,
                    "{at}  {arrow}  {:<kind_width$}  {}",
                    m.kind,
                    if m.summary.is_empty() {
                        "\"\"".to_owned()
                    } else {
                        m.summary.clone()
                    }
                );
                let mut line = format!("{:25}{}", "", m.status);
                if let Some(wamid) = &m.wamid {
                    let _ = write!(line, "  {wamid}");
                }
                if let Some(statuses) = m.statuses.as_array().filter(|a| !a.is_empty()) {
                    let history: Vec<String> = statuses
                        .iter()
                        .map(|s| {
                            let when = s
                                .get("at")
                                .and_then(Value::as_str)
                                .or(s.get("received_at").and_then(Value::as_str))
                                .and_then(|w| w.parse::<DateTime<Utc>>().ok())
                                .map(|w| w.format("%H:%M:%S").to_string())
                                .unwrap_or_default();
                            format!(
                                "{} {when}",
                                s.get("status").and_then(Value::as_str).unwrap_or("?")
                            )
                        })
                        .collect();
                    let _ = write!(line, "  [{}]", history.join(", "));
                }
                if let Some(send) = &m.send {
                    let attempts = send.get("attempts").and_then(Value::as_i64).unwrap_or(0);
                    if attempts > 1 {
                        let _ = write!(line, "  {attempts} attempts");
                    }
                }
                let _ = writeln!(out, "{line}");
                if let Some(error) = &m.error {
                    let _ = writeln!(out, "{:25}FAILED: {}", "", error_prose(error));
                } else if let Some(e) = m
                    .send
                    .as_ref()
                    .and_then(|s| s.get("last_error"))
                    .filter(|e| !e.is_null())
                {
                    let _ = writeln!(out, "{:25}last error: {}", "", error_prose(e));
                }
            }
            Item::Turn(turn) => {
                let what = match turn.kind.as_str() {
                    "timeout" => "TIMER",
                    "flow_failed" => "FLOW FAILED",
                    _ => "TURN",
                };
                let walked = if turn.nodes.is_empty() {
                    "no nodes".to_owned()
                } else {
                    turn.nodes.join(" > ")
                };
                let after = match (&turn.current_node_id, &turn.status) {
                    (Some(node), Some(status)) => format!(
                        "; now `{node}`, {status}{}",
                        turn.completion_reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    ),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{at}  {what}  {walked} ({}, {}){after}",
                    count(turn.steps, "step"),
                    count(turn.sends, "send")
                );
                if let Some(note) = &turn.note {
                    let _ = writeln!(out, "{:25}note: {note}", "");
                }
                if let Some(vars) = turn
                    .variables
                    .as_ref()
                    .filter(|v| v.as_object().is_some_and(|m| !m.is_empty()))
                {
                    let _ = writeln!(out, "{:25}variables: {}", "", compact(vars, 400));
                }
            }
            Item::GivenUp(job) => {
                let _ = writeln!(
                    out,
                    "{at}  GIVEN UP  {} job {} after {}: {}",
                    job.kind,
                    job.id,
                    count(job.attempts, "attempt"),
                    job.last_error.as_deref().unwrap_or("")
                );
            }
        }
    }
    if !t.pending.is_empty() {
        let _ = writeln!(out, "\nPending turn jobs");
        let mut table = Table::new(
            "  ",
            &[
                ("kind", Align::Left),
                ("job", Align::Right),
                ("due", Align::Left),
                ("state", Align::Left),
                ("attempts", Align::Right),
                ("last error", Align::Left),
            ],
        );
        for job in &t.pending {
            table.row(vec![
                job.kind.clone(),
                job.id.to_string(),
                time(&job.run_at),
                if job.leased { "running" } else { "waiting" }.to_owned(),
                job.attempts.to_string(),
                job.last_error.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&table.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_target_is_an_id_or_a_phone_with_or_without_plus() {
        let id = Uuid::new_v4();
        assert_eq!(Target::parse(&id.to_string()).unwrap(), Target::Id(id));
        assert_eq!(
            Target::parse("+90 555 111-22-33").unwrap(),
            Target::Phone("905551112233".into())
        );
        assert_eq!(
            Target::parse("905551112233").unwrap(),
            Target::Phone("905551112233".into())
        );
        assert_eq!(
            Target::parse(" US.13491208655302741918 ").unwrap(),
            Target::Bsuid("US.13491208655302741918".into())
        );
        for bad in [
            "",
            "+",
            "abc",
            "90555x",
            "123456789012345678901",
            "++90",
            "us.1",
        ] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.contains("neither a phone number"), "{bad}: {e}");
        }
    }

    #[test]
    fn summaries_name_what_a_message_holds() {
        assert_eq!(
            summarize("text", &json!({"text": "hi", "body": "hi"})),
            "hi"
        );
        assert_eq!(
            summarize(
                "interactive",
                &json!({"type": "button_reply", "buttonId": "b1", "buttonTitle": "Yes"})
            ),
            "[button] Yes (b1)"
        );
        assert_eq!(
            summarize(
                "interactive",
                &json!({"type": "button", "body": {"text": "Pick"},
                        "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "A"}},
                                               {"type": "reply", "reply": {"id": "b", "title": "B"}}]}})
            ),
            "Pick [buttons: A | B]"
        );
        assert_eq!(
            summarize(
                "interactive",
                &json!({"type": "list", "body": {"text": "Menu"},
                        "action": {"button": "Open", "sections": [{"rows": [{"id": "1", "title": "One"}]}]}})
            ),
            "Menu [list \"Open\": One]"
        );
        assert_eq!(
            summarize("image", &json!({"caption": "cat"})),
            "[image] cat"
        );
        assert_eq!(summarize("unknown", &json!({})), "[unknown]");
        let long = "x".repeat(500);
        assert_eq!(
            summarize("text", &json!({ "text": long })).chars().count(),
            161
        );
    }

    #[test]
    fn kept_errors_read_as_sentences() {
        assert_eq!(
            error_prose(&json!({"code": 131026, "title": "Message undeliverable",
                                "details": "Receiver is incapable", "message": null})),
            "131026 Message undeliverable (Receiver is incapable)"
        );
        assert_eq!(
            error_prose(
                &json!({"code": 131047, "message": "(#131047) Re-engagement message",
                                "error_data": {"details": "Re-engagement message"},
                                "httpStatus": 400})
            ),
            "(#131047) Re-engagement message, HTTP 400"
        );
        assert_eq!(
            error_prose(&json!({"reason": "Graph API unreachable",
                                "message": "cannot reach the Graph API: dns error"})),
            "cannot reach the Graph API: dns error"
        );
        assert_eq!(error_prose(&json!({"odd": 1})), "{\"odd\":1}");
    }

    #[test]
    fn the_internal_state_is_kept_apart_from_the_variables() {
        let (vars, state) =
            split_variables(Some(json!({"name": "Ayşe", "__wabot": {"retries": 1}})));
        assert_eq!(vars, Some(json!({"name": "Ayşe"})));
        assert_eq!(state, Some(json!({"retries": 1})));
        assert_eq!(split_variables(None), (None, None));
    }
}
