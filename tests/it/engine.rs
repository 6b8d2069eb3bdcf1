//! The engine without a database: the fixture chatbots compile, scripted
//! conversations walk every branch kind, rest_api nodes call a real loopback server.

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
    read_json(&fixture(name))
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
            ..Customer::default()
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
    sends.iter().map(|s| s.text().to_owned()).collect()
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

/// The chatbot files in `dir` (none when it does not exist).
fn chatbot_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn every_fixture_chatbot_compiles_without_errors() {
    let fixtures: Vec<PathBuf> = chatbot_files(&fixture(""))
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("bad-"))
        })
        .collect();
    assert!(fixtures.len() >= 8, "only {} fixtures", fixtures.len());
    // WhatsApp Builder's own chatbots too, when the reference material is beside the
    // checkout.
    let shared = helpers::shared_if_present("whatsapp-builder/chatbots")
        .map(|dir| chatbot_files(&dir))
        .unwrap_or_default();
    for path in fixtures.iter().chain(&shared) {
        if let Err(errors) = compile_json(&read_json(path)) {
            panic!("{} does not compile: {errors:?}", path.display());
        }
    }
}

#[tokio::test]
async fn the_fixtures_exercise_every_node_kind_and_question_type() {
    let mut kinds = std::collections::BTreeSet::new();
    for path in chatbot_files(&fixture("")) {
        let doc = read_json(&path);
        let doc = doc.get("chatbot").unwrap_or(&doc);
        for node in doc["nodes"].as_array().expect("nodes") {
            let kind = node["type"].as_str().unwrap_or_default().to_owned();
            if kind == "question" {
                kinds.insert(format!(
                    "question/{}",
                    node["data"]["questionType"].as_str().unwrap_or_default()
                ));
            }
            kinds.insert(kind);
        }
    }
    for kind in [
        "start",
        "message",
        "question",
        "question/text",
        "question/buttons",
        "question/list",
        "question/location",
        "condition",
        "whatsapp_flow",
        "rest_api",
        "google_calendar",
    ] {
        assert!(
            kinds.contains(kind),
            "no fixture has a `{kind}` node: {kinds:?}"
        );
    }
}

#[tokio::test]
async fn a_button_reply_follows_its_edge_and_the_conversation_completes() {
    let mut chat = Chat::new(&sample("support-menu.json"));
    let sends = chat.start().await;
    assert_eq!(sends.len(), 2);
    assert!(
        matches!(&sends[1], Outgoing::Buttons { buttons, .. } if buttons.len() == 3 && buttons[1].id == "btn_prices")
    );
    assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
    assert_eq!(chat.ctx.current_node_id, "menu");

    let sends = chat.click("btn_prices").await;
    let texts = bodies(&sends);
    assert!(texts[0].starts_with("Prices: bread"), "{texts:?}");
    assert!(texts[1].starts_with("Thank you for writing"), "{texts:?}");
    assert_eq!(chat.ctx.status, ContextStatus::Completed);
    assert!(!chat.ctx.is_active);
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::FLOW_COMPLETED)
    );
    assert_eq!(chat.ctx.completed_at, Some(chat.now));
    assert_eq!(chat.var("menu_selection"), Some(json!("btn_prices")));
    assert_eq!(chat.var("question_1.response"), Some(json!("btn_prices")));
    assert_eq!(
        chat.ctx.node_history,
        ["start", "welcome", "menu", "answer-prices", "goodbye"]
    );
    assert_eq!(chat.ctx.node_outputs["menu"]["buttonId"], "btn_prices");

    // A finished context takes no more turns; the worker starts a new one.
    assert!(chat.say("hello again").await.is_empty());
}

#[tokio::test]
async fn typed_text_at_a_buttons_prompt_follows_the_default_edge() {
    let mut chat = Chat::new(&sample("table-booking.json"));
    chat.start().await;
    chat.say("Ada Lovelace").await;
    assert_eq!(chat.ctx.current_node_id, "ask-size");
    let sends = chat.say("five of us").await;
    assert_eq!(bodies(&sends), ["Which day would you like? (YYYY-MM-DD)"]);
    assert_eq!(chat.var("question_2.response"), Some(json!("five of us")));
    assert_eq!(chat.var("question_1.response"), Some(json!("Ada Lovelace")));
}

/// The sample menu with changes to its `menu` node's data and extra nodes and edges.
fn support_menu_with(data: Value, nodes: Vec<Value>, edges: Vec<Value>) -> Value {
    let mut doc = sample("support-menu.json");
    for node in doc["nodes"].as_array_mut().expect("nodes") {
        if node["id"] == "menu" {
            for (key, value) in data.as_object().expect("an object") {
                node["data"][key] = value.clone();
            }
        }
    }
    doc["nodes"].as_array_mut().expect("nodes").extend(nodes);
    doc["edges"].as_array_mut().expect("edges").extend(edges);
    doc
}

/// A node that tells the customer a person will answer, for `exhausted` edges.
fn human_node() -> Value {
    json!({"id": "human", "type": "message", "data": {"type": "message", "label": "Human",
        "content": "A person from the bakery will write to you soon."}})
}

#[tokio::test]
async fn typed_text_at_a_menu_without_a_default_edge_asks_again_then_ends_with_a_reason() {
    let mut chat = Chat::new(&sample("support-menu.json"));
    let asked = chat.start().await.pop().expect("the menu");
    assert!(matches!(asked, Outgoing::Buttons { .. }), "{asked:?}");

    // WhatsApp Builder completes the context here without a word: classified as
    // WhatsApp Builder's defect (docs/chatbot-fields.md, conformance). wabot re-sends
    // the menu, twice (the default retry limit).
    for retry in 1..=2 {
        let sends = chat.say("hi").await;
        assert_eq!(sends, std::slice::from_ref(&asked), "retry {retry}");
        assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
        assert_eq!(chat.ctx.current_node_id, "menu");
        assert!(chat.deadline.is_some(), "the wait starts again");
        assert_eq!(chat.ctx.variables["__wabot"]["retries"], retry);
    }
    assert_eq!(chat.var("question_1.response"), None, "nothing is stored");

    let sends = chat.say("hello?").await;
    assert!(sends.is_empty(), "{sends:?}");
    assert_eq!(chat.ctx.status, ContextStatus::Completed);
    assert!(!chat.ctx.is_active);
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::NO_PATH_FOR_TYPED_TEXT)
    );
    assert_eq!(reason::NO_PATH_FOR_TYPED_TEXT, "no_path_for_typed_text");
    assert_eq!(chat.ctx.node_history, ["start", "welcome", "menu"]);
    let output = &chat.ctx.node_outputs["menu"];
    assert_eq!(output["success"], false);
    assert_eq!(output["error"], "no_path_for_typed_text");
    assert_eq!(output["userResponse"], "hello?");
}

#[tokio::test]
async fn an_invalid_choice_message_is_sent_before_the_question_again() {
    let doc = support_menu_with(
        json!({"invalidChoiceMessage": "Sorry {{customer_name}}, please tap one of the buttons."}),
        vec![],
        vec![],
    );
    let mut chat = Chat::new(&doc);
    let asked = chat.start().await.pop().expect("the menu");
    let sends = chat.say("prices please").await;
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert_eq!(
        sends[0],
        Outgoing::Text {
            body: "Sorry Ayşe, please tap one of the buttons.".into()
        }
    );
    assert_eq!(sends[1], asked);

    // A choice after a re-ask is an ordinary answer, and the count starts over.
    let sends = chat.click("btn_team").await;
    assert!(bodies(&sends)[0].starts_with("About us:"), "{sends:?}");
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::FLOW_COMPLETED)
    );
    assert_eq!(chat.var("question_1.response"), Some(json!("btn_team")));
    assert_eq!(chat.ctx.node_outputs["menu"]["buttonId"], "btn_team");
    assert!(chat.ctx.variables["__wabot"].get("retries").is_none());
}

#[tokio::test]
async fn past_the_retry_limit_typed_text_follows_the_exhausted_edge() {
    let exhausted =
        json!({"id": "x1", "source": "menu", "target": "human", "sourceHandle": "exhausted"});
    let doc = support_menu_with(
        json!({"invalidChoiceMessage": "Please tap a button."}),
        vec![human_node()],
        vec![exhausted.clone()],
    );
    let mut chat = Chat::new(&doc);
    chat.start().await;
    assert_eq!(chat.say("one").await.len(), 2);
    assert_eq!(chat.say("two").await.len(), 2);
    let sends = chat.say("three").await;
    assert_eq!(
        bodies(&sends),
        ["A person from the bakery will write to you soon."]
    );
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::FLOW_COMPLETED)
    );
    assert_eq!(chat.ctx.node_history, ["start", "welcome", "menu", "human"]);
    assert_eq!(
        chat.ctx.node_outputs["menu"]["error"],
        "no_path_for_typed_text"
    );

    // `validation.maxRetries` is the limit here too: 0 leaves at the first typed text.
    let doc = support_menu_with(
        json!({"validation": {"maxRetries": 0}}),
        vec![human_node()],
        vec![exhausted],
    );
    let mut chat = Chat::new(&doc);
    chat.start().await;
    assert_eq!(
        bodies(&chat.say("hi").await),
        ["A person from the bakery will write to you soon."]
    );
}

#[tokio::test]
async fn typed_text_at_a_menu_with_a_default_edge_follows_it_as_before() {
    // Conformant with WhatsApp Builder (docs/chatbot-fields.md): the text is the answer
    // and the default edge is followed; invalidChoiceMessage plays no part.
    let doc = support_menu_with(
        json!({"invalidChoiceMessage": "Please tap a button."}),
        vec![],
        vec![json!({"id": "d1", "source": "menu", "target": "goodbye"})],
    );
    let mut chat = Chat::new(&doc);
    chat.start().await;
    let sends = chat.say("hi").await;
    assert_eq!(
        bodies(&sends),
        ["Thank you for writing to us! Write again any time."]
    );
    assert_eq!(chat.var("menu_selection"), Some(json!("hi")));
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::FLOW_COMPLETED)
    );
}

#[tokio::test]
async fn skip_and_restart_words_at_a_menu_without_a_default_edge_are_not_asked_again() {
    let mut chat = Chat::new(&sample("support-menu.json"));
    let asked = chat.start().await.pop().expect("the menu");
    let sends = chat.say("skip").await;
    assert!(!sends.contains(&asked), "{sends:?}");
    assert_eq!(chat.ctx.node_outputs["menu"]["skipped"], true);
    // No `default` edge: the run ends; no choice the customer never made is taken
    // (WhatsApp Builder's defect: it follows the first edge, the opening hours).
    assert!(sends.is_empty(), "{sends:?}");
    assert_eq!(chat.ctx.completion_reason.as_deref(), Some(reason::SKIPPED));
    // With a `default` edge, a skip word follows it.
    let mut doc = sample("support-menu.json");
    doc["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "d", "source": "menu", "target": "goodbye", "sourceHandle": "default"}));
    let mut chat = Chat::new(&doc);
    chat.start().await;
    let sends = chat.say("cancel").await;
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::FLOW_COMPLETED)
    );

    let mut doc = sample("support-menu.json");
    doc["metadata"] = json!({"restartKeywords": ["menu"]});
    let mut chat = Chat::new(&doc);
    chat.start().await;
    assert!(chat.say("Menu").await.is_empty());
    assert!(chat.restart);
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::RESTARTED)
    );
}

#[tokio::test]
async fn a_list_without_a_default_edge_and_replies_to_older_messages_are_asked_again() {
    let doc = json!({"name": "days", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "S"}},
        {"id": "q", "type": "question", "data": {"label": "Day", "questionType": "list",
            "content": "Pick a day", "listButtonText": "Days",
            "invalidChoiceMessage": "Please pick a day from the list.",
            "listSections": [{"title": "Days", "rows": [
                {"id": "mon", "title": "Monday"}, {"id": "tue", "title": "Tuesday"}]}]}},
        {"id": "size", "type": "question", "data": {"label": "Size", "questionType": "buttons",
            "content": "Which size?", "buttons": [{"id": "s", "title": "Small"}, {"id": "l", "title": "Large"}]}},
        {"id": "m", "type": "message", "data": {"label": "M", "content": "{{question_1.response}}, {{question_2.response}}"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "q"},
        {"id": "e2", "source": "q", "target": "size", "sourceHandle": "mon"},
        {"id": "e3", "source": "q", "target": "size", "sourceHandle": "tue"},
        {"id": "e4", "source": "size", "target": "m", "sourceHandle": "s"},
        {"id": "e5", "source": "size", "target": "m", "sourceHandle": "l"}
    ]});
    let mut chat = Chat::new(&doc);
    chat.start().await;
    let sends = chat.say("monday").await;
    assert_eq!(
        bodies(&sends),
        ["Please pick a day from the list.", "Pick a day"]
    );
    assert_eq!(list_row_ids(&sends[1]), ["mon", "tue"]);
    let sends = chat.pick("tue").await;
    assert_eq!(bodies(&sends), ["Which size?"]);

    // A tap on the list again, or on another message's button, is not one of this
    // question's choices: asked again, not the end (WhatsApp Builder ends silently:
    // its defect, docs/chatbot-fields.md).
    let sends = chat.pick("mon").await;
    assert_eq!(bodies(&sends), ["Which size?"]);
    assert!(matches!(&sends[0], Outgoing::Buttons { .. }), "{sends:?}");
    assert_eq!(bodies(&chat.click("xl").await), ["Which size?"]);
    assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
    assert_eq!(bodies(&chat.click("l").await), ["tue, l"]);
}

#[tokio::test]
async fn validation_warns_about_a_menu_with_no_path_for_typed_text() {
    let (_, warnings) = compile_json(&sample("support-menu.json")).expect("compiles");
    let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "node `menu` (Main menu): typed text has no path (no `default` or `exhausted` \
          edge): the question is asked again 2 times, then the conversation ends \
          (no_path_for_typed_text)"
        ]
    );

    let with_default = support_menu_with(
        json!({}),
        vec![],
        vec![json!({"id": "d1", "source": "menu", "target": "goodbye"})],
    );
    let with_exhausted = support_menu_with(
        json!({}),
        vec![human_node()],
        vec![json!({"id": "x1", "source": "menu", "target": "human", "sourceHandle": "exhausted"})],
    );
    for doc in [with_default, with_exhausted] {
        let (_, warnings) = compile_json(&doc).expect("compiles");
        assert!(warnings.is_empty(), "{warnings:?}");
    }
    // A list question warns the same, and the retry limit is the node's own.
    let doc = json!({"name": "l", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "S"}},
        {"id": "q", "type": "question", "data": {"label": "Q", "questionType": "list",
            "content": "Pick", "validation": {"maxRetries": 1},
            "listSections": [{"title": "A", "rows": [{"id": "a", "title": "A"}]}]}},
        {"id": "m", "type": "message", "data": {"label": "M", "content": "ok"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "q"},
        {"id": "e2", "source": "q", "target": "m", "sourceHandle": "a"}
    ]});
    let (_, warnings) = compile_json(&doc).expect("compiles");
    let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|w| w.starts_with(
            "node `q` (Q): typed text has no path (no `default` or `exhausted` edge): \
             the question is asked again 1 time,"
        )),
        "{text:?}"
    );
}

#[tokio::test]
async fn a_list_pick_and_a_true_condition_send_the_flow_and_its_reply_resumes() {
    let mut chat = Chat::new(&sample("demo-center.json"));
    chat.start().await;
    let sends = chat.click("btn_demos").await;
    assert!(
        matches!(&sends[0], Outgoing::List { sections, button, .. } if sections.len() == 3 && button == "See the demos")
    );
    let sends = chat.pick("demo_barber").await;
    let Outgoing::Flow {
        flow_token,
        flow_id,
        screen,
        ..
    } = &sends[0]
    else {
        panic!("expected a flow message, got {sends:?}");
    };
    assert_eq!(flow_id, "BARBER_FLOW");
    assert_eq!(screen.as_deref(), Some("PICK_BARBER"));
    assert_eq!(flow_token, &format!("{}:barber-flow", chat.ctx.id));
    assert_eq!(chat.ctx.status, ContextStatus::WaitingFlow);
    assert_eq!(chat.ctx.node_outputs["is-barber"]["data"], true);

    let response = json!({"flow_token": flow_token, "barber": "Mehmet", "day": "2026-12-01",
                          "time": "10:00", "service": "Beard", "booking_id": "A17"});
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
        text.contains("Barber: Mehmet") && text.contains("#A17"),
        "{text}"
    );
    assert_eq!(chat.var("flow_1.response.service"), Some(json!("Beard")));
    assert_eq!(chat.var("barber_booking.time"), Some(json!("10:00")));
    assert_eq!(chat.ctx.status, ContextStatus::Completed);
}

#[tokio::test]
async fn a_false_condition_takes_the_false_edge() {
    let mut chat = Chat::new(&sample("demo-center.json"));
    chat.start().await;
    chat.click("btn_demos").await;
    let sends = chat.pick("demo_clinic").await;
    assert_eq!(
        bodies(&sends)[0],
        "You picked: demo_clinic\n\nThat demo starts soon."
    );
    assert_eq!(chat.ctx.node_outputs["is-barber"]["data"], false);
}

#[tokio::test]
async fn a_flow_reply_for_another_node_is_ignored() {
    let mut chat = Chat::new(&sample("flow-desk.json"));
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
    let mut chat = Chat::new(&sample("support-menu.json"));
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
    let mut chat = Chat::new(&sample("table-booking.json"));
    chat.start().await;
    let sends = chat.say("  İptal ").await;
    assert_eq!(chat.ctx.current_node_id, "ask-size", "{sends:?}");
    assert_eq!(chat.ctx.node_outputs["ask-name"]["skipped"], true);
    assert_eq!(chat.var("question_1.response"), None);

    let mut chat = Chat::new(&sample("flow-desk.json"));
    chat.start().await;
    chat.click("btn_price").await;
    // Other text gets the Flow message again, after a word on how to go on.
    let sends = chat.say("hello").await;
    assert_eq!(
        bodies(&sends)[0],
        wabot::engine::exec::FLOW_PENDING_PROMPT,
        "{sends:?}"
    );
    assert!(matches!(sends[1], Outgoing::Flow { .. }), "{sends:?}");
    let sends = chat.say("vazgeç").await;
    assert_eq!(bodies(&sends)[0], "Done: your changes are saved.");
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
    // The message cap would stop it first; this test is about the step limit.
    chat.limits.max_sends_per_turn = 1_000;
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
    // Kahn's order reaches start, welcome, intro and about; the list, the conditions,
    // the flows and the looping question wait on each other and come after, in
    // `nodes` order.
    let doc = sample("sector-loop.json");
    let bot = compiled(&doc);
    let name = |id: &str| bot.find(id).and_then(|n| bot.node(n).var_name.clone());
    assert_eq!(name("intro").as_deref(), Some("question_1"));
    assert_eq!(name("sectors").as_deref(), Some("question_2"));
    assert_eq!(name("more").as_deref(), Some("question_3"));
    assert_eq!(name("flow-barber").as_deref(), Some("flow_1"));
    assert_eq!(name("flow-clinic").as_deref(), Some("flow_3"));
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
    let media = Inbound::Media(wabot::engine::MediaMessage {
        kind: wabot::engine::AnswerKind::Image,
        caption: Some("look".into()),
        mime_type: Some("image/jpeg".into()),
        media_id: Some("m1".into()),
        sha256: Some("s".into()),
        filename: None,
        voice: None,
        stored: None,
    })
    .into_event();
    assert_eq!(
        media,
        Event::InboundMessage {
            text: Some("look".into()),
            button_id: None,
            list_row_id: None,
            answer: Some(wabot::engine::Answer {
                kind: wabot::engine::AnswerKind::Image,
                value: json!({"type": "image", "caption": "look", "mime_type": "image/jpeg",
                              "media_id": "m1", "sha256": "s", "location": null}),
            }),
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
            list_row_id: None,
            answer: None,
        }
    );
}

#[tokio::test]
async fn a_flow_that_cannot_be_sent_leaves_by_its_default_edge_or_ends() {
    let mut chat = Chat::new(&sample("flow-desk.json"));
    chat.start().await;
    chat.click("btn_stock").await;
    let sends = chat
        .event(Event::FlowSendFailed {
            error: "(#131009) flow not published".into(),
        })
        .await;
    assert_eq!(bodies(&sends)[0], "Done: your changes are saved.");
    assert_eq!(
        chat.ctx.node_outputs["stock-flow"]["error"],
        "(#131009) flow not published"
    );

    let mut chat = Chat::new(&sample("demo-center.json"));
    chat.start().await;
    chat.click("btn_demos").await;
    chat.pick("demo_barber").await;
    // The barber flow's only edge is its default one, so the failure goes there.
    let sends = chat
        .event(Event::FlowSendFailed {
            error: "bad".into(),
        })
        .await;
    assert!(bodies(&sends)[0].starts_with("Your haircut is booked!"));
}

#[tokio::test]
async fn a_numeric_condition_with_a_non_number_operand_is_false() {
    // `age >= 18` with a typed `YES`: neither greater nor less, so the AND group fails.
    let mut chat = Chat::new(&sample("checks-and-calendar.json")).set("age", json!("YES"));
    assert_eq!(
        bodies(&chat.start().await),
        ["Sorry, you must be 18 or older."]
    );
    assert_eq!(chat.ctx.node_outputs["adult"]["data"], false);

    // `orders > 10` with `many` is false too; `age` 42 passes as a number.
    let mut chat = Chat::new(&sample("checks-and-calendar.json"))
        .set("age", json!("42"))
        .set("tier", json!("silver"))
        .set("orders", json!("many"));
    let sends = chat.start().await;
    assert_eq!(chat.ctx.node_outputs["adult"]["data"], true);
    assert_eq!(chat.ctx.node_outputs["vip"]["data"], false);
    assert_eq!(
        bodies(&sends)[0],
        "The calendar is not available: Google Calendar nodes are not supported by wabot"
    );

    let mut chat = Chat::new(&sample("checks-and-calendar.json"))
        .set("age", json!(42))
        .set("orders", json!("11"));
    let sends = chat.start().await;
    assert_eq!(bodies(&sends)[0], "Welcome back, Ayşe: you are a VIP.");
}

#[tokio::test]
async fn an_invalid_answer_to_a_buttons_question_sends_the_error_then_the_buttons_again() {
    let mut chat = Chat::new(&sample("checks-and-calendar.json")).set("age", json!(30));
    let sends = chat.start().await;
    assert!(
        matches!(sends.last(), Some(Outgoing::Buttons { .. })),
        "{sends:?}"
    );
    let asked = sends.last().cloned();

    let sends = chat.say("huge").await;
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert_eq!(bodies(&sends)[0], "Please pick Small, Medium or Large.");
    assert_eq!(sends.get(1), asked.as_ref(), "the same buttons again");
    assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);

    let sends = chat.say("medium").await;
    assert_eq!(bodies(&sends), ["Size medium it is."]);

    // Out of retries: the exhausted edge, and no question after it.
    let mut chat = Chat::new(&sample("checks-and-calendar.json")).set("age", json!(30));
    chat.start().await;
    assert_eq!(chat.say("huge").await.len(), 2);
    assert_eq!(chat.say("tiny").await.len(), 2);
    assert_eq!(
        bodies(&chat.say("giant").await),
        ["Let us leave the size for now."]
    );
}

#[tokio::test]
async fn an_invalid_answer_to_a_list_question_sends_the_list_again() {
    let doc = json!({"name": "list", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "S"}},
        {"id": "q", "type": "question", "data": {"label": "Q", "questionType": "list", "content": "Pick a day",
            "listButtonText": "Days", "listSections": [{"title": "Days", "rows": [
                {"id": "mon", "title": "Monday"}, {"id": "tue", "title": "Tuesday"}]}],
            "validation": {"type": "regex", "pattern": "^(monday|tuesday)$", "errorMessage": "Monday or Tuesday, please."}}},
        {"id": "m", "type": "message", "data": {"label": "M", "content": "See you {{question_1.response}}"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "q"},
        {"id": "e2", "source": "q", "target": "m"}
    ]});
    let mut chat = Chat::new(&doc);
    chat.start().await;
    let sends = chat.say("sunday").await;
    assert_eq!(bodies(&sends), ["Monday or Tuesday, please.", "Pick a day"]);
    assert_eq!(list_row_ids(&sends[1]), ["mon", "tue"]);
    // A text question's error is its own prompt: nothing is re-sent after it.
    let mut chat = Chat::new(&read_json(&fixture("order-status.json")));
    chat.start().await;
    assert_eq!(chat.say("not an email").await.len(), 1);
}

#[tokio::test]
async fn a_message_cycle_stops_at_the_message_cap_of_a_turn() {
    let mut chat = Chat::new(&read_json(&fixture("ping-pong-loop.json")));
    let sends = chat.start().await;
    assert_eq!(
        sends.len(),
        EngineLimits::default().max_sends_per_turn as usize
    );
    assert_eq!(sends.len(), 10, "the default cap");
    assert_eq!(bodies(&sends)[..3], ["ping", "pong", "ping"]);
    assert_eq!(chat.ctx.status, ContextStatus::Completed);
    assert!(!chat.ctx.is_active);
    assert_eq!(
        chat.ctx.completion_reason.as_deref(),
        Some(reason::SEND_LIMIT)
    );

    let mut chat = Chat::new(&read_json(&fixture("ping-pong-loop.json")));
    chat.limits.max_sends_per_turn = 3;
    assert_eq!(bodies(&chat.start().await), ["ping", "pong", "ping"]);

    // A chatbot that waits between messages is not capped across turns.
    let mut chat = Chat::new(&read_json(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/e2e/echo-loop.json"),
    ));
    chat.limits.max_sends_per_turn = 2;
    chat.start().await;
    for i in 0..5 {
        let sends = chat.say(&format!("word {i}")).await;
        assert_eq!(
            bodies(&sends),
            [format!("echo: word {i}"), "Say something".to_owned()]
        );
    }
    assert_eq!(chat.ctx.status, ContextStatus::WaitingInput);
}

#[tokio::test]
async fn validation_warns_about_a_cycle_with_no_waiting_node() {
    let (_, warnings) =
        compile_json(&read_json(&fixture("ping-pong-loop.json"))).expect("compiles");
    let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|w| w.starts_with(
            "node `ping` (Ping): nodes `ping`, `pong` form a cycle with no question or Flow to wait at"
        )),
        "{text:?}"
    );
    // A self-loop through a condition is a cycle too.
    let doc = json!({"name": "self", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "S"}},
        {"id": "again", "type": "message", "data": {"label": "Again", "content": "again"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "again"},
        {"id": "e2", "source": "again", "target": "again"}
    ]});
    let (_, warnings) = compile_json(&doc).expect("compiles");
    assert!(
        warnings
            .iter()
            .any(|w| w.to_string().contains("nodes `again` form a cycle")),
        "{warnings:?}"
    );
    // Cycles that pass through a question or a Flow wait for the customer: no warning.
    for name in ["sector-loop.json", "flow-desk.json"] {
        let (_, warnings) = compile_json(&sample(name)).expect("compiles");
        assert!(
            !warnings
                .iter()
                .any(|w| w.to_string().contains("form a cycle")),
            "{name}: {warnings:?}"
        );
    }
}

#[test]
fn skip_words_are_recognised_in_any_case_and_nothing_else_is() {
    for word in [
        "skip", "SKIP", " cancel ", "İptal", "IPTAL", "atla", "vazgec", "Vazgeç",
    ] {
        assert!(wabot::engine::is_skip_word(word), "{word}");
    }
    for text in ["", "hello", "skip it", "cancelled", "iptal et"] {
        assert!(!wabot::engine::is_skip_word(text), "{text}");
    }
}

/// Found by the `engine_turns` fuzz target (docs/fuzzing.md): a validation error
/// prompt and a timeout message were sent uncut, and Meta refuses a text over 4,096
/// characters (the send fails for good and the customer hears nothing).
#[tokio::test]
async fn long_retry_prompts_and_timeout_messages_are_cut_to_metas_text_limit() {
    let mut doc = read_json(&fixture("order-status.json"));
    let long = "ü".repeat(6000);
    for node in doc["nodes"].as_array_mut().unwrap() {
        let data = &mut node["data"];
        if data.get("validation").is_some() {
            data["validation"]["errorMessage"] = json!(long);
            data["timeoutMessage"] = json!(long);
        }
    }
    let limit = wabot::engine::limits::TEXT_BODY;
    let mut chat = Chat::new(&doc);
    chat.start().await;
    let retry = chat.say("not an email").await;
    assert_eq!(retry.len(), 1);
    chat.now += Duration::seconds(601);
    let timeout = chat.event(Event::WaitTimedOut).await;
    assert!(!timeout.is_empty());
    for body in bodies(&retry).iter().chain(&bodies(&timeout)) {
        let chars = body.chars().count();
        assert!(chars <= limit, "a text of {chars} characters");
    }
    assert_eq!(bodies(&retry)[0].chars().count(), limit);
    assert_eq!(bodies(&timeout)[0].chars().count(), limit);
}
