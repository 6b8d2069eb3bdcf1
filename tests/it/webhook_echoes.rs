//! Coexistence echoes (`smb_message_echoes`): what the business types in the
//! WhatsApp Business app is stored once as its outbound message in the customer's
//! conversation, hands the conversation to an agent (`wabot_handover`, source
//! `echo`) and creates no turn job.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::spawn_app;
use crate::webhook::{count, message_row, messages_webhook, now_secs, text, user, BUSINESS};

/// An `smb_message_echoes` webhook with these echoes.
fn echoes_webhook(echoes: Vec<Value>) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "smb_message_echoes", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": BUSINESS},
            "message_echoes": echoes}}]}]})
    .to_string()
    .into_bytes()
}

/// A text the business typed in the app to `to`.
fn echo(to: &str, wamid: &str, body: &str, ts: i64) -> Value {
    json!({"from": "15550783881", "to": to, "id": wamid, "timestamp": ts.to_string(),
           "type": "text", "text": {"body": body}})
}

/// The conversation's handover row: (state, source).
async fn handover(pool: &sqlx::PgPool, conversation: Uuid) -> Option<(String, String)> {
    sqlx::query_as("SELECT state, source FROM wabot_handover WHERE conversation_id = $1")
        .bind(conversation)
        .fetch_optional(pool)
        .await
        .unwrap()
}

async fn messages_with(pool: &sqlx::PgPool, wamid: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE content ->> 'whatsappMessageId' = $1")
        .bind(wamid)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_echo_is_stored_once_as_the_business_s_message_and_hands_the_conversation_to_an_agent() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let customer_wa = "16505551234";
    let t0 = now_secs() - 60;
    let inbound = messages_webhook(
        customer_wa,
        "Sheena Nelson",
        vec![text(customer_wa, "wamid.IN1", "Is my order shipped?", t0)],
    );
    assert_eq!(app.post_webhook(&inbound).await.status(), 200);
    let (.., conversation, _) = message_row(pool, "wamid.IN1").await;
    assert_eq!(count(pool, "turn_jobs").await, 1);
    assert_eq!(handover(pool, conversation).await, None);
    let (customer_at, window): (i64, bool) = sqlx::query_as(
        "SELECT extract(epoch FROM \"lastCustomerMessageAt\")::bigint, \"isWindowOpen\" \
         FROM conversations WHERE id = $1",
    )
    .bind(conversation)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((customer_at, window), (t0, true));

    // The business answers from the WhatsApp Business app; Meta delivers it twice.
    let body = echoes_webhook(vec![echo(
        customer_wa,
        "wamid.ECHO1",
        "Yes, it left this morning.",
        t0 + 30,
    )]);
    for _ in 0..2 {
        assert_eq!(app.post_webhook(&body).await.status(), 200);
    }
    assert_eq!(messages_with(pool, "wamid.ECHO1").await, 1);
    let (kind, content, status, ts, echo_conversation, sender) =
        message_row(pool, "wamid.ECHO1").await;
    let (business, _, role) = user(pool, BUSINESS).await;
    assert_eq!(role, "business");
    assert_eq!(
        (
            kind.as_str(),
            status.as_str(),
            ts,
            echo_conversation,
            sender
        ),
        ("text", "sent", t0 + 30, conversation, business)
    );
    assert_eq!(content["text"], "Yes, it left this morning.");
    assert_eq!(content["body"], "Yes, it left this morning.");
    assert_eq!(content["whatsappMessageId"], "wamid.ECHO1");
    assert_eq!(content["raw"]["to"], customer_wa);

    // An agent has the conversation; no turn job for the echo.
    assert_eq!(
        handover(pool, conversation).await,
        Some(("agent".to_owned(), "echo".to_owned()))
    );
    assert_eq!(count(pool, "wabot_handover").await, 1);
    assert_eq!(count(pool, "turn_jobs").await, 1);
    // The echo moves the preview, not the customer's window.
    let (last, last_at, customer_at, window): (String, i64, i64, bool) = sqlx::query_as(
        "SELECT \"lastMessage\", extract(epoch FROM \"lastMessageAt\")::bigint, \
                extract(epoch FROM \"lastCustomerMessageAt\")::bigint, \"isWindowOpen\" \
         FROM conversations WHERE id = $1",
    )
    .bind(conversation)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (last.as_str(), last_at, customer_at, window),
        ("Yes, it left this morning.", t0 + 30, t0, true)
    );
    // Both deliveries are kept as raw events; the second stored nothing new.
    let stored: Vec<(i32, i32)> = sqlx::query_as(
        "SELECT messages_total, messages_new FROM webhook_events \
         WHERE 'smb_message_echoes' = ANY(fields) ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(stored, [(1, 1), (1, 0)]);
}

#[tokio::test]
async fn an_echo_to_a_customer_never_seen_creates_the_conversation() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let t = now_secs();
    // Meta writes the recipient the way the business addressed it.
    let body = echoes_webhook(vec![echo(
        "+90 532 000 0009",
        "wamid.ECHO.NEW",
        "Hello!",
        t,
    )]);
    assert_eq!(app.post_webhook(&body).await.status(), 200);

    let (customer, name, role) = user(pool, "905320000009").await;
    assert_eq!((name.as_str(), role.as_str()), ("905320000009", "user"));
    let (business, _, role) = user(pool, BUSINESS).await;
    assert_eq!(role, "business");
    let (_, _, status, _, conversation, sender) = message_row(pool, "wamid.ECHO.NEW").await;
    assert_eq!((status.as_str(), sender), ("sent", business));
    let mut participants: Vec<Uuid> = sqlx::query_scalar(
        "SELECT \"userId\" FROM conversation_participants WHERE \"conversationId\" = $1",
    )
    .bind(conversation)
    .fetch_all(pool)
    .await
    .unwrap();
    participants.sort();
    let mut expected = vec![customer, business];
    expected.sort();
    assert_eq!(participants, expected);
    let key: Uuid = sqlx::query_scalar(
        "SELECT conversation_id FROM conversation_keys \
         WHERE business_phone_number_id = $1 AND customer_wa_id = '905320000009'",
    )
    .bind(BUSINESS)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(key, conversation);
    assert_eq!(
        handover(pool, conversation).await,
        Some(("agent".to_owned(), "echo".to_owned()))
    );
    assert_eq!(count(pool, "turn_jobs").await, 0);
    // No customer message yet: no customer time.
    let customer_at: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT \"lastCustomerMessageAt\" FROM conversations WHERE id = $1")
            .bind(conversation)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(customer_at, None);

    // The customer answers: the same conversation, a turn job as always (the turn
    // stage is the one that stays silent while the agent has it).
    let reply = messages_webhook(
        "905320000009",
        "Ali Demir",
        vec![text("905320000009", "wamid.IN.NEW", "Hi, thanks", t + 5)],
    );
    assert_eq!(app.post_webhook(&reply).await.status(), 200);
    let (.., reply_conversation, reply_sender) = message_row(pool, "wamid.IN.NEW").await;
    assert_eq!((reply_conversation, reply_sender), (conversation, customer));
    assert_eq!(count(pool, "turn_jobs").await, 1);
    assert_eq!(count(pool, "conversations").await, 1);
}

#[tokio::test]
async fn an_echo_keeps_a_pause_answers_a_request_and_restarts_the_idle_clock() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let t = now_secs();
    let mut conversations = Vec::new();
    for (i, wa_id) in ["905320000011", "905320000012"].into_iter().enumerate() {
        let body = messages_webhook(
            wa_id,
            "Customer",
            vec![text(wa_id, &format!("wamid.IN.{i}"), "hi", t)],
        );
        assert_eq!(app.post_webhook(&body).await.status(), 200);
        let (.., conversation, _) = message_row(pool, &format!("wamid.IN.{i}")).await;
        conversations.push(conversation);
    }
    let (paused, requested) = (conversations[0], conversations[1]);
    sqlx::query(
        "INSERT INTO wabot_handover (conversation_id, state, source, since, last_agent_at) \
         VALUES ($1, 'paused', 'operator', now() - interval '1 hour', now() - interval '1 hour'), \
                ($2, 'requested', 'keyword', now() - interval '1 hour', now() - interval '1 hour')",
    )
    .bind(paused)
    .bind(requested)
    .execute(pool)
    .await
    .unwrap();

    // One webhook, both conversations' echoes, one of them twice.
    let body = echoes_webhook(vec![
        echo("905320000011", "wamid.E.PAUSED", "One moment", t + 1),
        echo("905320000012", "wamid.E.REQ1", "Hello, Ayşe here", t + 2),
        echo("905320000012", "wamid.E.REQ2", "How can I help?", t + 3),
    ]);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let rows: Vec<(Uuid, String, String, bool)> = sqlx::query_as(
        "SELECT conversation_id, state, source, last_agent_at > now() - interval '1 minute' \
         FROM wabot_handover ORDER BY conversation_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut expected = vec![
        (paused, "paused".to_owned(), "operator".to_owned(), true),
        (requested, "agent".to_owned(), "keyword".to_owned(), true),
    ];
    expected.sort();
    assert_eq!(rows, expected);
    assert_eq!(count(pool, "turn_jobs").await, 2);
    assert_eq!(count(pool, "messages").await, 5);
}

#[tokio::test]
async fn an_echo_of_a_message_already_stored_marks_no_handover() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let wa_id = "905320000021";
    let t = now_secs();
    let body = messages_webhook(wa_id, "Customer", vec![text(wa_id, "wamid.IN.21", "hi", t)]);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let (.., conversation, _) = message_row(pool, "wamid.IN.21").await;
    let (business, ..) = user(pool, BUSINESS).await;
    // A reply wabot sent, its wamid recorded.
    sqlx::query(
        "INSERT INTO messages (\"conversationId\", \"senderId\", type, content, status, \"timestamp\") \
         VALUES ($1, $2, 'text', $3, 'sent', now())",
    )
    .bind(conversation)
    .bind(business)
    .bind(json!({"text": "Hello from the bot", "body": "Hello from the bot",
                 "whatsappMessageId": "wamid.BOT.1"}))
    .execute(pool)
    .await
    .unwrap();

    let body = echoes_webhook(vec![echo(
        wa_id,
        "wamid.BOT.1",
        "Hello from the bot",
        t + 1,
    )]);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    assert_eq!(messages_with(pool, "wamid.BOT.1").await, 1);
    assert_eq!(handover(pool, conversation).await, None);
    assert_eq!(count(pool, "turn_jobs").await, 1);
}

#[tokio::test]
async fn the_fixture_echo_and_an_inbound_message_in_one_webhook_share_the_conversation() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let fixture = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/webhooks/smb_message_echoes.json"),
    )
    .unwrap();
    // Deniz writes, and the business's echo comes in the same POST.
    let mut body: Value = serde_json::from_slice(&fixture).unwrap();
    let inbound: Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/webhooks/text.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let change = inbound["entry"][0]["changes"][0].clone();
    body["entry"][0]["changes"]
        .as_array_mut()
        .unwrap()
        .insert(0, change);
    let body = body.to_string().into_bytes();
    assert_eq!(app.post_webhook(&body).await.status(), 200);

    let (customer, ..) = user(pool, "905320000001").await;
    let (business, ..) = user(pool, "106540352242922").await;
    let (kind, _, status, _, conversation, sender) = message_row(pool, "wamid.FIXTURE.TEXT").await;
    assert_eq!(
        (kind.as_str(), status.as_str(), sender),
        ("text", "delivered", customer)
    );
    let (kind, content, status, ts, echo_conversation, sender) =
        message_row(pool, "wamid.FIXTURE.ECHO").await;
    assert_eq!(
        (
            kind.as_str(),
            status.as_str(),
            ts,
            echo_conversation,
            sender
        ),
        ("text", "sent", 1_764_000_300, conversation, business)
    );
    assert_eq!(content["text"], "Yes, we are open until 19:00 today.");
    assert_eq!(
        handover(pool, conversation).await,
        Some(("agent".to_owned(), "echo".to_owned()))
    );
    // Only the customer's message has a turn job.
    let jobs: Vec<String> = sqlx::query_scalar(
        "SELECT m.content ->> 'whatsappMessageId' FROM turn_jobs j JOIN messages m ON m.id = j.message_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(jobs, ["wamid.FIXTURE.TEXT"]);
    let (last, customer_at): (String, i64) = sqlx::query_as(
        "SELECT \"lastMessage\", extract(epoch FROM \"lastCustomerMessageAt\")::bigint \
         FROM conversations WHERE id = $1",
    )
    .bind(conversation)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (last.as_str(), customer_at),
        ("Yes, we are open until 19:00 today.", 1_764_000_000)
    );
}
