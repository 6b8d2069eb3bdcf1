//! `wabot status`: one screen from the database: the active chatbots and whether
//! they compile, the WhatsApp credentials in use (secrets masked), queue depths,
//! held sends, customers waiting for an agent and conversations an agent has or an
//! operator paused, leases by process, and the last hour's errors by kind. `--json`
//! prints the same as one JSON document.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;

use super::fmt::{count, Align, Table};
use crate::config::Config;
pub use crate::service::status::{report, StatusReport};
use crate::store;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON document instead of the screen.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: Config, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let pool = store::connect_existing(&config)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    let report = report(&pool, &config)
        .await
        .context("cannot read the status (is the database migrated? `wabot migrate run`)")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// `12s`, `3m 04s`, `2h 05m`, `3d 04h`.
pub fn age(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The report as the screen shows it.
pub fn render(r: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "wabot status at {}", time(&r.generated_at));

    let _ = writeln!(out, "\nActive chatbots ({})", r.chatbots.len());
    if r.chatbots.is_empty() {
        let _ = writeln!(
            out,
            "  none: a new conversation gets no answer (`wabot chatbot import FILE --activate`)"
        );
    }
    for bot in &r.chatbots {
        let state = if bot.compiles {
            format!(
                "compiles: {}, {}",
                count(bot.nodes.unwrap_or(0), "node"),
                count(bot.warnings.len(), "warning")
            )
        } else {
            format!("DOES NOT COMPILE: {}", count(bot.errors.len(), "error"))
        };
        let _ = writeln!(
            out,
            "  {} \"{}\" updated {}; {state}; {}",
            bot.id,
            bot.name,
            time(&bot.updated_at),
            count(bot.active_contexts, "active conversation")
        );
        for e in bot.errors.iter().take(5) {
            let _ = writeln!(out, "    error: {e}");
        }
        if bot.errors.len() > 5 {
            let _ = writeln!(out, "    ... and {} more", bot.errors.len() - 5);
        }
    }

    let w = &r.whatsapp;
    let _ = match w.config_id {
        Some(id) => writeln!(
            out,
            "\nWhatsApp credentials: whatsapp_config row {id} (of {})",
            count(w.config_rows, "row")
        ),
        None => writeln!(
            out,
            "\nWhatsApp credentials: environment (WABOT_*; no active whatsapp_config row of {})",
            w.config_rows
        ),
    };
    let _ = writeln!(
        out,
        "  phone_number_id {}  business_account_id {}  Graph API {}",
        w.phone_number_id.as_deref().unwrap_or("NOT SET"),
        w.business_account_id.as_deref().unwrap_or("NOT SET"),
        w.api_version
    );
    let _ = writeln!(
        out,
        "  access token {}  app secret {}  verify token {}",
        w.access_token.show(),
        w.app_secret.show(),
        w.verify_token.show()
    );

    let _ = writeln!(out, "\nQueues (unfinished jobs)");
    if r.queues.is_empty() {
        let _ = writeln!(out, "  empty");
    } else {
        let mut table = Table::new(
            "  ",
            &[
                ("queue", Align::Left),
                ("open", Align::Right),
                ("waiting", Align::Right),
                ("leased", Align::Right),
                ("scheduled", Align::Right),
                ("expired", Align::Right),
                ("retrying", Align::Right),
                ("longest wait", Align::Left),
                ("oldest", Align::Left),
            ],
        );
        for q in &r.queues {
            table.row(vec![
                format!("{} {}", q.queue, q.kind),
                q.open.to_string(),
                q.waiting.to_string(),
                q.leased.to_string(),
                q.scheduled.to_string(),
                q.expired_leases.to_string(),
                q.retrying.to_string(),
                q.oldest_waiting_secs.map(age).unwrap_or_else(|| "-".into()),
                q.oldest_open_secs.map(age).unwrap_or_else(|| "-".into()),
            ]);
        }
        out.push_str(&table.render());
    }

    if !r.sending.holds.is_empty() {
        for h in &r.sending.holds {
            let heading = match h.kind.as_str() {
                "graph_unreachable" => "SENDING FAILING (retried with backoff)",
                _ => "SENDING ON HOLD",
            };
            let _ = writeln!(
                out,
                "\n{heading} in {}{}: {}; {} queued",
                h.holder,
                h.since
                    .map(|s| format!(" since {}", time(&s)))
                    .unwrap_or_default(),
                h.reason,
                count(r.sending.queued, "send")
            );
        }
    } else {
        let _ = writeln!(
            out,
            "\nSending: not on hold; {} queued",
            count(r.sending.queued, "send")
        );
    }

    let h = &r.handover;
    if h.waiting_count > 0 || h.with_agent > 0 || h.paused > 0 {
        let _ = writeln!(out, "\nWaiting for an agent ({})", h.waiting_count);
        if h.waiting.is_empty() {
            let _ = writeln!(out, "  none");
        } else {
            let mut table = Table::new(
                "  ",
                &[
                    ("customer", Align::Left),
                    ("waiting", Align::Left),
                    ("since", Align::Left),
                    ("asked by", Align::Left),
                    ("conversation", Align::Left),
                ],
            );
            for w in &h.waiting {
                table.row(vec![
                    w.customer_wa_id
                        .as_deref()
                        .map(super::conversation::display_customer)
                        .unwrap_or_else(|| "?".into()),
                    age(w.age_secs),
                    time(&w.since),
                    w.source.clone(),
                    w.conversation_id.to_string(),
                ]);
            }
            out.push_str(&table.render());
            if h.waiting_count > h.waiting.len() as i64 {
                let _ = writeln!(
                    out,
                    "  ... and {} more",
                    h.waiting_count - h.waiting.len() as i64
                );
            }
        }
        let _ = writeln!(
            out,
            "  with an agent: {}; paused by an operator: {} (`wabot conversation resume PHONE` \
             gives one back to the bot)",
            count(h.with_agent, "conversation"),
            count(h.paused, "conversation")
        );
    }

    let _ = writeln!(out, "\nProcesses");
    if r.processes.is_empty() {
        let _ = writeln!(out, "  none reported");
    }
    for p in &r.processes {
        let state = if p.alive { "alive" } else { "STOPPED" };
        let _ = writeln!(
            out,
            "  {} {state}: pid {} on {} v{}, started {}, seen {} ago; leases now: {}, {}",
            p.row.holder,
            p.row.pid,
            p.row.hostname.as_deref().unwrap_or("?"),
            p.row.version,
            time(&p.row.started_at),
            age(p.row.seen_secs_ago),
            count(p.leased_turns, "turn"),
            count(p.leased_sends, "send")
        );
    }
    for l in r
        .leases
        .iter()
        .filter(|l| !r.processes.iter().any(|p| p.row.holder == l.holder))
    {
        let _ = writeln!(
            out,
            "  {} (no process row): {}, the first runs out {}",
            l.holder,
            count(l.jobs, &format!("{} lease", l.queue)),
            time(&l.first_expiry)
        );
    }

    let window = if r.errors.window_secs == 3600.0 {
        "hour".to_owned()
    } else {
        age(r.errors.window_secs)
    };
    let _ = writeln!(out, "\nErrors in the last {window} (jobs retrying: now)");
    if r.errors.groups.is_empty() {
        let _ = writeln!(out, "  none");
    } else {
        let mut table = Table::new(
            "  ",
            &[
                ("kind", Align::Left),
                ("code", Align::Left),
                ("count", Align::Right),
                ("last", Align::Left),
                ("latest example", Align::Left),
            ],
        );
        for g in &r.errors.groups {
            table.row(vec![
                g.kind.clone(),
                // A completion reason or a note can be a sentence: cut, so that one
                // long one does not push every example off the screen.
                g.code
                    .as_deref()
                    .map(|c| crate::text::truncate_chars(c, 40))
                    .unwrap_or_else(|| "-".into()),
                g.count.to_string(),
                g.last_at.as_ref().map(time).unwrap_or_else(|| "-".into()),
                g.example
                    .as_deref()
                    .map(|e| crate::text::truncate_chars(e, 120))
                    .unwrap_or_default(),
            ]);
        }
        out.push_str(&table.render());
    }
    for e in &r.failing_endpoints {
        let _ = writeln!(
            out,
            "\nevents: endpoint {} ({}) is failing: {} failed, {} pending; last error: {}",
            e.id,
            e.url,
            e.failed,
            e.pending,
            e.last_error.as_deref().unwrap_or("-")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(4.4), "4s");
        assert_eq!(age(184.0), "3m 04s");
        assert_eq!(age(7500.0), "2h 05m");
        assert_eq!(age(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 04h");
        assert_eq!(age(-2.0), "0s");
    }
}
