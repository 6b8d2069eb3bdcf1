//! Every webhook fixture (`fixtures/webhooks`: each message type, statuses, errors,
//! a batch) signed, posted, and checked against the rows it implies; and, when the
//! reference material is beside the checkout, Meta's and WhatsApp Builder's own
//! sample payloads the same way.

use std::path::Path;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{shared, spawn_app};
use crate::webhook::{count, message_row, user};

/// Every fixture payload, by file name, in name order.
/// How many of these bodies get a `webhook_events` row: all but those of statuses
/// only that their status rows hold whole.
fn with_raw_event<'a>(bodies: impl Iterator<Item = &'a [u8]>) -> i64 {
    use wabot::store::ingest::RawEvent;
    use wabot::whatsapp::webhook::statuses::StatusOnly;
    bodies
        .filter(|b| {
            let text = std::str::from_utf8(b).unwrap_or_default();
            let rows = StatusOnly::parse(text)
                .map(|s| wabot::worker::ingest::status_rows(&s, text, chrono::Utc::now()));
            !matches!(rows.map(|r| r.raw), Some(RawEvent::InStatuses))
        })
        .count() as i64
}

pub fn fixture_payloads() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/webhooks");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let body = std::fs::read(dir.join(&name)).unwrap();
            (name, body)
        })
        .collect()
}

#[tokio::test]
async fn every_fixture_payload_is_acknowledged_and_stored_as_the_rows_it_implies() {
    let app = spawn_app().await;
    let payloads = fixture_payloads();
    assert!(payloads.len() >= 20, "only {} fixtures", payloads.len());
    for (name, body) in &payloads {
        let response = app.post_webhook(body).await;
        assert_eq!(response.status(), 200, "{name}");
    }
    let pool = &app.pool;
    // A webhook of statuses only is stored as its status rows, with no raw event.
    assert_eq!(
        count(pool, "webhook_events").await,
        with_raw_event(payloads.iter().map(|(_, b)| b.as_slice()))
    );

    let (customer, name, role) = user(pool, "905320000001").await;
    assert_eq!((name.as_str(), role.as_str()), ("Deniz Kaya", "user"));
    let (business, _, role) = user(pool, "106540352242922").await;
    assert_eq!(role, "business");

    let (kind, content, status, ts, conversation, sender) =
        message_row(pool, "wamid.FIXTURE.TEXT").await;
    assert_eq!(
        (kind.as_str(), status.as_str(), ts),
        ("text", "delivered", 1_764_000_000)
    );
    assert_eq!(sender, customer);
    assert_eq!(content["text"], "Hello, is the shop open today?");
    assert_eq!(
        content["raw"]["text"]["body"],
        "Hello, is the shop open today?"
    );
    let participants: Vec<Uuid> = sqlx::query_scalar(
        "SELECT \"userId\" FROM conversation_participants WHERE \"conversationId\" = $1 ORDER BY 1",
    )
    .bind(conversation)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut expected = vec![customer, business];
    expected.sort();
    assert_eq!(participants, expected);

    let (_, content, ..) = message_row(pool, "wamid.FIXTURE.REPLY").await;
    assert_eq!(content["contextMessageId"], "wamid.FIXTURE.OUTBOUND1");

    // Interactive replies in WhatsApp Builder's keys.
    let (kind, content, ..) = message_row(pool, "wamid.FIXTURE.BUTTON_REPLY").await;
    assert_eq!(kind, "interactive");
    assert_eq!(
        (
            &content["type"],
            &content["buttonId"],
            &content["buttonTitle"]
        ),
        (
            &json!("button_reply"),
            &json!("btn_prices"),
            &json!("Prices")
        )
    );
    let (_, content, ..) = message_row(pool, "wamid.FIXTURE.LIST_REPLY").await;
    assert_eq!(
        (
            &content["listId"],
            &content["listTitle"],
            &content["listDescription"]
        ),
        (
            &json!("row_express"),
            &json!("Express delivery"),
            &json!("Tomorrow before noon")
        )
    );
    let (_, content, ..) = message_row(pool, "wamid.FIXTURE.NFM_REPLY").await;
    assert_eq!(content["type"], "nfm_reply");
    assert_eq!(
        content["flowToken"],
        "00000000-0000-4000-8000-000000000001:booking_form"
    );
    assert_eq!(content["flowResponse"]["size"], "4");

    let (kind, content, ..) = message_row(pool, "wamid.FIXTURE.QUICK_REPLY").await;
    assert_eq!(
        (kind.as_str(), &content["payload"], &content["text"]),
        ("button", &json!("CONFIRM_BOOKING"), &json!("Confirm"))
    );

    // Media: each kind with its fields.
    for (wamid, kind, mime) in [
        ("IMAGE", "image", "image/jpeg"),
        ("VIDEO", "video", "video/mp4"),
        ("AUDIO", "audio", "audio/ogg; codecs=opus"),
        ("DOCUMENT", "document", "application/pdf"),
        ("STICKER", "sticker", "image/webp"),
    ] {
        let (k, content, ..) = message_row(pool, &format!("wamid.FIXTURE.{wamid}")).await;
        assert_eq!(
            (k.as_str(), &content["mimeType"]),
            (kind, &json!(mime)),
            "{wamid}"
        );
    }
    let (_, content, ..) = message_row(pool, "wamid.FIXTURE.IMAGE").await;
    assert_eq!(content["caption"], "The broken part");
    let (_, content, ..) = message_row(pool, "wamid.FIXTURE.AUDIO").await;
    assert_eq!(content["voice"], true);
    let (_, content, ..) = message_row(pool, "wamid.FIXTURE.DOCUMENT").await;
    assert_eq!(content["filename"], "invoice-17.pdf");
    let (_, content, ..) = message_row(pool, "wamid.FIXTURE.STICKER").await;
    assert_eq!(content["animated"], false);

    let (kind, content, ..) = message_row(pool, "wamid.FIXTURE.LOCATION").await;
    assert_eq!(
        (kind.as_str(), &content["latitude"], &content["name"]),
        ("location", &json!(41.0082), &json!("Main store"))
    );
    let (kind, content, ..) = message_row(pool, "wamid.FIXTURE.CONTACTS").await;
    assert_eq!(
        (
            kind.as_str(),
            &content["contacts"][0]["name"]["formatted_name"]
        ),
        ("contacts", &json!("Ali Demir"))
    );
    let (kind, content, ..) = message_row(pool, "wamid.FIXTURE.REACTION").await;
    assert_eq!(
        (
            kind.as_str(),
            &content["messageId"],
            &content["emoji"],
            &content["removed"]
        ),
        (
            "reaction",
            &json!("wamid.FIXTURE.TEXT"),
            &json!("👍"),
            &json!(false)
        )
    );
    let (_, content, ..) = message_row(pool, "wamid.FIXTURE.UNREACTION").await;
    assert_eq!(content["removed"], true);
    let (kind, content, ..) = message_row(pool, "wamid.FIXTURE.UNSUPPORTED").await;
    assert_eq!(
        (kind.as_str(), &content["errors"][0]["code"]),
        ("unsupported", &json!(131051))
    );

    // Statuses for messages wabot never sent wait, each once.
    let waiting: Vec<(String, String)> = sqlx::query_as(
        "SELECT wamid, status::text FROM message_statuses WHERE applied_at IS NULL ORDER BY wamid, status",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let waiting: Vec<(&str, &str)> = waiting
        .iter()
        .map(|(w, s)| (w.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        waiting,
        [
            ("wamid.FIXTURE.OUTBOUND1", "delivered"),
            ("wamid.FIXTURE.OUTBOUND1", "read"),
            ("wamid.FIXTURE.OUTBOUND1", "sent"),
            ("wamid.FIXTURE.OUTBOUND2", "failed"),
            ("wamid.FIXTURE.OUTBOUND3", "delivered"),
        ]
    );
    // A status naming its customer by BSUID only keeps it as the recipient.
    let recipient: Option<String> = sqlx::query_scalar(
        "SELECT recipient_id FROM message_statuses WHERE wamid = 'wamid.FIXTURE.OUTBOUND3'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(recipient.as_deref(), Some("TR.19283746501928374650"));

    // The username customer, first without a phone number, then with it: one user
    // (now with the number), one conversation, and wabot's ids beside.
    let (mert, name, _) = user(pool, "905320000007").await;
    assert_eq!(name, "Mert");
    let ids: (Uuid, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT user_id, parent_bsuid::text, username::text FROM wabot_customer_ids \
         WHERE bsuid = 'TR.19283746501928374650'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        ids,
        (
            mert,
            Some("TR.ENT.55512340987612345678".to_owned()),
            Some("mert.bakes".to_owned())
        )
    );
    let (.., first_conversation, first_sender) =
        message_row(pool, "wamid.FIXTURE.USERNAME_ONLY").await;
    let (.., conversation, sender) = message_row(pool, "wamid.FIXTURE.WITH_BSUID").await;
    assert_eq!((first_sender, sender), (mert, mert));
    assert_eq!(first_conversation, conversation);
    // Value errors are kept with their event.
    let codes: Vec<i64> = sqlx::query_scalar(
        "SELECT (e -> 'errors' -> 0 ->> 'code')::bigint FROM webhook_events, jsonb_array_elements(errors) e",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(codes, [131000]);

    // The batch: two entries, three messages, two customers, one job each, in order.
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT m.content ->> 'text' FROM turn_jobs j JOIN messages m ON m.id = j.message_id \
         WHERE m.content ->> 'whatsappMessageId' LIKE 'wamid.FIXTURE.BATCH%' ORDER BY j.id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(texts, ["first", "second", "third"]);
    let (_, name, _) = user(pool, "905320000003").await;
    assert_eq!(name, "Ece Tan");

    let skipped: i64 = sqlx::query_scalar("SELECT sum(messages_skipped) FROM webhook_events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(skipped, 0);
    // Every new customer message has exactly one turn job, except the two reactions
    // and the edit (`unsupported` of type `edit`: stored, answering nothing); the
    // `account_update` event none. Sixteen single messages and the batch's three,
    // plus the business's echo (an outbound row: no turn job), and the username
    // customer's two.
    assert_eq!(count(pool, "messages").await, 22);
    assert_eq!(count(pool, "turn_jobs").await, 18);
    let edit_jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM turn_jobs j JOIN messages m ON m.id = j.message_id \
         WHERE m.content ->> 'whatsappMessageId' = 'wamid.FIXTURE.UNSUPPORTED'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(edit_jobs, 0, "an edit starts no turn");
}

fn sample(rel: &str) -> Vec<u8> {
    std::fs::read(shared(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every parseable sample file, and each payload of WhatsApp Builder's file.
fn all_samples() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in [
        "whatsapp/samples/meta-docs",
        "whatsapp/samples/meta-postman/webhooks",
    ] {
        let mut names: Vec<String> = std::fs::read_dir(shared(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .filter(|n| !dir.ends_with("meta-docs") || n.starts_with("webhook_"))
            .collect();
        names.sort();
        for name in names {
            let rel = format!("{dir}/{name}");
            out.push((rel.clone(), sample(&rel)));
        }
    }
    let wb: serde_json::Map<String, Value> =
        serde_json::from_slice(&sample("whatsapp-builder/webhook-test-payloads.json")).unwrap();
    for (name, payload) in wb {
        out.push((
            format!("webhook-test-payloads.json#{name}"),
            payload.to_string().into_bytes(),
        ));
    }
    out
}

#[tokio::test]
async fn every_shared_sample_is_acknowledged_and_stored_as_the_rows_it_implies() {
    if crate::helpers::shared_if_present("whatsapp/samples").is_none() {
        // The reference material is not beside this checkout: the fixtures above
        // stand for it.
        return;
    }
    let app = spawn_app().await;
    let samples = all_samples();
    assert!(samples.len() >= 30, "only {} samples", samples.len());
    for (name, body) in &samples {
        let response = app.post_webhook(body).await;
        assert_eq!(response.status(), 200, "{name}");
    }
    let pool = &app.pool;
    assert_eq!(
        count(pool, "webhook_events").await,
        with_raw_event(samples.iter().map(|(_, b)| b.as_slice()))
    );

    // Meta's text sample: the customer, the business, the conversation, the message,
    // its turn job.
    let (customer, name, role) = user(pool, "16505551234").await;
    assert_eq!((name.as_str(), role.as_str()), ("Sheena Nelson", "user"));
    let (business, _, role) = user(pool, "106540352242922").await;
    assert_eq!(role, "business");
    let wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=";
    let (kind, content, status, ts, conversation, sender) = message_row(pool, wamid).await;
    assert_eq!(
        (kind.as_str(), status.as_str(), ts),
        ("text", "delivered", 1_749_416_383)
    );
    assert_eq!(sender, customer);
    assert_eq!(content["text"], "Does it come in another color?");
    assert_eq!(content["body"], "Does it come in another color?");
    assert_eq!(content["whatsappMessageId"], wamid);
    assert_eq!(
        content["raw"]["text"]["body"],
        "Does it come in another color?"
    );
    let participants: Vec<Uuid> = sqlx::query_scalar(
        "SELECT \"userId\" FROM conversation_participants WHERE \"conversationId\" = $1 ORDER BY 1",
    )
    .bind(conversation)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut expected = vec![customer, business];
    expected.sort();
    assert_eq!(participants, expected);
    let jobs: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT kind, conversation_id FROM turn_jobs j JOIN messages m ON m.id = j.message_id \
         WHERE m.content ->> 'whatsappMessageId' = $1",
    )
    .bind(wamid)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(jobs, vec![("inbound".to_owned(), conversation)]);
    // All of Sheena's samples share one conversation; its preview is the newest.
    let (last, last_at, window): (String, i64, bool) = sqlx::query_as(
        "SELECT \"lastMessage\", extract(epoch FROM \"lastMessageAt\")::bigint, \"isWindowOpen\" \
         FROM conversations WHERE id = $1",
    )
    .bind(conversation)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(last_at, 1_750_275_992);
    assert_eq!(last, "Can I get more info about this?");
    assert!(!window, "the samples are older than 24 hours");

    // Interactive replies in WhatsApp Builder's keys.
    let (kind, content, ..) = message_row(
        pool,
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTZBQzg0MzQ4QjRCM0NGNkVGOAA=",
    )
    .await;
    assert_eq!(kind, "interactive");
    assert_eq!(content["type"], "button_reply");
    assert_eq!(content["buttonId"], "cancel-button");
    assert_eq!(content["buttonTitle"], "Cancel");
    assert_eq!(
        content["contextMessageId"],
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MEM2RUJFNkI0RENGQTVDRjUA"
    );
    let (_, content, ..) = message_row(pool, "wamid.HBgNMTU1NTk4NzY1NDkVAgARGBI5...").await;
    assert_eq!(
        (
            &content["listId"],
            &content["listTitle"],
            &content["listDescription"]
        ),
        (
            &json!("product_laptop_pro"),
            &json!("Laptop Pro 15\""),
            &json!("High-performance laptop")
        )
    );
    // A template quick-reply, a location, media, an order, a reaction.
    let (kind, content, ..) = message_row(pool, "wamid.ABGGFlCGg0cvAgo-sHWxBA2VFD_S").await;
    assert_eq!(
        (kind.as_str(), &content["payload"]),
        ("button", &json!("No-Button-Payload"))
    );
    let (kind, content, ..) = message_row(pool, "wamid.HBgNMTU1NTk4NzY1NTAVAgARGBI5...").await;
    assert_eq!(kind, "location");
    assert_eq!(
        (&content["latitude"], &content["name"]),
        (&json!(37.7749), &json!("San Francisco Store"))
    );
    let (kind, content, ..) = message_row(pool, "wamid.HBgNMTU1NTk4NzY1NDcVAgARGBI5...").await;
    assert_eq!(
        (kind.as_str(), &content["voice"], &content["mimeType"]),
        ("audio", &json!(true), &json!("audio/ogg; codecs=opus"))
    );
    let (kind, content, ..) = message_row(pool, "wamid.ABGGFlCGg0cvAgo6cHbBhfK5760V").await;
    assert_eq!(kind, "order");
    assert_eq!(
        content["productItems"][0]["product_retailer_id"],
        "the-product-SKU-identifier"
    );
    let (kind, content, ..) = message_row(pool, "message_id").await;
    assert_eq!(kind, "reaction");
    assert_eq!(
        (
            &content["messageId"],
            &content["emoji"],
            &content["removed"]
        ),
        (&json!("<WAMID>"), &json!("<emoji>"), &json!(false))
    );
    // Meta's docs reuse the list reply's wamid for the unsupported sample: the
    // first delivery of a wamid wins, the second is a duplicate.
    let (kind, content, ..) = message_row(
        pool,
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
    )
    .await;
    assert_eq!(
        (kind.as_str(), &content["listId"]),
        ("interactive", &json!("priority_express"))
    );
    // A type wabot does not know is stored as `unknown` with Meta's errors.
    let (kind, content, ..) = message_row(pool, "wamid.ABGGFlA5FpafAgo6tHcNmNjXmuSf").await;
    assert_eq!(
        (kind.as_str(), &content["errors"][0]["code"]),
        ("unknown", &json!(130501))
    );

    // WhatsApp Builder's batch: three messages, in order. They are for a business
    // number this daemon does not serve (a placeholder id), so no turn runs.
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT m.content ->> 'text' FROM messages m \
         JOIN users u ON u.id = m.\"senderId\" WHERE u.\"phoneNumber\" = '15559876551' \
         ORDER BY m.\"timestamp\", m.\"createdAt\"",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM turn_jobs j JOIN messages m ON m.id = j.message_id \
         JOIN users u ON u.id = m.\"senderId\" WHERE u.\"phoneNumber\" = '15559876551'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(jobs, 0);
    assert_eq!(
        texts,
        [
            "Hi there!",
            "I have a question about shipping",
            "When will my order arrive?"
        ]
    );

    // Statuses for messages wabot never sent wait; value errors are kept.
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM message_statuses WHERE applied_at IS NULL AND wamid = 'wamid.gBGGFlCGg0cvAglAxydbAoy-gwNo'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(pending, 1);
    let codes: Vec<i64> = sqlx::query_scalar(
        "SELECT (e -> 'errors' -> 0 ->> 'code')::bigint FROM webhook_events, jsonb_array_elements(errors) e",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(codes, [130429]);
    // A sender id longer than a phone number is kept in the raw event only.
    let skipped: i64 = sqlx::query_scalar("SELECT sum(messages_skipped) FROM webhook_events")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        skipped, 2,
        "the sticker and click-to-WhatsApp samples use long placeholders"
    );
    // Every new message to the number this daemon serves has exactly one turn job.
    let served: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages m \
         JOIN conversation_keys k ON k.conversation_id = m.\"conversationId\" \
         WHERE k.business_phone_number_id = $1",
    )
    .bind(crate::helpers::PHONE_NUMBER_ID)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(served, count(pool, "turn_jobs").await);
}
