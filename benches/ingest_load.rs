//! Ingest load driver: starts wabot in-process on a fresh database, has many
//! simulated customers post signed webhooks at it over loopback, and reports
//! acknowledgements per second and the ack latency (p50, p99, max).
//!
//! `cargo bench --bench ingest_load`. Bounded in count and time; tune with
//! `WABOT_LOAD_USERS` (default 200), `WABOT_LOAD_MESSAGES` (per user, 10),
//! `WABOT_LOAD_CONCURRENCY` (requests in flight, 32), `WABOT_LOAD_SECS` (at most, 20)
//! and `DATABASE_URL` (the PostgreSQL server; a `wabot_load_*` database is created
//! on it and dropped afterwards). Each customer writes one message after another; one
//! delivery in ten is posted twice, as Meta does, and must not make a second row.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wabot::config::Config;
use wabot::startup::Application;
use wabot::whatsapp::signature;

const SECRET: &str = "load-app-secret";

fn setting(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let users = setting("WABOT_LOAD_USERS", 200);
    let per_user = setting("WABOT_LOAD_MESSAGES", 10);
    let concurrency = setting("WABOT_LOAD_CONCURRENCY", 32) as usize;
    let max_time = Duration::from_secs(setting("WABOT_LOAD_SECS", 20));
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());

    let options = PgConnectOptions::from_str(&server)?;
    let name = format!("wabot_load_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await?;
    let url = options.clone().database(&name).to_url_lossy().to_string();

    let result = run(&url, users, per_user, concurrency, max_time).await;

    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    result
}

async fn run(
    url: &str,
    users: u64,
    per_user: u64,
    concurrency: usize,
    max_time: Duration,
) -> anyhow::Result<()> {
    let mut config = Config {
        database_url: url.to_owned(),
        listen: "127.0.0.1:0".parse()?,
        ..Config::default()
    };
    config.whatsapp.app_secret = Some(SecretString::from(SECRET));
    config.worker.enabled = false;
    let pool = PgPoolOptions::new()
        .max_connections(config.database.max_connections)
        .acquire_timeout(Duration::from_millis(config.database.acquire_timeout_ms))
        .connect(url)
        .await?;
    wabot::store::migrate(&pool).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let app = Application::with_parts(config.clone(), pool.clone(), listener)?;
    let address = format!("http://{}/webhook", app.local_addr());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let in_flight = Arc::new(Semaphore::new(concurrency));
    let deadline = Instant::now() + max_time;
    let started = Instant::now();
    let mut customers = tokio::task::JoinSet::new();
    for user in 0..users {
        let (client, address, in_flight) = (client.clone(), address.clone(), in_flight.clone());
        customers.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let wa_id = format!("1999{user:08}");
            for n in 0..per_user {
                if Instant::now() >= deadline {
                    break;
                }
                let body = webhook(&wa_id, user, n);
                let header = signature::sign(SECRET.as_bytes(), &body);
                let copies = if (user + n) % 10 == 0 { 2 } else { 1 };
                for _ in 0..copies {
                    let Ok(_permit) = in_flight.acquire().await else {
                        return (latencies, failures);
                    };
                    let sent = Instant::now();
                    let response = client
                        .post(&address)
                        .header(signature::HEADER, &header)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 200 => latencies.push(sent.elapsed()),
                        _ => failures += 1,
                    }
                }
            }
            (latencies, failures)
        });
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    while let Some(done) = customers.join_next().await {
        let (l, f) = done?;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await?;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM turn_jobs")
        .fetch_one(&pool)
        .await?;
    shutdown.cancel();
    server.await??;
    pool.close().await;

    latencies.sort();
    let pct = |p: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i]
    };
    let acks = latencies.len();
    println!(
        "ingest_load: {users} customers x {per_user} messages, {concurrency} requests in flight"
    );
    println!(
        "  acks: {acks} in {:.2} s = {:.0} acks/s; failures: {failures}",
        elapsed.as_secs_f64(),
        acks as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  ack latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("  stored: {stored} messages, {jobs} turn jobs (duplicates posted: one in ten)");
    anyhow::ensure!(stored == jobs, "every stored message has one turn job");
    Ok(())
}

/// One text message of customer `user`, the `n`th they send.
fn webhook(wa_id: &str, user: u64, n: u64) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": format!("Load customer {user}")}, "wa_id": wa_id}],
            "messages": [{"from": wa_id, "id": format!("wamid.LOAD.{user}.{n}"),
                          "timestamp": now.to_string(), "type": "text",
                          "text": {"body": format!("message {n} from customer {user}")}}]}}]}]})
    .to_string()
    .into_bytes()
}
