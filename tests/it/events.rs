//! Events out, end to end: endpoints registered through the API, events written
//! with what they report, delivered to a receiver on loopback and verified with
//! the Standard Webhooks algorithm (re-implemented here from the specification);
//! a receiver that fails gets the event once it recovers, in order with the
//! conversation's later events; one given up on is visible and re-sendable.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::api::{greeter, Api};
use crate::e2e::{eventually, install_chatbot, text, CUSTOMER};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Bytes,
    /// What the receiver answered.
    status: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Requests still to answer 503.
    failures: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn fail_next(&self, n: usize) {
        *self.failures.lock().unwrap() = n;
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The accepted deliveries, as JSON.
    fn delivered(&self) -> Vec<Value> {
        self.got()
            .iter()
            .filter(|r| r.status == 200)
            .map(Received::json)
            .collect()
    }

    async fn wait_delivered(&self, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.delivered();
            if got.len() >= n || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = {
        let mut failures = r.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        }
    };
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    r.got.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
        status: status.as_u16(),
    });
    status
}

/// The Standard Webhooks verification, from the specification: the secret is
/// base64 after `whsec_`; the signed content is `id.timestamp.body`; the header
/// holds space-separated `v1,<base64 HMAC-SHA256>` signatures; the timestamp must
/// be recent.
fn verify(secret: &str, r: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let ts: i64 = r.timestamp.parse().unwrap();
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", r.id, r.timestamp).as_bytes());
    mac.update(&r.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    r.signature
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|sig| sig == expected)
}

/// Registers `url` for every event through the API; the secret.
async fn register(api: &Api, url: &str) -> String {
    let r = api
        .call(
            &reqwest::Client::new(),
            Method::POST,
            "/v1/webhooks",
            Some(&api.manage),
            Some(&json!({"url": url, "events": ["*"], "description": "test receiver"})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let answer: Value = r.json().await.unwrap();
    let secret = answer["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    secret
}

#[tokio::test]
async fn events_are_signed_as_standard_webhooks_and_written_with_what_they_report() {
    let api = Api::start().await;
    let pool = api.engine.app.pool.clone();
    let (receiver, url) = Receiver::start().await;
    let secret = register(&api, &url).await;
    install_chatbot(&pool, &greeter()).await;

    api.engine.say(text("wamid.EV1", "hi")).await;
    api.engine.replies(0, 1).await;
    let client = reqwest::Client::new();
    for path in ["pause", "resume"] {
        let r = api
            .call(
                &client,
                Method::POST,
                &format!("/v1/conversations/{CUSTOMER}/{path}"),
                Some(&api.manage),
                None,
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = api
        .call(
            &client,
            Method::POST,
            &format!("/v1/customers/{CUSTOMER}/opt-out"),
            Some(&api.manage),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);

    let got = receiver.wait_delivered(5).await;
    let types: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "message.received",
            "conversation.completed",
            "conversation.paused",
            "conversation.resumed",
            "customer.opted_out"
        ]
    );
    assert_eq!(got[0]["data"]["text"], "hi");
    assert_eq!(got[0]["data"]["customer"], CUSTOMER);
    assert!(got[0]["timestamp"].is_string());
    assert_eq!(got[4]["data"]["source"], "operator");
    for r in receiver.got() {
        assert!(r.id.starts_with("msg_"), "{}", r.id);
        assert!(verify(&secret, &r), "the signature verifies: {r:?}");
        assert!(!verify(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            &r
        ));
    }
    // Each is recorded delivered, once.
    eventually(
        &pool,
        "SELECT count(*) FROM wabot_event_outbox WHERE state = 'delivered' AND attempts = 1",
        5,
    )
    .await;
    let r = api
        .call(
            &client,
            Method::GET,
            "/v1/webhooks/deliveries?state=delivered",
            Some(&api.manage),
            None,
        )
        .await;
    let listed: Value = r.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn a_failing_receiver_gets_the_event_once_it_recovers_in_order() {
    let api = Api::start_with(|c| c.worker.events_retry_base_ms = 100).await;
    let pool = api.engine.app.pool.clone();
    let (receiver, url) = Receiver::start().await;
    let secret = register(&api, &url).await;
    install_chatbot(&pool, &greeter()).await;

    receiver.fail_next(3);
    api.engine.say(text("wamid.EV2", "first")).await;
    api.engine.replies(0, 1).await;
    // Later events of the same conversation, written while the first is failing.
    api.engine.say(text("wamid.EV3", "second")).await;
    // Its turn committed before the pause: the events follow commit order.
    api.engine.replies(1, 1).await;
    let client = reqwest::Client::new();
    let r = api
        .call(
            &client,
            Method::POST,
            &format!("/v1/conversations/{CUSTOMER}/pause"),
            Some(&api.manage),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);

    let got = receiver.wait_delivered(5).await;
    let summary: Vec<(String, Option<String>)> = got
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["data"]["text"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let s = |t: &str, x: Option<&str>| (t.to_owned(), x.map(str::to_owned));
    assert_eq!(
        summary,
        [
            s("message.received", Some("first")),
            s("conversation.completed", None),
            s("message.received", Some("second")),
            s("conversation.completed", None),
            s("conversation.paused", None),
        ]
    );
    let all = receiver.got();
    assert_eq!(all.len(), 8, "3 refused attempts, then 5 deliveries");
    assert!(all[..3]
        .iter()
        .all(|r| r.status == 503 && r.id == all[3].id));
    assert!(all.iter().all(|r| verify(&secret, r)));
    let attempts: i32 = sqlx::query_scalar(
        "SELECT attempts FROM wabot_event_outbox WHERE webhook_id = $1 AND state = 'delivered'",
    )
    .bind(&all[0].id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 4);
}

#[tokio::test]
async fn an_event_given_up_on_is_visible_and_can_be_sent_again() {
    let api = Api::start_with(|c| {
        c.worker.events_retry_base_ms = 100;
        c.worker.events_retry_secs = 1;
    })
    .await;
    let pool = api.engine.app.pool.clone();
    let (receiver, url) = Receiver::start().await;
    register(&api, &url).await;
    receiver.fail_next(usize::MAX);
    let client = reqwest::Client::new();
    let r = api
        .call(
            &client,
            Method::POST,
            &format!("/v1/customers/{CUSTOMER}/opt-out"),
            Some(&api.manage),
            Some(&json!({"business_phone_number_id": crate::helpers::PHONE_NUMBER_ID})),
        )
        .await;
    assert_eq!(r.status(), 200);
    eventually(
        &pool,
        "SELECT count(*) FROM wabot_event_outbox WHERE state = 'failed'",
        1,
    )
    .await;
    let report = wabot::service::status::report(&pool, &api.engine.app.config)
        .await
        .unwrap();
    assert_eq!(report.failing_endpoints.len(), 1);
    assert!(report.failing_endpoints[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("503"));

    receiver.fail_next(0);
    let r = api
        .call(
            &client,
            Method::GET,
            "/v1/webhooks/deliveries?state=failed",
            Some(&api.manage),
            None,
        )
        .await;
    let failed: Value = r.json().await.unwrap();
    let id = failed[0]["id"].as_i64().unwrap();
    let r = api
        .call(
            &client,
            Method::POST,
            &format!("/v1/webhooks/deliveries/{id}/resend"),
            Some(&api.manage),
            None,
        )
        .await;
    assert_eq!(r.status(), 202);
    let got = receiver.wait_delivered(1).await;
    assert_eq!(got[0]["type"], "customer.opted_out");
    eventually(
        &pool,
        "SELECT count(*) FROM wabot_event_outbox WHERE state = 'delivered'",
        1,
    )
    .await;
}

#[tokio::test]
async fn a_box_without_endpoints_writes_no_events() {
    let api = Api::start().await;
    let pool = api.engine.app.pool.clone();
    install_chatbot(&pool, &greeter()).await;
    // Let the event stage read the (empty) endpoint set first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(api.engine.app.state.ctx.events.get().is_empty());
    api.engine.say(text("wamid.EV4", "hi")).await;
    api.engine.replies(0, 1).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM wabot_event_outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 0);
}

/// Runs the built binary against `database_url`, loopback endpoints allowed.
fn wabot(database_url: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::process::Command::new(env!("CARGO_BIN_EXE_wabot"))
        .args(args)
        .current_dir(dir.path())
        .env("DATABASE_URL", database_url)
        .env("WABOT_LOG_FILTER", "off")
        .env("WABOT_DATASOURCE_ALLOWED_NETWORKS", "127.0.0.0/8")
        .env_remove("WABOT_PHONE_NUMBER_ID")
        .output()
        .expect("run wabot")
}

fn out(o: &std::process::Output) -> (bool, String, String) {
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        String::from_utf8_lossy(&o.stderr).trim().to_owned(),
    )
}

#[tokio::test]
async fn the_command_line_makes_tokens_and_endpoints() {
    let api = Api::start().await;
    let db = api.engine.app.config.database_url.clone();
    let client = reqwest::Client::new();

    let (ok, token, said) = out(&wabot(
        &db,
        &["token", "create", "--name", "cli", "--scope", "read"],
    ));
    assert!(ok, "{said}");
    assert!(
        token.starts_with("wabot_") && !token.contains(' '),
        "{token}"
    );
    assert!(said.contains("shown this once"), "{said}");
    let r = api
        .call(&client, Method::GET, "/v1/status", Some(&token), None)
        .await;
    assert_eq!(r.status(), 200);
    let (ok, listed, _) = out(&wabot(&db, &["token", "list"]));
    assert!(
        ok && listed.contains("cli") && listed.contains("read"),
        "{listed}"
    );
    assert!(!listed.contains(&token), "a token is never shown again");
    let (ok, _, said) = out(&wabot(
        &db,
        &["token", "create", "--name", "cli", "--scope", "read"],
    ));
    assert!(!ok && said.contains("exists already"), "{said}");
    let (ok, _, said) = out(&wabot(
        &db,
        &["token", "create", "--name", "x", "--scope", "admin"],
    ));
    assert!(!ok && said.contains("`admin` is not a scope"), "{said}");

    let (receiver, url) = Receiver::start().await;
    let (ok, _, said) = out(&wabot(&db, &["webhook", "add", &url, "--events", "nope"]));
    assert!(!ok && said.contains("`nope` is not an event"), "{said}");
    let (ok, secret, said) = out(&wabot(
        &db,
        &["webhook", "add", &url, "--events", "customer.opted_out"],
    ));
    assert!(ok, "{said}");
    assert!(secret.starts_with("whsec_"), "{secret}");
    // An operator's opt-out from the command line, delivered by the daemon once it
    // has read the new endpoint.
    let (ok, _, said) = out(&wabot(
        &db,
        &[
            "customer",
            "opt-out",
            CUSTOMER,
            "--business",
            crate::helpers::PHONE_NUMBER_ID,
        ],
    ));
    assert!(ok, "{said}");
    let got = receiver.wait_delivered(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["type"], "customer.opted_out");
    assert!(verify(&secret, &receiver.got()[0]));
    eventually(
        &api.engine.app.pool,
        "SELECT count(*) FROM wabot_event_outbox WHERE state = 'delivered'",
        1,
    )
    .await;
    let (ok, lines, said) = out(&wabot(&db, &["webhook", "deliveries", "--json"]));
    assert!(ok, "{said}");
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["state"], "delivered");
    assert_eq!(first["type"], "customer.opted_out");
    let (ok, listed, _) = out(&wabot(&db, &["webhook", "list"]));
    assert!(ok && listed.contains(&url), "{listed}");
    assert!(!listed.contains(&secret), "the secret is shown once");

    let (ok, _, said) = out(&wabot(&db, &["token", "revoke", "cli"]));
    assert!(ok, "{said}");
    let r = api
        .call(&client, Method::GET, "/v1/status", Some(&token), None)
        .await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_send_that_fails_for_good_is_a_message_failed_event() {
    let api = Api::start().await;
    let pool = api.engine.app.pool.clone();
    let (receiver, url) = Receiver::start().await;
    register(&api, &url).await;
    install_chatbot(&pool, &greeter()).await;
    api.engine
        .graph
        .fail_next(1, crate::support_graph::Failure::Undeliverable);
    api.engine.say(text("wamid.EV5", "hi")).await;
    let got = receiver.wait_delivered(3).await;
    let failed = got
        .iter()
        .find(|e| e["type"] == "message.failed")
        .unwrap_or_else(|| panic!("no message.failed among {got:?}"));
    assert_eq!(failed["data"]["text"], "Hello there");
    assert_eq!(failed["data"]["status"], "failed");
    assert_eq!(failed["data"]["customer"], CUSTOMER);
    assert!(failed["data"]["error"].is_object(), "{failed}");
}

#[tokio::test]
async fn the_customers_own_words_are_events_in_order() {
    let api = Api::start().await;
    let pool = api.engine.app.pool.clone();
    let (receiver, url) = Receiver::start().await;
    register(&api, &url).await;
    // A menu that waits for an answer: a handover keyword counts during a run.
    let bot = json!({"name": "Helpdesk", "metadata": {"handoverKeywords": ["human"]},
    "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "q", "type": "question", "data": {"label": "Menu", "questionType": "buttons",
            "content": "How can we help?", "buttons": [{"id": "faq", "title": "FAQ"}]}},
        {"id": "faq", "type": "message", "data": {"label": "FAQ", "content": "See our FAQ."}}
    ],
    "edges": [
        {"id": "e1", "source": "s", "target": "q"},
        {"id": "e2", "source": "q", "target": "faq", "sourceHandle": "faq"},
        {"id": "e3", "source": "q", "target": "faq", "sourceHandle": "default"}
    ]});
    install_chatbot(&pool, &bot).await;
    for (n, word) in ["STOP", "START", "hi", "human"].iter().enumerate() {
        api.engine.say(text(&format!("wamid.EW{n}"), word)).await;
        // One at a time: each answer (a confirmation, the menu) before the next; a
        // request for a person has none (the chatbot has no handover message).
        if n < 3 {
            api.engine.replies(n, 1).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let wanted = [
        "customer.opted_out",
        "customer.opted_in",
        "conversation.handover_requested",
    ];
    loop {
        let types: Vec<String> = receiver
            .delivered()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .filter(|t| wanted.contains(&t.as_str()))
            .collect();
        if types.len() == 3 {
            assert_eq!(types, wanted);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{types:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = receiver.delivered();
    let out = got
        .iter()
        .find(|e| e["type"] == "customer.opted_out")
        .unwrap();
    assert_eq!(out["data"]["source"], "keyword");
    assert_eq!(out["data"]["word"], "STOP");
    let asked = got
        .iter()
        .find(|e| e["type"] == "conversation.handover_requested")
        .unwrap();
    assert_eq!(asked["data"]["source"], "keyword");
}

#[tokio::test]
async fn a_campaign_started_through_the_api_finishes_and_reports_it() {
    let api = Api::start().await;
    let (receiver, url) = Receiver::start().await;
    let client = reqwest::Client::new();
    let r = api
        .call(
            &client,
            Method::POST,
            "/v1/webhooks",
            Some(&api.manage),
            Some(&json!({"url": url, "events": ["campaign.finished"]})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let secret = r.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::api::sync_templates(&api).await;

    // One line wrong: refused whole, naming it; nothing stored.
    let bad = json!({"template": "appointment_reminder", "language": "en_US", "recipients": [
        {"to": "+905550000001", "parameters": {"first_name": "A", "day": "Friday"}},
        {"to": "nope", "parameters": {"first_name": "B", "day": "Friday"}},
        {"to": "905550000003", "parameters": {"first_name": "C"}}]});
    let r = api
        .call(
            &client,
            Method::POST,
            "/v1/campaigns",
            Some(&api.send),
            Some(&bad),
        )
        .await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    let errors: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{problem}");
    assert!(errors[0].starts_with("recipients[1]:"), "{problem}");
    assert!(
        errors[1].starts_with("recipients[2] (+905550000003):") && errors[1].contains("day"),
        "{problem}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM wabot_campaigns")
        .fetch_one(&api.engine.app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    let numbers: Vec<String> = (0..5).map(|i| format!("90555000{i:04}")).collect();
    let mut recipients: Vec<Value> = numbers
        .iter()
        .map(|n| json!({"to": format!("+{n}"), "parameters": {"first_name": "Ayşe", "day": "Friday"}}))
        .collect();
    // Listed twice: sent once.
    recipients.push(recipients[0].clone());
    let body = json!({"template": "appointment_reminder", "language": "en_US",
                      "recipients": recipients, "rate": 50});
    let r = api
        .call(
            &client,
            Method::POST,
            "/v1/campaigns",
            Some(&api.send),
            Some(&body),
        )
        .await;
    assert_eq!(r.status(), 201);
    let started: Value = r.json().await.unwrap();
    assert_eq!(started["recipients"], 5, "{started}");
    assert_eq!(started["repeated"], 1, "{started}");
    let id = started["id"].as_i64().unwrap();

    let sent = api.engine.replies(0, 5).await;
    let mut to: Vec<String> = sent
        .iter()
        .map(|r| r.body["to"].as_str().unwrap().to_owned())
        .collect();
    to.sort();
    assert_eq!(to, numbers);

    let got = receiver.wait_delivered(1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "campaign.finished");
    assert_eq!(got[0]["data"]["campaign_id"], id);
    assert_eq!(got[0]["data"]["template"], "appointment_reminder");
    assert_eq!(got[0]["data"]["recipients"], 5);
    assert!(verify(&secret, &receiver.got()[0]));

    let status: Value = api
        .call(
            &client,
            Method::GET,
            &format!("/v1/campaigns/{id}"),
            Some(&api.read),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "finished", "{status}");
    assert_eq!(status["total"], 5, "{status}");
    assert_eq!(status["pending"], 0, "{status}");
    assert!(status["finishedAt"].is_string(), "{status}");
    // Once: the finished campaign is not finished again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.delivered().len(), 1);
}
