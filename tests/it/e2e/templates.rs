//! Templates end to end, against the fake Graph API of `src/dev` (its template
//! listing and send knobs): the catalogue synced page by page and kept current by
//! the status webhook; the window-closed fallback; `wabot send` placing a customer
//! in a chatbot, and its idempotency key.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wabot::dev::fake_graph::{self, FakeGraph, Options, StatusOptions};

use super::*;
use crate::helpers::{self, spawn_app_with};

/// The fake Graph API of `src/dev`, listing the fixture catalogue `page_size` to a
/// page; statuses posted back when `statuses`.
pub async fn fake_meta(statuses: bool, page_size: usize) -> (Arc<FakeGraph>, String) {
    let (fake, url) = fake_graph::start(
        "127.0.0.1:0".parse().unwrap(),
        Options {
            run: Uuid::new_v4().simple().to_string()[..8].to_owned(),
            app_secret: helpers::APP_SECRET.to_owned(),
            phone_number_id: helpers::PHONE_NUMBER_ID.to_owned(),
            statuses: StatusOptions {
                enabled: statuses,
                delay: Duration::from_millis(30),
                redeliver: true,
            },
        },
    )
    .await
    .unwrap();
    fake.templates.set(catalogue(), page_size);
    (fake, url)
}

pub fn catalogue() -> Vec<Value> {
    let v = load_json(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/templates/catalogue.json"
    )));
    v.as_array().unwrap().clone()
}

/// The daemon with its worker on, sending to `url`; the fake posts statuses to it.
pub async fn daemon(fake: &FakeGraph, url: &str, configure: impl FnOnce(&mut Config)) -> TestApp {
    let url = url.to_owned();
    let app = spawn_app_with(|c| {
        c.worker.enabled = true;
        c.whatsapp.graph_api_base = url;
        c.whatsapp.graph_timeout_ms = 1000;
        c.worker.send_retry_base_ms = 10;
        c.worker.send_rate_per_sec = 1000;
        c.worker.lease_secs = 5;
        configure(c);
    })
    .await;
    fake.set_webhook_url(format!("{}/webhook", app.address));
    app
}

/// Syncs the catalogue as `wabot templates sync` does, from inside the test.
pub async fn sync(app: &TestApp) -> wabot::worker::templates::SyncReport {
    let graph = wabot::whatsapp::graph::GraphClient::new(&app.config.whatsapp).unwrap();
    let credentials =
        wabot::credentials::CredentialStore::new(app.pool.clone(), app.config.whatsapp.clone());
    wabot::worker::templates::sync(&app.pool, &graph, &credentials)
        .await
        .unwrap()
}

/// `wabot ARGS` against the app's database and the fake; (exit code, stdout, stderr).
pub async fn wabot_cli(app: &TestApp, graph_url: &str, args: &[&str]) -> (i32, String, String) {
    let out = crate::serve::wabot()
        .args(args)
        .env("DATABASE_URL", &app.config.database_url)
        .env("WABOT_GRAPH_API_BASE", graph_url)
        .env("WABOT_ACCESS_TOKEN", helpers::ACCESS_TOKEN)
        .env("WABOT_PHONE_NUMBER_ID", helpers::PHONE_NUMBER_ID)
        .env("WABOT_BUSINESS_ACCOUNT_ID", helpers::BUSINESS_ACCOUNT_ID)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until `to` received `n` messages; their bodies.
pub async fn inbox(fake: &FakeGraph, to: &str, n: usize) -> Vec<Value> {
    let inbox = fake.inbox(to);
    let arrived = inbox
        .wait_for(n, Instant::now() + Duration::from_secs(20))
        .await;
    let bodies: Vec<Value> = inbox.replies().into_iter().map(|r| r.body).collect();
    assert!(arrived, "{to} got {} of {n}: {bodies:#?}", bodies.len());
    bodies
}

fn template_status_webhook(event: &str, id: i64, reason: &str) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": helpers::BUSINESS_ACCOUNT_ID,
        "time": now_secs(), "changes": [{"field": "message_template_status_update", "value": {
            "event": event, "message_template_id": id, "message_template_name": "order_update",
            "message_template_language": "en_US", "reason": reason}}]}]})
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn a_paged_catalogue_is_synced_and_a_status_update_applied() {
    let (fake, url) = fake_meta(false, 2).await;
    let app = daemon(&fake, &url, |_| {}).await;

    let (code, out, err) = wabot_cli(&app, &url, &["templates", "sync"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("synced 7 template(s)"), "{out}");
    // Seven templates two to a page: four pages, each cursor followed.
    assert_eq!(
        fake.templates
            .pages_served
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    let rows: Vec<(String, String, String, Value)> = sqlx::query_as(
        "SELECT name, language, status, parameters FROM wabot_templates ORDER BY name, language",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 7);
    let order = rows.iter().find(|r| r.0 == "order_update").unwrap();
    assert_eq!(order.3["body"], json!(["1", "2"]));
    assert_eq!(order.3["header"], json!(["1"]));
    let named = rows.iter().find(|r| r.0 == "appointment_reminder").unwrap();
    assert_eq!(named.3["body"], json!(["first_name", "day"]));

    // Meta pauses a template: the webhook moves its status and keeps the reason.
    let response = app
        .post_webhook(&template_status_webhook("PAUSED", 1001, "LOW_QUALITY"))
        .await;
    assert_eq!(response.status(), 200);
    let (status, reason): (String, Option<String>) =
        sqlx::query_as("SELECT status, reason FROM wabot_templates WHERE name = 'order_update'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("PAUSED", Some("LOW_QUALITY"))
    );
    let (code, out, _) = wabot_cli(&app, &url, &["templates", "list"]).await;
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.starts_with("order_update")).unwrap();
    assert!(line.contains("PAUSED (LOW_QUALITY)"), "{line}");
    assert!(
        line.contains("params: header.1 1 2 [button.0] button.1"),
        "{line}"
    );

    // A paused template is refused, with the reason, before anything is queued.
    let (code, _, err) = wabot_cli(
        &app,
        &url,
        &[
            "send",
            CUSTOMER,
            "--template",
            "order_update",
            "--param",
            "1=x",
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("is PAUSED, not APPROVED: LOW_QUALITY"),
        "{err}"
    );

    // Meta no longer lists one: the next sync removes it.
    let mut fewer = catalogue();
    fewer.retain(|t| t["name"] != "old_promo");
    fake.templates.set(fewer, 3);
    let report = sync(&app).await;
    assert_eq!((report.listed, report.deleted), (6, 1));
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(messages, 0, "nothing was sent");
}

#[tokio::test]
async fn a_timeout_after_24_hours_sends_the_chatbot_s_window_closed_template() {
    let bot = json!({"name": "Patient", "metadata": {"windowClosedTemplate": {
            "name": "still_there", "language": "en_US",
            "parameters": {"1": "{{customer_name}}"}}},
        "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "q", "type": "question", "data": {"label": "Q", "questionType": "text",
            "content": "Still there?", "timeoutSeconds": 2}},
        {"id": "late", "type": "message", "data": {"label": "Late", "content": "Timed out."}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "q"},
        {"id": "e2", "source": "q", "target": "late", "sourceHandle": "timeout"}
    ]});
    let (fake, url) = fake_meta(false, 100).await;
    let app = daemon(&fake, &url, |_| {}).await;
    sync(&app).await;
    install_chatbot(&app.pool, &bot).await;
    let body = messages_webhook(CUSTOMER, CUSTOMER_NAME, vec![text("wamid.WC1", "hi")]);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    assert_eq!(
        inbox(&fake, CUSTOMER, 1).await[0]["text"]["body"],
        "Still there?"
    );

    // A day passes before the question times out: the window is closed.
    sqlx::query("UPDATE conversations SET \"lastCustomerMessageAt\" = now() - interval '25 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    let sent = inbox(&fake, CUSTOMER, 2).await;
    let fallback = &sent[1];
    assert_eq!(fallback["type"], "template");
    assert_eq!(
        fallback["template"],
        json!({"name": "still_there", "language": {"code": "en_US"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": CUSTOMER_NAME}]}]})
    );
    // Recorded: the message is the template, sent, with what it replaced and why.
    let content: Value = sqlx::query_scalar(
        "SELECT m.content FROM messages m JOIN send_jobs j ON j.message_id = m.id \
         ORDER BY j.id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(content["text"], "[template still_there]");
    assert_eq!(content["replaced"]["text"], "Timed out.");
    assert_eq!(
        content["replacedBecause"]["reason"],
        "24-hour window closed"
    );
    eventually(
        &app.pool,
        "SELECT count(*) FROM messages WHERE status = 'sent' \
           AND content->>'text' = '[template still_there]'",
        1,
    )
    .await;
}

#[tokio::test]
async fn without_a_window_closed_template_the_message_fails_with_its_reason() {
    let (fake, url) = fake_meta(false, 100).await;
    let app = daemon(&fake, &url, |_| {}).await;
    let bot = json!({"name": "Plain", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "q", "type": "question", "data": {"label": "Q", "questionType": "text",
            "content": "Still there?", "timeoutSeconds": 2}},
        {"id": "late", "type": "message", "data": {"label": "Late", "content": "Timed out."}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "q"},
        {"id": "e2", "source": "q", "target": "late", "sourceHandle": "timeout"}
    ]});
    install_chatbot(&app.pool, &bot).await;
    let body = messages_webhook(CUSTOMER, CUSTOMER_NAME, vec![text("wamid.WC2", "hi")]);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    inbox(&fake, CUSTOMER, 1).await;
    sqlx::query("UPDATE conversations SET \"lastCustomerMessageAt\" = now() - interval '25 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    eventually(
        &app.pool,
        "SELECT count(*) FROM messages WHERE status = 'failed' \
           AND content->'error'->>'reason' = '24-hour window closed' \
           AND content->>'text' = 'Timed out.'",
        1,
    )
    .await;
    assert_eq!(fake.inbox(CUSTOMER).len(), 1, "nothing else was sent");
}

pub fn reminder_bot() -> Value {
    json!({"name": "Reminder", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "hello", "type": "message", "data": {"label": "Hello", "content": "Hello!"}},
        {"id": "q", "type": "question", "data": {"label": "Coming?", "questionType": "buttons",
            "content": "Are you coming?",
            "buttons": [{"id": "yes", "title": "Yes"}, {"id": "no", "title": "No"}]}},
        {"id": "see", "type": "message", "data": {"label": "See", "content": "See you then!"}},
        {"id": "move", "type": "message", "data": {"label": "Move", "content": "We will call to move it."}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "hello"},
        {"id": "e2", "source": "hello", "target": "q"},
        {"id": "e3", "source": "q", "target": "see", "sourceHandle": "yes"},
        {"id": "e4", "source": "q", "target": "move", "sourceHandle": "no"}
    ]})
}

/// A template's quick-reply button as Meta posts it: `type: button`.
pub fn quick_reply(from: &str, wamid: &str, payload: &str, text: &str) -> Value {
    json!({"from": from, "id": wamid, "timestamp": now_secs().to_string(), "type": "button",
           "button": {"payload": payload, "text": text}})
}

#[tokio::test]
async fn wabot_send_places_the_customer_in_a_chatbot_and_a_key_sends_once() {
    let (fake, url) = fake_meta(false, 100).await;
    let app = daemon(&fake, &url, |_| {}).await;
    sync(&app).await;
    let chatbot = install_chatbot(&app.pool, &reminder_bot())
        .await
        .to_string();
    let args = [
        "send",
        "+90 555 111 22 33",
        "--template",
        "appointment_reminder",
        "--language",
        "en_US",
        "--param",
        "first_name=Ayşe",
        "--param",
        "day=Friday",
        "--param",
        "button.0=yes",
        "--param",
        "button.1=no",
        "--chatbot",
        &chatbot,
        "--node",
        "q",
        "--idempotency-key",
        "reminder-42",
    ];
    let (code, out, err) = wabot_cli(&app, &url, &args).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("queued template appointment_reminder to +905551112233"),
        "{out}"
    );
    let (code, again, err) = wabot_cli(&app, &url, &args).await;
    assert_eq!(code, 0, "{again}{err}");
    assert!(
        again.starts_with("already sent with this idempotency key"),
        "{again}"
    );

    let sent = inbox(&fake, CUSTOMER, 1).await;
    assert_eq!(
        sent[0]["template"],
        json!({"name": "appointment_reminder", "language": {"code": "en_US"}, "components": [
            {"type": "body", "parameters": [
                {"type": "text", "text": "Ayşe", "parameter_name": "first_name"},
                {"type": "text", "text": "Friday", "parameter_name": "day"}]},
            {"type": "button", "sub_type": "quick_reply", "index": "0",
             "parameters": [{"type": "payload", "payload": "yes"}]},
            {"type": "button", "sub_type": "quick_reply", "index": "1",
             "parameters": [{"type": "payload", "payload": "no"}]}]})
    );

    // The customer taps "Yes": the chatbot continues at its question.
    let tap = messages_webhook(
        CUSTOMER,
        CUSTOMER_NAME,
        vec![quick_reply(CUSTOMER, "wamid.QR1", "yes", "Yes")],
    );
    assert_eq!(app.post_webhook(&tap).await.status(), 200);
    let replies = inbox(&fake, CUSTOMER, 2).await;
    assert_eq!(replies[1]["text"]["body"], "See you then!");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.inbox(CUSTOMER).len(), 2, "the key sent once");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM wabot_sends")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(keys, 1);

    // Placed at the start instead, typed text runs the chatbot from there.
    let (code, out, err) = wabot_cli(
        &app,
        &url,
        &[
            "send",
            "905559998877",
            "--template",
            "still_there",
            "--param",
            "1=Can",
            "--chatbot",
            &chatbot,
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    inbox(&fake, "905559998877", 1).await;
    let typed = messages_webhook(
        "905559998877",
        "Can",
        vec![crate::webhook::text(
            "905559998877",
            "wamid.T1",
            "ok",
            now_secs(),
        )],
    );
    assert_eq!(app.post_webhook(&typed).await.status(), 200);
    let replies = inbox(&fake, "905559998877", 3).await;
    assert_eq!(replies[1]["text"]["body"], "Hello!");
    assert_eq!(replies[2]["interactive"]["body"]["text"], "Are you coming?");

    // Refusals say why and queue nothing.
    let (code, _, err) = wabot_cli(
        &app,
        &url,
        &[
            "send",
            CUSTOMER,
            "--template",
            "appointment_reminder",
            "--param",
            "first_name=A",
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("pass --language"), "{err}");
    let (code, _, err) = wabot_cli(
        &app,
        &url,
        &[
            "send",
            CUSTOMER,
            "--template",
            "still_there",
            "--param",
            "2=x",
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("parameter `1` is missing"), "{err}");
    assert!(
        err.contains("parameter `2` is not in the template"),
        "{err}"
    );
    let (code, _, err) = wabot_cli(&app, &url, &["customer", "opt-out", CUSTOMER]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = wabot_cli(
        &app,
        &url,
        &[
            "send",
            CUSTOMER,
            "--template",
            "still_there",
            "--param",
            "1=x",
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("opted out"), "{err}");
    assert_eq!(fake.inbox(CUSTOMER).len(), 2);
}

#[tokio::test]
async fn the_daemon_syncs_the_catalogue_at_start_and_every_interval() {
    let (fake, url) = fake_meta(false, 3).await;
    fake.templates.set(catalogue()[..2].to_vec(), 3);
    let app = daemon(&fake, &url, |c| c.worker.templates_sync_secs = 1).await;
    eventually(&app.pool, "SELECT count(*) FROM wabot_templates", 2).await;
    // Meta approves more: the next round brings them.
    fake.templates.set(catalogue(), 3);
    eventually(&app.pool, "SELECT count(*) FROM wabot_templates", 7).await;
}

fn template_bot_path() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/chatbots/template-reminder.json"
    )
}

#[tokio::test]
async fn a_chatbot_sends_templates_in_meta_s_shape_and_a_quick_reply_continues_it() {
    let (fake, url) = fake_meta(false, 100).await;
    let app = daemon(&fake, &url, |_| {}).await;
    sync(&app).await;
    let (code, out, err) =
        wabot_cli(&app, &url, &["chatbot", "validate", template_bot_path()]).await;
    assert_eq!(code, 0, "{out}{err}");
    install_chatbot(
        &app.pool,
        &load_json(std::path::Path::new(template_bot_path())),
    )
    .await;

    let body = messages_webhook(CUSTOMER, CUSTOMER_NAME, vec![text("wamid.CT1", "hi")]);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let sent = inbox(&fake, CUSTOMER, 2).await;
    assert_eq!(
        sent[0]["template"],
        json!({"name": "order_update", "language": {"code": "en_US"}, "components": [
            {"type": "header", "parameters": [{"type": "text", "text": "A-17"}]},
            {"type": "body", "parameters": [{"type": "text", "text": CUSTOMER_NAME},
                                            {"type": "text", "text": "A-17"}]},
            {"type": "button", "sub_type": "url", "index": "1",
             "parameters": [{"type": "text", "text": "A-17"}]}]})
    );
    assert!(
        sent[0].get("wabot_template_parameters").is_none(),
        "{}",
        sent[0]
    );
    // The question is asked with a template whose quick replies carry its buttons' ids.
    assert_eq!(sent[1]["template"]["name"], "appointment_reminder");
    assert_eq!(
        sent[1]["template"]["components"][1],
        json!({"type": "button", "sub_type": "quick_reply", "index": "0",
               "parameters": [{"type": "payload", "payload": "yes"}]})
    );
    let tap = messages_webhook(
        CUSTOMER,
        CUSTOMER_NAME,
        vec![quick_reply(CUSTOMER, "wamid.CT2", "yes", "Yes")],
    );
    assert_eq!(app.post_webhook(&tap).await.status(), 200);
    assert_eq!(
        inbox(&fake, CUSTOMER, 3).await[2]["text"]["body"],
        "See you then!"
    );

    // Validation names what does not fit the catalogue.
    let mut doc = load_json(std::path::Path::new(template_bot_path()));
    doc["nodes"][1]["data"]["template"]["parameters"]["9"] = json!("x");
    doc["nodes"][2]["data"]["template"]["name"] = json!("summer_sale");
    let path = std::env::temp_dir().join(format!("wabot-{}.json", Uuid::new_v4()));
    std::fs::write(&path, doc.to_string()).unwrap();
    let (code, out, _) =
        wabot_cli(&app, &url, &["chatbot", "validate", path.to_str().unwrap()]).await;
    let _ = std::fs::remove_file(&path);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("node `order`: template `order_update`: parameter `9` is not in the template"),
        "{out}"
    );
    assert!(
        out.contains("node `q`: template `summer_sale` (en_US) is PENDING, not APPROVED"),
        "{out}"
    );

    // A template on a question that is not a buttons one is refused by the engine.
    let mut doc = load_json(std::path::Path::new(template_bot_path()));
    doc["nodes"][2]["data"]["questionType"] = json!("text");
    let errors = match wabot::engine::compile_json(&doc) {
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        Ok(_) => Vec::new(),
    };
    assert!(
        errors
            .iter()
            .any(|e| e.contains("only a buttons question is asked with a template")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn wabot_send_reaches_a_customer_known_only_by_their_bsuid() {
    let (fake, url) = fake_meta(false, 100).await;
    let app = daemon(&fake, &url, |_| {}).await;
    sync(&app).await;
    let bsuid = "US.13491208655302741918";
    let (code, out, err) = wabot_cli(
        &app,
        &url,
        &[
            "send",
            bsuid,
            "--template",
            "still_there",
            "--param",
            "1=there",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let sent = inbox(&fake, bsuid, 1).await;
    assert_eq!(sent[0]["recipient"], bsuid);
    assert!(sent[0].get("to").is_none(), "{}", sent[0]);
    let keyed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM conversation_keys WHERE customer_wa_id = $1")
            .bind(bsuid)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(keyed, 1, "the conversation is keyed by the BSUID");
}
