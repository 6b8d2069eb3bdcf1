//! Every kind of message through the daemon: a photo and a location answering text
//! questions (read by path in the next message), media, CTA URL and location request
//! messages in Meta's shapes, reactions, edits, deletions and number changes that
//! start no turn, an undeliverable poll asked again, and
//! `wabot chatbot validate` on bad media fields.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::engine::fixture;

fn image(wamid: &str) -> Value {
    json!({"from": CUSTOMER, "id": wamid, "timestamp": now_secs().to_string(), "type": "image",
           "image": {"caption": "the dent", "mime_type": "image/jpeg",
                     "sha256": "81d3bd8a8db4868c9520ed47186e8b7c5789e61ff79f7f834be6950b808a90d3",
                     "id": "2754859441498128"}})
}

fn location(wamid: &str) -> Value {
    json!({"from": CUSTOMER, "id": wamid, "timestamp": now_secs().to_string(), "type": "location",
           "location": {"latitude": 41.0082, "longitude": 28.9784, "name": "Sultanahmet",
                        "address": "Fatih, İstanbul"}})
}

/// A request's body without the callback data every send carries.
fn body(request: &crate::support_graph::GraphRequest) -> Value {
    let mut body = request.body.clone();
    body.as_object_mut()
        .map(|b| b.remove("biz_opaque_callback_data"));
    body
}

fn to_customer(kind: &str, object: Value) -> Value {
    json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
           "type": kind, kind: object})
}

#[tokio::test]
async fn a_photo_and_a_location_answer_text_questions_and_media_cta_and_location_requests_go_out_in_metas_shapes(
) {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&fixture("claims-desk.json"))).await;

    engine.say(text("wamid.K1", "hello")).await;
    let replies = engine.replies(0, 3).await;
    assert_eq!(
        replies[0].text(),
        Some("Welcome to the Harbour Insurance claims desk, Ayşe.")
    );
    assert_eq!(
        body(&replies[1]),
        to_customer(
            "image",
            json!({"link": "https://cdn.harbour.example/claims/desk.jpg", "caption": "Our claims team"})
        )
    );
    assert_eq!(
        replies[2].text(),
        Some("Please send a photo of the damage.")
    );

    // Text at a question that asks for a photo is asked again with the node's text.
    engine.say(text("wamid.K2", "it is bad")).await;
    let replies = engine.replies(3, 1).await;
    assert_eq!(
        replies[0].text(),
        Some("A photo, please: tap the camera button.")
    );

    engine.say(image("wamid.K3")).await;
    let replies = engine.replies(4, 1).await;
    assert_eq!(
        replies[0].text(),
        Some("Where did it happen? Share a location or type the address.")
    );
    let (_, _, vars) = active_context(pool).await.expect("waiting");
    assert_eq!(
        vars["question_1"]["response"],
        json!({"type": "image", "caption": "the dent", "mime_type": "image/jpeg",
               "media_id": "2754859441498128",
               "sha256": "81d3bd8a8db4868c9520ed47186e8b7c5789e61ff79f7f834be6950b808a90d3",
               "location": null})
    );

    // A location at a text question; both answers read by path in the next message.
    engine.say(location("wamid.K4")).await;
    let replies = engine.replies(5, 2).await;
    assert_eq!(
        replies[0].text(),
        Some("Thanks! Photo 2754859441498128 (image/jpeg), place: 41.0082, 28.9784 Sultanahmet")
    );
    assert_eq!(
        body(&replies[1]),
        to_customer(
            "interactive",
            json!({"type": "location_request_message",
                   "body": {"text": "Share the address where our assessor should come."},
                   "action": {"name": "send_location"}})
        )
    );

    engine.say(location("wamid.K5")).await;
    let replies = engine.replies(7, 2).await;
    assert_eq!(
        body(&replies[0]),
        to_customer(
            "interactive",
            json!({"type": "cta_url",
                   "header": {"type": "text", "text": "Claim opened"},
                   "body": {"text": "We will come to Sultanahmet. Follow your claim online."},
                   "footer": {"text": "Harbour Insurance"},
                   "action": {"name": "cta_url", "parameters": {
                       "display_text": "Track claim",
                       "url": "https://claims.harbour.example/track?at=41.0082,28.9784"}}})
        )
    );
    assert_eq!(
        body(&replies[1]),
        to_customer(
            "document",
            json!({"link": "https://cdn.harbour.example/claims/form.pdf",
                   "caption": "Sign and send it back", "filename": "claim-form.pdf"})
        )
    );
    assert!(active_context(pool).await.is_none(), "completed");

    // The inbox keeps each send as WhatsApp Builder's types: media by their kind.
    eventually(pool, UNSENT, 0).await;
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT m.type::text FROM messages m JOIN users u ON u.id = m.\"senderId\" \
         WHERE u.\"phoneNumber\" <> $1 ORDER BY m.\"timestamp\", m.id",
    )
    .bind(CUSTOMER)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "document",
            "image",
            "interactive",
            "interactive",
            "text",
            "text",
            "text",
            "text",
            "text"
        ],
        "{kinds:?}"
    );
}

/// What Meta could not deliver, in its shape (error 131051): an edit, a deletion,
/// a poll.
fn unsupported(wamid: &str, inner: &str) -> Value {
    json!({"from": CUSTOMER, "id": wamid, "timestamp": now_secs().to_string(),
           "type": "unsupported", "unsupported": {"type": inner},
           "errors": [{"code": 131051, "title": "Message type unknown",
                       "message": "Message type unknown",
                       "error_data": {"details": "Message type is currently not supported."}}]})
}

#[tokio::test]
async fn reactions_edits_deletions_and_number_changes_are_stored_and_start_no_turn() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&fixture("claims-desk.json"))).await;

    engine
        .say(
            json!({"from": CUSTOMER, "id": "wamid.R1", "timestamp": now_secs().to_string(),
                    "type": "reaction", "reaction": {"message_id": "wamid.OLD", "emoji": "👍"}}),
        )
        .await;
    // Meta's shapes of an edit and a deletion (webhook_unsupported_131051.json).
    engine.say(unsupported("wamid.R2", "edit")).await;
    engine.say(unsupported("wamid.R3", "revoke")).await;
    // A type newer than wabot named `edit` is not answered either.
    engine
        .say(
            json!({"from": CUSTOMER, "id": "wamid.R4", "timestamp": now_secs().to_string(),
                    "type": "edit", "edit": {"original_message_id": "wamid.OLD",
                                             "text": {"body": "fixed typo"}}}),
        )
        .await;
    // The customer changed their number: a notice, not something they said.
    engine
        .say(
            json!({"from": CUSTOMER, "id": "wamid.R5", "timestamp": now_secs().to_string(),
                    "type": "system", "system": {
                        "body": "Ayşe changed from 905551112233 to 905559998877",
                        "wa_id": "905559998877", "type": "user_changed_number"}}),
        )
        .await;
    // Stored when Meta got its 200, without a turn job.
    let stored: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT m.content->>'whatsappMessageId', m.type::text, \
         (SELECT count(*) FROM turn_jobs j WHERE j.message_id = m.id) \
         FROM messages m WHERE m.content->>'whatsappMessageId' LIKE 'wamid.R_' \
         ORDER BY m.content->>'whatsappMessageId'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let row = |w: &str, t: &str| (w.to_owned(), t.to_owned(), 0);
    assert_eq!(
        stored,
        [
            row("wamid.R1", "reaction"),
            row("wamid.R2", "unsupported"),
            row("wamid.R3", "unsupported"),
            row("wamid.R4", "unknown"),
            row("wamid.R5", "system"),
        ]
    );

    // The next real message is the first the chatbot answers.
    engine.say(text("wamid.R9", "hello")).await;
    let replies = engine.replies(0, 3).await;
    assert!(replies[0].text().unwrap().starts_with("Welcome"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.graph.accepted().len(), 3, "nothing else was sent");
    let contexts: i64 = sqlx::query_scalar("SELECT count(*) FROM conversation_contexts")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(contexts, 1);

    // Something Meta could not deliver that is not an edit (a poll) is answered: the
    // photo question asks again, and its output names the inner type.
    engine.say(unsupported("wamid.R10", "poll")).await;
    let replies = engine.replies(3, 1).await;
    assert_eq!(
        replies[0].text(),
        Some("A photo, please: tap the camera button.")
    );
    let outputs: Value =
        sqlx::query_scalar("SELECT \"nodeOutputs\" FROM conversation_contexts WHERE \"isActive\"")
            .fetch_one(pool)
            .await
            .unwrap();
    let refused: Vec<&Value> = outputs
        .as_object()
        .unwrap()
        .values()
        .filter(|o| o["messageType"] == "unsupported")
        .collect();
    assert_eq!(refused.len(), 1, "{outputs}");
    assert_eq!(
        refused[0]["userResponse"],
        json!({"type": "unsupported.poll"})
    );
    assert_eq!(refused[0]["error"], "unsupported_message");
}

#[tokio::test]
async fn a_job_claimed_after_the_download_reads_the_stored_location() {
    // No worker: the job waits unleased, as one queued behind another would.
    let app = crate::helpers::spawn_app().await;
    let body = messages_webhook(CUSTOMER, CUSTOMER_NAME, vec![image("wamid.S1")]);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let stored = json!({"store": "dir", "key": "2754859441498128", "size": 1024});
    sqlx::query(
        "UPDATE messages SET content = jsonb_set(content, '{media}', \
         jsonb_build_object('stored', $1::jsonb)) \
         WHERE content->>'whatsappMessageId' = 'wamid.S1'",
    )
    .bind(&stored)
    .execute(&app.pool)
    .await
    .unwrap();
    let claimed = wabot::store::turns::claim(&app.pool, "kinds-test", Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].stored_media.as_ref(), Some(&stored));
    let work = wabot::worker::turns::TurnWork::from(claimed[0].clone());
    let event = wabot::worker::turns::inbound_from_meta(work.raw.as_ref().unwrap())
        .with_stored(work.stored_media.clone())
        .into_event();
    let wabot::engine::Event::InboundMessage {
        answer: Some(answer),
        ..
    } = event
    else {
        panic!("a structured answer: {event:?}");
    };
    assert_eq!(answer.value["location"], stored);
    assert_eq!(answer.value["media_id"], "2754859441498128");
}

#[test]
fn validate_reports_bad_media_cta_and_location_fields_naming_each_node() {
    let bad = fixture("bad-media.json");
    let good = fixture("claims-desk.json");
    let out = Command::new(env!("CARGO_BIN_EXE_wabot"))
        .args(["chatbot", "validate"])
        .arg(&good)
        .arg(&bad)
        .env("WABOT_LOG_FILTER", "error")
        .output()
        .expect("run wabot");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "error: node `gif` (Gif): field `media.type`: `gif` is not image, video, audio, document or sticker",
        "error: node `both` (Both): field `media`: give `link` or `id`, not both",
        "error: node `voice` (Voice): field `media.caption`: WhatsApp takes no caption with audio",
        "error: node `named` (Named): field `media.filename`: only a document has a file name, not image",
        "error: node `ftp` (Ftp): field `media.link`: `ftp://x.example/a.pdf` is not an http(s) URL",
        "error: node `cta` (Cta): required field `ctaUrl.buttonText` is missing or empty",
        "error: node `two` (Two): field `ctaUrl`: a message node sends `media` or `ctaUrl`, not both",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains("12 errors"), "{text}");
    assert!(text.contains("ok: \"Claims Desk\""), "{text}");
}
