//! Statuses of outbound messages: forward only, whatever order Meta delivers them
//! in, and none lost when they arrive before wabot has recorded the send.

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp};
use crate::webhook::{messages_webhook, now_secs, statuses_webhook, text, BUSINESS};

/// A conversation with one inbound message; returns (conversation, business user).
async fn conversation(app: &TestApp, wa_id: &str) -> (Uuid, Uuid) {
    let body = messages_webhook(
        wa_id,
        "Cy",
        vec![text(wa_id, &format!("wamid.IN.{wa_id}"), "hi", now_secs())],
    );
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    sqlx::query_as(
        "SELECT k.conversation_id, u.id FROM conversation_keys k \
         JOIN users u ON u.\"phoneNumber\" = k.business_phone_number_id \
         WHERE k.customer_wa_id = $1 AND k.business_phone_number_id = $2",
    )
    .bind(wa_id)
    .bind(BUSINESS)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

/// An outbound message as the sender stores it, with its wamid when given.
async fn outbound(pool: &PgPool, conversation: Uuid, business: Uuid, wamid: Option<&str>) -> Uuid {
    let mut content = serde_json::json!({"text": "reply"});
    let status = match wamid {
        Some(w) => {
            content["whatsappMessageId"] = w.into();
            "sent"
        }
        None => "pending",
    };
    sqlx::query_scalar(
        "INSERT INTO messages (\"conversationId\", \"senderId\", type, content, status, \"timestamp\") \
         VALUES ($1, $2, 'text', $3, $4::messages_status_enum, now()) RETURNING id",
    )
    .bind(conversation)
    .bind(business)
    .bind(content)
    .bind(status)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn status_of(pool: &PgPool, id: Uuid) -> (String, Value) {
    sqlx::query_as("SELECT status::text, content FROM messages WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn statuses_move_forward_only_whatever_order_they_arrive_in() {
    let app = spawn_app().await;
    let (conversation, business) = conversation(&app, "16505550040").await;
    let app = &app;
    let post = |statuses: Vec<(&'static str, &'static str)>| async move {
        let body = statuses_webhook(&statuses);
        assert_eq!(app.post_webhook(&body).await.status(), 200)
    };

    // read before delivered: read stays.
    let a = outbound(&app.pool, conversation, business, Some("wamid.A")).await;
    post(vec![("wamid.A", "read")]).await;
    post(vec![("wamid.A", "delivered")]).await;
    assert_eq!(status_of(&app.pool, a).await.0, "read");

    // delivered before sent, in one batch: delivered stays.
    let b = outbound(&app.pool, conversation, business, Some("wamid.B")).await;
    post(vec![("wamid.B", "delivered"), ("wamid.B", "sent")]).await;
    assert_eq!(status_of(&app.pool, b).await.0, "delivered");
    // played after read, for voice.
    post(vec![("wamid.B", "read"), ("wamid.B", "played")]).await;
    assert_eq!(status_of(&app.pool, b).await.0, "played");

    // failed is final and keeps Meta's error; later statuses change nothing.
    let c = outbound(&app.pool, conversation, business, Some("wamid.C")).await;
    post(vec![("wamid.C", "failed")]).await;
    post(vec![("wamid.C", "delivered"), ("wamid.C", "read")]).await;
    let (status, content) = status_of(&app.pool, c).await;
    assert_eq!(status, "failed");
    assert_eq!(content["failed"], true);
    assert_eq!(content["error"]["code"], 131026);
    assert_eq!(content["error"]["details"], "Receiver is incapable");
    assert_eq!(content["statusErrors"][0]["title"], "Message undeliverable");
    assert_eq!(content["text"], "reply");

    // The same (wamid, status) twice is recorded once.
    post(vec![("wamid.A", "read")]).await;
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM message_statuses WHERE wamid = 'wamid.A'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows, 2);

    // A payment's `failed` (order-details transactions) is kept, not applied.
    let payment = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA",
        "changes": [{"field": "messages", "value": {
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": BUSINESS},
            "statuses": [{"id": "wamid.A", "type": "payment", "status": "failed",
                          "payment": {"reference_id": "ref-1"}, "timestamp": "1750000000"}]}}]}]});
    let body = payment.to_string().into_bytes();
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    assert_eq!(status_of(&app.pool, a).await.0, "read");
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT status FROM message_statuses WHERE wamid = 'wamid.A' ORDER BY status",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(kept, ["delivered", "payment:failed", "read"]);
}

#[tokio::test]
async fn a_status_that_arrives_before_the_send_is_recorded_is_applied_when_it_is() {
    let app = spawn_app().await;
    let (conversation, business) = conversation(&app, "16505550041").await;
    let id = outbound(&app.pool, conversation, business, None).await;

    let body = statuses_webhook(&[("wamid.EARLY", "delivered"), ("wamid.EARLY", "read")]);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM message_statuses WHERE wamid = 'wamid.EARLY' AND applied_at IS NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(waiting, 2);
    assert_eq!(status_of(&app.pool, id).await.0, "pending");

    // The sender records the wamid Meta returned, then applies what came early.
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE messages SET status = 'sent', \
                content = content || jsonb_build_object('whatsappMessageId', $2::text) WHERE id = $1",
    )
    .bind(id)
    .bind("wamid.EARLY")
    .execute(&mut *tx)
    .await
    .unwrap();
    let applied = wabot::store::statuses::apply_early_statuses(&mut tx, id, "wamid.EARLY")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(applied, 2);
    assert_eq!(status_of(&app.pool, id).await.0, "read");
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM message_statuses WHERE message_id = $1 AND applied_at IS NOT NULL",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(waiting, 2);

    // A late `sent` for it changes nothing.
    let body = statuses_webhook(&[("wamid.EARLY", "sent")]);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    assert_eq!(status_of(&app.pool, id).await.0, "read");
}

#[tokio::test]
async fn a_status_racing_the_send_record_is_never_lost() {
    let app = spawn_app().await;
    let (conversation, business) = conversation(&app, "16505550042").await;
    for i in 0..10 {
        let wamid = format!("wamid.RACE{i}");
        let id = outbound(&app.pool, conversation, business, None).await;
        let body = statuses_webhook(&[(wamid.as_str(), "delivered")]);
        let webhook = app.post_webhook(&body);
        let send_record = async {
            let mut tx = app.pool.begin().await.unwrap();
            sqlx::query(
                "UPDATE messages SET status = 'sent', \
                        content = content || jsonb_build_object('whatsappMessageId', $2::text) \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(&wamid)
            .execute(&mut *tx)
            .await
            .unwrap();
            wabot::store::statuses::apply_early_statuses(&mut tx, id, &wamid)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        };
        let (response, ()) = tokio::join!(webhook, send_record);
        assert_eq!(response.status(), 200);
        assert_eq!(status_of(&app.pool, id).await.0, "delivered", "round {i}");
    }
}

/// A status as its row holds it: the columns and `extra`, put back together the way
/// the `status_extra` down migration does.
async fn stored_status(pool: &PgPool, wamid: &str) -> (Value, Option<Uuid>) {
    sqlx::query_as(
        "SELECT coalesce(extra, '{}'::jsonb) || jsonb_strip_nulls(jsonb_build_object( \
                'id', wamid, 'status', status, \
                'timestamp', extract(epoch FROM meta_timestamp)::bigint::text, \
                'recipient_id', recipient_id, \
                'errors', CASE WHEN errors = '[]'::jsonb THEN NULL ELSE errors END)), \
                message_id \
         FROM message_statuses WHERE wamid = $1",
    )
    .bind(wamid)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_webhook_of_statuses_is_stored_once_as_its_status_rows() {
    let app = spawn_app().await;
    let (conversation, business) = conversation(&app, "16505550043").await;
    let known = outbound(&app.pool, conversation, business, Some("wamid.ONCE")).await;
    let ours = wabot::whatsapp::outbound::callback_data(known);
    let other = wabot::whatsapp::outbound::callback_data(Uuid::new_v4());
    let sent = serde_json::json!({"id": "wamid.ONCE", "status": "sent", "timestamp": "1764000020",
        "recipient_id": "16505551234", "biz_opaque_callback_data": ours,
        "conversation": {"id": "CONV-1", "origin": {"type": "service"},
                         "expiration_timestamp": "1764086400"},
        "pricing": {"billable": false, "pricing_model": "PMP", "category": "service"}});
    let unknown = serde_json::json!({"id": "wamid.UNKNOWN", "status": "delivered",
        "timestamp": "1764000021", "recipient_user_id": "US.13491208655302741918",
        "biz_opaque_callback_data": other, "something_new": [1, {"a": null}]});
    let body = |statuses: Value| {
        serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA",
            "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": BUSINESS},
                "statuses": statuses}}]}]})
        .to_string()
        .into_bytes()
    };
    let events_before = crate::webhook::count(&app.pool, "webhook_events").await;
    let posted = body(serde_json::json!([sent, unknown]));
    assert_eq!(app.post_webhook(&posted).await.status(), 200);
    // Again: a duplicate, stored nowhere.
    assert_eq!(app.post_webhook(&posted).await.status(), 200);
    assert_eq!(
        crate::webhook::count(&app.pool, "webhook_events").await,
        events_before,
        "no raw event for statuses"
    );
    assert_eq!(
        crate::webhook::count(&app.pool, "message_statuses").await,
        2
    );

    // Each row is the whole status; wabot's own callback data is the message id
    // the applied row names, so it is not kept twice.
    let (row, message) = stored_status(&app.pool, "wamid.ONCE").await;
    let mut expected = sent.clone();
    expected
        .as_object_mut()
        .unwrap()
        .remove("biz_opaque_callback_data");
    assert_eq!((row, message), (expected, Some(known)));
    assert_eq!(status_of(&app.pool, known).await.0, "sent");
    // A customer known by BSUID only: the BSUID is the recipient column.
    let (row, message) = stored_status(&app.pool, "wamid.UNKNOWN").await;
    let mut expected = unknown.clone();
    let bsuid = expected
        .as_object_mut()
        .unwrap()
        .remove("recipient_user_id")
        .unwrap();
    expected["recipient_id"] = bsuid;
    assert_eq!((row, message), (expected, None));

    // A status that cannot be a row (no wamid) keeps the webhook's raw event, and
    // so do Meta's errors (their row keeps code, title, message and details only).
    let posted = body(serde_json::json!([{"status": "read"},
        {"id": "wamid.ONCE", "status": "read", "recipient_id": "16505551234"}]));
    assert_eq!(app.post_webhook(&posted).await.status(), 200);
    assert_eq!(
        crate::webhook::count(&app.pool, "webhook_events").await,
        events_before + 1
    );
    let posted = body(
        serde_json::json!([{"id": "wamid.UNKNOWN", "status": "failed",
        "errors": [{"code": 131026, "title": "Message undeliverable",
                    "error_data": {"details": "Receiver is incapable"}, "href": "https://x"}]}]),
    );
    assert_eq!(app.post_webhook(&posted).await.status(), 200);
    assert_eq!(
        crate::webhook::count(&app.pool, "webhook_events").await,
        events_before + 2
    );
    let statuses_total: i32 = sqlx::query_scalar(
        "SELECT statuses_total FROM webhook_events ORDER BY id DESC LIMIT 1 OFFSET 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(statuses_total, 2);
    assert_eq!(status_of(&app.pool, known).await.0, "read");
}
