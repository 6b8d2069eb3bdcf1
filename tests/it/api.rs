//! The operator API over real HTTP on its own listener, against real PostgreSQL and
//! the fake Graph API: every route with a token that has its scope, a missing and
//! a wrong token (401), a token without the scope (403); an idempotent send
//! repeated three times sends once; the OpenAPI document lists every route;
//! failed attempts are rate-limited per address.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;
use wabot::service::tokens::{self, Scope};

use crate::e2e::{eventually, install_chatbot, text, Engine, CUSTOMER};

/// A chatbot that greets and ends: one reply, then the run completes.
pub fn greeter() -> Value {
    json!({
        "name": "Greeter",
        "nodes": [
            {"id": "start", "type": "start", "position": {"x": 0, "y": 0},
             "data": {"type": "start", "label": "Start"}},
            {"id": "hello", "type": "message", "position": {"x": 0, "y": 100},
             "data": {"type": "message", "label": "Hello", "content": "Hello there"}}
        ],
        "edges": [{"id": "e1", "source": "start", "target": "hello"}]
    })
}

/// The daemon with its operator API on, and one token per scope.
pub struct Api {
    pub engine: Engine,
    pub base: String,
    pub read: String,
    pub send: String,
    pub manage: String,
}

impl Api {
    pub async fn start() -> Api {
        Api::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut wabot::config::Config)) -> Api {
        let engine = Engine::start_with(|c| {
            c.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
            configure(c);
        })
        .await;
        let base = engine.app.admin_address.clone().expect("the API listens");
        let pool = &engine.app.pool;
        let make = |name: &'static str, scope: Scope| async move {
            tokens::create(pool, name, &[scope]).await.unwrap().0
        };
        let read = make("reader", Scope::Read).await;
        let send = make("sender", Scope::Send).await;
        let manage = make("manager", Scope::Manage).await;
        Api {
            engine,
            base,
            read,
            send,
            manage,
        }
    }

    /// A client whose requests come from `127.0.<a>.<b>`: failed attempts are
    /// counted per address.
    pub fn client_from(a: u8, b: u8) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, a, b)))
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    pub async fn call(
        &self,
        client: &reqwest::Client,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.expect("the API answers")
    }
}

/// One route to try: how to call it, the scope it needs, and its success status.
struct Route {
    method: Method,
    /// As the OpenAPI document names it.
    template: &'static str,
    path: String,
    body: Option<Value>,
    scope: Scope,
    ok: u16,
}

fn route(
    method: Method,
    template: &'static str,
    path: String,
    body: Option<Value>,
    scope: Scope,
    ok: u16,
) -> Route {
    Route {
        method,
        template,
        path,
        body,
        scope,
        ok,
    }
}

#[tokio::test]
async fn every_route_wants_a_token_with_its_scope() {
    let api = Api::start().await;
    let pool = api.engine.app.pool.clone();
    install_chatbot(&pool, &greeter()).await;
    api.engine.say(text("wamid.API1", "hi")).await;
    api.engine.replies(0, 1).await;
    let conversation: Uuid = sqlx::query_scalar(
        "SELECT conversation_id FROM conversation_keys WHERE customer_wa_id = $1",
    )
    .bind(CUSTOMER)
    .fetch_one(&pool)
    .await
    .unwrap();
    let doc = wabot::engine::ChatbotDoc::from_json(&greeter()).unwrap();
    let bot = wabot::service::chatbots::import(&pool, &doc, false)
        .await
        .unwrap()
        .unwrap();
    // An endpoint nobody listens on, and one delivery of it given up on.
    let (endpoint, _) = wabot::service::webhooks::add(
        &pool,
        &api.engine.app.config,
        "http://127.0.0.1:9/events",
        &["customer.opted_in".to_owned()],
        None,
    )
    .await
    .unwrap()
    .unwrap();
    let delivery: i64 = sqlx::query_scalar(
        "INSERT INTO wabot_event_outbox (endpoint_id, type, payload, state, done_at) \
         VALUES ($1, 'customer.opted_in', '{}', 'failed', now()) RETURNING id",
    )
    .bind(endpoint.id)
    .fetch_one(&pool)
    .await
    .unwrap();

    // The template catalogue, and a campaign slow enough (one send per 10 s, 50
    // recipients) to be running for the control routes below.
    let sync = api
        .call(
            &reqwest::Client::new(),
            Method::POST,
            "/v1/templates/sync",
            Some(&api.manage),
            None,
        )
        .await;
    assert_eq!(sync.status(), 200, "{:?}", sync.text().await);
    let campaign = |n: usize| {
        json!({"template": "appointment_reminder", "language": "en_US", "rate": 0.1,
               "recipients": (0..n).map(|i| json!({"to": format!("+90555{i:07}"),
                   "parameters": {"first_name": format!("Customer {i}"), "day": "Friday"}}))
                   .collect::<Vec<_>>()})
    };
    let started = api
        .call(
            &reqwest::Client::new(),
            Method::POST,
            "/v1/campaigns",
            Some(&api.send),
            Some(&campaign(50)),
        )
        .await;
    assert_eq!(started.status(), 201);
    let campaign_id = started.json::<Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();

    use Method as M;
    let routes = vec![
        route(
            M::POST,
            "/v1/templates/sync",
            "/v1/templates/sync".into(),
            None,
            Scope::Manage,
            200,
        ),
        route(
            M::GET,
            "/v1/templates",
            "/v1/templates".into(),
            None,
            Scope::Read,
            200,
        ),
        route(
            M::POST,
            "/v1/campaigns",
            "/v1/campaigns".into(),
            Some(campaign(2)),
            Scope::Send,
            201,
        ),
        route(
            M::GET,
            "/v1/campaigns",
            "/v1/campaigns".into(),
            None,
            Scope::Read,
            200,
        ),
        route(
            M::GET,
            "/v1/campaigns/{id}",
            format!("/v1/campaigns/{campaign_id}"),
            None,
            Scope::Read,
            200,
        ),
        route(
            M::POST,
            "/v1/campaigns/{id}/pause",
            format!("/v1/campaigns/{campaign_id}/pause"),
            None,
            Scope::Manage,
            200,
        ),
        route(
            M::POST,
            "/v1/campaigns/{id}/resume",
            format!("/v1/campaigns/{campaign_id}/resume"),
            None,
            Scope::Manage,
            200,
        ),
        route(
            M::POST,
            "/v1/campaigns/{id}/cancel",
            format!("/v1/campaigns/{campaign_id}/cancel"),
            None,
            Scope::Manage,
            200,
        ),
        route(
            M::GET,
            "/v1/status",
            "/v1/status".into(),
            None,
            Scope::Read,
            200,
        ),
        route(
            M::GET,
            "/v1/conversations",
            "/v1/conversations?state=active".into(),
            None,
            Scope::Read,
            200,
        ),
        route(
            M::GET,
            "/v1/conversations/{who}",
            format!("/v1/conversations/{CUSTOMER}"),
            None,
            Scope::Read,
            200,
        ),
        route(
            M::POST,
            "/v1/conversations/{who}/pause",
            format!("/v1/conversations/{conversation}/pause"),
            None,
            Scope::Manage,
            200,
        ),
        route(
            M::POST,
            "/v1/conversations/{who}/resume",
            format!("/v1/conversations/{conversation}/resume"),
            None,
            Scope::Manage,
            200,
        ),
        route(
            M::POST,
            "/v1/customers/{phone}/opt-out",
            format!("/v1/customers/+{CUSTOMER}/opt-out"),
            None,
            Scope::Manage,
            200,
        ),
        route(
            M::POST,
            "/v1/customers/{phone}/opt-in",
            format!("/v1/customers/{CUSTOMER}/opt-in"),
            None,
            Scope::Manage,
            200,
        ),
        route(
            M::POST,
            "/v1/chatbots",
            "/v1/chatbots".into(),
            Some(json!({"chatbot": greeter()})),
            Scope::Manage,
            201,
        ),
        route(
            M::POST,
            "/v1/chatbots/validate",
            "/v1/chatbots/validate".into(),
            Some(greeter()),
            Scope::Read,
            200,
        ),
        route(
            M::POST,
            "/v1/chatbots/{id}/activate",
            format!("/v1/chatbots/{bot}/activate"),
            None,
            Scope::Manage,
            200,
        ),
        route(
            M::POST,
            "/v1/chatbots/{id}/deactivate",
            format!("/v1/chatbots/{bot}/deactivate"),
            None,
            Scope::Manage,
            200,
        ),
        route(
            M::GET,
            "/v1/chatbots/{id}/versions",
            format!("/v1/chatbots/{bot}/versions"),
            None,
            Scope::Read,
            200,
        ),
        route(
            M::POST,
            "/v1/replay",
            "/v1/replay".into(),
            Some(json!({"chatbot": greeter()})),
            Scope::Manage,
            200,
        ),
        route(
            M::POST,
            "/v1/messages",
            "/v1/messages".into(),
            Some(json!({"to": CUSTOMER, "text": "From the desk"})),
            Scope::Send,
            202,
        ),
        route(
            M::GET,
            "/v1/webhooks",
            "/v1/webhooks".into(),
            None,
            Scope::Manage,
            200,
        ),
        route(
            M::POST,
            "/v1/webhooks",
            "/v1/webhooks".into(),
            Some(json!({"url": "http://127.0.0.1:9/x", "events": ["*"]})),
            Scope::Manage,
            201,
        ),
        route(
            M::GET,
            "/v1/webhooks/deliveries",
            "/v1/webhooks/deliveries".into(),
            None,
            Scope::Manage,
            200,
        ),
        route(
            M::POST,
            "/v1/webhooks/deliveries/{id}/resend",
            format!("/v1/webhooks/deliveries/{delivery}/resend"),
            None,
            Scope::Manage,
            202,
        ),
        route(
            M::DELETE,
            "/v1/webhooks/{id}",
            format!("/v1/webhooks/{}", endpoint.id),
            None,
            Scope::Manage,
            204,
        ),
    ];

    for (n, r) in routes.iter().enumerate() {
        // Each route's failures from an address of its own, under the limiter's cap.
        let client = Api::client_from(1, n as u8 + 1);
        let what = format!("{} {}", r.method, r.path);
        let missing = api
            .call(&client, r.method.clone(), &r.path, None, r.body.as_ref())
            .await;
        assert_eq!(missing.status(), 401, "{what} without a token");
        assert_eq!(
            missing.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        assert!(missing.headers().contains_key("www-authenticate"), "{what}");
        let wrong = api
            .call(
                &client,
                r.method.clone(),
                &r.path,
                Some("wabot_not-a-real-token"),
                r.body.as_ref(),
            )
            .await;
        assert_eq!(wrong.status(), 401, "{what} with a wrong token");
        let lacking = match r.scope {
            Scope::Read => &api.send,
            Scope::Send | Scope::Manage => &api.read,
        };
        let forbidden = api
            .call(
                &client,
                r.method.clone(),
                &r.path,
                Some(lacking),
                r.body.as_ref(),
            )
            .await;
        assert_eq!(forbidden.status(), 403, "{what} without the scope");
        let problem: Value = forbidden.json().await.unwrap();
        assert_eq!(problem["status"], 403);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(r.scope.as_str()),
            "{problem}"
        );
        let token = match r.scope {
            Scope::Read => &api.read,
            Scope::Send => &api.send,
            Scope::Manage => &api.manage,
        };
        let answer = api
            .call(
                &client,
                r.method.clone(),
                &r.path,
                Some(token),
                r.body.as_ref(),
            )
            .await;
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        assert_eq!(status, r.ok, "{what}: {text}");
    }

    // What the calls did, as the CLI would show it.
    let transcript = api
        .call(
            &reqwest::Client::new(),
            M::GET,
            &format!("/v1/conversations/{conversation}"),
            Some(&api.manage),
            None,
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(transcript["conversation"]["id"], conversation.to_string());
    assert_eq!(transcript["handover"]["state"], "released", "{transcript}");
    let sent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE content->>'text' = 'From the desk'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sent, 1);
    let active: bool = sqlx::query_scalar("SELECT \"isActive\" FROM chatbots WHERE id = $1")
        .bind(bot)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!active, "activated, then deactivated");
    // The campaign routes did what the CLI's would.
    let status: Value = api
        .call(
            &reqwest::Client::new(),
            M::GET,
            &format!("/v1/campaigns/{campaign_id}"),
            Some(&api.read),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "cancelled", "{status}");
    assert_eq!(status["total"], 50, "{status}");
    let listed: Value = api
        .call(
            &reqwest::Client::new(),
            M::GET,
            "/v1/campaigns",
            Some(&api.read),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let again = api
        .call(
            &reqwest::Client::new(),
            M::POST,
            &format!("/v1/campaigns/{campaign_id}/resume"),
            Some(&api.manage),
            None,
        )
        .await;
    assert_eq!(again.status(), 409, "a cancelled campaign does not resume");
    let templates: Value = api
        .call(
            &reqwest::Client::new(),
            M::GET,
            "/v1/templates",
            Some(&api.read),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let reminder = templates
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "appointment_reminder" && t["language"] == "en_US")
        .unwrap_or_else(|| panic!("{templates}"));
    assert_eq!(reminder["parameters"][0], "first_name", "{reminder}");
    assert_eq!(reminder["parameters"][1], "day", "{reminder}");
    assert_eq!(reminder["status"], "APPROVED");

    let endpoints: i64 = sqlx::query_scalar("SELECT count(*) FROM wabot_event_endpoints")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(endpoints, 1, "one added, one removed");

    // The OpenAPI document: no token needed, every route above in it.
    let doc: Value = reqwest::get(format!("{}/v1/openapi.json", api.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let paths = doc["paths"].as_object().unwrap();
    let mut listed = 1; // openapi.json itself
    assert!(paths["/v1/openapi.json"]["get"].is_object());
    for r in &routes {
        let method = r.method.as_str().to_ascii_lowercase();
        let op = &paths
            .get(r.template)
            .unwrap_or_else(|| panic!("{} is not in the OpenAPI document", r.template))[&method];
        assert!(
            op.is_object(),
            "{method} {} is not in the OpenAPI document",
            r.template
        );
        assert!(op["responses"].is_object());
        listed += 1;
    }
    let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        operations, listed,
        "the document lists exactly the routes tried"
    );
}

#[tokio::test]
async fn an_idempotent_send_repeated_three_times_sends_once() {
    let api = Api::start().await;
    let pool = api.engine.app.pool.clone();
    install_chatbot(&pool, &greeter()).await;
    api.engine.say(text("wamid.API2", "hi")).await;
    api.engine.replies(0, 1).await;

    let client = reqwest::Client::new();
    let body = json!({"to": format!("+{CUSTOMER}"), "text": "Your order shipped"});
    let mut ids = Vec::new();
    for attempt in 0..3 {
        let response = client
            .post(format!("{}/v1/messages", api.base))
            .bearer_auth(&api.send)
            .header("idempotency-key", "order-42-shipped")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "attempt {attempt}");
        assert_eq!(
            response.headers().get("idempotent-replayed").is_some(),
            attempt > 0,
            "attempt {attempt}"
        );
        let answer: Value = response.json().await.unwrap();
        ids.push(answer["message_id"].as_str().unwrap().to_owned());
    }
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    let sent = api.engine.replies(1, 1).await;
    assert_eq!(sent[0].text(), Some("Your order shipped"));
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shipped = api
        .engine
        .graph
        .accepted()
        .iter()
        .filter(|r| r.text() == Some("Your order shipped"))
        .count();
    assert_eq!(shipped, 1);
    eventually(
        &pool,
        "SELECT count(*) FROM messages WHERE content->>'text' = 'Your order shipped' \
           AND status = 'sent'",
        1,
    )
    .await;

    // The same key with another request is refused, and sends nothing.
    let reused = client
        .post(format!("{}/v1/messages", api.base))
        .bearer_auth(&api.send)
        .header("idempotency-key", "order-42-shipped")
        .json(&json!({"to": CUSTOMER, "text": "Something else"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 422);
    let problem: Value = reused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:wabot:problem:idempotency-key-reused");
}

/// Syncs the template catalogue through the API.
pub async fn sync_templates(api: &Api) {
    let r = api
        .call(
            &reqwest::Client::new(),
            Method::POST,
            "/v1/templates/sync",
            Some(&api.manage),
            None,
        )
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
}

#[tokio::test]
async fn an_idempotent_template_send_repeated_three_times_sends_once() {
    let api = Api::start().await;
    let pool = api.engine.app.pool.clone();
    sync_templates(&api).await;
    let bot = install_chatbot(&pool, &greeter()).await;
    // A customer who never wrote: a template goes all the same.
    let to = "905550009999";
    let body = json!({"to": format!("+{to}"), "template": {
        "name": "appointment_reminder", "language": "en_US",
        "parameters": {"first_name": "Ayşe", "day": "Friday"},
        "placement": {"chatbot_id": bot, "node": "hello"}}});
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for attempt in 0..3 {
        let response = client
            .post(format!("{}/v1/messages", api.base))
            .bearer_auth(&api.send)
            .header("idempotency-key", "reminder-friday")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let replayed = response.headers().get("idempotent-replayed").is_some();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "attempt {attempt}: {answer}");
        assert_eq!(replayed, attempt > 0, "attempt {attempt}");
        ids.push(answer["message_id"].as_str().unwrap().to_owned());
    }
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    let sent = api.engine.replies(0, 1).await;
    assert_eq!(sent[0].body["type"], "template", "{:?}", sent[0].body);
    assert_eq!(sent[0].body["to"], to);
    assert_eq!(sent[0].body["template"]["name"], "appointment_reminder");
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.engine.graph.accepted().len(), 1);
    eventually(
        &pool,
        "SELECT count(*) FROM messages WHERE content ? 'template' AND status = 'sent'",
        1,
    )
    .await;
    // Placed: the customer's context waits at the node asked for.
    eventually(
        &pool,
        "SELECT count(*) FROM conversation_contexts WHERE \"isActive\" \
           AND \"currentNodeId\" = 'hello'",
        1,
    )
    .await;

    // The same key with another request is refused and sends nothing.
    let mut other = body.clone();
    other["template"]["parameters"]["day"] = json!("Monday");
    let reused = client
        .post(format!("{}/v1/messages", api.base))
        .bearer_auth(&api.send)
        .header("idempotency-key", "reminder-friday")
        .json(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), 422);
    let problem: Value = reused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:wabot:problem:idempotency-key-reused");

    // A template that does not fit is refused, naming the field and why.
    let mut missing = body.clone();
    missing["template"]["parameters"] = json!({"first_name": "Ayşe"});
    let refused = client
        .post(format!("{}/v1/messages", api.base))
        .bearer_auth(&api.send)
        .json(&missing)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "template", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("day"),
        "{problem}"
    );
    let mut unknown = body.clone();
    unknown["template"]["colour"] = json!("red");
    let refused = client
        .post(format!("{}/v1/messages", api.base))
        .bearer_auth(&api.send)
        .json(&unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.engine.graph.accepted().len(), 1, "nothing else sent");
}

#[tokio::test]
async fn bad_requests_get_problems_that_name_the_field() {
    let api = Api::start().await;
    let client = reqwest::Client::new();
    let post = |path: &'static str, token: String, body: Value| {
        let client = client.clone();
        let url = format!("{}{path}", api.base);
        async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
            (status, ct, r.json::<Value>().await.unwrap())
        }
    };
    let (status, ct, p) = post("/v1/messages", api.send.clone(), json!({"to": CUSTOMER})).await;
    assert_eq!((status, ct.as_str()), (422, "application/problem+json"));
    assert_eq!(p["errors"][0]["field"], "text", "{p}");
    let (status, _, p) = post(
        "/v1/messages",
        api.send.clone(),
        json!({"to": CUSTOMER, "text": 5}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(p["errors"][0]["field"], "text", "{p}");
    let (status, _, p) = post(
        "/v1/messages",
        api.send.clone(),
        json!({"to": "nobody", "text": "x"}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(p["errors"][0]["field"], "to", "{p}");
    // A customer who never wrote: no window to send in.
    let (status, _, p) = post(
        "/v1/messages",
        api.send.clone(),
        json!({"to": "15550001111", "text": "x"}),
    )
    .await;
    assert_eq!(status, 404, "{p}");
    let (status, _, p) = post(
        "/v1/webhooks",
        api.manage.clone(),
        json!({"url": "ftp://example.com", "events": ["*"]}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(p["errors"][0]["field"], "url", "{p}");
    let (status, _, p) = post(
        "/v1/webhooks",
        api.manage.clone(),
        json!({"url": "http://10.1.2.3/x", "events": ["*"]}),
    )
    .await;
    assert_eq!(
        status, 422,
        "a private address is refused by the egress guard: {p}"
    );
    let (status, _, p) = post(
        "/v1/webhooks",
        api.manage.clone(),
        json!({"url": "https://example.com/x", "events": ["message.sent"]}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(p["errors"][0]["field"], "events", "{p}");
    let (status, _, p) = post(
        "/v1/chatbots",
        api.manage.clone(),
        json!({"chatbot": {"name": "Broken", "nodes": [], "edges": []}}),
    )
    .await;
    assert_eq!(status, 422, "{p}");
    assert_eq!(p["errors"][0]["field"], "chatbot", "{p}");
    // A body larger than the API takes is refused before it is read.
    let big = "x".repeat(wabot::http::admin::MAX_BODY_BYTES + 1);
    let r = client
        .post(format!("{}/v1/chatbots/validate", api.base))
        .bearer_auth(&api.read)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn failed_attempts_are_rate_limited_per_address() {
    let api = Api::start().await;
    let guesser = Api::client_from(2, 1);
    for _ in 0..wabot::http::admin::auth::MAX_FAILURES {
        let r = api
            .call(
                &guesser,
                Method::GET,
                "/v1/status",
                Some("wabot_guess"),
                None,
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    let r = api
        .call(
            &guesser,
            Method::GET,
            "/v1/status",
            Some("wabot_guess"),
            None,
        )
        .await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Even the right token waits, from that address; another address is served.
    let r = api
        .call(&guesser, Method::GET, "/v1/status", Some(&api.read), None)
        .await;
    assert_eq!(r.status(), 429);
    let other = Api::client_from(2, 2);
    let r = api
        .call(&other, Method::GET, "/v1/status", Some(&api.read), None)
        .await;
    assert_eq!(r.status(), 200);
    // The token is never in the log lines, and only its hash in the database.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM wabot_api_tokens WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
    )
    .bind(&api.read)
    .fetch_one(&api.engine.app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 1);
    // A revoked token is refused.
    wabot::store::tokens::revoke(&api.engine.app.pool, "reader")
        .await
        .unwrap()
        .unwrap();
    let r = api
        .call(&other, Method::GET, "/v1/status", Some(&api.read), None)
        .await;
    assert_eq!(r.status(), 401);
}
