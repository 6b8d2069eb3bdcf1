//! Stopping in time: an idle daemon stops at once, however long the drain may take;
//! a busy one by the drain's deadline, and what it could not finish is handed back
//! and done by the next process.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::e2e::{eventually, install_chatbot, text, Engine};
use crate::helpers::{spawn_app_with, spawn_on_pool};
use crate::support_graph::Failure;

/// The drain time of these tests: long, so that waiting for it cannot pass for
/// stopping at once.
const DRAIN_SECS: u64 = 20;

/// A bot that sends two messages and waits for a text.
fn greeter() -> Value {
    json!({"name": "Greeter", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "hi", "type": "message", "data": {"label": "Hi", "content": "Hello!"}},
        {"id": "q", "type": "question", "data": {"label": "Q", "questionType": "text",
            "content": "Your name?", "variable": "name"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "hi"},
        {"id": "e2", "source": "hi", "target": "q"}
    ]})
}

/// The daemon's log lines on this test's thread, as JSON objects. A
/// `#[tokio::test]` runs every task of its runtime on that thread, so the scoped
/// subscriber sees the whole daemon and no other test.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Captures INFO and above until the guard is dropped.
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// The lines at `level` (`"WARN"`, `"INFO"`, ...).
    pub fn at(&self, level: &str) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["level"] == level)
            .collect()
    }

    /// The messages of the lines at `level`.
    pub fn messages(&self, level: &str) -> Vec<String> {
        self.at(level)
            .iter()
            .map(|v| v["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The drain's one warning about what it handed back: (send jobs, turn jobs).
fn handed_back(logs: &Logs) -> Vec<(i64, i64)> {
    logs.at("WARN")
        .iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .unwrap_or_default()
                .contains("handed back")
        })
        .map(|v| {
            (
                v["send_jobs"].as_i64().unwrap(),
                v["turn_jobs"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Whether this process's heartbeat row says it stopped, holding no lease.
async fn signed_off(pool: &sqlx::PgPool, holder: &str) -> bool {
    let (stopped, leases): (bool, i32) = sqlx::query_as(
        "SELECT stopped_at IS NOT NULL, turn_leases + send_leases FROM wabot_processes \
         WHERE holder = $1",
    )
    .bind(holder)
    .fetch_one(pool)
    .await
    .unwrap();
    stopped && leases == 0
}

#[tokio::test]
async fn an_idle_daemon_stops_at_once() {
    let (logs, _guard) = Logs::capture();
    let mut app = spawn_app_with(|c| {
        c.worker.enabled = true;
        c.server.shutdown_timeout_secs = DRAIN_SECS;
    })
    .await;
    // Every stage is up once the monitor has reported the process.
    let holder = app.state.holder.clone();
    eventually(
        &app.pool,
        &format!("SELECT count(*) FROM wabot_processes WHERE holder = '{holder}'"),
        1,
    )
    .await;

    let started = Instant::now();
    app.stop().await;
    let took = started.elapsed();
    // Well under a second on any machine; 3 s leaves room for a loaded one, and
    // is far from the 20 s a wait for the deadline would take.
    assert!(took < Duration::from_secs(3), "an idle drain took {took:?}");
    assert!(signed_off(&app.pool, &holder).await);
    // Nothing was handed back, so nothing is said about it.
    assert_eq!(logs.messages("WARN"), Vec::<String>::new());
    assert!(logs
        .messages("INFO")
        .contains(&"drained: nothing left unfinished".to_owned()));
}

#[tokio::test]
async fn a_daemon_that_has_answered_stops_at_once() {
    let (logs, _guard) = Logs::capture();
    let mut engine = Engine::start_with(|c| c.server.shutdown_timeout_secs = DRAIN_SECS).await;
    install_chatbot(&engine.app.pool, &greeter()).await;
    engine.say(text("wamid.S1", "hi")).await;
    engine.replies(0, 2).await;
    // The replies' records are written: nothing is left in flight.
    eventually(
        &engine.app.pool,
        "SELECT count(*) FROM send_jobs WHERE done_at IS NULL",
        0,
    )
    .await;

    let started = Instant::now();
    engine.app.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "the drain took {took:?}");
    let holder = engine.app.state.holder.clone();
    assert!(signed_off(&engine.app.pool, &holder).await);
    assert_eq!(handed_back(&logs), []);
}

#[tokio::test]
async fn a_held_sender_stops_at_once_and_hands_its_replies_back() {
    let (logs, _guard) = Logs::capture();
    let mut engine = Engine::start_with(|c| {
        c.server.shutdown_timeout_secs = DRAIN_SECS;
        c.worker.lease_secs = 60;
    })
    .await;
    let pool = engine.app.pool.clone();
    install_chatbot(&pool, &greeter()).await;
    // Meta rejects the token: sending is held until it changes, which it won't.
    engine.graph.set_token("another-token");
    engine.say(text("wamid.S4", "hi")).await;
    let holder = engine.app.state.holder.clone();
    eventually(
        &pool,
        &format!(
            "SELECT count(*) FROM wabot_processes WHERE holder = '{holder}' \
             AND send_hold IS NOT NULL"
        ),
        1,
    )
    .await;

    let started = Instant::now();
    engine.app.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "a held drain took {took:?}");
    let (open, leased): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(locked_by) FROM send_jobs WHERE done_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((open, leased), (2, 0), "both replies wait, handed back");
    assert_eq!(handed_back(&logs), [(2, 0)]);
    assert!(signed_off(&pool, &holder).await);
}

#[tokio::test]
async fn a_send_in_flight_at_the_deadline_is_handed_back_and_sent_by_the_next_process() {
    let (logs, _guard) = Logs::capture();
    const DRAIN: u64 = 3;
    let mut engine = Engine::start_with(|c| {
        c.server.shutdown_timeout_secs = DRAIN;
        // Meta's answer would come long after the deadline.
        c.whatsapp.graph_timeout_ms = 30_000;
        // An unreleased lease would keep the next process waiting past the test.
        c.worker.lease_secs = 60;
    })
    .await;
    let pool = engine.app.pool.clone();
    install_chatbot(&pool, &greeter()).await;
    engine.graph.fail_next(1, Failure::Hang);
    engine.say(text("wamid.S2", "hi")).await;
    // The first reply's call is in flight (the fake holds it), the second waits
    // behind it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while engine.graph.requests().is_empty() {
        assert!(Instant::now() < deadline, "the first reply was never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    engine.app.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(DRAIN * 1000 + 1500),
        "the drain took {took:?}, past its {DRAIN} s deadline"
    );
    assert!(
        took >= Duration::from_secs(DRAIN) / 2,
        "the call in flight was waited for until the cut: {took:?}"
    );
    let (open, leased): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(locked_by) FROM send_jobs WHERE done_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(open, 2, "both replies are left unsent");
    assert_eq!(leased, 0, "and their leases were handed back");
    assert_eq!(handed_back(&logs), [(2, 0)], "one warning says what");
    assert!(signed_off(&pool, &engine.app.state.holder).await);

    // The next process sends them at once, in order.
    let next = spawn_on_pool(engine.app.config.clone(), pool.clone()).await;
    let sent = engine
        .graph
        .wait_for_accepted(2, Duration::from_secs(10))
        .await;
    let texts: Vec<_> = sent.iter().filter_map(|r| r.text()).collect();
    assert_eq!(texts, ["Hello!", "Your name?"]);
    eventually(
        &pool,
        "SELECT count(*) FROM send_jobs WHERE done_at IS NULL",
        0,
    )
    .await;
    drop(next);
}

#[tokio::test]
async fn a_turn_running_at_the_deadline_is_handed_back_in_time() {
    let (logs, _guard) = Logs::capture();
    // A rest_api endpoint that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    const DRAIN: u64 = 2;
    let mut engine = Engine::start_with(|c| {
        c.server.shutdown_timeout_secs = DRAIN;
        c.worker.lease_secs = 60;
    })
    .await;
    let bot = json!({"name": "Slow", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "api", "type": "rest_api", "data": {"label": "Slow", "apiUrl": url,
            "apiMethod": "GET", "apiTimeout": 20000}},
        {"id": "done", "type": "message", "data": {"label": "Done", "content": "Done"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "api"},
        {"id": "e2", "source": "api", "target": "done", "sourceHandle": "success"}
    ]});
    let pool = engine.app.pool.clone();
    install_chatbot(&pool, &bot).await;
    engine.say(text("wamid.S3", "hi")).await;
    eventually(
        &pool,
        "SELECT count(*) FROM turn_jobs WHERE locked_by IS NOT NULL AND done_at IS NULL",
        1,
    )
    .await;

    let started = Instant::now();
    engine.app.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(DRAIN * 1000 + 1500),
        "the drain took {took:?}, past its {DRAIN} s deadline"
    );
    let (held, done): (Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT locked_by, done_at FROM turn_jobs WHERE kind = 'inbound'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(done, None, "the turn did not finish");
    assert_eq!(held, None, "its lease was handed back");
    assert_eq!(handed_back(&logs), [(0, 1)]);
    assert!(signed_off(&pool, &engine.app.state.holder).await);
}
