//! What `e2e_load` prints: the figures of the load phase, the exactly-once verdict
//! after the drain, and the process and machine facts that go with them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::daemon::PgCpu;
use super::fake_graph::FakeGraph;
use super::scenario::{judge, Bot, Verdict};
use super::{Options, Phase, Rate};

/// Status webhooks posted back by the fake Graph API.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatusCounts {
    pub posted: u64,
    pub acked: u64,
    pub refused: u64,
    pub dropped: u64,
}

impl StatusCounts {
    pub fn since(&self, before: &StatusCounts) -> StatusCounts {
        StatusCounts {
            posted: self.posted - before.posted,
            acked: self.acked - before.acked,
            refused: self.refused - before.refused,
            dropped: self.dropped - before.dropped,
        }
    }
}

pub fn status_counts(fake: &FakeGraph) -> StatusCounts {
    let s = &fake.statuses;
    StatusCounts {
        posted: s.posted.load(Ordering::Relaxed),
        acked: s.acked.load(Ordering::Relaxed),
        refused: s.refused.load(Ordering::Relaxed),
        dropped: s.dropped.load(Ordering::Relaxed),
    }
}

fn verdicts(bot: Bot, fake: &FakeGraph, phase: &Phase) -> Vec<Verdict> {
    phase
        .sent
        .iter()
        .map(|(u, sent)| judge(bot, *u, sent, &fake.inbox(*u).replies()))
        .collect()
}

/// Turns of `phase` whose last reply arrived before it ended.
pub fn turns_in(bot: Bot, fake: &FakeGraph, phase: &Phase) -> usize {
    verdicts(bot, fake, phase)
        .iter()
        .flat_map(|v| &v.turns)
        .filter(|t| t.2 <= phase.end)
        .count()
}

pub struct Run<'a> {
    pub setup: Duration,
    pub where_: String,
    pub stopped: String,
    /// (turns/s sustained by the calibration, the factor offered).
    pub calibration: Option<(f64, f64)>,
    /// CPU seconds over the load phase.
    pub cpu_wabot: f64,
    pub cpu_driver: f64,
    pub external: bool,
    pub pg: PgCpu,
    pub statuses_load: StatusCounts,
    pub rss: Option<String>,
    /// From the end of the load phase until every acked message was answered.
    pub drained: Option<Duration>,
    pub counts: Option<(i64, i64, i64)>,
    pub pg_version: &'a str,
}

/// Prints the figures; returns the number of answered messages.
pub fn report(opts: &Options, fake: &FakeGraph, phase: &Phase, r: Run<'_>) -> usize {
    let verdicts = verdicts(opts.bot, fake, phase);
    let load = (phase.end - phase.start).as_secs_f64().max(1e-9);
    let mut first = Vec::new();
    let mut last = Vec::new();
    let mut acks = Vec::new();
    let (mut offered, mut refused_msgs, mut refusals) = (0usize, 0usize, 0u64);
    for (_, sent) in &phase.sent {
        for m in sent {
            offered += 1;
            refusals += u64::from(m.refused);
            match m.ack {
                Some(a) => acks.push(a),
                None => refused_msgs += 1,
            }
        }
    }
    let acked_in_load = phase
        .sent
        .iter()
        .flat_map(|(_, s)| s)
        .filter(|m| m.acked_at.is_some_and(|t| t <= phase.end))
        .count();
    let (mut in_load, mut backlog) = (0usize, 0usize);
    let mut total = Verdict::default();
    for v in &verdicts {
        total.acked += v.acked;
        total.answered += v.answered;
        total.duplicates += v.duplicates;
        total.refused_answered += v.refused_answered;
        total.wrong += v.wrong;
        total.out_of_order += v.out_of_order;
        for &(due, f, l) in &v.turns {
            first.push(f.saturating_duration_since(due));
            last.push(l.saturating_duration_since(due));
            in_load += usize::from(l <= phase.end);
            backlog += usize::from(f > phase.end);
        }
    }
    backlog += total.acked - total.answered;

    let mode = match opts.open_rate {
        Some(Rate::Fixed(rate)) => format!("open loop, {rate} messages/s offered"),
        Some(Rate::Times(_)) => "overload: open loop".to_owned(),
        None if opts.think.is_zero() => "closed loop, no think time".to_owned(),
        None => format!("closed loop, think {} ms", opts.think.as_millis()),
    };
    println!(
        "e2e_load: customers {}, {mode}, chatbot {}, statuses {}",
        phase.customers.len(),
        opts.bot.name(),
        if opts.statuses {
            format!(
                "on (delivered/read {} ms apart)",
                opts.status_delay.as_millis()
            )
        } else {
            "off".to_owned()
        }
    );
    println!(
        "  wabot: {}; poll {} ms, turn concurrency {}, {} DB connections{}; setup {:.2} s",
        r.where_,
        opts.poll_ms,
        opts.turn_concurrency,
        opts.db_connections,
        match (opts.async_commit, opts.no_ping && !r.external) {
            (false, false) => "",
            (false, true) => ", no ping before acquire",
            (true, false) => ", synchronous_commit OFF",
            (true, true) => ", no ping before acquire, synchronous_commit OFF",
        },
        r.setup.as_secs_f64()
    );
    if let Some((sustained, factor)) = r.calibration {
        println!(
            "  calibration ({} s closed loop): {sustained:.0} turns/s sustained; offering \
             {factor} x = {:.0} messages/s",
            opts.calibrate.as_secs(),
            sustained * factor
        );
    }
    println!(
        "  load phase {load:.2} s: {in_load} turns completed = {:.0} turns/s; \
         {acked_in_load} message webhooks acked = {:.0} acks/s; {offered} offered, \
         {refused_msgs} refused ({refusals} not answered 200, of which {} with no answer at \
         all)",
        in_load as f64 / load,
        acked_in_load as f64 / load,
        crate::NO_ANSWER.load(Ordering::Relaxed),
    );
    let s = r.statuses_load;
    let all = status_counts(fake);
    println!(
        "  statuses in the load phase: {} posted = {:.0}/s, {} acked, {} refused \
         (in all: {} posted, {} acked, {} refused, {} dropped); \
         {} Graph API sends in all, {} read receipts, {} to strangers",
        s.posted,
        s.posted as f64 / load,
        s.acked,
        s.refused,
        all.posted,
        all.acked,
        all.refused,
        all.dropped,
        fake.accepted.load(Ordering::Relaxed),
        fake.receipts.load(Ordering::Relaxed),
        fake.strangers(),
    );
    println!("  webhook -> first reply: {}", summary(&mut first));
    println!("  webhook -> last reply:  {}", summary(&mut last));
    println!("  message webhook ack:    {}", summary(&mut acks));
    let per_turn = |cpu: f64| 1e3 * cpu / in_load.max(1) as f64;
    let wabot_label = if r.external {
        "wabot"
    } else {
        "wabot + driver (in process)"
    };
    println!(
        "  cpu per turn: {wabot_label} {:.3} ms + PostgreSQL {:.3} ms ({} backends of its \
         database) = {:.3} ms; not in the total: server background {:.3} ms (WAL writer, \
         checkpointer, ...: shared), driver {}",
        per_turn(r.cpu_wabot),
        per_turn(r.pg.backends),
        r.pg.backend_count,
        per_turn(r.cpu_wabot + r.pg.backends),
        per_turn(r.pg.background),
        if r.external {
            format!("{:.3} ms", per_turn(r.cpu_driver))
        } else {
            "(counted with wabot)".to_owned()
        }
    );
    println!(
        "  cpu use: {wabot_label} {:.0}% of one core, PostgreSQL backends {:.0}%, \
         background {:.0}%{}",
        100.0 * r.cpu_wabot / load,
        100.0 * r.pg.backends / load,
        100.0 * r.pg.background / load,
        if r.external {
            format!(", driver {:.0}%", 100.0 * r.cpu_driver / load)
        } else {
            String::new()
        }
    );
    println!(
        "  memory: {wabot_label} peak RSS {}",
        r.rss.as_deref().unwrap_or("?")
    );
    println!(
        "  backlog at the end of the load phase: {backlog} acked messages unanswered; {}",
        match r.drained {
            Some(d) => format!("all answered {:.2} s later", d.as_secs_f64()),
            None => format!(
                "NOT all answered within --drain-secs {}",
                opts.drain.as_secs()
            ),
        }
    );
    println!(
        "  acked messages answered: {} of {}, duplicates: {}; wrong replies {}, \
         out of order {}, answers to refused webhooks {}",
        total.answered,
        total.acked,
        total.duplicates,
        total.wrong,
        total.out_of_order,
        total.refused_answered
    );
    if let Some((done, open, sent)) = r.counts {
        println!(
            "  database: {done} turn jobs done, {open} open; {sent} message rows (in and out)"
        );
    }
    println!("  wabot {}", r.stopped);
    println!(
        "  machine: {} x {}; load average {}; PostgreSQL {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
        r.pg_version
    );
    total.answered
}

/// `p50 / p95 / p99 / max` in milliseconds.
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
        "p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n = {})",
        pct(0.50),
        pct(0.95),
        pct(0.99),
        pct(1.0),
        values.len()
    )
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
