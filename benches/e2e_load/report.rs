//! What `e2e_load` prints: the figures of a run, and the process and machine facts
//! (CPU from /proc, peak RSS, CPU model) that go with them.

use std::time::{Duration, Instant};

use super::{Bot, Options, Seen};

pub struct Report<'a> {
    pub setup: Duration,
    /// CPU seconds of this process and of all PostgreSQL processes during the load.
    pub cpu: (f64, f64),
    /// Turn jobs done, turn jobs open, messages sent, at the end of the load.
    pub counts: (i64, i64, i64),
    pub accepted: u64,
    pub pg_version: &'a str,
}

/// Prints the figures; returns the number of answered turns.
pub fn report(opts: &Options, all: &[(usize, Seen)], r: Report<'_>) -> usize {
    let mut first = Vec::new();
    let mut whole = Vec::new();
    let mut acks = Vec::new();
    let (mut sent, mut unanswered, mut wrong, mut ack_failures) = (0, 0, 0, 0);
    let mut begin: Option<Instant> = None;
    let mut end: Option<Instant> = None;
    for (_, seen) in all {
        acks.extend(seen.acks.iter().copied());
        ack_failures += seen.ack_failures;
        for turn in &seen.turns {
            let Some(at) = turn.sent else { continue };
            sent += 1;
            begin = Some(begin.map_or(at, |b| b.min(at)));
            match (turn.first, turn.last) {
                (Some(f), Some(l)) => {
                    first.push(f.saturating_duration_since(at));
                    whole.push(l.saturating_duration_since(at));
                    end = Some(end.map_or(l, |e| e.max(l)));
                    wrong += usize::from(turn.wrong);
                }
                _ => unanswered += 1,
            }
        }
    }
    let answered = first.len();
    let span = match (begin, end) {
        (Some(b), Some(e)) => e.saturating_duration_since(b),
        _ => Duration::ZERO,
    };
    let mode = match opts.open_rate {
        Some(rate) => format!("open loop, {rate} messages/s offered"),
        None if opts.think.is_zero() => "closed loop, no think time".to_owned(),
        None => format!("closed loop, think {} ms", opts.think.as_millis()),
    };
    let bot = match opts.bot {
        Bot::Echo => "echo-loop",
        Bot::Sample => "sample-chatbot",
    };
    println!(
        "e2e_load: {} customers x {} messages, {mode}, chatbot {bot}",
        opts.users, opts.messages
    );
    println!(
        "  daemon: poll {} ms, turn concurrency {}, {} DB connections{}; setup {:.2} s",
        opts.poll_ms,
        opts.turn_concurrency,
        opts.db_connections,
        match (opts.async_commit, opts.no_ping) {
            (false, false) => "",
            (false, true) => ", no ping before acquire",
            (true, false) => ", synchronous_commit OFF",
            (true, true) => ", no ping before acquire, synchronous_commit OFF",
        },
        r.setup.as_secs_f64()
    );
    println!(
        "  turns: {answered} answered of {sent} sent in {:.2} s = {:.0} turns/s \
         ({} Graph API calls = {:.0}/s); unanswered {unanswered}, wrong first reply {wrong}",
        span.as_secs_f64(),
        answered as f64 / span.as_secs_f64().max(1e-9),
        r.accepted,
        r.accepted as f64 / span.as_secs_f64().max(1e-9),
    );
    println!(
        "  end to end, webhook sent -> first reply: {}",
        summary(&mut first)
    );
    println!(
        "  end to end, webhook sent -> last reply:  {}",
        summary(&mut whole)
    );
    println!(
        "  webhook ack: {}; failures {ack_failures}",
        summary(&mut acks)
    );
    println!(
        "  database: {} turn jobs done, {} open; {} messages sent",
        r.counts.0, r.counts.1, r.counts.2
    );
    println!(
        "  cpu during load: this process {:.2} s ({:.0}% of one core), postgres {:.2} s \
         ({:.0}%; this database's backends and the server's WAL writer etc.); \
         {:.0} us of cpu per turn",
        r.cpu.0,
        100.0 * r.cpu.0 / span.as_secs_f64().max(1e-9),
        r.cpu.1,
        100.0 * r.cpu.1 / span.as_secs_f64().max(1e-9),
        1e6 * (r.cpu.0 + r.cpu.1) / (answered.max(1) as f64),
    );
    println!(
        "  memory: peak RSS {} (VmHWM; driver, fake Graph API and daemon in one process)",
        proc_status("VmHWM").unwrap_or_else(|| "?".into())
    );
    println!(
        "  machine: {} x {}; load average before {}; PostgreSQL {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        r.pg_version
    );
    answered
}

/// `p50 / p90 / p99 / max` in milliseconds.
fn summary(values: &mut [Duration]) -> String {
    if values.is_empty() {
        return "no samples".to_owned();
    }
    values.sort();
    let pct = |p: f64| {
        let i = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len()) - 1;
        values[i].as_secs_f64() * 1e3
    };
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
        values.len()
    )
}

fn proc_status(key: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    Some(line[key.len() + 1..].trim().to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

/// utime + stime of a process, in seconds (Linux clock ticks are 1/100 s).
fn cpu_of(stat: &str) -> f64 {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

pub fn self_cpu() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .map(|s| cpu_of(&s))
        .unwrap_or(0.0)
}

/// CPU seconds of the PostgreSQL backends serving database `db`, plus those of the
/// server's shared background processes (WAL writer, checkpointer, ...), which also
/// work for other databases on a shared server. Backends that exited are not counted.
pub fn postgres_cpu(db: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let background = [
        "walwriter",
        "checkpointer",
        "background writer",
        "autovacuum",
    ];
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains(db) || background.iter().any(|b| c.contains(b))
            })
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .map(|s| cpu_of(&s))
        .sum()
}
