//! Kill -9 soak: nothing acked is lost, and a crash costs at most one duplicate send.
//!
//! Starts `wabot serve` (the built binary, configured through its environment) on a
//! fresh database with the fake Graph API of `e2e_load` (status webhooks on), offers
//! 10,000 signed message webhooks from many customers at a moderate rate, and kills
//! the daemon with SIGKILL ten times at random moments, restarting it each time on
//! the same database and port. Like Meta, the driver redelivers every webhook that
//! did not get a 200 (message and status alike), later, until it is acked; a
//! customer's next message waits for the previous one's ack, so each conversation's
//! messages reach wabot in order. Afterwards it waits (bounded) for quiescence and
//! checks, from what the fake Graph API received:
//!
//! - every message was acked, and every acked message was answered (its turn's
//!   replies reached the Graph API): 0 lost;
//! - duplicate sends (the same reply sent twice) ≤ the number of kills;
//! - no reply out of order or unexpected, no status webhook left unacked, and the
//!   daemon never exited by itself.
//!
//! It prints the figures and exits non-zero when an invariant is violated. Not run in
//! CI: `cargo bench --bench soak -- [options]` (which builds `target/release/wabot` too).
//! Options, with defaults: `--bin target/release/wabot`, `--messages 10000`,
//! `--users 500`, `--rate 200` (messages/s offered), `--kills 10`,
//! `--status-delay-ms 50`, `--no-statuses`, `--lease-secs 5` (`WABOT_LEASE_SECS`:
//! how soon a killed process's leases are taken over), `--poll-ms 200`,
//! `--quiesce-secs 180` (the bound on the wait for quiescence), `--seed N` (the kill
//! moments). Only 127.0.0.1 is used; `DATABASE_URL` names the PostgreSQL server.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use wabot::whatsapp::signature;

#[allow(dead_code)] // shared with e2e_load, which uses more of it
#[path = "e2e_load/daemon.rs"]
mod daemon;
#[allow(dead_code)]
#[path = "e2e_load/fake_graph.rs"]
mod fake_graph;
#[allow(dead_code)]
#[path = "e2e_load/scenario.rs"]
mod scenario;

use daemon::{Daemon, DaemonEnv, Database};
use fake_graph::StatusOptions;
use scenario::{expected_total, judge, webhook, Bot, Sent, SECRET};

struct Options {
    bin: String,
    messages: usize,
    users: usize,
    rate: f64,
    kills: usize,
    statuses: bool,
    status_delay: Duration,
    lease_secs: u64,
    poll_ms: u64,
    quiesce: Duration,
    seed: u64,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            // Cargo builds the binary with the bench (`target/release/wabot`).
            bin: env!("CARGO_BIN_EXE_wabot").to_owned(),
            messages: 10_000,
            users: 500,
            rate: 200.0,
            kills: 10,
            statuses: true,
            status_delay: Duration::from_millis(50),
            lease_secs: 5,
            poll_ms: 200,
            quiesce: Duration::from_secs(180),
            seed: rand::random(),
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let (key, inline) = match args[i].split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (args[i].clone(), None),
            };
            i += 1;
            if key == "--no-statuses" {
                o.statuses = false;
            }
            let takes_value = matches!(
                key.as_str(),
                "--bin"
                    | "--messages"
                    | "--users"
                    | "--rate"
                    | "--kills"
                    | "--status-delay-ms"
                    | "--lease-secs"
                    | "--poll-ms"
                    | "--quiesce-secs"
                    | "--seed"
            );
            if !takes_value {
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i - 1).cloned().unwrap_or_default()
                }
            };
            let num = value.parse::<f64>().ok().filter(|n| *n >= 0.0);
            match (key.as_str(), num) {
                ("--bin", _) => o.bin = value,
                ("--messages", Some(n)) if n >= 1.0 => o.messages = n as usize,
                ("--users", Some(n)) if n >= 1.0 => o.users = n as usize,
                ("--rate", Some(n)) if n > 0.0 => o.rate = n,
                ("--kills", Some(n)) => o.kills = n as usize,
                ("--status-delay-ms", Some(n)) => o.status_delay = Duration::from_millis(n as u64),
                ("--lease-secs", Some(n)) if n >= 1.0 => o.lease_secs = n as u64,
                ("--poll-ms", Some(n)) if n >= 1.0 => o.poll_ms = n as u64,
                ("--quiesce-secs", Some(n)) if n >= 1.0 => o.quiesce = Duration::from_secs_f64(n),
                ("--seed", Some(n)) => o.seed = n as u64,
                _ => eprintln!("soak: ignoring {key} {value}"),
            }
        }
        o.users = o.users.min(o.messages);
        o
    }
}

/// Posts message `s` of customer `u` until wabot answers 200 (a refusal or a dead
/// daemon: redelivered after 200 ms, doubling to 3.2 s), or `give_up` passes.
async fn deliver(
    client: &reqwest::Client,
    address: &str,
    run: &str,
    u: usize,
    s: usize,
    due: Instant,
    give_up: Instant,
) -> Sent {
    let body = webhook(run, Bot::Echo, u, s);
    let header = signature::sign(SECRET.as_bytes(), &body);
    let mut m = Sent {
        s,
        due,
        ack: None,
        acked_at: None,
        refused: 0,
    };
    let mut backoff = Duration::from_millis(200);
    while Instant::now() < give_up {
        let sent = Instant::now();
        let response = client
            .post(address)
            .header(signature::HEADER, &header)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        if matches!(&response, Ok(r) if r.status() == reqwest::StatusCode::OK) {
            m.ack = Some(sent.elapsed());
            m.acked_at = Some(Instant::now());
            break;
        }
        m.refused += 1;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(3200));
    }
    m
}

/// One kill and restart.
struct Kill {
    at: Duration,
    down: Duration,
    ready_after: Duration,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let opts = Options::parse();
    daemon::run_on_scratch_database("soak", "soak", async |db| soak(db, &opts).await).await
}

/// Runs the soak; whether every invariant held.
async fn soak(db: &Database, opts: &Options) -> anyhow::Result<bool> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (fake, graph_url) = fake_graph::start(
        &run,
        opts.users,
        StatusOptions {
            enabled: opts.statuses,
            delay: opts.status_delay,
            redeliver: true,
        },
    )
    .await?;
    let bin = daemon::resolve_bin(&opts.bin);
    daemon::check_bin(&bin)?;
    let listen = daemon::free_local_addr()?;
    let scratch = tempfile::tempdir()?;
    let log = std::env::temp_dir().join(format!("{}.log", db.name));
    let env = DaemonEnv {
        bin: bin.clone(),
        database_url: db.url.clone(),
        listen,
        graph_url,
        extra: vec![
            ("WABOT_LEASE_SECS".into(), opts.lease_secs.to_string()),
            // Shorter than the lease, so a slow send is never taken over while alive.
            (
                "WABOT_GRAPH_TIMEOUT_MS".into(),
                (opts.lease_secs * 500).to_string(),
            ),
            ("WABOT_POLL_INTERVAL_MS".into(), opts.poll_ms.to_string()),
            ("WABOT_SHUTDOWN_TIMEOUT_SECS".into(), "10".into()),
            ("WABOT_LOG_FILTER".into(), "info".into()),
        ],
        log: log.clone(),
        dir: scratch.path().to_owned(),
    };
    env.prepare(Bot::Echo.fixture()).await?;
    let first = env.spawn().await?;
    let address = format!("http://{listen}/webhook");
    fake.set_webhook_url(address.clone());
    let per_user = opts.messages.div_ceil(opts.users);
    let offer = Duration::from_secs_f64(opts.messages as f64 / opts.rate);
    println!(
        "soak: {} messages from {} customers at {} messages/s ({:.0} s), {} kills (seed {}), \
         statuses {}, lease {} s; {} (pid {}), log {}",
        opts.messages,
        opts.users,
        opts.rate,
        offer.as_secs_f64(),
        opts.kills,
        opts.seed,
        if opts.statuses { "on" } else { "off" },
        opts.lease_secs,
        bin.display(),
        first.pid,
        log.display()
    );

    // The killer: SIGKILL at random moments of the offer, restart at once or after a
    // short downtime.
    let start = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let mut moments: Vec<(Duration, Duration)> = (0..opts.kills)
        .map(|_| {
            (
                offer.mul_f64(rng.gen_range(0.02..0.98)),
                Duration::from_millis(rng.gen_range(0..1500)),
            )
        })
        .collect();
    moments.sort();
    let killer = {
        let env = env.clone();
        tokio::spawn(async move {
            let mut daemon: Daemon = first;
            let mut kills = Vec::new();
            let mut crashed = Vec::new();
            for (at, down) in moments {
                tokio::time::sleep_until(tokio::time::Instant::from_std(start + at)).await;
                if let Some(status) = daemon.exited() {
                    crashed.push(format!("exited by itself ({status})"));
                }
                let at = start.elapsed();
                daemon.kill9().await?;
                tokio::time::sleep(down).await;
                daemon = env.spawn().await?;
                kills.push(Kill {
                    at,
                    down,
                    ready_after: daemon.ready_after,
                });
            }
            anyhow::Ok((daemon, kills, crashed))
        })
    };

    // The customers: message s of customer u is due at (s · users + u) / rate, and
    // waits for the ack of the customer's previous message.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let give_up = start + offer + opts.quiesce;
    let mut customers = tokio::task::JoinSet::new();
    for u in 0..opts.users {
        let (client, address, run) = (client.clone(), address.clone(), run.clone());
        let count = (0..per_user)
            .filter(|s| s * opts.users + u < opts.messages)
            .count();
        let rate = opts.rate;
        let users = opts.users;
        customers.spawn(async move {
            let mut sent = Vec::with_capacity(count);
            for s in 0..count {
                let due = start + Duration::from_secs_f64((s * users + u) as f64 / rate);
                tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                let m = deliver(&client, &address, &run, u, s, due, give_up).await;
                let acked = m.ack.is_some();
                sent.push(m);
                if !acked {
                    break;
                }
            }
            (u, sent)
        });
    }
    let mut all: Vec<(usize, Vec<Sent>)> = Vec::with_capacity(opts.users);
    while let Some(done) = customers.join_next().await {
        all.push(done?);
    }
    all.sort_by_key(|(u, _)| *u);
    let offered_for = start.elapsed();
    let (daemon, kills, mut crashed) = killer.await??;

    // Quiescence: every acked message's replies arrived, no reply for 3 s (late
    // duplicates after a lease takeover), statuses all delivered; bounded.
    let quiesce_start = Instant::now();
    let deadline = quiesce_start + opts.quiesce;
    let mut complete = true;
    for (u, sent) in &all {
        let acked = sent.iter().filter(|m| m.ack.is_some()).count();
        complete &= fake
            .inbox(*u)
            .wait_for(expected_total(Bot::Echo, acked), deadline)
            .await;
    }
    let quiet = Duration::from_secs(3).max(Duration::from_secs(opts.lease_secs));
    let mut last = (fake.accepted.load(Ordering::Relaxed), Instant::now());
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = fake.accepted.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= quiet && fake.statuses.pending.load(Ordering::Relaxed) == 0 {
            break;
        }
    }
    let quiesced_after = quiesce_start.elapsed();
    let mut daemon = daemon;
    if let Some(status) = daemon.exited() {
        crashed.push(format!("exited by itself ({status})"));
    }
    let stopped = daemon.terminate(Duration::from_secs(20)).await?;
    fake.stop();

    // The verdict.
    let (mut acked, mut answered, mut duplicates, mut wrong, mut out_of_order) = (0, 0, 0, 0, 0);
    let (mut refused_answered, mut redeliveries, mut offered) = (0, 0u64, 0);
    let mut unacked = 0;
    let mut duplicated = Vec::new();
    let mut disorder = Vec::new();
    for (u, sent) in &all {
        offered += sent.len();
        redeliveries += sent.iter().map(|m| u64::from(m.refused)).sum::<u64>();
        unacked += sent.iter().filter(|m| m.ack.is_none()).count();
        let v = judge(Bot::Echo, *u, sent, &fake.inbox(*u).replies());
        acked += v.acked;
        answered += v.answered;
        duplicates += v.duplicates;
        wrong += v.wrong;
        out_of_order += v.out_of_order;
        refused_answered += v.refused_answered;
        duplicated.extend(v.duplicated);
        disorder.extend(v.disorder);
    }
    let never_sent = opts.messages - offered;
    let lost = acked - answered;
    let s = &fake.statuses;
    let statuses_dropped = s.dropped.load(Ordering::Relaxed);
    println!(
        "  offered {offered} messages in {:.1} s: {acked} acked, {} not acked{}, {redeliveries} \
         redeliveries (refused or daemon down)",
        offered_for.as_secs_f64(),
        unacked + never_sent,
        if never_sent > 0 {
            format!(" ({never_sent} never sent: a customer gave up earlier)")
        } else {
            String::new()
        }
    );
    for (i, k) in kills.iter().enumerate() {
        println!(
            "  kill {}: SIGKILL at {:.1} s, down {} ms, ready {} ms after restart",
            i + 1,
            k.at.as_secs_f64(),
            k.down.as_millis(),
            k.ready_after.as_millis()
        );
    }
    println!(
        "  quiescence {:.1} s after the offer{}; {} Graph API sends, {} read receipts",
        quiesced_after.as_secs_f64(),
        if complete {
            ""
        } else {
            " (NOT every acked message answered within --quiesce-secs)"
        },
        fake.accepted.load(Ordering::Relaxed),
        fake.receipts.load(Ordering::Relaxed)
    );
    println!(
        "  statuses: {} posted, {} acked, {} refused (redelivered), {} dropped",
        s.posted.load(Ordering::Relaxed),
        s.acked.load(Ordering::Relaxed),
        s.refused.load(Ordering::Relaxed),
        statuses_dropped
    );
    println!(
        "  acked messages answered: {answered} of {acked}, lost: {lost}, duplicates: \
         {duplicates} (allowed: {} kills); wrong replies {wrong}, out of order \
         {out_of_order}, answers to unacked webhooks {refused_answered}",
        kills.len()
    );
    // WABOT_SOAK_TRACE=<customer>: that customer's messages and replies, in time.
    if let Some(u) = std::env::var("WABOT_SOAK_TRACE")
        .ok()
        .and_then(|u| u.parse::<usize>().ok())
        .filter(|u| *u < all.len())
    {
        let at = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
        for m in &all[u].1 {
            println!(
                "    trace: message {} due {:.2} s, acked {}",
                m.s,
                at(m.due),
                m.acked_at
                    .map_or("never".to_owned(), |t| format!("{:.2} s", at(t)))
            );
        }
        for r in fake.inbox(u).replies() {
            println!("    trace: reply {:.2} s {:?}", at(r.at), r.text);
        }
    }
    let secs = |t: Instant| t.saturating_duration_since(start).as_secs_f64();
    for (u, late, acked, early, posted, at) in disorder.iter().take(5) {
        println!(
            "    out of order: customer {u}: message {late} (acked {:.2} s) answered at \
             {:.2} s, after message {early} (posted {:.2} s)",
            secs(*acked),
            secs(*at),
            secs(*posted)
        );
    }
    for (what, at) in duplicated.iter().take(10) {
        let at: Vec<String> = at
            .iter()
            .map(|t| format!("{:.2} s", t.saturating_duration_since(start).as_secs_f64()))
            .collect();
        println!("    duplicate: {what} {}", at.join(", "));
    }
    println!(
        "  wabot at the end: {}",
        match stopped {
            Some(status) if status.success() => "stopped on SIGTERM".to_owned(),
            Some(status) => format!("exited on SIGTERM with {status}"),
            None => "did not stop within 20 s of SIGTERM (killed)".to_owned(),
        }
    );
    let mut violations = Vec::new();
    if unacked + never_sent > 0 {
        violations.push(format!("{} messages never acked", unacked + never_sent));
    }
    if lost > 0 {
        violations.push(format!("{lost} acked messages not answered"));
    }
    if duplicates > kills.len() {
        violations.push(format!(
            "{duplicates} duplicate sends > {} kills",
            kills.len()
        ));
    }
    if wrong + out_of_order + refused_answered > 0 {
        violations.push(format!(
            "{wrong} wrong, {out_of_order} out-of-order replies, {refused_answered} answers to \
             unacked webhooks"
        ));
    }
    if statuses_dropped > 0 {
        violations.push(format!("{statuses_dropped} status webhooks never acked"));
    }
    violations.extend(crashed);
    for v in &violations {
        println!("  VIOLATED: {v}");
    }
    if violations.is_empty() {
        println!("soak: passed");
    }
    Ok(violations.is_empty())
}
