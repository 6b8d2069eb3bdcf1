//! `GET/POST /webhook` end to end: Meta's and WhatsApp Builder's sample payloads,
//! refusals that store nothing, duplicates, and batches.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{sign, spawn_app, APP_SECRET, VERIFY_TOKEN};

pub const BUSINESS: &str = "106540352242922";

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A `messages` webhook with these messages from `wa_id`.
pub fn messages_webhook(wa_id: &str, name: &str, messages: Vec<Value>) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": BUSINESS},
            "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
            "messages": messages}}]}]})
    .to_string()
    .into_bytes()
}

pub fn text(wa_id: &str, wamid: &str, body: &str, ts: i64) -> Value {
    json!({"from": wa_id, "id": wamid, "timestamp": ts.to_string(), "type": "text", "text": {"body": body}})
}

/// A `messages` webhook carrying only statuses.
pub fn statuses_webhook(statuses: &[(&str, &str)]) -> Vec<u8> {
    let statuses: Vec<Value> = statuses
        .iter()
        .map(|(wamid, status)| {
            let mut s = json!({"id": wamid, "status": status, "timestamp": now_secs().to_string(),
                               "recipient_id": "16505551234"});
            if *status == "failed" {
                s["errors"] = json!([{"code": 131026, "title": "Message undeliverable",
                                      "error_data": {"details": "Receiver is incapable"}}]);
            }
            s
        })
        .collect();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": BUSINESS},
            "statuses": statuses}}]}]})
    .to_string()
    .into_bytes()
}

pub async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Row counts of every table ingest writes.
pub async fn counts(pool: &PgPool) -> [i64; 7] {
    let mut out = [0; 7];
    for (i, table) in [
        "webhook_events",
        "users",
        "conversations",
        "conversation_participants",
        "messages",
        "turn_jobs",
        "message_statuses",
    ]
    .iter()
    .enumerate()
    {
        out[i] = count(pool, table).await;
    }
    out
}

pub async fn message_row(pool: &PgPool, wamid: &str) -> (String, Value, String, i64, Uuid, Uuid) {
    sqlx::query_as(
        "SELECT type::text, content, status::text, extract(epoch FROM \"timestamp\")::bigint, \
                \"conversationId\", \"senderId\" \
         FROM messages WHERE content ->> 'whatsappMessageId' = $1",
    )
    .bind(wamid)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("message {wamid}: {e}"))
}

pub async fn user(pool: &PgPool, phone: &str) -> (Uuid, String, String) {
    sqlx::query_as("SELECT id, name, role FROM users WHERE \"phoneNumber\" = $1")
        .bind(phone)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("user {phone}: {e}"))
}

#[tokio::test]
async fn the_handshake_echoes_the_challenge_only_for_the_right_token() {
    let app = spawn_app().await;
    let get = |query: String| {
        let client = app.client.clone();
        let url = format!("{}/webhook?{query}", app.address);
        async move { client.get(url).send().await.unwrap() }
    };
    let ok = get(format!(
        "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}"
    ))
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    for query in [
        "hub.mode=subscribe&hub.challenge=1&hub.verify_token=wrong".to_owned(),
        "hub.mode=subscribe&hub.challenge=1".to_owned(),
        format!("hub.mode=unsubscribe&hub.challenge=1&hub.verify_token={VERIFY_TOKEN}"),
    ] {
        assert_eq!(get(query.clone()).await.status(), 403, "{query}");
    }

    // An active whatsapp_config row's token replaces the environment's.
    wabot::store::whatsapp_config::insert(
        &app.pool,
        &wabot::store::whatsapp_config::NewConfig {
            phone_number_id: BUSINESS,
            business_account_id: "WABA",
            access_token: "token",
            webhook_verify_token: "db-verify-token",
            app_secret: Some("db-app-secret"),
            is_active: true,
        },
    )
    .await
    .unwrap();
    app.state.credentials.invalidate().await;
    let ok =
        get("hub.mode=subscribe&hub.challenge=42&hub.verify_token=db-verify-token".into()).await;
    assert_eq!(
        (ok.status().as_u16(), ok.text().await.unwrap()),
        (200, "42".to_owned())
    );
    let old = get(format!(
        "hub.mode=subscribe&hub.challenge=42&hub.verify_token={VERIFY_TOKEN}"
    ))
    .await;
    assert_eq!(old.status(), 403);
    // And its app secret signs webhooks.
    let body = messages_webhook(
        "16505550001",
        "Ann",
        vec![text("16505550001", "wamid.DB1", "hi", now_secs())],
    );
    let post = |signature: String| {
        app.client
            .post(format!("{}/webhook", app.address))
            .header("x-hub-signature-256", signature)
            .body(body.clone())
            .send()
    };
    assert_eq!(post(sign(&body, APP_SECRET)).await.unwrap().status(), 401);
    assert_eq!(
        post(sign(&body, "db-app-secret")).await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn refused_posts_get_the_right_status_and_store_nothing() {
    let app = spawn_app().await;
    let body = messages_webhook(
        "16505550002",
        "Bo",
        vec![text("16505550002", "wamid.R1", "hi", now_secs())],
    );
    let url = format!("{}/webhook", app.address);
    let send = |body: Vec<u8>, signature: Option<String>| {
        let mut request = app.client.post(&url).body(body);
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request.send()
    };
    let mut tampered = body.clone();
    tampered[20] ^= 1;
    let cases: Vec<(&str, Vec<u8>, Option<String>, u16)> = vec![
        ("missing header", body.clone(), None, 401),
        (
            "wrong secret",
            body.clone(),
            Some(sign(&body, "not-the-secret")),
            401,
        ),
        ("changed body", tampered, Some(sign(&body, APP_SECRET)), 401),
        (
            "not a signature",
            body.clone(),
            Some("sha256=xyz".into()),
            401,
        ),
    ];
    for (name, body, signature, status) in cases {
        let response = send(body, signature).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
    }
    // Over 3 MiB, even correctly signed and otherwise valid.
    let big = messages_webhook(
        "16505550002",
        "Bo",
        vec![text(
            "16505550002",
            "wamid.BIG",
            &"x".repeat(3 * 1024 * 1024),
            now_secs(),
        )],
    );
    let signature = sign(&big, APP_SECRET);
    let response = send(big, Some(signature)).await.unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(counts(&app.pool).await, [0; 7]);

    // The same body, properly signed, is accepted.
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    assert_eq!(count(&app.pool, "messages").await, 1);
}

#[tokio::test]
async fn the_same_delivery_posted_concurrently_makes_one_message_and_one_turn_job() {
    let app = spawn_app().await;
    for (copies, wa_id) in [(2, "16505550010"), (3, "16505550011")] {
        let wamid = format!("wamid.DUP{copies}");
        let body = messages_webhook(wa_id, "Dup", vec![text(wa_id, &wamid, "hello", now_secs())]);
        let responses =
            futures::future::join_all((0..copies).map(|_| app.post_webhook(&body))).await;
        assert!(responses.iter().all(|r| r.status() == 200));
        let rows: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages WHERE content ->> 'whatsappMessageId' = $1",
        )
        .bind(&wamid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(rows, 1, "{copies} copies");
        // And again later, in another batch next to a new message.
        let later = messages_webhook(
            wa_id,
            "Dup",
            vec![
                text(wa_id, &wamid, "hello", now_secs()),
                text(wa_id, &format!("{wamid}.2"), "more", now_secs()),
            ],
        );
        assert_eq!(app.post_webhook(&later).await.status(), 200);
    }
    assert_eq!(count(&app.pool, "messages").await, 4);
    assert_eq!(count(&app.pool, "turn_jobs").await, 4);
    assert_eq!(count(&app.pool, "webhook_events").await, 7);
}

#[tokio::test]
async fn a_new_customer_writing_many_messages_at_once_gets_one_user_and_one_conversation() {
    let app = spawn_app().await;
    let wa_id = "16505550020";
    let bodies: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            messages_webhook(
                wa_id,
                "Eve",
                vec![text(
                    wa_id,
                    &format!("wamid.NEW{i}"),
                    &format!("m{i}"),
                    now_secs(),
                )],
            )
        })
        .collect();
    let responses = futures::future::join_all(bodies.iter().map(|b| app.post_webhook(b))).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(count(&app.pool, "users").await, 2);
    assert_eq!(count(&app.pool, "conversations").await, 1);
    assert_eq!(count(&app.pool, "conversation_participants").await, 2);
    assert_eq!(count(&app.pool, "messages").await, 8);
    assert_eq!(count(&app.pool, "turn_jobs").await, 8);
    let (window, customer_at): (bool, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT \"isWindowOpen\", \"lastCustomerMessageAt\" FROM conversations")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(window, "a message of now opens the 24-hour window");
    assert!(customer_at.is_some());
}

#[tokio::test]
async fn a_batch_of_entries_changes_messages_and_statuses_is_stored_whole() {
    let app = spawn_app().await;
    let ts = now_secs();
    let value = |wa_id: &str, name: &str, messages: Vec<Value>, statuses: Vec<Value>| {
        json!({"messaging_product": "whatsapp",
               "metadata": {"display_phone_number": "15550783881", "phone_number_id": BUSINESS},
               "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
               "messages": messages, "statuses": statuses})
    };
    let body = json!({"object": "whatsapp_business_account", "entry": [
        {"id": "WABA", "changes": [
            {"field": "messages", "value": value("16505550031", "Ann",
                vec![text("16505550031", "wamid.B1", "first", ts - 5), text("16505550031", "wamid.B2", "second", ts - 1)],
                vec![json!({"id": "wamid.OUT1", "status": "sent", "timestamp": ts.to_string(), "recipient_id": "16505550031"})])},
            {"field": "account_update", "value": {"phone_number": "15550783881", "event": "VERIFIED_ACCOUNT"}}]},
        {"id": "WABA", "changes": [
            {"field": "messages", "value": value("16505550032", "Bob",
                vec![text("16505550032", "wamid.B3", "third", ts)],
                vec![json!({"id": "wamid.OUT2", "status": "read", "timestamp": ts.to_string(), "recipient_id": "16505550032"}),
                     json!({"id": "wamid.OUT2", "status": "delivered", "timestamp": ts.to_string(), "recipient_id": "16505550032"})])}]}]})
    .to_string()
    .into_bytes();
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    // With the worker off here, the new turn jobs wait unleased for a process that
    // runs turns.
    let jobs: Vec<Option<String>> =
        sqlx::query_scalar("SELECT locked_by FROM turn_jobs ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(jobs, [None, None, None]);
    let (fields, total, new, statuses_total, statuses_new): (Vec<String>, i32, i32, i32, i32) = sqlx::query_as(
        "SELECT fields, messages_total, messages_new, statuses_total, statuses_new FROM webhook_events",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(fields, ["messages", "account_update"]);
    assert_eq!((total, new, statuses_total, statuses_new), (3, 3, 3, 3));
    assert_eq!(count(&app.pool, "conversations").await, 2);
    assert_eq!(count(&app.pool, "turn_jobs").await, 3);
    let (_, name, _) = user(&app.pool, "16505550032").await;
    assert_eq!(name, "Bob");
    let last: String = sqlx::query_scalar(
        "SELECT c.\"lastMessage\" FROM conversations c JOIN conversation_keys k ON k.conversation_id = c.id \
         WHERE k.customer_wa_id = '16505550031'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(last, "second");
    // The same batch again adds an event and nothing else.
    let before = counts(&app.pool).await;
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let after = counts(&app.pool).await;
    assert_eq!(after[0], before[0] + 1);
    assert_eq!(after[1..], before[1..]);
    // A customer's new profile name is taken on.
    let renamed = messages_webhook(
        "16505550032",
        "Robert",
        vec![text("16505550032", "wamid.B4", "fourth", ts)],
    );
    assert_eq!(app.post_webhook(&renamed).await.status(), 200);
    assert_eq!(user(&app.pool, "16505550032").await.1, "Robert");
}

#[tokio::test]
async fn nul_characters_and_absurd_ids_do_not_poison_a_batch() {
    let app = spawn_app().await;
    let wa_id = "16505550060";
    let ts = now_secs();
    let long_wamid = format!("wamid.{}", "X".repeat(5000));
    let body = messages_webhook(
        wa_id,
        "Nul\u{0}Name",
        vec![
            text(wa_id, "wamid.NUL", "a\u{0}b", ts),
            text(wa_id, &long_wamid, "too long an id", ts),
            text(wa_id, "wamid.FINE", "fine", ts),
        ],
    );
    assert!(String::from_utf8_lossy(&body).contains("\\u0000"));
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let (_, content, ..) = message_row(&app.pool, "wamid.NUL").await;
    assert_eq!(content["text"], "a\u{FFFD}b");
    assert_eq!(message_row(&app.pool, "wamid.FINE").await.1["text"], "fine");
    assert_eq!(user(&app.pool, wa_id).await.1, "Nul\u{FFFD}Name");
    let skipped: i32 = sqlx::query_scalar("SELECT messages_skipped FROM webhook_events")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(skipped, 1);
    assert_eq!(count(&app.pool, "messages").await, 2);
}
