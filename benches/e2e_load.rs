//! End-to-end load driver: the whole engine in one process, against a real
//! PostgreSQL and a fake Graph API.
//!
//! wabot runs in-process (`Application::with_parts` + `run`) with its turn worker
//! and sender on, on a fresh database, with a sample chatbot installed as the active
//! one. Its Graph API base points at a small axum server started here, which answers
//! like Meta and records, per recipient, when every reply arrived. N simulated
//! customers each send M signed text webhooks; the figures are turns per second and
//! the end-to-end latency of a turn (webhook POST sent → first reply of that turn
//! received by the fake Graph API), plus the webhook ack latency, peak RSS and CPU.
//!
//! `cargo bench --bench e2e_load -- [options]`; unknown arguments (cargo's `--bench`)
//! are ignored. Options, with defaults:
//!
//! - `--users 200`, `--messages 10`: customers and messages per customer.
//! - `--think-ms 0`: closed loop (default): each customer waits for all replies of a
//!   turn, then thinks this long, then writes again.
//! - `--open-rate R`: open loop instead: messages are offered at R per second in all,
//!   round-robin over the customers, whatever the replies do. Latency is measured
//!   from the scheduled send time, so a server that falls behind is not flattered.
//! - `--chatbot echo|sample`: `fixtures/e2e/echo-loop.json` (every message gets
//!   "echo: <text>" and the question again: 2 Graph API calls a turn, 1 for the
//!   first) or WhatsApp Builder's `sample-chatbot.json` (welcome + button menu, a
//!   button reply, an answer + goodbye that ends the context; 2 calls a turn).
//! - `--poll-ms 20`, `--turn-concurrency 32`, `--db-connections 20`: daemon config.
//! - `--max-secs 40`: the load phase stops by itself after this long.
//! - `--sql-stats`: also count every SQL statement the process ran (sqlx's own
//!   statement events, seen by a tracing layer installed here) with its mean
//!   client-side time, and read PostgreSQL's per-table statistics afterwards. Costs
//!   some CPU; off by default.
//! - `--pg-log`: PostgreSQL logs every statement of the daemon with its server-side
//!   duration (`log_min_duration_statement = 0` on its connections; superuser only).
//! - `--no-ping`: the pool does not ping a connection before handing it out
//!   (`test_before_acquire(false)`; sqlx's default, which `store::connect` keeps,
//!   costs a round trip per acquire).
//! - `--async-commit`: the daemon's connections commit without waiting for the WAL
//!   flush (`synchronous_commit = off`). Not durable: only to measure the flushes.
//!
//! `DATABASE_URL` names the PostgreSQL server; a `wabot_e2e_*` database is created on
//! it and dropped afterwards (kept, for a look with psql, when `WABOT_E2E_KEEP_DB` is
//! set).

use std::future::IntoFuture;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wabot::config::Config;
use wabot::engine::ChatbotDoc;
use wabot::startup::Application;
use wabot::store::chatbots::{self, NewChatbot};
use wabot::whatsapp::signature;

#[path = "e2e_load/report.rs"]
mod report;
#[path = "e2e_load/sql_stats.rs"]
mod sql_stats;

use report::{postgres_cpu, report, self_cpu, Report};
use sql_stats::SqlStats;

const SECRET: &str = "e2e-app-secret";
const BUSINESS: &str = "106540352242922";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bot {
    Echo,
    Sample,
}

#[derive(Debug, Clone)]
struct Options {
    users: usize,
    messages: usize,
    think: Duration,
    open_rate: Option<f64>,
    bot: Bot,
    poll_ms: u64,
    turn_concurrency: usize,
    db_connections: u32,
    max_time: Duration,
    sql_stats: bool,
    pg_log: bool,
    async_commit: bool,
    no_ping: bool,
}

impl Options {
    fn parse() -> Options {
        let mut o = Options {
            users: 200,
            messages: 10,
            think: Duration::ZERO,
            open_rate: None,
            bot: Bot::Echo,
            poll_ms: 20,
            turn_concurrency: 32,
            db_connections: 20,
            max_time: Duration::from_secs(40),
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
            let takes_value = matches!(
                key.as_str(),
                "--users"
                    | "--messages"
                    | "--think-ms"
                    | "--open-rate"
                    | "--chatbot"
                    | "--poll-ms"
                    | "--turn-concurrency"
                    | "--db-connections"
                    | "--max-secs"
            );
            if key == "--sql-stats" {
                o.sql_stats = true;
            }
            if key == "--pg-log" {
                o.pg_log = true;
            }
            if key == "--async-commit" {
                o.async_commit = true;
            }
            if key == "--no-ping" {
                o.no_ping = true;
            }
            if !takes_value {
                i += 1;
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i).cloned().unwrap_or_default()
                }
            };
            i += 1;
            let num = |v: &str| v.parse::<f64>().ok().filter(|n| *n >= 0.0);
            match (key.as_str(), num(&value)) {
                ("--chatbot", _) => {
                    o.bot = if value == "sample" {
                        Bot::Sample
                    } else {
                        Bot::Echo
                    }
                }
                ("--users", Some(n)) if n >= 1.0 => o.users = n as usize,
                ("--messages", Some(n)) if n >= 1.0 => o.messages = n as usize,
                ("--think-ms", Some(n)) => o.think = Duration::from_millis(n as u64),
                ("--open-rate", Some(n)) if n > 0.0 => o.open_rate = Some(n),
                ("--poll-ms", Some(n)) if n >= 1.0 => o.poll_ms = n as u64,
                ("--turn-concurrency", Some(n)) if n >= 1.0 => o.turn_concurrency = n as usize,
                ("--db-connections", Some(n)) if n >= 2.0 => o.db_connections = n as u32,
                ("--max-secs", Some(n)) if n >= 1.0 => o.max_time = Duration::from_secs(n as u64),
                _ => eprintln!("e2e_load: ignoring {key} {value}"),
            }
        }
        o
    }
}

/// One reply as the fake Graph API received it.
struct Reply {
    at: Instant,
    text: String,
}

/// The fake Graph API's state: one inbox per customer (the recipient's wa_id encodes
/// its index, so no lookup is shared between requests).
struct FakeGraph {
    inboxes: Vec<mpsc::UnboundedSender<Reply>>,
    accepted: AtomicU64,
}

async fn graph_messages(State(fake): State<Arc<FakeGraph>>, body: Bytes) -> Json<Value> {
    let at = Instant::now();
    let n = fake.accepted.fetch_add(1, Ordering::Relaxed);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let to = body["to"].as_str().unwrap_or_default().to_owned();
    let text = body["text"]["body"]
        .as_str()
        .or_else(|| body["interactive"]["body"]["text"].as_str())
        .unwrap_or_default()
        .to_owned();
    if let Some(inbox) = user_index(&to).and_then(|u| fake.inboxes.get(u)) {
        let _ = inbox.send(Reply { at, text });
    }
    Json(json!({"messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": format!("wamid.E2E{n}")}]}))
}

fn wa_id(user: usize) -> String {
    format!("1999{user:08}")
}

fn user_index(wa_id: &str) -> Option<usize> {
    wa_id.strip_prefix("1999")?.parse().ok()
}

/// The scenario a chatbot implies: what customer `u` writes as message `s`, how many
/// replies that turn gets, and what the first of them says (when it is predictable).
fn message(bot: Bot, u: usize, s: usize) -> Value {
    let id = format!("wamid.IN.{u}.{s}");
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string();
    let from = wa_id(u);
    if bot == Bot::Sample && s % 2 == 1 {
        return json!({"from": from, "id": id, "timestamp": ts, "type": "interactive",
                      "interactive": {"type": "button_reply",
                                      "button_reply": {"id": "btn_tech", "title": "Teknik Destek"}}});
    }
    json!({"from": from, "id": id, "timestamp": ts, "type": "text",
           "text": {"body": format!("message {s} of customer {u}")}})
}

fn replies(bot: Bot, s: usize) -> usize {
    match (bot, s) {
        (Bot::Echo, 0) => 1,
        _ => 2,
    }
}

fn first_reply_ok(bot: Bot, u: usize, s: usize, text: &str) -> bool {
    match (bot, s) {
        (Bot::Echo, 0) => text == "Say something",
        (Bot::Echo, _) => text == format!("echo: message {s} of customer {u}"),
        (Bot::Sample, s) if s % 2 == 0 => text.starts_with("Merhaba!"),
        (Bot::Sample, _) => text.starts_with("Teknik Destek"),
    }
}

fn webhook(bot: Bot, u: usize, s: usize) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": BUSINESS},
            "contacts": [{"profile": {"name": format!("Customer {u}")}, "wa_id": wa_id(u)}],
            "messages": [message(bot, u, s)]}}]}]})
    .to_string()
    .into_bytes()
}

/// One turn as a customer saw it.
#[derive(Default)]
struct Turn {
    sent: Option<Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
    wrong: bool,
}

/// What one customer measured.
#[derive(Default)]
struct Seen {
    turns: Vec<Turn>,
    acks: Vec<Duration>,
    ack_failures: u64,
}

struct Driver {
    client: reqwest::Client,
    address: String,
    opts: Options,
    start: Instant,
    deadline: Instant,
}

impl Driver {
    async fn post(&self, body: Vec<u8>, seen: &mut Seen) {
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
            Ok(r) if r.status().is_success() => seen.acks.push(sent.elapsed()),
            _ => seen.ack_failures += 1,
        }
    }

    /// Receives the replies of turn `s` into `turn`; false when the deadline came first.
    async fn receive(
        &self,
        inbox: &mut mpsc::UnboundedReceiver<Reply>,
        u: usize,
        s: usize,
        turn: &mut Turn,
    ) -> bool {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        for k in 0..replies(self.opts.bot, s) {
            let Ok(Some(reply)) = tokio::time::timeout_at(deadline, inbox.recv()).await else {
                return false;
            };
            if k == 0 {
                turn.first = Some(reply.at);
                turn.wrong = !first_reply_ok(self.opts.bot, u, s, &reply.text);
            }
            turn.last = Some(reply.at);
        }
        true
    }

    /// A human: writes, waits for the whole answer, thinks, writes again.
    async fn closed(self: Arc<Self>, u: usize, mut inbox: mpsc::UnboundedReceiver<Reply>) -> Seen {
        let mut seen = Seen::default();
        for s in 0..self.opts.messages {
            if Instant::now() >= self.deadline {
                break;
            }
            let mut turn = Turn {
                sent: Some(Instant::now()),
                ..Turn::default()
            };
            self.post(webhook(self.opts.bot, u, s), &mut seen).await;
            let complete = self.receive(&mut inbox, u, s, &mut turn).await;
            seen.turns.push(turn);
            if !complete {
                break;
            }
            if !self.opts.think.is_zero() {
                tokio::time::sleep(self.opts.think).await;
            }
        }
        seen
    }

    /// A fixed offered rate: message `s` of customer `u` is due at
    /// `(s · users + u) / rate`, whatever happened to the earlier ones.
    async fn open(
        self: Arc<Self>,
        u: usize,
        rate: f64,
        mut inbox: mpsc::UnboundedReceiver<Reply>,
    ) -> Seen {
        let mut seen = Seen::default();
        for s in 0..self.opts.messages {
            let due = self.start + Duration::from_secs_f64((s * self.opts.users + u) as f64 / rate);
            if due >= self.deadline {
                break;
            }
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            seen.turns.push(Turn {
                sent: Some(due),
                ..Turn::default()
            });
            self.post(webhook(self.opts.bot, u, s), &mut seen).await;
        }
        let mut turns = std::mem::take(&mut seen.turns);
        for (s, turn) in turns.iter_mut().enumerate() {
            if !self.receive(&mut inbox, u, s, turn).await {
                break;
            }
        }
        seen.turns = turns;
        seen
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opts = Options::parse();
    let stats = opts.sql_stats.then(SqlStats::install);
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let options = PgConnectOptions::from_str(&server)?.disable_statement_logging();
    let name = format!("wabot_e2e_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await?;
    let url = options.clone().database(&name).to_url_lossy().to_string();
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut admin)
        .await?;

    let result = run(&url, &opts, &version, stats.as_ref()).await;

    if std::env::var_os("WABOT_E2E_KEEP_DB").is_some() {
        println!("  kept database {name} (WABOT_E2E_KEEP_DB)");
    } else {
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    result
}

async fn run(
    url: &str,
    opts: &Options,
    pg_version: &str,
    stats: Option<&SqlStats>,
) -> anyhow::Result<()> {
    let setup = Instant::now();
    // The fake Graph API.
    let (senders, mut receivers): (Vec<_>, Vec<_>) =
        (0..opts.users).map(|_| mpsc::unbounded_channel()).unzip();
    let fake = Arc::new(FakeGraph {
        inboxes: senders,
        accepted: AtomicU64::new(0),
    });
    let graph_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let graph_url = format!("http://{}", graph_listener.local_addr()?);
    let graph_app = Router::new()
        .route("/{version}/{phone}/messages", post(graph_messages))
        .with_state(fake.clone());
    let graph_stop = CancellationToken::new();
    let graph_server = tokio::spawn(
        axum::serve(graph_listener, graph_app)
            .with_graceful_shutdown(graph_stop.clone().cancelled_owned())
            .into_future(),
    );

    // The daemon.
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
        .connect_with(session_options(url, opts)?)
        .await?;
    wabot::store::migrate(&pool).await?;
    install_chatbot(&pool, opts.bot).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let app = Application::with_parts(config, pool.clone(), listener)?;
    let address = format!("http://{}/webhook", app.local_addr());
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(app.run(shutdown.clone()));
    let setup = setup.elapsed();

    // The customers.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(opts.users)
        .build()?;
    if let Some(stats) = stats {
        stats.reset();
    }
    let db = url
        .rsplit('/')
        .next()
        .and_then(|t| t.split('?').next())
        .unwrap_or_default()
        .to_owned();
    let start = Instant::now();
    let cpu_before = (self_cpu(), postgres_cpu(&db));
    let driver = Arc::new(Driver {
        client,
        address,
        opts: opts.clone(),
        start,
        deadline: start + opts.max_time,
    });
    let mut customers = tokio::task::JoinSet::new();
    for (u, inbox) in receivers.drain(..).enumerate() {
        let driver = driver.clone();
        match opts.open_rate {
            Some(rate) => customers.spawn(async move { (u, driver.open(u, rate, inbox).await) }),
            None => customers.spawn(async move { (u, driver.closed(u, inbox).await) }),
        };
    }
    let mut all: Vec<(usize, Seen)> = Vec::with_capacity(opts.users);
    while let Some(done) = customers.join_next().await {
        all.push(done?);
    }
    let cpu_after = (self_cpu(), postgres_cpu(&db));

    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM turn_jobs WHERE done_at IS NOT NULL), \
                (SELECT count(*) FROM turn_jobs WHERE done_at IS NULL), \
                (SELECT count(*) FROM messages WHERE status = 'sent')",
    )
    .fetch_one(&pool)
    .await?;
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), daemon).await;
    graph_stop.cancel();
    let _ = graph_server.await;
    pool.close().await;
    if !matches!(stopped, Ok(Ok(Ok(())))) {
        eprintln!("e2e_load: the daemon did not stop cleanly: {stopped:?}");
    }

    let answered = report(
        opts,
        &all,
        Report {
            setup,
            cpu: (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1),
            counts,
            accepted: fake.accepted.load(Ordering::Relaxed),
            pg_version,
        },
    );
    if let Some(stats) = stats {
        stats.print(answered);
        let mut conn = PgConnection::connect(url).await?;
        // Backends flush their statistics as they exit; give them a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        sql_stats::print_database_stats(&mut conn, answered).await?;
        conn.close().await?;
    }
    Ok(())
}

/// The daemon's connection options. Diagnostics only: with `--pg-log`, PostgreSQL
/// logs every statement of these connections with its server-side duration
/// (`log_min_duration_statement = 0`, which needs a superuser) to the server log;
/// with `--async-commit`, commits do not wait for the WAL flush
/// (`synchronous_commit = off`: NOT durable, to measure what the flushes cost).
fn session_options(url: &str, opts: &Options) -> anyhow::Result<PgConnectOptions> {
    let mut settings = Vec::new();
    if opts.pg_log {
        settings.push(("log_min_duration_statement", "0"));
    }
    if opts.async_commit {
        settings.push(("synchronous_commit", "off"));
    }
    Ok(PgConnectOptions::from_str(url)?.options(settings))
}

async fn install_chatbot(pool: &PgPool, bot: Bot) -> anyhow::Result<()> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = match bot {
        Bot::Echo => root.join("fixtures/e2e/echo-loop.json"),
        Bot::Sample => root.join("../shared/whatsapp-builder/chatbots/sample-chatbot.json"),
    };
    let value: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let doc = ChatbotDoc::from_json(&value).map_err(|e| anyhow::anyhow!("{path:?}: {e}"))?;
    chatbots::insert(pool, &NewChatbot::from_doc(&doc, true)).await?;
    Ok(())
}
