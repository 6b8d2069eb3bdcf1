//! Read receipts and the typing indicator: the customer's message is marked read
//! with "typing…" when the bot takes it up, once, beside the reply; never when the
//! bot stays silent, and not at all with `WABOT_MARK_READ=false`.

use serde_json::Value;

use super::*;
use crate::engine::fixture;
use crate::support_graph::Outcome;

/// The read receipts the fake Graph API received, as (message id, typing type).
fn receipts(engine: &Engine) -> Vec<(String, String)> {
    engine
        .graph
        .requests()
        .into_iter()
        .filter(|r| r.outcome == Outcome::Read)
        .map(|r| {
            (
                r.body["message_id"].as_str().unwrap_or_default().to_owned(),
                r.body["typing_indicator"]["type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// Waits (bounded) until `n` receipts arrived: they run beside the turn, so the
/// reply can be seen first.
async fn wait_receipts(engine: &Engine, n: usize) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = receipts(engine);
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every turn and send job finished: nothing more will be said.
async fn settled(pool: &PgPool) {
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

#[tokio::test]
async fn the_customers_message_is_marked_read_with_typing_once() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&fixture("support-menu.json"))).await;
    engine.say(text("wamid.R1", "hi")).await;
    engine.replies(0, 2).await;
    let got = wait_receipts(&engine, 1).await;
    assert_eq!(got, vec![("wamid.R1".to_owned(), "text".to_owned())]);
    let read = engine
        .graph
        .requests()
        .into_iter()
        .find(|r| r.outcome == Outcome::Read)
        .unwrap();
    assert_eq!(read.body["messaging_product"], "whatsapp");
    assert_eq!(read.body["status"], "read");

    // The next message: one more receipt, for it.
    engine.say(text("wamid.R2", "something typed")).await;
    settled(pool).await;
    let got = wait_receipts(&engine, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].0, "wamid.R2");
}

#[tokio::test]
async fn no_receipt_while_an_agent_has_the_conversation() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&fixture("support-menu.json"))).await;
    engine.say(text("wamid.A1", "hi")).await;
    engine.replies(0, 2).await;
    wait_receipts(&engine, 1).await;
    let conversation: uuid::Uuid =
        sqlx::query_scalar("SELECT conversation_id FROM conversation_keys")
            .fetch_one(pool)
            .await
            .unwrap();
    wabot::store::people::pause(pool, conversation, wabot::store::events::Subscribed::ALL)
        .await
        .unwrap();

    // The agent reads the conversation in their inbox; the bot marks nothing.
    engine.say(text("wamid.A2", "are you there?")).await;
    settled(pool).await;
    let got = receipts(&engine);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "wamid.A1");
}

#[tokio::test]
async fn mark_read_off_sends_no_receipt() {
    let engine = Engine::start_with(|c| c.session.mark_read = false).await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&fixture("support-menu.json"))).await;
    engine.say(text("wamid.N1", "hi")).await;
    engine.replies(0, 2).await;
    settled(pool).await;
    let reads: Vec<Value> = engine
        .graph
        .requests()
        .into_iter()
        .filter(|r| r.outcome == Outcome::Read)
        .map(|r| r.body)
        .collect();
    assert!(reads.is_empty(), "{reads:?}");
}
