//! Customers by BSUID, end to end against the dev fake Graph API (`dev::fake_graph`),
//! which answers like Meta and posts signed statuses back: a customer with a
//! username and no phone number anywhere is answered through `recipient`; the same
//! customer seen later with their number stays one users row and one conversation
//! and is answered `to` the number; statuses naming them by `recipient_user_id`
//! apply; Meta's 131062 fails a message with its reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;
use wabot::dev::fake_graph::{self, FakeGraph, Options, StatusOptions};

use super::*;
use crate::helpers::{spawn_app_with, TestApp, APP_SECRET, PHONE_NUMBER_ID};

const BSUID: &str = "TR.19283746501928374650";
const PARENT: &str = "TR.ENT.55512340987612345678";
const USERNAME: &str = "mert.bakes";
const PHONE: &str = "905320000007";

/// The daemon with its worker on, sending to the dev fake Graph API, whose statuses
/// come back to the daemon's `/webhook`.
async fn start() -> (TestApp, Arc<FakeGraph>) {
    let options = Options {
        run: "customers".to_owned(),
        app_secret: APP_SECRET.to_owned(),
        phone_number_id: PHONE_NUMBER_ID.to_owned(),
        statuses: StatusOptions {
            enabled: true,
            delay: Duration::from_millis(20),
            redeliver: true,
        },
    };
    let (fake, url) = fake_graph::start("127.0.0.1:0".parse().unwrap(), options)
        .await
        .expect("the fake Graph API starts");
    let app = spawn_app_with(|c| {
        c.worker.enabled = true;
        c.whatsapp.graph_api_base = url;
        c.whatsapp.graph_timeout_ms = 2000;
        c.worker.send_retry_base_ms = 10;
        c.worker.send_rate_per_sec = 1000;
        c.worker.lease_secs = 5;
    })
    .await;
    fake.set_webhook_url(format!("{}/webhook", app.address));
    (app, fake)
}

/// Greets with every customer variable, asks a question, thanks.
fn chatbot() -> Value {
    json!({
        "name": "Customers",
        "nodes": [
            {"id": "start", "type": "start", "position": {"x": 0, "y": 0},
             "data": {"type": "start", "label": "Start"}},
            {"id": "greet", "type": "message", "position": {"x": 0, "y": 100},
             "data": {"type": "message", "label": "Greet",
                      "content": "Hello {{customer_name}}: username '{{customer_username}}', id '{{customer_id}}', phone '{{customer_phone}}'"}},
            {"id": "ask", "type": "question", "position": {"x": 0, "y": 200},
             "data": {"type": "question", "label": "Ask", "questionType": "text",
                      "content": "What would you like?"}},
            {"id": "thanks", "type": "message", "position": {"x": 0, "y": 300},
             "data": {"type": "message", "label": "Thanks", "content": "Noted, {{customer_name}}."}}
        ],
        "edges": [
            {"id": "e1", "source": "start", "target": "greet"},
            {"id": "e2", "source": "greet", "target": "ask"},
            {"id": "e3", "source": "ask", "target": "thanks"}
        ]
    })
}

/// A text from the username customer: by BSUID only, or with their number too.
fn webhook(wamid: &str, body: &str, phone: Option<&str>) -> Vec<u8> {
    let mut contact = json!({"profile": {"name": "Mert", "username": USERNAME},
                             "user_id": BSUID, "parent_user_id": PARENT});
    let mut message = json!({"from_user_id": BSUID, "from_parent_user_id": PARENT, "id": wamid,
                             "timestamp": now_secs().to_string(), "type": "text",
                             "text": {"body": body}});
    if let Some(phone) = phone {
        contact["wa_id"] = json!(phone);
        message["from"] = json!(phone);
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": [contact],
            "messages": [message]}}]}]})
    .to_string()
    .into_bytes()
}

async fn post(app: &TestApp, body: &[u8]) {
    let response = app.post_webhook(body).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

/// The messages `to` received, once there are `n`.
async fn inbox(fake: &FakeGraph, to: &str, n: usize) -> Vec<Value> {
    let inbox = fake.inbox(to);
    let arrived = inbox
        .wait_for(n, Instant::now() + Duration::from_secs(20))
        .await;
    let bodies: Vec<Value> = inbox.replies().into_iter().map(|r| r.body).collect();
    assert!(arrived, "{to} got {} of {n}: {bodies:#?}", bodies.len());
    bodies
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn a_username_customer_is_answered_by_bsuid_and_stays_one_customer_once_their_number_is_known(
) {
    let (app, fake) = start().await;
    let pool = &app.pool;
    install_chatbot(pool, &chatbot()).await;

    // No phone number anywhere: answered through `recipient`, the variables say who.
    post(&app, &webhook("wamid.U1", "hi", None)).await;
    let sent = inbox(&fake, BSUID, 2).await;
    for body in &sent {
        assert_eq!(body["recipient"], BSUID, "{body}");
        assert!(body.get("to").is_none(), "{body}");
    }
    assert_eq!(
        sent[0]["text"]["body"],
        format!("Hello Mert: username '{USERNAME}', id '{BSUID}', phone ''")
    );
    let (user, phone): (Uuid, Option<String>) = sqlx::query_as(
        "SELECT u.id, u.\"phoneNumber\"::text FROM users u \
         JOIN wabot_customer_ids i ON i.user_id = u.id WHERE i.bsuid = $1",
    )
    .bind(BSUID)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        phone, None,
        "WhatsApp Builder's phoneNumber stays the phone: unknown"
    );

    // Meta's statuses name the customer by `recipient_user_id` only, and apply.
    eventually(
        pool,
        "SELECT count(*) FROM messages m JOIN send_jobs j ON j.message_id = m.id \
         WHERE m.status = 'read'",
        2,
    )
    .await;
    let recipients: Vec<Option<String>> =
        sqlx::query_scalar("SELECT DISTINCT recipient_id FROM message_statuses")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(recipients, [Some(BSUID.to_owned())]);

    // The same customer with their number: one users row, one conversation; the
    // number joins the row and replies go `to` it.
    post(&app, &webhook("wamid.U2", "a cake", Some(PHONE))).await;
    let sent = inbox(&fake, PHONE, 1).await;
    assert_eq!(sent[0]["to"], PHONE);
    assert!(sent[0].get("recipient").is_none(), "{}", sent[0]);
    assert_eq!(sent[0]["text"]["body"], "Noted, Mert.");
    assert_eq!(
        scalar(pool, "SELECT count(*) FROM users WHERE role = 'user'").await,
        1
    );
    let phone: Option<String> =
        sqlx::query_scalar("SELECT \"phoneNumber\"::text FROM users WHERE id = $1")
            .bind(user)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(phone.as_deref(), Some(PHONE));
    assert_eq!(scalar(pool, "SELECT count(*) FROM conversations").await, 1);
    assert_eq!(
        scalar(
            pool,
            "SELECT count(DISTINCT \"conversationId\") FROM messages"
        )
        .await,
        1
    );
    let senders: Vec<Uuid> = sqlx::query_scalar(
        "SELECT \"senderId\" FROM messages WHERE content ? 'raw' ORDER BY \"timestamp\"",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(senders, [user, user]);
    let (username, parent): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT username::text, parent_bsuid::text FROM wabot_customer_ids WHERE bsuid = $1",
    )
    .bind(BSUID)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (username.as_deref(), parent.as_deref()),
        (Some(USERNAME), Some(PARENT))
    );

    // A message by number only (as older webhooks came) is the same customer too.
    post(&app, &webhook_by_phone_only("wamid.U3", "hello again")).await;
    inbox(&fake, PHONE, 3).await;
    assert_eq!(scalar(pool, "SELECT count(*) FROM conversations").await, 1);
    assert_eq!(
        scalar(pool, "SELECT count(*) FROM users WHERE role = 'user'").await,
        1
    );

    // `wabot conversation show` finds the conversation by the BSUID.
    let out = crate::ops_cli::wabot(
        &app.config.database_url,
        &["conversation", "show", BSUID, "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["conversation"]["customer_phone"], PHONE);
    assert_eq!(shown["conversation"]["customer_name"], "Mert");
    let directions: Vec<(&str, &str)> = shown["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["item"] == "message")
        .map(|m| {
            (
                m["direction"].as_str().unwrap_or(""),
                m["wamid"].as_str().unwrap_or(""),
            )
        })
        .filter(|(_, wamid)| wamid.starts_with("wamid.U"))
        .collect();
    assert_eq!(
        directions,
        [("in", "wamid.U1"), ("in", "wamid.U2"), ("in", "wamid.U3")]
    );

    // An operator opts the customer out by their number: kept by the conversation's
    // key (the BSUID it began with), which the turn stage reads; in again by BSUID.
    let db = &app.config.database_url;
    let out = crate::ops_cli::wabot(db, &["customer", "opt-out", &format!("+{PHONE}")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: Vec<String> = sqlx::query_scalar("SELECT customer_wa_id::text FROM wabot_opt_outs")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(keys, [BSUID]);
    let out = crate::ops_cli::wabot(db, &["conversation", "show", PHONE, "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["opt_out"]["customer_wa_id"], BSUID, "{shown:#}");
    let out = crate::ops_cli::wabot(db, &["customer", "opt-in", BSUID]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("opted in: {BSUID}")), "{said}");
    assert_eq!(scalar(pool, "SELECT count(*) FROM wabot_opt_outs").await, 0);
    fake.stop();
}

fn webhook_by_phone_only(wamid: &str, body: &str) -> Vec<u8> {
    crate::webhook::messages_webhook(
        PHONE,
        "Mert",
        vec![crate::webhook::text(PHONE, wamid, body, now_secs())],
    )
}

#[tokio::test]
async fn meta_refusing_a_bsuid_recipient_fails_the_message_with_that_reason() {
    let (app, fake) = start().await;
    let pool = &app.pool;
    install_chatbot(pool, &chatbot()).await;
    fake.refuse_next(131062);
    post(&app, &webhook("wamid.R1", "hi", None)).await;
    // The greeting is refused for good, not retried; the question still goes.
    let sent = inbox(&fake, BSUID, 1).await;
    assert_eq!(sent[0]["interactive"], Value::Null);
    assert_eq!(sent[0]["text"]["body"], "What would you like?");
    eventually(
        pool,
        "SELECT count(*) FROM messages WHERE status = 'failed'",
        1,
    )
    .await;
    let (body, error): (String, Value) = sqlx::query_as(
        "SELECT content ->> 'text', content -> 'error' FROM messages WHERE status = 'failed'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(body.starts_with("Hello Mert"), "{body}");
    assert_eq!(error["code"], 131062);
    assert_eq!(
        error["reason"],
        wabot::whatsapp::graph::BSUID_NOT_SUPPORTED_REASON
    );
    assert_eq!(fake.accepted.load(std::sync::atomic::Ordering::Relaxed), 1);
    fake.stop();
}

#[tokio::test]
async fn an_echo_to_a_bsuid_customer_joins_their_conversation() {
    let (app, fake) = start().await;
    let pool = &app.pool;
    post(&app, &webhook("wamid.E0", "hi", None)).await;
    let echo = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "smb_message_echoes", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "message_echoes": [{"from": "15550783881", "to": BSUID, "id": "wamid.E1",
                                "timestamp": now_secs().to_string(), "type": "text",
                                "text": {"body": "Yes, we deliver on Sundays."}}]}}]}]});
    post(&app, echo.to_string().as_bytes()).await;
    assert_eq!(scalar(pool, "SELECT count(*) FROM conversations").await, 1);
    assert_eq!(
        scalar(
            pool,
            "SELECT count(DISTINCT \"conversationId\") FROM messages"
        )
        .await,
        1
    );
    assert_eq!(
        scalar(pool, "SELECT count(*) FROM users WHERE role = 'user'").await,
        1
    );
    let (state, source): (String, String) =
        sqlx::query_as("SELECT state, source FROM wabot_handover")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), source.as_str()), ("agent", "echo"));
    fake.stop();
}

/// A text from a new customer `bsuid`, with `phone` when given.
fn webhook_of(bsuid: &str, phone: Option<&str>, wamid: &str) -> Vec<u8> {
    let text = String::from_utf8(webhook(wamid, "hi", phone)).unwrap();
    text.replace(BSUID, bsuid).into_bytes()
}

#[tokio::test]
async fn concurrent_webhooks_of_one_new_customer_make_one_user_and_one_conversation() {
    // One webhook per transaction, four writers: the claims race for real.
    let app = spawn_app_with(|c| {
        c.pipeline.ingest_batch = 1;
        c.pipeline.ingest_writers = 4;
    })
    .await;
    let pool = &app.pool;
    for round in 0..4 {
        let bsuid = format!("TR.{round}0000000000000000000");
        let phone = format!("90532000010{round}");
        let bodies: Vec<Vec<u8>> = (0..8)
            .map(|i| {
                // Half by BSUID alone, half with the number too, interleaved.
                let phone = (i % 2 == 1).then_some(phone.as_str());
                webhook_of(&bsuid, phone, &format!("wamid.C{round}.{i}"))
            })
            .collect();
        let posts = bodies.iter().map(|b| app.post_webhook(b));
        for response in futures::future::join_all(posts).await {
            assert_eq!(response.status(), 200);
        }
        let users: Vec<(Uuid, Option<String>)> = sqlx::query_as(
            "SELECT u.id, u.\"phoneNumber\"::text FROM users u \
             WHERE u.role = 'user' AND (u.\"phoneNumber\" = $1 OR u.id IN \
                   (SELECT user_id FROM wabot_customer_ids WHERE bsuid = $2))",
        )
        .bind(&phone)
        .bind(&bsuid)
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(users.len(), 1, "round {round}: {users:?}");
        assert_eq!(users[0].1.as_deref(), Some(phone.as_str()), "round {round}");
        let conversations: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT \"conversationId\") FROM messages WHERE \"senderId\" = $1",
        )
        .bind(users[0].0)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(conversations, 1, "round {round}");
        let messages: i64 =
            sqlx::query_scalar("SELECT count(*) FROM messages WHERE \"senderId\" = $1")
                .bind(users[0].0)
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(messages, 8, "round {round}");
    }
}

#[tokio::test]
async fn replay_selects_a_bsuid_customers_webhooks_and_restores_a_lost_message() {
    let app = crate::helpers::spawn_app().await;
    let pool = &app.pool;
    post(&app, &webhook("wamid.L1", "hi", None)).await;
    post(
        &app,
        &webhook_of("TR.99999999999999999999", None, "wamid.L2"),
    )
    .await;
    sqlx::query("DELETE FROM messages")
        .execute(pool)
        .await
        .unwrap();
    let selection = wabot::replay::Selection {
        filter: wabot::store::replay::EventFilter {
            customer: Some(BSUID.to_owned()),
            ..Default::default()
        },
        limit: None,
    };
    let summary = wabot::replay::into_database(pool, &selection, Some(PHONE_NUMBER_ID))
        .await
        .unwrap();
    assert_eq!((summary.events, summary.messages_new), (1, 1));
    let wamids: Vec<String> =
        sqlx::query_scalar("SELECT content ->> 'whatsappMessageId' FROM messages")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(wamids, ["wamid.L1"]);
}
