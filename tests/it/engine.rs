//! The engine without a database: sample chatbots compile, scripted conversations
//! walk every branch kind, rest_api nodes call a real loopback server.

use std::path::{Path, PathBuf};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use uuid::Uuid;
use wabot::egress::rest_api::{HttpOptions, ReqwestHttp};
use wabot::engine::context::reason;
use wabot::engine::{
    compile_json, run_turn, CompiledChatbot, Context, ContextStatus, Customer, EngineLimits, Event,
    Inbound, Outgoing, ValidationError,
};

use crate::helpers;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/chatbots")
        .join(name)
}

pub fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn sample(name: &str) -> Value {
    read_json(&helpers::shared(&format!(
        "whatsapp-builder/chatbots/{name}"
    )))
}

fn compiled(doc: &Value) -> CompiledChatbot {
    match compile_json(doc) {
        Ok((bot, _)) => bot,
        Err(errors) => panic!("does not compile: {errors:?}"),
    }
}

fn errors_of(doc: &Value) -> Vec<ValidationError> {
    match compile_json(doc) {
        Ok(_) => panic!("compiled, but errors were expected"),
        Err(errors) => errors,
    }
}

/// A scripted conversation with one chatbot.
pub struct Chat {
    pub bot: CompiledChatbot,
    pub ctx: Context,
    pub now: DateTime<Utc>,
    pub http: ReqwestHttp,
    pub limits: EngineLimits,
    pub restart: bool,
    pub deadline: Option<DateTime<Utc>>,
}

impl Chat {
    pub fn new(doc: &Value) -> Chat {
        let bot = compiled(doc);
        let customer = Customer {
            phone: "905551112233".into(),
            name: Some("Ayşe".into()),
        };
        let ctx = Context::start(
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            &bot,
            &customer,
        );
        let http = ReqwestHttp::with_options(HttpOptions {
            allowed_networks: vec!["127.0.0.0/8".parse().expect("network")],
            allow_all: false,
            max_response_bytes: 1 << 20,
        })
        .expect("http client");
        Chat {
            bot,
            ctx,
            now: Utc
                .with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
                .single()
                .expect("time"),
            http,
            limits: EngineLimits::default(),
            restart: false,
            deadline: None,
        }
    }

    pub fn set(mut self, name: &str, value: Value) -> Chat {
        self.ctx.variables.insert(name.to_owned(), value);
        self
    }

    pub async fn event(&mut self, event: Event) -> Vec<Outgoing> {
        let result = run_turn(
            &self.bot,
            self.ctx.clone(),
            event,
            self.now,
            &self.http,
            &self.limits,
        )
        .await;
        self.ctx = result.context;
        self.restart = result.restart;
        self.deadline = result.wait_deadline;
        result.sends
    }

    pub async fn start(&mut self) -> Vec<Outgoing> {
        self.event(Event::ConversationStarted).await
    }

    pub async fn say(&mut self, text: &str) -> Vec<Outgoing> {
        self.event(Inbound::Text { body: text.into() }.into_event())
            .await
    }

    pub async fn click(&mut self, id: &str) -> Vec<Outgoing> {
        self.event(
            Inbound::ButtonReply {
                id: id.into(),
                title: id.into(),
            }
            .into_event(),
        )
        .await
    }

    pub async fn pick(&mut self, id: &str) -> Vec<Outgoing> {
        self.event(
            Inbound::ListReply {
                id: id.into(),
                title: id.into(),
            }
            .into_event(),
        )
        .await
    }

    pub fn var(&self, path: &str) -> Option<Value> {
        wabot::engine::vars::lookup(&self.ctx.variables, path).cloned()
    }
}

/// The text of each message: a text body, or the body of an interactive one.
pub fn bodies(sends: &[Outgoing]) -> Vec<String> {
    sends
        .iter()
        .map(|s| match s {
            Outgoing::Text { body }
            | Outgoing::Buttons { body, .. }
            | Outgoing::List { body, .. }
            | Outgoing::Flow { body, .. } => body.clone(),
        })
        .collect()
}

fn list_row_ids(send: &Outgoing) -> Vec<String> {
    match send {
        Outgoing::List { sections, .. } => sections
            .iter()
            .flat_map(|s| s.rows.iter().map(|r| r.id.clone()))
            .collect(),
        other => panic!("expected a list, got {other:?}"),
    }
}

/// A loopback orders service: `/orders?email=` (bearer `demo-token`) answers
/// `{data: [...]}`; any other path segment before `/orders` answers 500.
pub async fn spawn_orders_api() -> String {
    async fn orders(
        headers: HeaderMap,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> (StatusCode, Json<Value>) {
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer demo-token") {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "no token"})),
            );
        }
        let count = match q.get("email").map(String::as_str) {
            Some("ada@example.com") => 2,
            Some("many@example.com") => 20,
            _ => 0,
        };
        let data: Vec<Value> = (1..=count)
            .map(|i| json!({"id": format!("ord-{i}"), "title": format!("Order #{i}"), "status": "shipped"}))
            .collect();
        (StatusCode::OK, Json(json!({"data": data})))
    }
    async fn broken() -> (StatusCode, Json<Value>) {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"message": "database is down"})),
        )
    }
    async fn echo(State(()): State<()>, Json(body): Json<Value>) -> Json<Value> {
        Json(json!({"received": body}))
    }
    let app = Router::new()
        .route("/api/orders", get(orders))
        .route("/broken/orders", get(broken))
        .route("/echo", post(echo))
        .with_state(());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    format!("http://{address}")
}

#[tokio::test]
async fn every_sample_chatbot_compiles_without_errors() {
    let dir = helpers::shared("whatsapp-builder/chatbots");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("sample directory") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let doc = read_json(&path);
        if let Err(errors) = compile_json(&doc) {
            panic!("{} does not compile: {errors:?}", path.display());
        }
        count += 1;
    }
    assert!(count >= 5, "only {count} sample chatbots found");
}

#[tokio::test]
async fn a_button_reply_follows_its_edge_and_the_conversation_completes() {
    let mut chat = Chat::new(&sample("sample-chatbot.json"));
    let sends = chat.start().await;
    assert_eq!(sends.len(), 2);
    assert!(
        matches!(&sends[1], Outgoing::Buttons { buttons, .. } if buttons.len() == 3 && buttons[1].id == "btn_price")
    );
    assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
    assert_eq!(chat.ctx.current_node_id, "main-menu");

    let sends = chat.click("btn_price").await;
    let texts = bodies(&sends);
    assert!(texts[0].starts_with("Fiyat Bilgisi"), "{texts:?}");
    assert!(texts[1].starts_with("Bizi tercih"), "{texts:?}");
    assert_eq!(chat.ctx.status, ContextStatus::Completed);
    assert!(!chat.ctx.is_active);
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::FLOW_COMPLETED)
    );
    assert_eq!(chat.ctx.completed_at, Some(chat.now));
    assert_eq!(chat.var("menu_selection"), Some(json!("btn_price")));
    assert_eq!(chat.var("question_1.response"), Some(json!("btn_price")));
    assert_eq!(
        chat.ctx.node_history,
        [
            "start-1",
            "welcome-msg",
            "main-menu",
            "price-response",
            "goodbye-msg"
        ]
    );
    assert_eq!(chat.ctx.node_outputs["main-menu"]["buttonId"], "btn_price");

    // A finished context takes no more turns; the worker starts a new one.
    assert!(chat.say("hello again").await.is_empty());
}

#[tokio::test]
async fn typed_text_at_a_buttons_prompt_follows_the_default_edge() {
    let mut chat = Chat::new(&sample("restaurant-reservation-bot.json"));
    chat.start().await;
    chat.say("Ada Lovelace").await;
    assert_eq!(chat.ctx.current_node_id, "question-2");
    let sends = chat.say("five of us").await;
    assert_eq!(
        bodies(&sends),
        ["What date would you like to reserve? (YYYY-MM-DD format)"]
    );
    assert_eq!(chat.var("question_2.response"), Some(json!("five of us")));
    assert_eq!(chat.var("question_1.response"), Some(json!("Ada Lovelace")));
}

#[tokio::test]
async fn a_list_pick_and_a_true_condition_send_the_flow_and_its_reply_resumes() {
    let mut chat = Chat::new(&sample("00-ana-demo-bot.json"));
    chat.start().await;
    let sends = chat.click("btn_demo").await;
    assert!(
        matches!(&sends[0], Outgoing::List { sections, button, .. } if sections.len() == 3 && button == "Demoları Görüntüle")
    );
    let sends = chat.pick("demo_berber").await;
    let Outgoing::Flow {
        flow_token,
        flow_id,
        screen,
        ..
    } = &sends[0]
    else {
        panic!("expected a flow message, got {sends:?}");
    };
    assert_eq!(flow_id, "BERBER_FLOW_ID");
    assert_eq!(screen.as_deref(), Some("BERBER_SECIM"));
    assert_eq!(flow_token, &format!("{}:berber_flow", chat.ctx.id));
    assert_eq!(chat.ctx.status, ContextStatus::WaitingFlow);
    assert_eq!(chat.ctx.node_outputs["condition_demo"]["data"], true);

    let response = json!({"flow_token": flow_token, "berber_name": "Mehmet", "appointment_date": "2026-12-01",
                          "appointment_time": "10:00", "service": "Sakal", "appointment_id": "A17"});
    let sends = chat
        .event(
            Inbound::FlowReply {
                response_json: response.to_string(),
            }
            .into_event(),
        )
        .await;
    let text = &bodies(&sends)[0];
    assert!(
        text.contains("Berber: Mehmet") && text.contains("#A17"),
        "{text}"
    );
    assert_eq!(chat.var("flow_1.response.service"), Some(json!("Sakal")));
    assert_eq!(chat.ctx.status, ContextStatus::Completed);
}

#[tokio::test]
async fn a_false_condition_takes_the_false_edge() {
    let mut chat = Chat::new(&sample("00-ana-demo-bot.json"));
    chat.start().await;
    chat.click("btn_demo").await;
    let sends = chat.pick("demo_klinik").await;
    assert_eq!(
        bodies(&sends)[0],
        "Seçtiğiniz demo: demo_klinik\n\nBu demo için ilgili chatbot başlatılıyor..."
    );
    assert_eq!(chat.ctx.node_outputs["condition_demo"]["data"], false);
}

#[tokio::test]
async fn a_flow_reply_for_another_node_is_ignored() {
    let mut chat = Chat::new(&sample("strapi-management-chatbot.json"));
    chat.start().await;
    chat.click("btn_stock").await;
    let stale = json!({"flow_token": format!("{}:price-flow", chat.ctx.id)});
    assert!(chat
        .event(Event::FlowReply {
            flow_token: stale["flow_token"].as_str().map(Into::into),
            response: stale
        })
        .await
        .is_empty());
    assert_eq!(chat.ctx.status, ContextStatus::WaitingFlow);
    let sends = chat
        .event(Event::FlowReply {
            flow_token: None,
            response: json!({"sku": "X1"}),
        })
        .await;
    assert_eq!(bodies(&sends).len(), 2);
    assert_eq!(chat.var("stock_result"), Some(json!({"sku": "X1"})));
}

#[tokio::test]
async fn rest_api_success_feeds_a_dynamic_list_with_nested_paths() {
    let base = spawn_orders_api().await;
    let mut chat = Chat::new(&read_json(&fixture("order-status.json")))
        .set("api_base", json!(format!("{base}/api")));
    let sends = chat.start().await;
    assert_eq!(bodies(&sends)[0], "Hello Ayşe! Let us find your orders.");
    let sends = chat.say("ada@example.com").await;
    assert_eq!(list_row_ids(&sends[0]), ["ord-1", "ord-2"]);
    assert_eq!(chat.var("rest_api_1.status"), Some(json!(200)));
    assert_eq!(chat.var("rest_api_1.error"), Some(Value::Null));
    let sends = chat.pick("ord-2").await;
    assert_eq!(
        bodies(&sends),
        ["Order ord-2 selected. Your first order is Order #1."]
    );
    assert_eq!(chat.ctx.status, ContextStatus::Completed);
}

#[tokio::test]
async fn rest_api_errors_follow_the_error_edge_with_the_message() {
    let base = spawn_orders_api().await;
    let mut chat = Chat::new(&read_json(&fixture("order-status.json")))
        .set("api_base", json!(format!("{base}/broken")));
    chat.start().await;
    let sends = chat.say("ada@example.com").await;
    assert_eq!(
        bodies(&sends),
        ["The order service failed: database is down"]
    );
    assert_eq!(chat.var("rest_api_1.status"), Some(json!(500)));
    assert_eq!(chat.ctx.node_outputs["fetch_orders"]["success"], false);
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::FLOW_COMPLETED)
    );
}

#[tokio::test]
async fn rest_api_to_a_private_address_is_refused_without_an_allowance() {
    let base = spawn_orders_api().await;
    let mut chat = Chat::new(&read_json(&fixture("order-status.json")))
        .set("api_base", json!(format!("{base}/api")));
    chat.http = ReqwestHttp::with_options(HttpOptions {
        allowed_networks: vec![],
        allow_all: false,
        max_response_bytes: 1024,
    })
    .expect("client");
    chat.start().await;
    let sends = chat.say("ada@example.com").await;
    assert!(
        bodies(&sends)[0].contains("not an allowed address"),
        "{sends:?}"
    );
}

#[tokio::test]
async fn long_dynamic_lists_page_with_navigation_rows() {
    let base = spawn_orders_api().await;
    let mut chat = Chat::new(&read_json(&fixture("order-status.json")))
        .set("api_base", json!(format!("{base}/api")));
    chat.start().await;
    let sends = chat.say("many@example.com").await;
    let rows = list_row_ids(&sends[0]);
    assert_eq!(rows.len(), 9);
    assert_eq!(rows.last().map(String::as_str), Some("__PAGE_NEXT__2"));
    let sends = chat.pick("__PAGE_NEXT__2").await;
    let rows = list_row_ids(&sends[0]);
    assert_eq!(rows.first().map(String::as_str), Some("ord-9"));
    assert!(
        rows.contains(&"__PAGE_PREV__1".to_owned()) && rows.contains(&"__PAGE_NEXT__3".to_owned())
    );
    assert_eq!(chat.var("rest_api_1.data_page"), Some(json!(2)));
    assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
    chat.pick("ord-12").await;
    assert_eq!(chat.var("question_2.response"), Some(json!("ord-12")));
}

#[tokio::test]
async fn invalid_answers_are_retried_then_the_exhausted_edge_is_taken() {
    let mut chat = Chat::new(&read_json(&fixture("order-status.json")));
    chat.start().await;
    let sends = chat.say("not an email").await;
    assert_eq!(
        bodies(&sends),
        ["That does not look like an email address. Please try again."]
    );
    assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
    let sends = chat.say("still wrong").await;
    assert_eq!(
        bodies(&sends),
        ["Sorry, I could not get a valid email address."]
    );
    assert_eq!(chat.ctx.status, ContextStatus::Completed);
    assert_eq!(chat.var("question_1.response"), None);
}

#[tokio::test]
async fn a_wait_timeout_follows_the_timeout_edge_only_after_the_deadline() {
    let mut chat = Chat::new(&read_json(&fixture("order-status.json")));
    chat.start().await;
    assert_eq!(chat.deadline, Some(chat.now + Duration::seconds(600)));
    assert!(
        chat.event(Event::WaitTimedOut).await.is_empty(),
        "early timers are ignored"
    );
    assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
    chat.now += Duration::seconds(601);
    let sends = chat.event(Event::WaitTimedOut).await;
    assert_eq!(
        bodies(&sends),
        [
            "No answer for a while, so I stop here.",
            "Write again whenever you like."
        ]
    );
    assert_eq!(chat.ctx.status, ContextStatus::Completed);
}

#[tokio::test]
async fn a_wait_without_its_own_timeout_expires_after_the_context_ttl() {
    let mut chat = Chat::new(&sample("sample-chatbot.json"));
    chat.start().await;
    let deadline = chat.deadline.expect("a deadline");
    assert_eq!(chat.ctx.expires_at, Some(deadline));
    chat.now = deadline;
    let sends = chat.say("hello?").await;
    assert!(sends.is_empty());
    assert_eq!(chat.ctx.status, ContextStatus::Expired);
    assert!(chat.restart, "the late message starts a new conversation");
}

#[tokio::test]
async fn skip_words_leave_a_question_and_a_flow_by_the_default_edge() {
    let mut chat = Chat::new(&sample("restaurant-reservation-bot.json"));
    chat.start().await;
    let sends = chat.say("  İptal ").await;
    assert_eq!(chat.ctx.current_node_id, "question-2", "{sends:?}");
    assert_eq!(chat.ctx.node_outputs["question-1"]["skipped"], true);
    assert_eq!(chat.var("question_1.response"), None);

    let mut chat = Chat::new(&sample("strapi-management-chatbot.json"));
    chat.start().await;
    chat.click("btn_price").await;
    assert!(
        chat.say("hello").await.is_empty(),
        "other text is ignored while a Flow waits"
    );
    let sends = chat.say("vazgeç").await;
    assert_eq!(
        bodies(&sends)[0],
        "✅ İşlem başarıyla tamamlandı!\n\nGüncelleme detayları kaydedildi."
    );
}

#[tokio::test]
async fn a_restart_keyword_ends_the_context_and_asks_for_a_new_one() {
    let mut chat = Chat::new(&read_json(&fixture("order-status.json")));
    chat.start().await;
    assert!(chat.say("MENU").await.is_empty());
    assert!(chat.restart);
    assert_eq!(chat.ctx.status, ContextStatus::Stopped);
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::RESTARTED)
    );
    // What the worker does next: a fresh context on the same chatbot.
    let fresh = Context::start(
        Uuid::new_v4(),
        chat.ctx.conversation_id,
        chat.ctx.chatbot_id,
        &chat.bot,
        &Customer::default(),
    );
    chat.ctx = fresh;
    let sends = chat.start().await;
    assert_eq!(
        bodies(&sends)[1],
        "What is the email address of your account?"
    );
}

#[tokio::test]
async fn the_loop_guard_stops_a_message_cycle() {
    let mut chat = Chat::new(&read_json(&fixture("ping-pong-loop.json")));
    chat.limits.max_steps_per_turn = 25;
    let sends = chat.start().await;
    assert_eq!(sends.len(), 24, "start plus 24 messages");
    assert_eq!(chat.ctx.status, ContextStatus::Completed);
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::STEP_LIMIT)
    );
}

#[tokio::test]
async fn editor_numbering_follows_kahn_order_on_branches() {
    // The customer takes branch `b`; the original executor named the last question
    // `question_2` (visit order), the editor shows `question_3`.
    let doc = json!({"name": "branches", "nodes": [
        {"id": "start", "type": "start", "data": {"label": "S"}},
        {"id": "late", "type": "question", "data": {"label": "Late", "questionType": "text", "content": "Last?"}},
        {"id": "menu", "type": "question", "data": {"label": "Menu", "questionType": "buttons", "content": "a or b",
            "buttons": [{"id": "a", "title": "A"}, {"id": "b", "title": "B"}]}},
        {"id": "api", "type": "rest_api", "data": {"label": "Api", "apiUrl": "http://127.0.0.1:9/x", "apiTimeout": 500}},
        {"id": "qa", "type": "question", "data": {"label": "QA", "questionType": "text", "content": "A?"}}
    ], "edges": [
        {"id": "e1", "source": "start", "target": "menu"},
        {"id": "e2", "source": "menu", "target": "qa", "sourceHandle": "a"},
        {"id": "e3", "source": "menu", "target": "api", "sourceHandle": "b"},
        {"id": "e4", "source": "qa", "target": "late"},
        {"id": "e5", "source": "api", "target": "late"}
    ]});
    let mut chat = Chat::new(&doc);
    let names: Vec<(String, Option<String>)> = chat
        .bot
        .nodes()
        .map(|n| (n.id.clone(), n.var_name.clone()))
        .collect();
    let name = |id: &str| {
        names
            .iter()
            .find(|(n, _)| n == id)
            .and_then(|(_, v)| v.clone())
    };
    assert_eq!(name("menu").as_deref(), Some("question_1"));
    assert_eq!(name("qa").as_deref(), Some("question_2"));
    assert_eq!(name("late").as_deref(), Some("question_3"));
    assert_eq!(name("api").as_deref(), Some("rest_api_1"));
    chat.start().await;
    chat.click("b").await;
    chat.say("done").await;
    assert_eq!(chat.var("question_3.response"), Some(json!("done")));
    assert_eq!(chat.var("question_2"), None);
}

#[tokio::test]
async fn editor_numbering_puts_nodes_in_cycles_after_kahn_order() {
    let doc = sample("multi-sector-demo-chatbot.json");
    let bot = compiled(&doc);
    let name = |id: &str| bot.find(id).and_then(|n| bot.node(n).var_name.clone());
    assert_eq!(name("demo_intro_btn").as_deref(), Some("question_1"));
    assert_eq!(name("demo_list").as_deref(), Some("question_2"));
    assert_eq!(name("end_question").as_deref(), Some("question_3"));
    assert_eq!(name("flow_berber").as_deref(), Some("flow_1"));
    assert_eq!(name("flow_emlak").as_deref(), Some("flow_5"));
}

#[tokio::test]
async fn each_bad_graph_error_names_its_node() {
    let errors = errors_of(&read_json(&fixture("bad-graph.json")));
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(
        has("node `start-a` (Start A): the chatbot has 2 start nodes"),
        "{text:#?}"
    );
    assert!(
        has("node `start-b` (Start B): the chatbot has 2 start nodes"),
        "{text:#?}"
    );
    assert!(
        has("node `menu` (Too many buttons): 4 buttons"),
        "{text:#?}"
    );
    assert!(
        has("node `menu` (Too many buttons): choice id `a` is used twice"),
        "{text:#?}"
    );
    assert!(
        has("node `long-list` (Too many rows): 11 list rows"),
        "{text:#?}"
    );
    assert!(
        has("node `empty-message` (No content): required field `content`"),
        "{text:#?}"
    );
    assert!(
        has("node `mystery` (Mystery): unknown node type `teleport`"),
        "{text:#?}"
    );
    assert!(
        has("node `no-url` (No URL): required field `apiUrl`"),
        "{text:#?}"
    );
    assert!(
        has("node `menu` (Too many buttons): edge `e2` points to node `nowhere`"),
        "{text:#?}"
    );

    let none = errors_of(
        &json!({"name": "x", "nodes": [{"id": "m", "type": "message", "data": {"label": "M", "content": "hi"}}], "edges": []}),
    );
    assert_eq!(none.len(), 1);
    assert_eq!(none[0].to_string(), "the chatbot has no start node");
}

#[tokio::test]
async fn warnings_name_unreachable_nodes_and_unused_handles() {
    let doc = json!({"name": "w", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "S"}},
        {"id": "c", "type": "condition", "data": {"label": "C", "conditionVar": "x", "conditionOp": "eq", "conditionVal": "1"}},
        {"id": "m", "type": "message", "data": {"label": "M", "content": "yes"}},
        {"id": "island", "type": "message", "data": {"label": "Island", "content": "never"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "c"},
        {"id": "e2", "source": "c", "target": "m", "sourceHandle": "true"}
    ]});
    let (_, warnings) = compile_json(&doc).expect("compiles");
    let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert!(
        text.contains(&"node `island` (Island): unreachable from the start node".to_owned()),
        "{text:?}"
    );
    assert!(
        text.contains(&"node `c` (C): no edge leaves handle `false`".to_owned()),
        "{text:?}"
    );
}

#[test]
fn inbound_messages_become_events() {
    let reply = Inbound::FlowReply {
        response_json: r#"{"flow_token":"t","a":1}"#.into(),
    }
    .into_event();
    assert_eq!(
        reply,
        Event::FlowReply {
            flow_token: Some("t".into()),
            response: json!({"flow_token": "t", "a": 1})
        }
    );
    let media = Inbound::Media {
        caption: Some("look".into()),
    }
    .into_event();
    assert_eq!(
        media,
        Event::InboundMessage {
            text: Some("look".into()),
            button_id: None,
            list_row_id: None
        }
    );
    let quick = Inbound::QuickReply {
        payload: "p".into(),
        text: "Yes".into(),
    }
    .into_event();
    assert_eq!(
        quick,
        Event::InboundMessage {
            text: Some("Yes".into()),
            button_id: Some("p".into()),
            list_row_id: None
        }
    );
}

#[tokio::test]
async fn a_flow_that_cannot_be_sent_leaves_by_its_default_edge_or_ends() {
    let mut chat = Chat::new(&sample("strapi-management-chatbot.json"));
    chat.start().await;
    chat.click("btn_stock").await;
    let sends = chat
        .event(Event::FlowSendFailed {
            error: "(#131009) flow not published".into(),
        })
        .await;
    assert_eq!(
        bodies(&sends)[0],
        "✅ İşlem başarıyla tamamlandı!\n\nGüncelleme detayları kaydedildi."
    );
    assert_eq!(
        chat.ctx.node_outputs["stock-flow"]["error"],
        "(#131009) flow not published"
    );

    let mut chat = Chat::new(&sample("00-ana-demo-bot.json"));
    chat.start().await;
    chat.click("btn_demo").await;
    chat.pick("demo_berber").await;
    // The berber flow's only edge is its default one, so the failure goes there.
    let sends = chat
        .event(Event::FlowSendFailed {
            error: "bad".into(),
        })
        .await;
    assert!(bodies(&sends)[0].starts_with("Randevunuz başarıyla"));
}
