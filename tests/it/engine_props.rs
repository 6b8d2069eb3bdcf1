//! Properties of the engine over generated chatbots and conversations: no panic,
//! the step limit holds, every send obeys Meta's limits, the context stays storable
//! in jsonb. `PROPTEST_CASES` sets the number of cases (64 by default, so that
//! `cargo test` stays fast); the fuzz target `engine_turns` explores the same space
//! for longer.

use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{json, Map, Value};
use uuid::Uuid;
use wabot::engine::limits::{
    BUTTONS, BUTTON_ID, BUTTON_TITLE, FOOTER_TEXT, HEADER_TEXT, INTERACTIVE_BODY, LIST_BUTTON,
    ROWS, ROW_DESCRIPTION, ROW_ID, ROW_TITLE, SECTION_TITLE, TEXT_BODY,
};
use wabot::engine::{
    self, Context, Customer, EngineLimits, Event, HttpClient, HttpError, HttpRequest, HttpResponse,
    Outgoing, TurnResult,
};
use wabot::whatsapp::outbound;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// Texts that matter to the engine, and some that stress it.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "", "hello", "skip", "menu", "btn_0", "btn_1", "row_0", "row_3", "42", "a@b.co",
            "{{customer_name}}", "{{rest_api_1.data}}", "{{rest_api_1.data[0].title}}",
            "{{question_1.response}}", "{{", "ç ğ ı ö ş ü 😀", "__PAGE_NEXT__2", "\u{0}",
        ])
        .prop_map(str::to_owned),
        2 => "\\PC{0,40}",
        1 => ("\\PC{1,3}", 300usize..2000).prop_map(|(s, n)| s.repeat(n)),
    ]
}

/// A JSON value of bounded depth.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..14).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["id", "title", "name", "data", "status", "message"])
                        .prop_map(str::to_owned),
                    inner
                ),
                0..5
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The `data` of one node.
fn node_data() -> impl Strategy<Value = Value> {
    let message = text().prop_map(|c| json!({"type": "message", "content": c}));
    let question = (
        prop::sample::select(vec!["text", "buttons", "list"]),
        text(),
        prop::option::of(text()),
        prop::collection::vec(text(), 0..5),
        prop::collection::vec(text(), 0..14),
        prop::option::of(text()),
        any::<bool>(),
        prop::option::of(text()),
    )
        .prop_map(
            |(qt, content, header, buttons, rows, dynamic, validate, invalid)| {
                let buttons: Vec<Value> = buttons
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| json!({"id": format!("btn_{i}"), "title": t}))
                    .collect();
                let rows: Vec<Value> = rows
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| json!({"id": format!("row_{i}"), "title": t, "description": t}))
                    .collect();
                let mut data = json!({"type": "question", "questionType": qt, "content": content,
                "headerText": header, "buttons": buttons,
                "listSections": [{"title": "S", "rows": rows}], "timeoutSeconds": 60});
                if let Some(source) = dynamic {
                    data["dynamicListSource"] = json!(source);
                    data["dynamicButtonsSource"] = json!(source);
                }
                if validate {
                    data["validation"] = json!({"type": "email", "maxRetries": 1});
                }
                if let Some(message) = invalid {
                    data["invalidChoiceMessage"] = json!(message);
                }
                data
            },
        );
    let condition = (text(), text()).prop_map(|(variable, value)| {
        json!({"type": "condition", "conditionGroup": {"logicalOperator": "AND",
            "conditions": [{"id": "c", "variable": variable, "operator": "==", "value": value}]}})
    });
    let rest = (text(), prop::option::of(text())).prop_map(|(path, response_path)| {
        json!({"type": "rest_api", "apiUrl": format!("http://127.0.0.1/{path}"),
            "apiMethod": "POST", "apiBody": "{\"q\": \"{{question_1.response}}\"}",
            "apiResponsePath": response_path})
    });
    let flow = text().prop_map(|body| {
        json!({"type": "whatsapp_flow", "whatsappFlowId": "1", "flowCta": body,
            "flowBodyText": body, "flowHeaderText": body})
    });
    prop_oneof![message, question, condition, rest, flow]
}

/// A chatbot: a start node, 1–10 more, and edges anywhere (cycles included).
fn chatbot() -> impl Strategy<Value = Value> {
    (1usize..11).prop_flat_map(|n| {
        let handles = prop::sample::select(vec![
            "",
            "default",
            "success",
            "error",
            "timeout",
            "exhausted",
            "true",
            "false",
            "btn_0",
            "btn_1",
            "row_0",
            "row_1",
        ]);
        (
            prop::collection::vec(node_data(), n),
            prop::collection::vec((0..=n, 0..=n, handles), 1..(3 * n + 2)),
        )
            .prop_map(move |(datas, edges)| {
                let mut nodes =
                    vec![json!({"id": "n0", "type": "start", "data": {"type": "start"}})];
                for (i, data) in datas.into_iter().enumerate() {
                    let kind = data["type"].clone();
                    nodes.push(json!({"id": format!("n{}", i + 1), "type": kind, "data": data}));
                }
                let edges: Vec<Value> = edges
                    .into_iter()
                    .enumerate()
                    .map(|(i, (s, t, h))| {
                        json!({"id": format!("e{i}"), "source": format!("n{s}"),
                            "target": format!("n{t}"),
                            "sourceHandle": if h.is_empty() { Value::Null } else { json!(h) }})
                    })
                    .collect();
                json!({"name": "generated", "nodes": nodes, "edges": edges})
            })
    })
}

#[derive(Debug, Clone)]
enum Step {
    Text(String),
    Button(u8),
    Row(u8),
    Flow(Value),
    Timeout,
}

fn step() -> impl Strategy<Value = (Step, u16)> {
    let step = prop_oneof![
        // Ingest stores a typed NUL as U+FFFD: the engine never sees one there.
        3 => text().prop_map(|t| Step::Text(t.replace('\0', "\u{fffd}"))),
        1 => (0u8..4).prop_map(Step::Button),
        1 => (0u8..14).prop_map(Step::Row),
        1 => json_value().prop_map(Step::Flow),
        1 => Just(Step::Timeout),
    ];
    (step, 0u16..3000)
}

fn answer() -> impl Strategy<Value = (u16, Vec<u8>)> {
    (
        prop::sample::select(vec![200u16, 201, 204, 400, 404, 500, 503]),
        prop_oneof![
            3 => json_value().prop_map(|v| v.to_string().into_bytes()),
            1 => prop::collection::vec(any::<u8>(), 0..64),
        ],
    )
}

/// Answers rest_api requests in order, the last answer repeating.
struct Scripted(Vec<(u16, Vec<u8>)>, std::sync::Mutex<usize>);

impl HttpClient for Scripted {
    async fn send(&self, _: HttpRequest) -> Result<HttpResponse, HttpError> {
        let mut next = self.1.lock().unwrap();
        let answer = self.0.get(*next).or(self.0.last()).cloned();
        *next += 1;
        match answer {
            Some((status, body)) => Ok(HttpResponse { status, body }),
            None => Err(HttpError::Timeout),
        }
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn frame_ok(header: &Option<String>, body: &str, footer: &Option<String>, max: usize) {
    assert!(!body.is_empty() && chars(body) <= max, "body {body:?}");
    assert!(header.as_ref().map_or(true, |h| chars(h) <= HEADER_TEXT));
    assert!(footer.as_ref().map_or(true, |f| chars(f) <= FOOTER_TEXT));
}

/// Meta's limits on one send.
fn send_ok(send: &Outgoing) {
    match send {
        Outgoing::Text { body } => assert!(chars(body) <= TEXT_BODY),
        Outgoing::Buttons {
            header,
            body,
            footer,
            buttons,
        } => {
            frame_ok(header, body, footer, INTERACTIVE_BODY);
            assert!((1..=BUTTONS).contains(&buttons.len()));
            for b in buttons {
                assert!(!b.id.is_empty() && chars(&b.id) <= BUTTON_ID);
                assert!(chars(&b.title) <= BUTTON_TITLE);
            }
        }
        Outgoing::List {
            header,
            body,
            footer,
            button,
            sections,
        } => {
            frame_ok(header, body, footer, wabot::engine::limits::LIST_BODY);
            assert!(chars(button) <= LIST_BUTTON);
            let rows: usize = sections.iter().map(|s| s.rows.len()).sum();
            assert!((1..=ROWS).contains(&rows), "{rows} rows");
            for s in sections {
                assert!(chars(&s.title) <= SECTION_TITLE);
                for r in &s.rows {
                    assert!(!r.id.is_empty() && chars(&r.id) <= ROW_ID);
                    assert!(chars(&r.title) <= ROW_TITLE);
                    assert!(r
                        .description
                        .as_ref()
                        .map_or(true, |d| chars(d) <= ROW_DESCRIPTION));
                }
            }
        }
        Outgoing::Flow {
            header,
            body,
            footer,
            flow_cta,
            ..
        } => {
            frame_ok(header, body, footer, INTERACTIVE_BODY);
            assert!(chars(flow_cta) <= wabot::engine::limits::FLOW_CTA);
        }
        Outgoing::Media {
            link, id, caption, ..
        } => {
            assert!(link.is_some() != id.is_some());
            assert!(caption
                .as_ref()
                .map_or(true, |c| chars(c) <= wabot::engine::limits::CAPTION));
        }
        Outgoing::CtaUrl {
            header,
            body,
            footer,
            button,
            ..
        } => {
            frame_ok(header, body, footer, INTERACTIVE_BODY);
            assert!(chars(button) <= wabot::engine::limits::CTA_DISPLAY_TEXT);
        }
        Outgoing::LocationRequest { body } => assert!(chars(body) <= INTERACTIVE_BODY),
        // Its limits are the template's, checked against the catalogue when sent.
        Outgoing::Template { name, .. } => assert!(!name.is_empty()),
    }
    serde_json::to_string(&outbound::graph_body("905551112233", send)).unwrap();
}

/// No NUL anywhere: PostgreSQL's jsonb refuses `\u0000`.
fn storable(value: &Value) -> bool {
    match value {
        Value::String(s) => !s.contains('\0'),
        Value::Array(items) => items.iter().all(storable),
        Value::Object(map) => map.iter().all(|(k, v)| !k.contains('\0') && storable(v)),
        _ => true,
    }
}

fn turn_ok(result: &TurnResult, limits: &EngineLimits) {
    assert!(
        result.steps <= limits.max_steps_per_turn,
        "{} steps",
        result.steps
    );
    result.sends.iter().for_each(send_ok);
    let vars = Value::Object(result.context.variables.clone());
    let outputs = Value::Object(result.context.node_outputs.clone());
    assert!(storable(&vars), "variables hold a NUL");
    assert!(storable(&outputs), "nodeOutputs hold a NUL");
    serde_json::to_string(&vars).unwrap();
    serde_json::to_string(&outputs).unwrap();
}

async fn converse(doc: &Value, steps: Vec<(Step, u16)>, answers: Vec<(u16, Vec<u8>)>) {
    let Ok((bot, _)) = engine::compile_json(doc) else {
        return;
    };
    let http = Scripted(answers, std::sync::Mutex::new(0));
    let limits = EngineLimits {
        max_steps_per_turn: 20,
        ..EngineLimits::default()
    };
    let customer = Customer {
        phone: "905551112233".into(),
        name: Some("Ayşe".into()),
        ..Customer::default()
    };
    let mut now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    let mut context = Context::start(Uuid::nil(), Uuid::nil(), Uuid::nil(), &bot, &customer);
    let mut event = Event::ConversationStarted;
    let mut steps = steps.into_iter();
    loop {
        let result = engine::run_turn(&bot, context, event, now, &http, &limits).await;
        turn_ok(&result, &limits);
        context = if result.restart {
            Context::start(Uuid::nil(), Uuid::nil(), Uuid::nil(), &bot, &customer)
        } else {
            result.context
        };
        let Some((step, minutes)) = steps.next() else {
            return;
        };
        now += Duration::minutes(i64::from(minutes));
        event = match (result.restart, step) {
            (true, _) => Event::ConversationStarted,
            (_, Step::Text(t)) => Event::InboundMessage {
                text: Some(t),
                button_id: None,
                list_row_id: None,
                answer: None,
            },
            (_, Step::Button(i)) => Event::InboundMessage {
                text: Some(format!("btn_{i}")),
                button_id: Some(format!("btn_{i}")),
                list_row_id: None,
                answer: None,
            },
            (_, Step::Row(i)) => Event::InboundMessage {
                text: Some(format!("row_{i}")),
                button_id: None,
                list_row_id: Some(format!("row_{i}")),
                answer: None,
            },
            (_, Step::Flow(response)) => Event::FlowReply {
                flow_token: Some(context.flow_token(&context.current_node_id)),
                response,
            },
            (_, Step::Timeout) => Event::WaitTimedOut,
        };
    }
}

#[test]
fn generated_conversations_keep_the_engine_invariants() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        chatbot(),
        prop::collection::vec(step(), 0..12),
        prop::collection::vec(answer(), 0..4),
    );
    runner
        .run(&strategy, |(doc, steps, answers)| {
            rt.block_on(converse(&doc, steps, answers));
            Ok(())
        })
        .unwrap();
}

/// Found by the proptest above: a rest_api answer holding U+0000 (a raw NUL byte,
/// or `\u0000` in JSON) went into the context's variables and into the texts that
/// quote it, and PostgreSQL's jsonb refuses NUL, so the turn could never be saved.
/// The same for a Flow reply and for a connection's rows.
#[tokio::test]
async fn a_nul_in_an_api_answer_or_a_flow_reply_still_saves_the_context() {
    use wabot::store::chatbots::{self, NewChatbot};
    use wabot::store::contexts;

    let doc = json!({"name": "nul", "nodes": [
        {"id": "s", "type": "start", "data": {"type": "start"}},
        {"id": "api", "type": "rest_api", "data": {"type": "rest_api",
            "apiUrl": "http://127.0.0.1/x", "apiMethod": "GET"}},
        {"id": "say", "type": "message", "data": {"type": "message",
            "content": "{{rest_api_1.data.name}} / {{rest_api_1.error}}"}},
        {"id": "rows", "type": "question", "data": {"type": "question", "questionType": "list",
            "content": "Pick", "listButtonText": "Pick", "dynamicConnectionId": "c1"}},
        {"id": "flow", "type": "whatsapp_flow", "data": {"type": "whatsapp_flow",
            "whatsappFlowId": "1", "flowCta": "Open", "flowBodyText": "Fill in"}},
        {"id": "end", "type": "message", "data": {"type": "message", "content": "{{flow_1.response}}"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "api"},
        {"id": "e2", "source": "api", "target": "say"},
        {"id": "e3", "source": "say", "target": "rows"},
        {"id": "e4", "source": "rows", "target": "flow"},
        {"id": "e5", "source": "flow", "target": "end"}
    ]});
    let pool = crate::helpers::fresh_pool().await;
    let chatbot = wabot::engine::ChatbotDoc::from_json(&doc).unwrap();
    let chatbot_id = chatbots::insert(&pool, &NewChatbot::from_doc(&chatbot, true))
        .await
        .unwrap();
    let conversation: Uuid =
        sqlx::query_scalar("INSERT INTO conversations DEFAULT VALUES RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    let (bot, _) = engine::compile(&chatbot).unwrap();
    let http = Scripted(
        vec![
            (200, br#"{"name": "a\u0000b", "k\u0000": 1}"#.to_vec()),
            (200, br#"[{"id": "r\u0000", "title": "t\u0000"}]"#.to_vec()),
        ],
        std::sync::Mutex::new(0),
    );
    let limits = EngineLimits::default();
    let now = Utc::now();
    let context = Context::start(
        Uuid::new_v4(),
        conversation,
        chatbot_id,
        &bot,
        &Customer::default(),
    );
    let first = engine::run_turn(
        &bot,
        context,
        Event::ConversationStarted,
        now,
        &http,
        &limits,
    )
    .await;
    turn_ok(&first, &limits);
    assert!(
        first
            .sends
            .iter()
            .all(|s| !serde_json::to_string(s).unwrap().contains("\\u0000")),
        "{:?}",
        first.sends
    );
    let mut conn = pool.acquire().await.unwrap();
    contexts::save(&mut conn, &wabot::mapping::context_to_row(&first.context))
        .await
        .expect("the context saves");

    let picked = Event::InboundMessage {
        text: Some("t".into()),
        button_id: None,
        list_row_id: Some("r\u{FFFD}".into()),
        answer: None,
    };
    let second = engine::run_turn(&bot, first.context, picked, now, &http, &limits).await;
    turn_ok(&second, &limits);
    contexts::save(&mut conn, &wabot::mapping::context_to_row(&second.context))
        .await
        .expect("the context saves");

    let reply = Event::FlowReply {
        flow_token: None,
        response: json!({"city": "x\u{0}y", "n\u{0}": true}),
    };
    let third = engine::run_turn(&bot, second.context, reply, now, &http, &limits).await;
    turn_ok(&third, &limits);
    contexts::save(&mut conn, &wabot::mapping::context_to_row(&third.context))
        .await
        .expect("the context saves");
    let stored: Value =
        sqlx::query_scalar("SELECT variables FROM conversation_contexts WHERE id = $1")
            .bind(third.context.id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        stored["flow_1"]["response"]["city"], "x\u{FFFD}y",
        "{stored}"
    );
}
