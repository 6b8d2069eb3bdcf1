//! A load run of the Flows endpoint: the real server on a fresh database, a Strapi-like
//! data source on loopback, and a client sending signed, encrypted requests with a
//! fixed concurrency. Prints requests per second and latency percentiles for `ping`
//! (signature + crypto only) and `INIT` (plus the token lookup, the session row and a
//! data source round trip).
//!
//! Bounded: FLOWS_LOAD_REQUESTS (default 2000) requests per run, FLOWS_LOAD_CONCURRENCY
//! (default 16) in flight, and at most 60 s a run. Needs PostgreSQL at DATABASE_URL
//! (default postgres://postgres@127.0.0.1:5432/postgres); the database it creates is
//! dropped at the end. Run: `cargo bench --bench flows_load`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes128;
use aes_gcm::{AesGcm, Nonce};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use uuid::Uuid;

const APP_SECRET: &str = "load-secret";

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sign(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(APP_SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A signed, encrypted request body and what is needed to read the answer.
struct Prepared {
    body: Vec<u8>,
    signature: String,
    key: [u8; 16],
    iv: [u8; 16],
}

fn prepare(public: &OaepPublicEncryptingKey, request: &Value) -> Prepared {
    let key: [u8; 16] = rand::random();
    let iv: [u8; 16] = rand::random();
    let mut wrapped = vec![0u8; public.ciphertext_size()];
    let wrapped = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &key, &mut wrapped, None)
        .expect("wrap")
        .to_vec();
    let data = AesGcm::<Aes128, U16>::new(&key.into())
        .encrypt(
            Nonce::<U16>::from_slice(&iv),
            request.to_string().as_bytes(),
        )
        .expect("encrypt");
    let body = json!({
        "encrypted_flow_data": BASE64.encode(data),
        "encrypted_aes_key": BASE64.encode(wrapped),
        "initial_vector": BASE64.encode(iv),
    })
    .to_string()
    .into_bytes();
    Prepared {
        signature: sign(&body),
        body,
        key,
        iv,
    }
}

fn open(p: &Prepared, answer: &str) -> Value {
    let flipped: Vec<u8> = p.iv.iter().map(|b| !b).collect();
    let bytes = BASE64.decode(answer.trim()).expect("base64 answer");
    let plain = AesGcm::<Aes128, U16>::new(&p.key.into())
        .decrypt(Nonce::<U16>::from_slice(&flipped), bytes.as_slice())
        .expect("answer decrypts");
    serde_json::from_slice(&plain).expect("JSON answer")
}

async fn fake_source() -> String {
    let brands: Vec<Value> = (0..10)
        .map(|i| json!({"id": i, "attributes": {"name": format!("Brand {i}"), "slug": format!("b{i}")}}))
        .collect();
    let body = json!({"data": brands, "meta": {}});
    let app = axum::Router::new().route(
        "/api/brands",
        axum::routing::get(move || {
            let body = body.clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/api", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

async fn seed(pool: &PgPool, source_url: &str) -> String {
    let q = |sql: &'static str| sqlx::query_scalar::<_, Uuid>(sql);
    let user = q(
        "INSERT INTO users (\"phoneNumber\", name) VALUES ('905550000000', 'Load') RETURNING id",
    )
    .fetch_one(pool)
    .await
    .expect("user");
    let conversation = q("INSERT INTO conversations DEFAULT VALUES RETURNING id")
        .fetch_one(pool)
        .await
        .expect("conversation");
    sqlx::query("INSERT INTO conversation_participants VALUES ($1, $2)")
        .bind(conversation)
        .bind(user)
        .execute(pool)
        .await
        .expect("participant");
    let nodes =
        json!([{"id": "f1", "type": "whatsapp_flow", "data": {"whatsappFlowId": "LOAD_FLOW"}}]);
    let chatbot = sqlx::query_scalar::<_, Uuid>(
        "INSERT INTO chatbots (name, nodes) VALUES ('load', $1) RETURNING id",
    )
    .bind(nodes)
    .fetch_one(pool)
    .await
    .expect("chatbot");
    let context = sqlx::query_scalar::<_, Uuid>(
        "INSERT INTO conversation_contexts (\"conversationId\", \"chatbotId\", \"currentNodeId\", status) \
         VALUES ($1, $2, 'f1', 'waiting_flow') RETURNING id",
    )
    .bind(conversation).bind(chatbot).fetch_one(pool).await.expect("context");
    let source = sqlx::query_scalar::<_, Uuid>(
        "INSERT INTO data_sources (name, type, base_url) VALUES ('load', 'STRAPI', $1) RETURNING id",
    )
    .bind(source_url).fetch_one(pool).await.expect("source");
    let connection = sqlx::query_scalar::<_, Uuid>(
        "INSERT INTO data_source_connections (name, data_source_id, endpoint, transform_config) \
         VALUES ('brands', $1, '/brands', '{\"idField\":\"slug\",\"titleField\":\"name\"}') RETURNING id",
    )
    .bind(source).fetch_one(pool).await.expect("connection");
    let flow_json = json!({"routing_model": {"BRAND": []}, "screens": [{"id": "BRAND", "data": {"brands": {}}}]});
    let metadata =
        json!({"dataSourceConfig": [{"componentName": "brands", "connectionId": connection}]});
    sqlx::query("INSERT INTO whatsapp_flows (whatsapp_flow_id, name, \"flowJson\", metadata) VALUES ('LOAD_FLOW', 'load', $1, $2)")
        .bind(flow_json).bind(metadata).execute(pool).await.expect("flow");
    format!("{context}:f1")
}

async fn run(
    label: &str,
    url: &str,
    requests: Vec<Prepared>,
    concurrency: usize,
    check: fn(&Value) -> bool,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let limit = Arc::new(Semaphore::new(concurrency));
    let total = requests.len();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for prepared in requests {
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        let permit = limit.clone().acquire_owned().await.expect("semaphore");
        let (client, url) = (client.clone(), url.to_owned());
        tasks.spawn(async move {
            let sent = Instant::now();
            let response = client
                .post(&url)
                .header("x-hub-signature-256", &prepared.signature)
                .body(prepared.body.clone())
                .send()
                .await;
            let ok = match response {
                Ok(r) if r.status().is_success() => r
                    .text()
                    .await
                    .map(|t| check(&open(&prepared, &t)))
                    .unwrap_or(false),
                _ => false,
            };
            drop(permit);
            (sent.elapsed(), ok)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failures = 0;
    while let Some(done) = tasks.join_next().await {
        let (latency, ok) = done.expect("task");
        latencies.push(latency);
        failures += usize::from(!ok);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "{label:<5} {} requests, concurrency {concurrency}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, failures {failures}",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and
    // expects a quick exit, which a database-backed load run is not.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let requests = env_usize("FLOWS_LOAD_REQUESTS", 2000);
    let concurrency = env_usize("FLOWS_LOAD_CONCURRENCY", 16);
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("wabot_flows_load_{}", Uuid::new_v4().simple());
    let admin = PgPool::connect(&server).await?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&admin)
        .await?;
    let mut url = url::Url::parse(&server)?;
    url.set_path(&name);

    let dir = tempfile::tempdir()?;
    let key_path = dir.path().join("flows.pem");
    let pair = wabot::whatsapp::flows_crypto::generate()?;
    std::fs::write(&key_path, pair.private_pem.expose_secret())?;
    let mut config = wabot::config::Config {
        database_url: url.to_string(),
        listen: "127.0.0.1:0".parse()?,
        ..Default::default()
    };
    config.whatsapp.app_secret = Some(SecretString::from(APP_SECRET));
    config.worker.enabled = false;
    config.flows.private_key = Some(key_path);
    config.datasource.allowed_networks = vec!["127.0.0.0/8".parse()?];
    config.database.max_connections = 32;

    let pool = wabot::store::connect(&config).await?;
    wabot::store::migrate(&pool).await?;
    let source = fake_source().await;
    let token = seed(&pool, &source).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = wabot::startup::Application::with_parts(config.clone(), pool.clone(), listener)?;
    let endpoint = format!("http://{}{}", app.local_addr(), config.flows.endpoint_path);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server_task = tokio::spawn(app.run(shutdown.clone()));

    let b64: String = pair
        .public_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let public =
        OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&BASE64.decode(b64)?)?)?;
    let ping = json!({"version": "3.0", "action": "ping"});
    let init = json!({"version": "3.0", "action": "INIT", "flow_token": token});
    let pings = (0..requests).map(|_| prepare(&public, &ping)).collect();
    let inits = (0..requests).map(|_| prepare(&public, &init)).collect();
    run("ping", &endpoint, pings, concurrency, |v| {
        v["data"]["status"] == "active"
    })
    .await;
    run("INIT", &endpoint, inits, concurrency, |v| {
        v["data"]["brands"]
            .as_array()
            .is_some_and(|a| a.len() == 10)
    })
    .await;

    shutdown.cancel();
    let _ = server_task.await;
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&admin)
        .await?;
    Ok(())
}
