//! Real chatbots from WhatsApp Builder, driven through webhooks step by step.

use serde_json::json;

use super::*;
use crate::helpers::shared;

#[tokio::test]
async fn the_sample_support_bot_answers_a_button_and_completes_then_starts_again() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(
        pool,
        &load_json(&shared("whatsapp-builder/chatbots/sample-chatbot.json")),
    )
    .await;

    engine.say(text("wamid.IN1", "merhaba")).await;
    let replies = engine.replies(0, 2).await;
    assert_eq!(replies[0].to(), Some(CUSTOMER));
    assert_eq!(
        replies[0].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
               "type": "text", "text": {"body": "Merhaba! WhatsApp Builder Destek Hattına hoşgeldiniz. Size nasıl yardımcı olabilirim?", "preview_url": false}})
    );
    assert_eq!(replies[1].body["type"], "interactive");
    assert_eq!(replies[1].body["interactive"]["type"], "button");
    assert_eq!(
        replies[1].body["interactive"]["body"]["text"],
        "Lütfen aşağıdaki seçeneklerden birini seçin:"
    );
    let buttons = &replies[1].body["interactive"]["action"]["buttons"];
    assert_eq!(
        buttons,
        &json!([
            {"type": "reply", "reply": {"id": "btn_tech", "title": "Teknik Destek"}},
            {"type": "reply", "reply": {"id": "btn_price", "title": "Fiyat Bilgisi"}},
            {"type": "reply", "reply": {"id": "btn_info", "title": "Hakkimizda"}}
        ])
    );
    let (status, node, _) = active_context(pool).await.expect("a waiting context");
    assert_eq!((status.as_str(), node.as_str()), ("waiting_input", "main-menu"));

    engine
        .say(button_reply("wamid.IN2", "btn_price", "Fiyat Bilgisi"))
        .await;
    let replies = engine.replies(2, 2).await;
    assert!(replies[0].text().unwrap().starts_with("Fiyat Bilgisi"));
    assert!(replies[1].text().unwrap().starts_with("Bizi tercih ettiginiz icin"));
    assert!(active_context(pool).await.is_none(), "the context completed");
    let (reason, history): (String, serde_json::Value) = sqlx::query_as(
        "SELECT \"completionReason\"::text, \"nodeHistory\" FROM conversation_contexts",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(reason, "flow_completed");
    assert!(history.to_string().contains("price-response"));

    // Every reply is a stored message with its wamid and status `sent`.
    eventually(pool, UNSENT, 0).await;
    let sent: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.status::text, m.content->>'whatsappMessageId' FROM messages m \
         JOIN users u ON u.id = m.\"senderId\" WHERE u.\"phoneNumber\" <> $1 ORDER BY m.\"timestamp\"",
    )
    .bind(CUSTOMER)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(sent.len(), 4);
    let accepted = engine.graph.accepted();
    for (i, (status, wamid)) in sent.iter().enumerate() {
        assert_eq!(status, "sent");
        assert_eq!(Some(wamid.as_str()), accepted[i].wamid(), "reply {i}");
    }

    // A new message after completion starts the chatbot again.
    engine.say(text("wamid.IN3", "tekrar")).await;
    let replies = engine.replies(4, 2).await;
    assert!(replies[0].text().unwrap().starts_with("Merhaba!"));
}
