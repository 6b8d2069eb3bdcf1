//! `/metrics` after a real conversation: the counters moved by exactly what
//! happened. A binary of its own because the recorder is process-wide: the other
//! integration tests' traffic would move the same counters.

#[path = "it/helpers.rs"]
mod helpers;
#[path = "it/support_graph.rs"]
mod support_graph;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use wabot::engine::ChatbotDoc;
use wabot::store::chatbots::{insert, NewChatbot};

use helpers::{spawn_app_with, TestApp, PHONE_NUMBER_ID};
use support_graph::FakeGraph;

const CUSTOMER: &str = "905551112233";

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn value_webhook(value: Value) -> Vec<u8> {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": value}]}]})
    .to_string()
    .into_bytes()
}

fn message(wamid: &str, body: &str) -> Vec<u8> {
    value_webhook(json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": "Ayşe"}, "wa_id": CUSTOMER}],
        "messages": [{"from": CUSTOMER, "id": wamid, "timestamp": now_secs().to_string(),
                      "type": "text", "text": {"body": body}}]}))
}

fn statuses(wamids: &[String], status: &str) -> Vec<u8> {
    let statuses: Vec<Value> = wamids
        .iter()
        .map(|w| {
            json!({"id": w, "status": status, "timestamp": now_secs().to_string(),
                        "recipient_id": CUSTOMER})
        })
        .collect();
    value_webhook(json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "statuses": statuses}))
}

/// A scrape, as series (`name{labels}`) → value.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

async fn scrape(client: &reqwest::Client, base: &str) -> Scrape {
    let response = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("/metrics answers");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    let mut series = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').expect("`series value`");
        series.insert(name.to_owned(), value.parse().expect("a number"));
    }
    Scrape(series)
}

/// Waits until `series` moved by `delta` since `before`.
async fn moved(app: &TestApp, before: &Scrape, series: &str, delta: f64) -> Scrape {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = scrape(&app.client, &app.address).await;
        if now.get(series) - before.get(series) == delta {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} moved by {}, expected {delta}",
            now.get(series) - before.get(series)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_counters_move_by_what_a_conversation_did() {
    let graph = FakeGraph::start().await;
    let url = graph.url();
    let app = spawn_app_with(|c| {
        c.worker.enabled = true;
        c.whatsapp.graph_api_base = url;
        c.worker.send_rate_per_sec = 1000;
    })
    .await;
    let doc = json!({"name": "Greeter", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "hi", "type": "message", "data": {"label": "Hi", "content": "Hello!"}},
        {"id": "q", "type": "question", "data": {"label": "Q", "questionType": "text",
            "content": "Your name?", "variable": "name"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "hi"},
        {"id": "e2", "source": "hi", "target": "q"}
    ]});
    let doc = ChatbotDoc::from_json(&doc).unwrap();
    insert(&app.pool, &NewChatbot::from_doc(&doc, true))
        .await
        .unwrap();

    let before = scrape(&app.client, &app.address).await;
    // The first message: two replies.
    assert_eq!(
        app.post_webhook(&message("wamid.M1", "hi")).await.status(),
        200
    );
    let replies = graph.wait_for_accepted(2, Duration::from_secs(20)).await;
    let wamids: Vec<String> = replies
        .iter()
        .map(|r| r.wamid().unwrap().to_owned())
        .collect();
    // Meta delivers it again; a stranger posts without the signature.
    assert_eq!(
        app.post_webhook(&message("wamid.M1", "hi")).await.status(),
        200
    );
    let unsigned = app
        .client
        .post(format!("{}/webhook", app.address))
        .header("x-hub-signature-256", "sha256=00")
        .body(message("wamid.X", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    // Both replies sent and delivered; the delivered ones once more.
    for status in ["sent", "delivered", "delivered"] {
        assert_eq!(
            app.post_webhook(&statuses(&wamids, status)).await.status(),
            200
        );
    }
    // The answer to the question: a turn that sends nothing and ends the context.
    assert_eq!(
        app.post_webhook(&message("wamid.M2", "Zed")).await.status(),
        200
    );

    let done = r#"wabot_turns_total{kind="inbound",outcome="done"}"#;
    moved(&app, &before, done, 2.0).await;
    let after = moved(&app, &before, "wabot_turn_latency_seconds_count", 1.0).await;
    let delta = |series: &str| after.get(series) - before.get(series);

    assert_eq!(delta(r#"wabot_webhooks_received_total{status="200"}"#), 6.0);
    assert_eq!(delta(r#"wabot_webhooks_received_total{status="401"}"#), 1.0);
    assert_eq!(delta("wabot_messages_ingested_total"), 2.0);
    assert_eq!(
        delta(r#"wabot_duplicates_dropped_total{kind="message"}"#),
        1.0
    );
    assert_eq!(delta("wabot_statuses_ingested_total"), 4.0);
    assert_eq!(
        delta(r#"wabot_duplicates_dropped_total{kind="status"}"#),
        2.0
    );
    // Every stored webhook went through an ingest batch.
    assert_eq!(delta("wabot_ingest_batch_size_sum"), 6.0);
    assert_eq!(delta(r#"wabot_sends_total{result="sent"}"#), 2.0);
    assert_eq!(delta("wabot_graph_request_seconds_count"), 2.0);
    assert_eq!(delta("wabot_engine_steps_count"), 2.0);
    // start, message, question; the answer is applied to the waiting question and
    // no node follows it.
    assert_eq!(delta("wabot_engine_steps_sum"), 3.0);
    assert_eq!(
        delta(r#"wabot_turns_total{kind="inbound",outcome="skipped"}"#),
        0.0
    );
    assert_eq!(
        delta(r#"wabot_engine_limit_hits_total{limit="steps"}"#),
        0.0
    );
    assert!(
        after.get("wabot_turn_latency_seconds_sum") > before.get("wabot_turn_latency_seconds_sum")
    );
    assert_eq!(after.get("wabot_sending_held"), 0.0);
    // The monitor's gauges are there (their values depend on its timing).
    assert!(
        after.0.contains_key(r#"wabot_queue_depth{queue="turn"}"#),
        "{:?}",
        after.0.keys()
    );
    assert!(after
        .0
        .contains_key(r#"wabot_db_pool_connections{state="idle"}"#));

    // The turn log has both turns, with the nodes they walked.
    let walked: Vec<Vec<String>> =
        sqlx::query_scalar("SELECT nodes FROM wabot_turn_log ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(walked, vec![vec!["s", "hi", "q"], vec!["q"]]);
    let name: Option<String> = sqlx::query_scalar(
        "SELECT variables ->> 'name' FROM wabot_turn_log ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(name.as_deref(), Some("Zed"));
}

#[tokio::test]
async fn metrics_can_have_a_listener_of_their_own() {
    let app =
        spawn_app_with(|c| c.server.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let main = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), 404, "not on the main listener");
    let own = app.metrics_address.clone().expect("a metrics listener");
    let scraped = scrape(&app.client, &own).await;
    assert!(scraped.0.keys().any(|k| k.starts_with("wabot_")));
}

/// The Grafana dashboard under docs/ asks only for metrics wabot exports.
#[test]
fn the_dashboard_names_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exported = std::fs::read_to_string(root.join("src/metrics.rs")).unwrap();
    let name = regex::Regex::new(r"wabot_[a-z_]+").unwrap();
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for m in name.find_iter(expr) {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .fold(m.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
                assert!(
                    exported.contains(&format!("\"{base}\"")),
                    "panel `{}` asks for {base}, which src/metrics.rs does not export",
                    panel["title"]
                );
                asked += 1;
            }
        }
    }
    assert!(asked > 20, "{asked}");
}

/// The operator API's requests by route and status, and event deliveries by result.
#[tokio::test]
async fn api_requests_and_event_deliveries_are_counted() {
    let app = spawn_app_with(|c| {
        c.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        c.worker.enabled = true;
    })
    .await;
    let api = app.admin_address.clone().expect("the API listens");
    let before = scrape(&app.client, &app.address).await;
    let (token, _) = wabot::service::tokens::create(
        &app.pool,
        "metrics",
        &[wabot::service::tokens::Scope::Manage],
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let r = app
            .client
            .get(format!("{api}/v1/status"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = app
        .client
        .get(format!("{api}/v1/conversations/{CUSTOMER}"))
        .bearer_auth("wabot_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let after = moved(
        &app,
        &before,
        "wabot_api_requests_total{route=\"/v1/status\",status=\"200\"}",
        2.0,
    )
    .await;
    let series = "wabot_api_requests_total{route=\"/v1/conversations/{who}\",status=\"401\"}";
    assert_eq!(after.get(series) - before.get(series), 1.0);
    assert_eq!(
        after.get("wabot_api_auth_failures_total") - before.get("wabot_api_auth_failures_total"),
        1.0
    );

    // A receiver on loopback takes one event.
    let hook = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, hook).await });
    let r = app
        .client
        .post(format!("{api}/v1/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": url, "events": ["customer.opted_out"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = app
        .client
        .post(format!("{api}/v1/customers/{CUSTOMER}/opt-out"))
        .bearer_auth(&token)
        .json(&json!({"business_phone_number_id": PHONE_NUMBER_ID}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let after = moved(
        &app,
        &after,
        "wabot_event_deliveries_total{result=\"delivered\"}",
        1.0,
    )
    .await;
    assert!(after.get("wabot_event_delivery_seconds_count{result=\"delivered\"}") >= 1.0);
}
