//! What the simulated customers write, what each turn must answer, and the check
//! that every acked message got its replies exactly once. Shared by `e2e_load` and
//! `soak`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::fake_graph::Reply;

pub const SECRET: &str = "e2e-app-secret";
pub const BUSINESS: &str = "106540352242922";

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bot {
    /// `fixtures/e2e/echo-loop.json`: every reply names the message it answers, so
    /// the exactly-once check is exact.
    Echo,
    /// `fixtures/e2e/sample-bot.json`: welcome + 3-button menu, then answer +
    /// goodbye (which ends the context); checked by counts and order.
    Sample,
}

impl Bot {
    pub fn fixture(self) -> &'static str {
        match self {
            Bot::Echo => "fixtures/e2e/echo-loop.json",
            Bot::Sample => "fixtures/e2e/sample-bot.json",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bot::Echo => "echo-loop",
            Bot::Sample => "sample-bot",
        }
    }
}

pub fn wa_id(user: usize) -> String {
    format!("1999{user:08}")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const BUTTONS: [(&str, &str, &str); 3] = [
    ("btn_support", "Support", "Support:"),
    ("btn_pricing", "Pricing", "Pricing:"),
    ("btn_about", "About us", "About us:"),
];

fn echo_text(u: usize, s: usize) -> String {
    format!("echo: message {s} of customer {u}")
}

const ASK: &str = "Say something";

/// Message `s` of customer `u` (its wamid is `wamid.IN.<run>.<u>.<s>`, unique per run).
fn message(run: &str, bot: Bot, u: usize, s: usize) -> Value {
    let id = format!("wamid.IN.{run}.{u}.{s}");
    let ts = unix_now().to_string();
    let from = wa_id(u);
    if bot == Bot::Sample && s % 2 == 1 {
        let (id_, title, _) = BUTTONS[(u + s / 2) % 3];
        return json!({"from": from, "id": id, "timestamp": ts, "type": "interactive",
                      "interactive": {"type": "button_reply",
                                      "button_reply": {"id": id_, "title": title}}});
    }
    json!({"from": from, "id": id, "timestamp": ts, "type": "text",
           "text": {"body": format!("message {s} of customer {u}")}})
}

/// The signed body Meta would post for message `s` of customer `u`.
pub fn webhook(run: &str, bot: Bot, u: usize, s: usize) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": BUSINESS},
            "contacts": [{"profile": {"name": format!("Customer {u}")}, "wa_id": wa_id(u)}],
            "messages": [message(run, bot, u, s)]}}]}]})
    .to_string()
    .into_bytes()
}

/// Replies a customer must have received once `acked` of its messages were acked,
/// in order, from the first (the echo bot's first turn only asks; every later turn
/// echoes and asks again; every sample-bot turn sends two).
pub fn expected_total(bot: Bot, acked: usize) -> usize {
    match (bot, acked) {
        (_, 0) => 0,
        (Bot::Echo, n) => 2 * n - 1,
        (Bot::Sample, n) => 2 * n,
    }
}

/// One message a customer posted.
#[derive(Debug, Clone)]
pub struct Sent {
    pub s: usize,
    /// When it was due (open loop: scheduled; closed loop: posted): latency's zero.
    pub due: Instant,
    /// How long the accepted POST took, if one was accepted.
    pub ack: Option<Duration>,
    /// When it was acked.
    pub acked_at: Option<Instant>,
    /// Non-200 answers and failed connections before (or instead of) the ack.
    pub refused: u32,
}

/// The verdict on one customer's messages and replies.
#[derive(Debug, Default)]
pub struct Verdict {
    pub acked: usize,
    pub answered: usize,
    /// Replies beyond exactly once per acked message's expected replies.
    pub duplicates: usize,
    /// Echoes of messages whose webhook was refused (wabot answered a message it
    /// did not ack).
    pub refused_answered: usize,
    /// Replies that belong to no message, or a sample-bot first reply with the
    /// wrong text.
    pub wrong: usize,
    /// Echoes older than one already seen: a conversation's turns out of order.
    pub out_of_order: usize,
    /// (due, first reply, last reply) per answered message.
    pub turns: Vec<(Instant, Instant, Instant)>,
    /// A reply sent more than once: its text and when each copy arrived.
    pub duplicated: Vec<(String, Vec<Instant>)>,
    /// Out of order: (customer, message answered late, (acked at), message answered
    /// before it, (posted at), when the late answer arrived).
    pub disorder: Vec<(usize, usize, Instant, usize, Instant, Instant)>,
}

/// Matches a customer's replies to its acked messages. Messages reach wabot in the
/// order they were acked (a customer's closed loop, or the soak's one-at-a-time
/// redelivery); the open loop's spacing keeps them in order too.
pub fn judge(bot: Bot, u: usize, sent: &[Sent], log: &[Reply]) -> Verdict {
    let acked: Vec<&Sent> = sent.iter().filter(|m| m.ack.is_some()).collect();
    let mut v = Verdict {
        acked: acked.len(),
        ..Verdict::default()
    };
    match bot {
        Bot::Echo => judge_echo(u, sent, &acked, log, &mut v),
        Bot::Sample => judge_sample(u, &acked, log, &mut v),
    }
    v
}

fn judge_echo(u: usize, sent: &[Sent], acked: &[&Sent], log: &[Reply], v: &mut Verdict) {
    let asks: Vec<usize> = (0..log.len()).filter(|&i| log[i].text == ASK).collect();
    let mut by_text: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in log.iter().enumerate() {
        by_text.entry(r.text.as_str()).or_default().push(i);
    }
    let mut used = vec![false; log.len()];
    for &i in &asks {
        used[i] = true;
    }
    // Every turn asks again; the message that started the context (the first to
    // reach wabot, normally the first acked) gets only the question, every other
    // one its echo first.
    let mut answered_asks = 0;
    let mut started = false;
    for m in acked {
        let text = echo_text(u, m.s);
        let hits = by_text.get(text.as_str()).map_or(&[][..], |h| &h[..]);
        for &i in hits {
            used[i] = true;
        }
        let Some(&first) = hits.first() else {
            if let (false, Some(&i)) = (started, asks.first()) {
                started = true;
                v.answered += 1;
                answered_asks += 1;
                v.turns.push((m.due, log[i].at, log[i].at));
            }
            continue;
        };
        v.answered += 1;
        answered_asks += 1;
        v.duplicates += hits.len() - 1;
        if hits.len() > 1 {
            let at = hits.iter().map(|&i| log[i].at).collect();
            v.duplicated.push((format!("customer {u}: {text:?}"), at));
        }
        let last = asks
            .iter()
            .find(|&&i| i > first)
            .map_or(log[first].at, |&i| log[i].at);
        v.turns.push((m.due, log[first].at, last));
    }
    // Echoes of refused messages, and anything else, belong to no acked message. A
    // refused webhook can still have been stored (the connection broke after wabot
    // committed and answered 200: hyper's IncompleteMessage on the driver's side),
    // and its turn asks again: that question is its own, not a duplicate.
    let refused: Vec<String> = sent
        .iter()
        .filter(|m| m.ack.is_none())
        .map(|m| echo_text(u, m.s))
        .collect();
    for (i, r) in log.iter().enumerate() {
        if used[i] {
            continue;
        }
        if refused.contains(&r.text) {
            v.refused_answered += 1;
        } else {
            v.wrong += 1;
        }
    }
    let extra_asks = asks
        .len()
        .saturating_sub(answered_asks)
        .saturating_sub(v.refused_answered);
    if extra_asks > 0 {
        v.duplicates += extra_asks;
        v.duplicated.push((
            format!("customer {u}: {ASK:?} {extra_asks} more than its turns"),
            Vec::new(),
        ));
    }
    // Turns in order: a message acked before another was even posted must be
    // answered first (messages in flight together may reach wabot in either order).
    // Only first copies count: a late duplicate is counted above.
    let by_s: HashMap<usize, &Sent> = acked.iter().map(|m| (m.s, *m)).collect();
    let mut seen: Vec<&Sent> = Vec::new();
    for r in log {
        let Some(m) = r
            .text
            .strip_prefix("echo: message ")
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| by_s.get(&n))
        else {
            continue;
        };
        if seen.iter().any(|e| e.s == m.s) {
            continue;
        }
        if let Some(e) = seen.iter().find(|e| m.acked_at.is_some_and(|a| a < e.due)) {
            v.out_of_order += 1;
            if let Some(a) = m.acked_at {
                v.disorder.push((u, m.s, a, e.s, e.due, r.at));
            }
        }
        seen.push(m);
    }
}

fn judge_sample(u: usize, acked: &[&Sent], log: &[Reply], v: &mut Verdict) {
    // Two replies a turn, in order: the k-th acked message owns log[2k], log[2k + 1].
    for (k, m) in acked.iter().enumerate() {
        let (Some(first), Some(last)) = (log.get(2 * k), log.get(2 * k + 1)) else {
            break;
        };
        v.answered += 1;
        let ok = if m.s % 2 == 0 {
            first.text.starts_with("Welcome to the support line")
        } else {
            first.text.starts_with(BUTTONS[(u + m.s / 2) % 3].2)
        };
        v.wrong += usize::from(!ok);
        v.turns.push((m.due, first.at, last.at));
    }
    v.duplicates = log
        .len()
        .saturating_sub(expected_total(Bot::Sample, acked.len()));
}
