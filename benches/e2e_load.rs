//! End-to-end load driver: wabot against a real PostgreSQL and a fake Graph API that
//! behaves like Meta, with signed webhooks in and status webhooks back.
//!
//! By default wabot runs as a separate process (`target/release/wabot serve`,
//! configured only through `DATABASE_URL` and `WABOT_*`, as in production), so its
//! CPU (`/proc/<pid>/stat`) and memory are its own and not the driver's. The fake
//! Graph API (axum on 127.0.0.1) answers every send with a wamid, records when each
//! reply arrived per customer, and posts Meta's `sent` status webhook back to
//! wabot's `/webhook` at once, `delivered` and `read` after a delay each. Simulated
//! customers post signed message webhooks. The figures: turns per second, CPU per
//! turn (wabot + the PostgreSQL backends of its database, from /proc over the load
//! phase), webhook → first reply latency, ack latency, wabot's peak RSS, statuses,
//! the backlog when the load stops, and an exactly-once check after a bounded drain.
//!
//! `cargo bench --bench e2e_load -- [options]`; unknown arguments (cargo's `--bench`)
//! are ignored. Options, with defaults:
//!
//! - `--users 200`: customers. `--messages N`: messages per customer (closed loop:
//!   10; open loop: as many as the rate and `--max-secs` allow).
//! - closed loop (default): each customer writes, waits for all replies of the turn,
//!   thinks `--think-ms 0`, writes again. A refused webhook is redelivered 100 ms later.
//! - `--open-rate R`: open loop: R messages/s offered in all, round-robin over the
//!   customers, whatever the replies do; latency from the scheduled time. Refused
//!   webhooks (503) are counted, not redelivered. `--open-rate 3x`: first a closed
//!   loop of `--calibrate-secs 10` measures what wabot sustains, then the open loop
//!   offers 3 times that to fresh customers.
//! - `--max-secs 40`: the load phase ends by itself after this long; then at most
//!   `--drain-secs 60` of waiting until every acked message is answered.
//! - `--status-delay-ms 50`; `--no-statuses`: no status webhooks.
//! - `--chatbot echo|sample`: `fixtures/e2e/echo-loop.json` (every reply names its
//!   message: exact exactly-once check; 1 reply for the first turn, then 2) or
//!   `fixtures/e2e/sample-bot.json` (welcome + 3-button menu; a button reply gets
//!   the answer + goodbye, which ends the context; 2 replies a turn).
//! - `--external BIN` (default `target/release/wabot`, which `cargo bench` builds
//!   along with the bench): the binary to run (`--spawn`: the default one).
//!   `--in-process`: wabot in this process instead (`Application::with_parts` +
//!   `run`); its CPU and RSS then include the driver's.
//! - daemon config: `--poll-ms`, `--turn-concurrency`, `--db-connections` (the
//!   daemon's defaults, `Config::default()`; the poll was 20 ms before issue 21),
//!   `--daemon-log warn` (its `WABOT_LOG_FILTER`; the log goes to a file under the
//!   system temp dir).
//! - diagnostics: `--sql-stats` (statement counts, in-process only; PostgreSQL's
//!   table statistics either way), `--pg-log` (`log_min_duration_statement = 0` on
//!   the daemon's connections), `--async-commit` (`synchronous_commit = off`: not
//!   durable), `--no-ping` (in-process only: no ping before each pool checkout).
//!
//! `DATABASE_URL` names the PostgreSQL server; a `wabot_e2e_*` database is created on
//! it and dropped afterwards (kept when `WABOT_E2E_KEEP_DB` is set).

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use tokio_util::sync::CancellationToken;
use wabot::config::Config;
use wabot::engine::ChatbotDoc;
use wabot::startup::Application;
use wabot::store::chatbots::{self, NewChatbot};
use wabot::whatsapp::signature;

#[allow(dead_code)] // shared with the soak, which uses more of it
#[path = "e2e_load/daemon.rs"]
mod daemon;
#[allow(dead_code)]
#[path = "e2e_load/fake_graph.rs"]
mod fake_graph;
#[path = "e2e_load/report.rs"]
mod report;
#[path = "e2e_load/scenario.rs"]
mod scenario;
#[path = "e2e_load/sql_stats.rs"]
mod sql_stats;

use daemon::{Daemon, DaemonEnv, Database, PgSampler};
use fake_graph::{FakeGraph, StatusOptions};
use scenario::{expected_total, webhook, Bot, Sent, BUSINESS, SECRET};
use sql_stats::SqlStats;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rate {
    Fixed(f64),
    /// A multiple of what a calibration run sustained.
    Times(f64),
}

#[derive(Debug, Clone)]
pub struct Options {
    users: usize,
    messages: Option<usize>,
    think: Duration,
    open_rate: Option<Rate>,
    calibrate: Duration,
    bot: Bot,
    poll_ms: u64,
    turn_concurrency: usize,
    db_connections: u32,
    max_time: Duration,
    drain: Duration,
    statuses: bool,
    status_delay: Duration,
    external: Option<String>,
    daemon_log: String,
    sql_stats: bool,
    pg_log: bool,
    async_commit: bool,
    no_ping: bool,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            users: 200,
            messages: None,
            think: Duration::ZERO,
            open_rate: None,
            calibrate: Duration::from_secs(10),
            bot: Bot::Echo,
            // The daemon's own defaults: the figures are those of a daemon nobody tuned.
            poll_ms: Config::default().worker.poll_interval_ms,
            turn_concurrency: Config::default().worker.turn_concurrency,
            db_connections: Config::default().database.max_connections,
            max_time: Duration::from_secs(40),
            drain: Duration::from_secs(60),
            statuses: true,
            status_delay: Duration::from_millis(50),
            // Cargo builds the binary with the bench (`target/release/wabot`).
            external: Some(env!("CARGO_BIN_EXE_wabot").to_owned()),
            daemon_log: "warn".to_owned(),
            sql_stats: false,
            pg_log: false,
            async_commit: false,
            no_ping: false,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let (key, inline) = match args[i].split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (args[i].clone(), None),
            };
            i += 1;
            match key.as_str() {
                "--sql-stats" => o.sql_stats = true,
                "--pg-log" => o.pg_log = true,
                "--async-commit" => o.async_commit = true,
                "--no-ping" => o.no_ping = true,
                "--no-statuses" => o.statuses = false,
                "--in-process" => o.external = None,
                "--spawn" => {
                    o.external
                        .get_or_insert_with(|| env!("CARGO_BIN_EXE_wabot").to_owned());
                }
                _ => {}
            }
            let takes_value = matches!(
                key.as_str(),
                "--users"
                    | "--messages"
                    | "--think-ms"
                    | "--open-rate"
                    | "--calibrate-secs"
                    | "--chatbot"
                    | "--poll-ms"
                    | "--turn-concurrency"
                    | "--db-connections"
                    | "--max-secs"
                    | "--drain-secs"
                    | "--status-delay-ms"
                    | "--external"
                    | "--daemon-log"
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
            let num = |v: &str| v.parse::<f64>().ok().filter(|n| *n >= 0.0);
            let secs = |n: f64| Duration::from_secs_f64(n);
            match (key.as_str(), num(&value)) {
                ("--chatbot", _) => {
                    o.bot = if value == "sample" {
                        Bot::Sample
                    } else {
                        Bot::Echo
                    }
                }
                ("--external", _) => o.external = Some(value),
                ("--daemon-log", _) => o.daemon_log = value,
                ("--open-rate", None) => match value.strip_suffix('x').and_then(num) {
                    Some(n) if n > 0.0 => o.open_rate = Some(Rate::Times(n)),
                    _ => eprintln!("e2e_load: ignoring {key} {value}"),
                },
                ("--open-rate", Some(n)) if n > 0.0 => o.open_rate = Some(Rate::Fixed(n)),
                ("--users", Some(n)) if n >= 1.0 => o.users = n as usize,
                ("--messages", Some(n)) if n >= 1.0 => o.messages = Some(n as usize),
                ("--think-ms", Some(n)) => o.think = Duration::from_millis(n as u64),
                ("--calibrate-secs", Some(n)) if n >= 1.0 => o.calibrate = secs(n),
                ("--poll-ms", Some(n)) if n >= 1.0 => o.poll_ms = n as u64,
                ("--turn-concurrency", Some(n)) if n >= 1.0 => o.turn_concurrency = n as usize,
                ("--db-connections", Some(n)) if n >= 2.0 => o.db_connections = n as u32,
                ("--max-secs", Some(n)) if n >= 1.0 => o.max_time = secs(n),
                ("--drain-secs", Some(n)) => o.drain = secs(n),
                ("--status-delay-ms", Some(n)) => o.status_delay = Duration::from_millis(n as u64),
                _ => eprintln!("e2e_load: ignoring {key} {value}"),
            }
        }
        o
    }
}

/// The customers' side: posts signed webhooks and waits on the fake Graph API.
struct Driver {
    client: reqwest::Client,
    address: String,
    run: String,
    bot: Bot,
    fake: Arc<FakeGraph>,
}

/// Message webhooks whose POST ended without any answer (hyper's IncompleteMessage:
/// the connection closed; wabot may have stored the message all the same).
pub static NO_ANSWER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Driver {
    /// Posts one message webhook; the ack latency when wabot answered 200.
    async fn post(&self, u: usize, s: usize) -> Option<Duration> {
        let body = webhook(&self.run, self.bot, u, s);
        let header = signature::sign(SECRET.as_bytes(), &body);
        let sent = Instant::now();
        let response = self
            .client
            .post(&self.address)
            .header(signature::HEADER, header)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match response {
            Ok(r) if r.status() == reqwest::StatusCode::OK => Some(sent.elapsed()),
            Ok(_) => None,
            Err(_) => {
                NO_ANSWER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                None
            }
        }
    }

    /// A person: writes, waits for the whole answer, thinks, writes again. A refused
    /// webhook is redelivered after 100 ms (at most 50 times), as Meta would.
    async fn closed(
        self: Arc<Self>,
        u: usize,
        messages: usize,
        think: Duration,
        deadline: Instant,
    ) -> Vec<Sent> {
        let mut sent: Vec<Sent> = Vec::new();
        let mut acked = 0;
        for s in 0..messages {
            if Instant::now() >= deadline {
                break;
            }
            let mut m = Sent {
                s,
                due: Instant::now(),
                ack: None,
                acked_at: None,
                refused: 0,
            };
            while m.refused < 50 && Instant::now() < deadline {
                if let Some(ack) = self.post(u, s).await {
                    m.ack = Some(ack);
                    m.acked_at = Some(Instant::now());
                    break;
                }
                m.refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let ok = m.ack.is_some();
            sent.push(m);
            if !ok {
                break;
            }
            acked += 1;
            let inbox = self.fake.inbox(u);
            if !inbox
                .wait_for(expected_total(self.bot, acked), deadline)
                .await
            {
                break;
            }
            if !think.is_zero() {
                tokio::time::sleep(think).await;
            }
        }
        sent
    }

    /// A fixed offered rate: message `s` of the `k`-th of `n` customers is due at
    /// `start + (s · n + k) / rate`, and posted at that time whatever happened to the
    /// earlier ones (each POST is its own task).
    #[allow(clippy::too_many_arguments)]
    async fn open(
        self: Arc<Self>,
        u: usize,
        k: usize,
        n: usize,
        rate: f64,
        messages: usize,
        start: Instant,
        deadline: Instant,
    ) -> Vec<Sent> {
        let mut posts = Vec::new();
        for s in 0..messages {
            let due = start + Duration::from_secs_f64((s * n + k) as f64 / rate);
            if due >= deadline {
                break;
            }
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            let driver = self.clone();
            posts.push(tokio::spawn(async move {
                let ack = driver.post(u, s).await;
                Sent {
                    s,
                    due,
                    ack,
                    acked_at: ack.map(|_| Instant::now()),
                    refused: u32::from(ack.is_none()),
                }
            }));
        }
        let mut sent = Vec::with_capacity(posts.len());
        for p in posts {
            if let Ok(m) = p.await {
                sent.push(m);
            }
        }
        sent
    }
}

/// What the customers of one phase did.
pub struct Phase {
    pub customers: std::ops::Range<usize>,
    pub sent: Vec<(usize, Vec<Sent>)>,
    pub start: Instant,
    pub end: Instant,
}

#[derive(Clone, Copy)]
enum Shape {
    Closed { messages: usize, think: Duration },
    Open { rate: f64, messages: usize },
}

async fn run_phase(
    driver: &Arc<Driver>,
    customers: std::ops::Range<usize>,
    shape: Shape,
    length: Duration,
) -> anyhow::Result<Phase> {
    let start = Instant::now();
    let deadline = start + length;
    let n = customers.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (k, u) in customers.clone().enumerate() {
        let driver = driver.clone();
        match shape {
            Shape::Closed { messages, think } => {
                tasks.spawn(async move { (u, driver.closed(u, messages, think, deadline).await) })
            }
            Shape::Open { rate, messages } => tasks.spawn(async move {
                (
                    u,
                    driver.open(u, k, n, rate, messages, start, deadline).await,
                )
            }),
        };
    }
    let mut sent = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        sent.push(done?);
    }
    sent.sort_by_key(|(u, _)| *u);
    Ok(Phase {
        customers,
        sent,
        start,
        end: Instant::now(),
    })
}

/// Waits (until `deadline`) until every customer of `phase` has all the replies its
/// acked messages call for; whether they all came.
async fn drain(fake: &FakeGraph, bot: Bot, phase: &Phase, deadline: Instant) -> bool {
    for (u, sent) in &phase.sent {
        let acked = sent.iter().filter(|m| m.ack.is_some()).count();
        if !fake
            .inbox(*u)
            .wait_for(expected_total(bot, acked), deadline)
            .await
        {
            return false;
        }
    }
    true
}

/// wabot, wherever it runs.
enum Wabot {
    External(Daemon),
    InProcess {
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    },
}

impl Wabot {
    fn cpu(&self) -> f64 {
        match self {
            Wabot::External(d) => d.cpu(),
            Wabot::InProcess { .. } => daemon::process_cpu("self"),
        }
    }

    fn peak_rss(&self) -> Option<String> {
        match self {
            Wabot::External(d) => d.peak_rss(),
            Wabot::InProcess { .. } => daemon::proc_status("self", "VmHWM"),
        }
    }

    /// Graceful stop; how it went.
    async fn stop(self) -> String {
        match self {
            Wabot::External(d) => match d.terminate(Duration::from_secs(15)).await {
                Ok(Some(status)) if status.success() => "stopped on SIGTERM".to_owned(),
                Ok(Some(status)) => format!("exited on SIGTERM with {status}"),
                Ok(None) => "did not stop within 15 s of SIGTERM (killed)".to_owned(),
                Err(e) => format!("stop failed: {e}"),
            },
            Wabot::InProcess { shutdown, task } => {
                shutdown.cancel();
                match tokio::time::timeout(Duration::from_secs(15), task).await {
                    Ok(Ok(Ok(()))) => "stopped".to_owned(),
                    other => format!("did not stop cleanly: {other:?}"),
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = Options::parse();
    let stats = (opts.sql_stats && opts.external.is_none()).then(SqlStats::install);
    let db = Database::create("e2e").await?;
    let result = run(&db, &opts, stats.as_ref()).await;
    db.drop().await?;
    result
}

async fn run(db: &Database, opts: &Options, stats: Option<&SqlStats>) -> anyhow::Result<()> {
    let setup = Instant::now();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let overload = matches!(opts.open_rate, Some(Rate::Times(_)));
    let customers = if overload { 2 * opts.users } else { opts.users };
    let (fake, graph_url) = fake_graph::start(
        &run_id,
        customers,
        StatusOptions {
            enabled: opts.statuses,
            delay: opts.status_delay,
            redeliver: false,
        },
    )
    .await?;
    let db_url = session_url(&db.url, opts)?;
    // The external daemon's working directory, for as long as the run.
    let scratch = tempfile::tempdir()?;

    let (wabot, address, where_) = match &opts.external {
        Some(bin) => {
            let bin = daemon::resolve_bin(bin);
            daemon::check_bin(&bin)?;
            let listen = daemon::free_local_addr()?;
            let log = std::env::temp_dir().join(format!("{}.log", db.name));
            let env = DaemonEnv {
                bin: bin.clone(),
                database_url: db_url.clone(),
                listen,
                graph_url,
                extra: vec![
                    ("WABOT_POLL_INTERVAL_MS".into(), opts.poll_ms.to_string()),
                    (
                        "WABOT_TURN_CONCURRENCY".into(),
                        opts.turn_concurrency.to_string(),
                    ),
                    (
                        "WABOT_DB_MAX_CONNECTIONS".into(),
                        opts.db_connections.to_string(),
                    ),
                    ("WABOT_SHUTDOWN_TIMEOUT_SECS".into(), "5".into()),
                    ("WABOT_LOG_FILTER".into(), opts.daemon_log.clone()),
                    // Every simulated customer keeps its own connection (Meta uses
                    // far fewer): room for all of them and the status posts.
                    ("WABOT_MAX_CONNECTIONS".into(), "16384".into()),
                ]
                .into_iter()
                // `WABOT_*` variables given to the driver reach the daemon last, so
                // any knob can be tried: `WABOT_INGEST_WRITERS=1 cargo bench ...`.
                .chain(std::env::vars().filter(|(k, _)| k.starts_with("WABOT_")))
                .collect(),
                log: log.clone(),
                dir: scratch.path().to_owned(),
            };
            env.prepare(opts.bot.fixture()).await?;
            let d = env.spawn().await?;
            let where_ = format!(
                "external {} (pid {}, ready in {} ms, log {})",
                bin.display(),
                d.pid,
                d.ready_after.as_millis(),
                log.display()
            );
            (
                Wabot::External(d),
                format!("http://{listen}/webhook"),
                where_,
            )
        }
        None => {
            let app = in_process(&db.url, opts, graph_url).await?;
            let address = format!("http://{}/webhook", app.local_addr());
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(app.run(shutdown.clone()));
            (
                Wabot::InProcess { shutdown, task },
                address,
                "in process (CPU and RSS include the driver)".to_owned(),
            )
        }
    };
    fake.set_webhook_url(address.clone());
    let driver = Arc::new(Driver {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(customers)
            .build()?,
        address,
        run: run_id,
        bot: opts.bot,
        fake: fake.clone(),
    });
    let setup = setup.elapsed();

    // Overload: first what it sustains.
    let mut calibration = None;
    let (customers, shape) = match opts.open_rate {
        None => (
            0..opts.users,
            Shape::Closed {
                messages: opts.messages.unwrap_or(10),
                think: opts.think,
            },
        ),
        Some(Rate::Fixed(rate)) => (
            0..opts.users,
            Shape::Open {
                rate,
                messages: opts.messages.unwrap_or(usize::MAX),
            },
        ),
        Some(Rate::Times(factor)) => {
            let shape = Shape::Closed {
                messages: usize::MAX,
                think: Duration::ZERO,
            };
            let phase = run_phase(&driver, 0..opts.users, shape, opts.calibrate).await?;
            let turns = report::turns_in(opts.bot, &fake, &phase);
            let sustained = turns as f64 / (phase.end - phase.start).as_secs_f64();
            drain(&fake, opts.bot, &phase, Instant::now() + opts.drain).await;
            calibration = Some((sustained, factor));
            (
                opts.users..2 * opts.users,
                Shape::Open {
                    rate: (sustained * factor).max(1.0),
                    messages: opts.messages.unwrap_or(usize::MAX),
                },
            )
        }
    };

    // The load phase.
    if let Some(stats) = stats {
        stats.reset();
    }
    let statuses_before = report::status_counts(&fake);
    let pg = PgSampler::start(&db.name);
    let cpu_before = (wabot.cpu(), daemon::process_cpu("self"));
    let phase = run_phase(&driver, customers, shape, opts.max_time).await?;
    let cpu_after = (wabot.cpu(), daemon::process_cpu("self"));
    let pg = pg.finish().await;
    let statuses_load = report::status_counts(&fake).since(&statuses_before);
    let rss = wabot.peak_rss();

    // Every acked message answered? Then a short quiet time for late duplicates.
    let drained = drain(&fake, opts.bot, &phase, Instant::now() + opts.drain)
        .await
        .then(|| phase.end.elapsed());
    let quiet = (opts.status_delay * 3).max(Duration::from_millis(300));
    let quiet_end = Instant::now() + quiet;
    tokio::time::sleep(quiet).await;
    while fake.statuses.pending.load(Ordering::Relaxed) > 0 && Instant::now() < quiet_end + quiet {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts = database_counts(&db.url).await;
    let stopped = wabot.stop().await;
    fake.stop();

    let answered = report::report(
        opts,
        &fake,
        &phase,
        report::Run {
            setup,
            where_,
            stopped,
            calibration,
            cpu_wabot: cpu_after.0 - cpu_before.0,
            cpu_driver: cpu_after.1 - cpu_before.1,
            external: opts.external.is_some(),
            pg,
            statuses_load,
            rss,
            drained,
            counts,
            pg_version: &db.server_version,
        },
    );
    if opts.sql_stats {
        if let Some(stats) = stats {
            stats.print(answered);
        }
        let mut conn = PgConnection::connect(&db.url).await?;
        // Backends flush their statistics as they exit; give them a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        sql_stats::print_database_stats(&mut conn, answered).await?;
        conn.close().await?;
    }
    Ok(())
}

/// wabot in this process, on the run's database, with `opts`' knobs.
async fn in_process(url: &str, opts: &Options, graph_url: String) -> anyhow::Result<Application> {
    let mut config = Config {
        database_url: url.to_owned(),
        listen: "127.0.0.1:0".parse()?,
        ..Config::default()
    };
    config.whatsapp.app_secret = Some(SecretString::from(SECRET));
    config.whatsapp.verify_token = Some(SecretString::from("e2e-verify"));
    config.whatsapp.access_token = Some(SecretString::from("e2e-access-token"));
    config.whatsapp.phone_number_id = Some(BUSINESS.to_owned());
    config.whatsapp.graph_api_base = graph_url;
    config.worker.enabled = true;
    config.worker.send_rate_per_sec = 100_000;
    config.worker.poll_interval_ms = opts.poll_ms;
    config.worker.turn_concurrency = opts.turn_concurrency;
    config.database.max_connections = opts.db_connections;
    config.server.shutdown_timeout_secs = 5;
    let pool = PgPoolOptions::new()
        .max_connections(config.database.max_connections)
        .acquire_timeout(Duration::from_millis(config.database.acquire_timeout_ms))
        .test_before_acquire(!opts.no_ping)
        .connect_with(PgConnectOptions::from_str(&session_url(url, opts)?)?)
        .await?;
    wabot::store::migrate(&pool).await?;
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(opts.bot.fixture());
    let value: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let doc = ChatbotDoc::from_json(&value).map_err(|e| anyhow::anyhow!("{path:?}: {e}"))?;
    chatbots::insert(&pool, &NewChatbot::from_doc(&doc, true)).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    Application::with_parts(config, pool, listener)
}

/// The daemon's database URL. Diagnostics only: with `--pg-log`, PostgreSQL logs
/// every statement of its connections with its server-side duration
/// (`log_min_duration_statement = 0`, superuser only); with `--async-commit`, commits
/// do not wait for the WAL flush (`synchronous_commit = off`: NOT durable, to
/// measure what the flushes cost). Passed as the URL's `options`, so the external
/// daemon gets them through `DATABASE_URL`.
fn session_url(url: &str, opts: &Options) -> anyhow::Result<String> {
    let mut settings = Vec::new();
    if opts.pg_log {
        settings.push("-c log_min_duration_statement=0");
    }
    if opts.async_commit {
        settings.push("-c synchronous_commit=off");
    }
    if settings.is_empty() {
        return Ok(url.to_owned());
    }
    let mut parsed = url::Url::parse(url)?;
    parsed
        .query_pairs_mut()
        .append_pair("options", &settings.join(" "));
    Ok(parsed.to_string())
}

/// Turn jobs done and open, message rows, when the schema still has those tables
/// (internal: the pipeline may change them; then nothing is shown).
async fn database_counts(url: &str) -> Option<(i64, i64, i64)> {
    let mut conn = PgConnection::connect(url).await.ok()?;
    let counts = sqlx::query_as(
        "SELECT (SELECT count(*) FROM turn_jobs WHERE done_at IS NOT NULL), \
                (SELECT count(*) FROM turn_jobs WHERE done_at IS NULL), \
                (SELECT count(*) FROM messages)",
    )
    .fetch_one(&mut conn)
    .await
    .ok();
    let _ = conn.close().await;
    counts
}
