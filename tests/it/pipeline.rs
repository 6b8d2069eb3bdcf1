//! The pipeline's own guarantees: which number is answered, shedding under
//! overload, and a drain that finishes the job and hands back what it cannot.

use std::time::Duration;

use serde_json::{json, Value};

use crate::e2e::{install_chatbot, text, Engine, CUSTOMER, CUSTOMER_NAME};
use crate::helpers::{spawn_app_with, TestApp};
use crate::support_graph::{Failure, Outcome};
use crate::webhook::{count, messages_webhook, now_secs};

/// A bot that greets and waits for a text.
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

/// A message webhook addressed to `business`.
fn webhook_for(business: &str, wa_id: &str, wamid: &str) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000000", "phone_number_id": business},
            "contacts": [{"profile": {"name": "Zed"}, "wa_id": wa_id}],
            "messages": [crate::webhook::text(wa_id, wamid, "hi", now_secs())]}}]}]})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_message_for_a_number_wabot_does_not_serve_is_stored_and_not_answered() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &greeter()).await;

    let response = engine
        .app
        .post_webhook(&webhook_for("9998887776665", "905550001111", "wamid.OTHER"))
        .await;
    assert_eq!(response.status(), 200);
    // A numeric oddity where the number should be never becomes a user.
    let odd = br#"{"object":"whatsapp_business_account","entry":[{"id":"W","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":1e30},"messages":[{"from":"905550002222","id":"wamid.ODD","timestamp":"1","type":"text","text":{"body":"x"}}]}}]}]}"#;
    assert_eq!(engine.app.post_webhook(odd).await.status(), 200);
    // The served number still gets its answer (and proves the worker is running).
    engine.say(text("wamid.SERVED", "hi")).await;
    engine.replies(0, 2).await;

    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE content ->> 'whatsappMessageId' = 'wamid.OTHER'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(stored, 1, "the message is kept");
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM turn_jobs j JOIN messages m ON m.id = j.message_id \
         WHERE m.content ->> 'whatsappMessageId' = 'wamid.OTHER'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(jobs, 0, "no chatbot runs for it");
    assert!(engine
        .graph
        .requests()
        .iter()
        .filter(|r| r.outcome != Outcome::Read)
        .all(|r| r.to() == Some(CUSTOMER)));
    let odd_users: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE \"phoneNumber\" LIKE '1e%'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(odd_users, 0);
    let skipped: i64 = sqlx::query_scalar("SELECT sum(messages_skipped) FROM webhook_events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(skipped, 1, "the odd one stays in the raw event");
}

/// Posts a text from `wa_id` in the background; the status code it got.
fn post_in_background(app: &TestApp, wa_id: &str, wamid: &str) -> tokio::task::JoinHandle<u16> {
    let body = messages_webhook(
        wa_id,
        CUSTOMER_NAME,
        vec![crate::webhook::text(wa_id, wamid, "hi", now_secs())],
    );
    let client = app.client.clone();
    let url = format!("{}/webhook", app.address);
    let signature = crate::helpers::sign(&body, crate::helpers::APP_SECRET);
    tokio::spawn(async move {
        client
            .post(url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
}

#[tokio::test]
async fn a_full_ingest_queue_sheds_with_503_and_loses_nothing() {
    let app = spawn_app_with(|c| {
        c.pipeline.ingest_queue = 1;
        c.pipeline.ingest_writers = 1;
    })
    .await;
    let pool = &app.pool;
    let first = messages_webhook(
        "905550000001",
        "A",
        vec![crate::webhook::text(
            "905550000001",
            "wamid.Q1",
            "hi",
            now_secs(),
        )],
    );
    assert_eq!(app.post_webhook(&first).await.status(), 200);

    // Hold the conversation's row: the one writer blocks on the next webhook of it.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM conversations FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let blocked = post_in_background(&app, "905550000001", "wamid.Q2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = post_in_background(&app, "905550000002", "wamid.Q3");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = post_in_background(&app, "905550000003", "wamid.Q4")
        .await
        .unwrap();
    assert_eq!(shed, 503, "no room: shed at once");

    holder.commit().await.unwrap();
    assert_eq!(blocked.await.unwrap(), 200);
    assert_eq!(queued.await.unwrap(), 200);
    // Meta delivers the shed one again.
    assert_eq!(
        post_in_background(&app, "905550000003", "wamid.Q4")
            .await
            .unwrap(),
        200
    );
    assert_eq!(count(pool, "messages").await, 4);
    assert_eq!(count(pool, "turn_jobs").await, 4);
}

#[tokio::test]
async fn a_drain_sends_what_was_committed() {
    let mut engine = Engine::start().await;
    install_chatbot(&engine.app.pool, &greeter()).await;
    // Meta hangs on the first reply: it times out and is retried during the drain.
    engine.graph.fail_next(1, Failure::Hang);
    engine.say(text("wamid.D1", "hi")).await;
    let pool = engine.app.pool.clone();
    crate::e2e::eventually(&pool, "SELECT count(*) FROM send_jobs", 2).await;
    engine.app.stop().await;

    let accepted: Vec<String> = engine
        .graph
        .accepted()
        .iter()
        .filter_map(|r| r.text().map(str::to_owned))
        .collect();
    assert_eq!(
        accepted[0], "Hello!",
        "the drain sent the replies: {accepted:?}"
    );
    assert_eq!(accepted.len(), 2);
    // The process signed off: `wabot status` shows it stopped, holding nothing.
    let (stopped, leases): (bool, i32) = sqlx::query_as(
        "SELECT stopped_at IS NOT NULL, turn_leases + send_leases FROM wabot_processes",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(stopped);
    assert_eq!(leases, 0);
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM send_jobs WHERE done_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(open, 0);
}

#[tokio::test]
async fn a_turn_the_drain_cannot_finish_hands_its_lease_back() {
    // A rest_api endpoint that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let mut engine = Engine::start_with(|c| c.server.shutdown_timeout_secs = 1).await;
    let bot = json!({"name": "Slow", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "api", "type": "rest_api", "data": {"label": "Slow", "apiUrl": url,
            "apiMethod": "GET", "apiTimeout": 20000}},
        {"id": "done", "type": "message", "data": {"label": "Done", "content": "Done"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "api"},
        {"id": "e2", "source": "api", "target": "done", "sourceHandle": "success"}
    ]});
    install_chatbot(&engine.app.pool, &bot).await;
    engine.say(text("wamid.L1", "hi")).await;
    let pool = engine.app.pool.clone();
    crate::e2e::eventually(
        &pool,
        "SELECT count(*) FROM turn_jobs WHERE locked_by IS NOT NULL AND done_at IS NULL",
        1,
    )
    .await;
    engine.app.stop().await;

    let (held, done): (Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT locked_by, done_at FROM turn_jobs WHERE kind = 'inbound'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(done, None, "the turn did not finish");
    assert_eq!(
        held, None,
        "its lease was handed back, for the next start to take at once"
    );
}

/// A bot that says `greeting` and waits for a text, with `metadata`.
fn keyed_bot(name: &str, greeting: &str, metadata: Value) -> Value {
    json!({"name": name, "metadata": metadata, "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "q", "type": "question", "data": {"label": "Q", "questionType": "text",
            "content": greeting, "variable": "answer"}}
    ], "edges": [{"id": "e1", "source": "s", "target": "q"}]})
}

#[tokio::test]
async fn a_restart_keyword_restarts_the_chatbot_it_belongs_to() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    // The oldest chatbot without keywords, then one with a trigger and a restart word.
    install_chatbot(pool, &keyed_bot("Default", "Default here.", json!({}))).await;
    install_chatbot(
        pool,
        &keyed_bot(
            "Orders",
            "Orders here.",
            json!({"triggerKeywords": ["order"], "restartKeywords": ["again"]}),
        ),
    )
    .await;
    engine.say(text("wamid.R1", "order")).await;
    assert_eq!(engine.replies(0, 1).await[0].text(), Some("Orders here."));
    engine.say(text("wamid.R2", "again")).await;
    assert_eq!(
        engine.replies(1, 1).await[0].text(),
        Some("Orders here."),
        "the restart word starts Orders over, not the default chatbot"
    );
}
