//! Conversations with people in them, end to end: an agent who writes from WhatsApp
//! Builder's inbox or the WhatsApp Business app silences the bot; the operator's
//! resume and the agent's idle time give it back; a customer asks for a person;
//! STOP and START.

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::*;
use crate::engine::fixture;
use crate::webhook::now_secs;

/// The one conversation of the test customer, and its business user.
async fn conversation(pool: &PgPool) -> (Uuid, Uuid) {
    sqlx::query_as(
        "SELECT k.conversation_id, b.id FROM conversation_keys k \
         JOIN users b ON b.\"phoneNumber\" = k.business_phone_number_id \
         WHERE k.customer_wa_id = $1",
    )
    .bind(CUSTOMER)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Waits until every message the customer sent had its turn (timers aside): what
/// the bot would say has been committed by then.
async fn quiet(pool: &PgPool) {
    eventually(
        pool,
        "SELECT count(*) FROM turn_jobs WHERE done_at IS NULL AND kind <> 'timeout'",
        0,
    )
    .await;
    eventually(
        pool,
        "SELECT count(*) FROM send_jobs WHERE done_at IS NULL",
        0,
    )
    .await;
}

/// The note of the turn that handled the customer's message `wamid`.
async fn note_of(pool: &PgPool, wamid: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT t.last_error FROM turn_jobs t JOIN messages m ON m.id = t.message_id \
         WHERE m.content->>'whatsappMessageId' = $1",
    )
    .bind(wamid)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// An agent writes `text` from WhatsApp Builder's inbox: a messages row from the
/// conversation's business participant, written by WhatsApp Builder's own
/// connection (not wabot's), the text sent by WhatsApp Builder itself.
async fn agent_writes(engine: &Engine, conv: Uuid, business: Uuid, text: &str) {
    let builder = PgPool::connect(&engine.app.config.database_url)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO messages (id, \"conversationId\", \"senderId\", type, content, status, \
                               \"timestamp\") \
         VALUES (gen_random_uuid(), $1, $2, 'text', $3, 'sent', now())",
    )
    .bind(conv)
    .bind(business)
    .bind(json!({ "text": text }))
    .execute(&builder)
    .await
    .unwrap();
    builder.close().await;
}

async fn handover(pool: &PgPool) -> Option<(String, String)> {
    sqlx::query_as("SELECT state, source FROM wabot_handover")
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// The last context's status and completion reason.
async fn last_context(pool: &PgPool) -> (String, Option<String>) {
    sqlx::query_as(
        "SELECT status::text, \"completionReason\"::text FROM conversation_contexts \
         ORDER BY \"createdAt\" DESC, \"updatedAt\" DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_agents_inbox_message_silences_the_bot_until_resume_then_it_starts_afresh() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&fixture("support-menu.json"))).await;
    engine.say(text("wamid.P1", "hi")).await;
    engine.replies(0, 2).await;
    let (conv, business) = conversation(pool).await;

    agent_writes(
        &engine,
        conv,
        business,
        "Hello, this is Ana from the bakery.",
    )
    .await;
    assert_eq!(
        handover(pool).await,
        Some(("agent".to_owned(), "inbox".to_owned()))
    );

    // The customer answers the agent: stored, no turn, nothing sent.
    engine
        .say(text("wamid.P2", "Thanks Ana, about my order..."))
        .await;
    quiet(pool).await;
    assert_eq!(engine.graph.accepted().len(), 2, "the bot said nothing");
    assert_eq!(
        note_of(pool, "wamid.P2").await.as_deref(),
        Some("an agent has the conversation: the bot stays silent")
    );

    // The operator gives the conversation back: the next message starts afresh.
    wabot::store::people::resume(pool, conv, wabot::store::events::Subscribed::ALL)
        .await
        .unwrap();
    engine.say(text("wamid.P3", "hello again")).await;
    let r = engine.replies(2, 2).await;
    assert_eq!(
        r[0].text(),
        Some("Hi! Welcome to the Corner Bakery help line.")
    );
    assert_eq!(handover(pool).await, None);
    let ended: (String, Option<String>) = sqlx::query_as(
        "SELECT status::text, \"completionReason\"::text FROM conversation_contexts \
         WHERE NOT \"isActive\"",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        ended,
        ("stopped".to_owned(), Some("agent_took_over".to_owned()))
    );
}

#[tokio::test]
async fn an_echo_hands_over_and_the_agents_idle_time_gives_the_conversation_back() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&fixture("support-menu.json"))).await;
    engine.say(text("wamid.E1", "hi")).await;
    engine.replies(0, 2).await;

    // The business types in the WhatsApp Business app (a number in coexistence).
    let echo = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "smb_message_echoes", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881",
                         "phone_number_id": crate::webhook::BUSINESS},
            "message_echoes": [{"from": "15550783881", "to": CUSTOMER, "id": "wamid.ECHO1",
                                "timestamp": now_secs().to_string(), "type": "text",
                                "text": {"body": "I'll take it from here."}}]}}]}]});
    let response = engine.app.post_webhook(echo.to_string().as_bytes()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        handover(pool).await,
        Some(("agent".to_owned(), "echo".to_owned()))
    );
    engine.say(text("wamid.E2", "ok")).await;
    quiet(pool).await;
    assert_eq!(engine.graph.accepted().len(), 2, "the bot said nothing");

    // The agent has been silent longer than WABOT_HANDOVER_IDLE_SECS (30 min).
    sqlx::query("UPDATE wabot_handover SET last_agent_at = now() - interval '31 minutes'")
        .execute(pool)
        .await
        .unwrap();
    engine.say(text("wamid.E3", "hello?")).await;
    let r = engine.replies(2, 2).await;
    assert_eq!(
        r[0].text(),
        Some("Hi! Welcome to the Corner Bakery help line.")
    );
    assert_eq!(handover(pool).await, None);
}

fn helpdesk() -> Value {
    json!({"name": "Helpdesk", "metadata": {"handoverKeywords": ["agent", "human"],
                                            "handoverMessage": "A person will answer you soon."},
        "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "q", "type": "question", "data": {"label": "Menu", "questionType": "buttons",
            "content": "How can we help?",
            "buttons": [{"id": "faq", "title": "FAQ"}, {"id": "person", "title": "A person"}]}},
        {"id": "faq", "type": "message", "data": {"label": "FAQ", "content": "See our FAQ."}},
        {"id": "h", "type": "message", "data": {"label": "Handover", "handover": true,
            "content": "Connecting you to a person..."}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "q"},
        {"id": "e2", "source": "q", "target": "faq", "sourceHandle": "faq"},
        {"id": "e3", "source": "q", "target": "h", "sourceHandle": "person"},
        {"id": "e4", "source": "q", "target": "faq", "sourceHandle": "default"}
    ]})
}

#[tokio::test]
async fn a_handover_keyword_asks_for_a_person_and_the_bot_then_waits() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &helpdesk()).await;
    engine.say(text("wamid.K1", "hi")).await;
    engine.replies(0, 1).await;

    engine.say(text("wamid.K2", " Human ")).await;
    let r = engine.replies(1, 1).await;
    assert_eq!(r[0].text(), Some("A person will answer you soon."));
    assert_eq!(
        last_context(pool).await,
        ("completed".to_owned(), Some("handover".to_owned()))
    );
    assert_eq!(
        handover(pool).await,
        Some(("requested".to_owned(), "keyword".to_owned()))
    );
    // Until an agent comes, the bot stays out of it.
    engine.say(text("wamid.K3", "hello??")).await;
    quiet(pool).await;
    assert_eq!(engine.graph.accepted().len(), 2);
    assert_eq!(
        note_of(pool, "wamid.K3").await.as_deref(),
        Some("the customer waits for an agent: the bot stays silent")
    );
}

#[tokio::test]
async fn a_handover_node_says_its_text_and_the_conversation_waits_for_a_person() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &helpdesk()).await;
    engine.say(text("wamid.N1", "hi")).await;
    engine.replies(0, 1).await;
    engine
        .say(button_reply("wamid.N2", "person", "A person"))
        .await;
    let r = engine.replies(1, 1).await;
    assert_eq!(r[0].text(), Some("Connecting you to a person..."));
    assert_eq!(
        last_context(pool).await,
        ("completed".to_owned(), Some("handover".to_owned()))
    );
    assert_eq!(
        handover(pool).await,
        Some(("requested".to_owned(), "node".to_owned()))
    );
}

/// A question whose unanswered wait says something: a message the business
/// starts (a timer's), unlike a reply.
fn nudging_bot() -> Value {
    json!({"name": "Nudge", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "q", "type": "question", "data": {"label": "Q", "questionType": "text",
            "content": "What is your order number?", "timeoutSeconds": 1}},
        {"id": "late", "type": "message", "data": {"label": "Late", "content": "Still there?"}},
        {"id": "ok", "type": "message", "data": {"label": "Ok", "content": "Thanks!"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "q"},
        {"id": "e2", "source": "q", "target": "ok"},
        {"id": "e3", "source": "q", "target": "late", "sourceHandle": "timeout"}
    ]})
}

#[tokio::test]
async fn stop_opts_out_a_message_the_business_starts_is_refused_and_start_opts_back_in() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &nudging_bot()).await;
    engine.say(text("wamid.S1", "hi")).await;
    engine.replies(0, 1).await;

    engine.say(text("wamid.S2", "STOP")).await;
    let r = engine.replies(1, 1).await;
    assert_eq!(
        r[0].text(),
        Some("You will no longer receive messages from us. Reply START to subscribe again.")
    );
    assert_eq!(
        last_context(pool).await,
        ("completed".to_owned(), Some("opted_out".to_owned()))
    );
    let word: String = sqlx::query_scalar("SELECT word FROM wabot_opt_outs")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(word, "STOP");

    // The customer writes again: a reply is still theirs to get, but the timer's
    // nudge is the business's, and it is refused with the reason.
    engine.say(text("wamid.S3", "hi")).await;
    let r = engine.replies(2, 1).await;
    assert_eq!(r[0].text(), Some("What is your order number?"));
    eventually(
        pool,
        "SELECT count(*) FROM messages WHERE status = 'failed' \
           AND content->>'text' = 'Still there?' AND content->'error'->>'reason' = 'opted_out'",
        1,
    )
    .await;
    assert_eq!(
        engine.graph.accepted().len(),
        3,
        "the nudge never reached Meta"
    );

    // START: opted back in, and the business's messages go again.
    engine.say(text("wamid.S4", "start")).await;
    let r = engine.replies(3, 1).await;
    assert_eq!(
        r[0].text(),
        Some("You are subscribed again. Reply STOP to stop.")
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM wabot_opt_outs")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    engine.say(text("wamid.S5", "hi")).await;
    let r = engine.replies(4, 2).await;
    assert_eq!(r[0].text(), Some("What is your order number?"));
    assert_eq!(r[1].text(), Some("Still there?"));
}

/// A rest_api endpoint that holds each request until `release` is notified, then
/// answers `{}`; `arrived` is notified when a request comes in.
async fn held_endpoint() -> (
    String,
    std::sync::Arc<tokio::sync::Notify>,
    std::sync::Arc<tokio::sync::Notify>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hold", listener.local_addr().unwrap());
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (a, r) = (arrived.clone(), release.clone());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (a, r) = (a.clone(), r.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = socket.read(&mut buf).await;
                a.notify_one();
                r.notified().await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                          content-length: 2\r\nconnection: close\r\n\r\n{}",
                    )
                    .await;
            });
        }
    });
    (url, arrived, release)
}

#[tokio::test]
async fn an_operator_pause_during_a_running_turn_keeps_the_bot_silent() {
    let (url, arrived, release) = held_endpoint().await;
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    let bot = json!({"name": "Slow", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "hello", "type": "message", "data": {"label": "Hello", "content": "Hello"}},
        {"id": "api", "type": "rest_api", "data": {"label": "Lookup", "apiUrl": url,
            "apiMethod": "GET", "apiTimeout": 20000}},
        {"id": "done", "type": "message", "data": {"label": "Done", "content": "Done"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "hello"},
        {"id": "e2", "source": "hello", "target": "api"},
        {"id": "e3", "source": "api", "target": "done", "sourceHandle": "success"}
    ]});
    install_chatbot(pool, &bot).await;
    engine.say(text("wamid.H1", "hi")).await;
    // The turn is running, held at its rest_api call: the operator pauses.
    arrived.notified().await;
    let (conversation, _) = conversation(pool).await;
    wabot::store::people::pause(pool, conversation, wabot::store::events::Subscribed::ALL)
        .await
        .unwrap();
    release.notify_one();
    quiet(pool).await;

    let sent: Vec<Value> = engine
        .graph
        .accepted()
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert!(sent.is_empty(), "the bot spoke after the pause: {sent:#?}");
    assert_eq!(
        note_of(pool, "wamid.H1").await.as_deref(),
        Some("the bot is paused in this conversation"),
        "the turn ran again on the new state and was silenced"
    );
}

/// A reply the bot queued before an agent came in does not go out after them: here
/// it waits out an expired token (a hold), the agent writes from the inbox, and the
/// new token lets the sender go on. The reply is failed with the reason instead.
#[tokio::test]
async fn a_reply_queued_before_an_agent_came_in_is_not_sent_after_them() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&fixture("support-menu.json"))).await;
    // Meta wants another token: every send is refused with 190 and sending holds.
    engine.graph.set_token("rotated-token");
    engine.say(text("wamid.H1", "hi")).await;
    eventually(
        pool,
        "SELECT count(*) FROM wabot_processes WHERE send_hold IS NOT NULL",
        1,
    )
    .await;
    let (conv, business) = conversation(pool).await;
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE status = 'pending'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(pending >= 1, "the bot's replies wait for the token");

    agent_writes(&engine, conv, business, "Hi, Ana here. How can I help?").await;
    // The operator fixes the token: the hold lifts.
    store_access_token(pool, "rotated-token").await;
    eventually(
        pool,
        "SELECT count(*) FROM wabot_processes WHERE send_hold IS NOT NULL",
        0,
    )
    .await;
    quiet(pool).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        engine.graph.accepted().is_empty(),
        "the bot said nothing after the agent: {:?}",
        engine.graph.accepted()
    );
    let failed: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT status::text, content->'error'->>'reason' FROM messages \
         WHERE \"senderId\" = $1 \
         AND content->>'text' IS DISTINCT FROM 'Hi, Ana here. How can I help?'",
    )
    .bind(business)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(failed.len() as i64, pending);
    assert!(
        failed
            .iter()
            .all(|(status, reason)| status == "failed" && reason.as_deref() == Some("handover")),
        "{failed:?}"
    );
}
