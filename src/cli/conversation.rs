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
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::fmt::{count, Align, Table};
use crate::config::Config;
use crate::service::conversations;
pub use crate::service::conversations::{show, Item, Target, Transcript};
use crate::store;
use crate::store::events::Subscribed;
use crate::store::ops::ConversationRow;
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
    let (c, before) = conversations::pause(pool, target, Subscribed::ALL).await?;
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
    let (c, gone) = conversations::resume(pool, target, Subscribed::ALL).await?;
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
    use crate::service::conversations::{split_variables, summarize};

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
