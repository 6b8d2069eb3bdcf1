//! `wabot replay`: stored webhooks through ingest again, or with `--dry-run
//! --chatbot FILE` through the engine alone (see `crate::replay`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;

use super::fmt::count;
use crate::config::Config;
use crate::credentials::CredentialStore;
use crate::engine::{compile, EngineLimits};
use crate::replay::{self, DryRun, DryRunHttp, DryRunReport, Exchange, IngestSummary, Selection};
use crate::store;
use crate::store::ingest::PHONE_MAX_CHARS;
use crate::store::replay::EventFilter;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Webhooks received at or after this time: RFC 3339 (2026-12-03T10:00:00Z) or
    /// an age (90m, 24h, 7d).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Webhooks received before this time (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Only the webhooks of this customer (wa_id, or BSUID): their messages and the
    /// statuses of what was sent to them.
    #[arg(long, value_name = "PHONE|BSUID")]
    pub customer: Option<String>,
    /// At most this many stored webhooks.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Write nothing: run the conversations through --chatbot and show its answers
    /// next to the ones that were sent.
    #[arg(long, requires = "chatbot")]
    pub dry_run: bool,
    /// The chatbot file a dry run answers with (a bare document or WhatsApp
    /// Builder's export).
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub chatbot: Option<PathBuf>,
    /// Make the rest_api calls and data-source requests for real in a dry run
    /// (otherwise they are answered with an error the node's error edge handles).
    #[arg(long, requires = "dry_run")]
    pub real_http: bool,
    /// Exit with 1 when a dry run answered any message differently.
    #[arg(long, requires = "dry_run")]
    pub fail_on_diff: bool,
    /// Machine-readable output: one JSON document (a replay into the database) or
    /// JSON lines, one per message and a summary last (a dry run).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: Config, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let now = Utc::now();
    let since = args
        .since
        .as_deref()
        .map(|s| parse_when(s, now).map_err(|e| anyhow::anyhow!("--since: {e}")))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|s| parse_when(s, now).map_err(|e| anyhow::anyhow!("--until: {e}")))
        .transpose()?;
    if let (Some(since), Some(until)) = (since, until) {
        anyhow::ensure!(since < until, "--since must be before --until");
    }
    let customer = args
        .customer
        .as_deref()
        .map(|c| check_customer(c).map_err(|e| anyhow::anyhow!("--customer: {e}")))
        .transpose()?;
    if args.limit == Some(0) {
        anyhow::bail!("--limit must be greater than 0");
    }
    // The chatbot is checked before the database is touched.
    let bot = match &args.chatbot {
        Some(file) => {
            let doc = super::chatbot::read_doc(file)?;
            match compile(&doc) {
                Ok((bot, _warnings)) => Some((bot, doc.metadata)),
                Err(errors) => {
                    for e in errors {
                        eprintln!("error: {e}");
                    }
                    anyhow::bail!("{} does not compile", file.display());
                }
            }
        }
        None => None,
    };
    let selection = Selection {
        filter: EventFilter {
            since,
            until,
            customer,
        },
        limit: args.limit,
    };
    let pool = store::connect_existing(&config)
        .await
        .context("cannot connect to the database")?;
    let credentials = CredentialStore::new(pool.clone(), config.whatsapp.clone())
        .current()
        .await
        .context("cannot read the credentials")?;
    let served = credentials.phone_number_id.as_deref();

    let Some((bot, metadata)) = bot else {
        let summary = replay::into_database(&pool, &selection, served).await?;
        if args.json {
            println!("{}", serde_json::to_string(&summary)?);
        } else {
            print_summary(&summary);
        }
        return Ok(ExitCode::SUCCESS);
    };

    let http = if args.real_http {
        DryRunHttp::Real(crate::datasource::EngineHttp {
            rest: crate::egress::rest_api::ReqwestHttp::new(&config)?,
            pool: pool.clone(),
            datasources: crate::datasource::DataSourceClient::new(&config.datasource),
        })
    } else {
        DryRunHttp::Refuse
    };
    let limits = EngineLimits::from_config(&config.engine, config.datasource.max_timeout_ms);
    let rules = crate::session::Rules::new(&config.session);
    let run = DryRun {
        bot: &bot,
        metadata: metadata.as_ref(),
        limits: &limits,
        http: &http,
        rules: &rules,
        end: until.unwrap_or(now),
    };
    let report = replay::dry_run(&pool, &selection, served, &run).await?;
    if args.json {
        for exchange in &report.exchanges {
            let mut line = serde_json::to_value(exchange)?;
            line["type"] = "message".into();
            println!("{line}");
        }
        println!(
            "{}",
            serde_json::json!({
                "type": "summary",
                "chatbot": bot.name(),
                "events": report.events,
                "unreadable": report.unreadable,
                "customers": report.customers,
                "messages": report.exchanges.len(),
                "different": report.differing(),
                "real_http": args.real_http,
            })
        );
    } else {
        print_report(&report, bot.name(), args.real_http);
    }
    if args.fail_on_diff && report.differing() > 0 {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(s: &IngestSummary) {
    println!(
        "replayed {} ({} unreadable, {} refused)",
        count(s.events, "stored webhook"),
        s.unreadable,
        s.failed
    );
    println!(
        "messages: {} new, {} already stored",
        s.messages_new, s.messages_duplicate
    );
    println!(
        "statuses: {} new, {} already recorded",
        s.statuses_new, s.statuses_duplicate
    );
    println!(
        "turn jobs queued: {} (a running `wabot serve` answers them)",
        s.jobs_queued
    );
}

fn print_report(report: &DryRunReport, name: &str, real_http: bool) {
    println!(
        "dry run with \"{name}\": nothing is written; rest_api calls {}",
        if real_http {
            "are made for real"
        } else {
            "are answered with an error (--real-http makes them)"
        }
    );
    let mut customer = "";
    for e in &report.exchanges {
        if e.customer != customer {
            customer = &e.customer;
            println!("\n== customer {customer}");
        }
        print_exchange(e);
    }
    println!(
        "\n{} of {} from {}: {} answered differently, {} the same",
        count(report.exchanges.len(), "message"),
        count(report.customers, "customer"),
        count(report.events, "stored webhook"),
        report.differing(),
        report.exchanges.len() - report.differing()
    );
}

fn print_exchange(e: &Exchange) {
    let mark = if e.same { "=" } else { "≠" };
    println!(
        "{mark} [{}] {}  customer: {}",
        e.at.to_rfc3339(),
        e.wamid,
        indent(&e.sent)
    );
    let lines = |label: &str, replies: &[replay::Reply]| {
        if replies.is_empty() {
            println!("    {label}: (nothing)");
        }
        for (i, r) in replies.iter().enumerate() {
            let timeout = if r.after_timeout { "(timeout) " } else { "" };
            let text = indent(&r.text);
            if i == 0 {
                println!("    {label}: {timeout}{text}");
            } else {
                println!("          {timeout}{text}");
            }
        }
    };
    lines("new ", &e.new);
    match &e.then {
        Some(then) => lines("then", then),
        None => println!("    then: (the message is not in the database)"),
    }
    for note in &e.notes {
        println!("    note: {note}");
    }
}

fn indent(text: &str) -> String {
    text.replace('\n', "\n          ")
}

/// RFC 3339, or an age before `now`: a number and s, m, h, d or w.
pub fn parse_when(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        format!("`{text}` is neither an RFC 3339 time (2026-12-03T10:00:00Z) nor an age such as 90m, 24h or 7d")
    };
    let n: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(seconds)
        .and_then(chrono::Duration::try_seconds)
        .and_then(|age| now.checked_sub_signed(age))
        .ok_or_else(|| format!("`{text}` reaches too far back"))
}

/// A wa_id: digits (a leading + is dropped), at most 20.
fn check_customer(text: &str) -> Result<String, String> {
    if crate::whatsapp::webhook::is_bsuid(text.trim()) {
        return Ok(text.trim().to_owned());
    }
    let digits = text.trim().trim_start_matches('+');
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` is not a wa_id (the customer's number in digits, e.g. 905551112233) \
             nor a BSUID (e.g. US.13491208655302741918)"
        ));
    }
    if digits.len() > PHONE_MAX_CHARS {
        return Err(format!("`{text}` is longer than {PHONE_MAX_CHARS} digits"));
    }
    Ok(digits.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ages() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_when("2026-12-01T08:30:00+01:00", now)
                .unwrap()
                .to_rfc3339(),
            "2026-12-01T07:30:00+00:00"
        );
        assert_eq!(
            parse_when("24h", now).unwrap().to_rfc3339(),
            "2026-12-02T12:00:00+00:00"
        );
        assert_eq!(
            parse_when("7d", now).unwrap().to_rfc3339(),
            "2026-11-26T12:00:00+00:00"
        );
        assert_eq!(
            parse_when("90m", now).unwrap().to_rfc3339(),
            "2026-12-03T10:30:00+00:00"
        );
        for bad in [
            "",
            "yesterday",
            "7",
            "h",
            "-3d",
            "3 days",
            "99999999999999999999d",
        ] {
            assert!(parse_when(bad, now).is_err(), "{bad}");
        }
        assert!(parse_when("9999999999999w", now).is_err());
    }

    #[test]
    fn customers_are_wa_ids() {
        assert_eq!(check_customer("+905551112233").unwrap(), "905551112233");
        for bad in ["", "+", "90555 1112233", "abc", "123456789012345678901"] {
            assert!(check_customer(bad).is_err(), "{bad}");
        }
    }
}
