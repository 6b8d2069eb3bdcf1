//! What the fuzz targets share: structure-aware chatbot documents and conversations
//! built from `arbitrary` input, a scripted `HttpClient`, and the invariants every
//! turn must keep (Meta's limits on sends, the step limit, a storable context).
//!
//! The generators lean towards what breaks engines: dense graphs with cycles, edges
//! to nodes that do not exist, handles no node emits, templates that name variables
//! a rest_api answer may or may not fill, and now and then a huge field.

use std::sync::Mutex;

use arbitrary::{Arbitrary, Result, Unstructured};
use serde_json::{json, Map, Value};
use wabot::engine::limits::{
    BUTTON_ID_MAX, BUTTON_TITLE_MAX, FOOTER_MAX, HEADER_MAX, INTERACTIVE_BODY_MAX, LIST_BUTTON_MAX,
    MAX_BUTTONS, MAX_LIST_ROWS, ROW_DESCRIPTION_MAX, ROW_ID_MAX, ROW_TITLE_MAX, SECTION_TITLE_MAX,
    TEXT_BODY_MAX,
};
use wabot::engine::{
    Context, EngineLimits, Event, HttpClient, HttpError, HttpRequest, HttpResponse, Outgoing,
    TurnResult,
};
use wabot::whatsapp::outbound;

/// Strings the generators pick from before falling back to arbitrary text: the
/// names the engine gives outputs, handles it follows, and template syntax.
const WORDS: &[&str] = &[
    "",
    "default",
    "success",
    "error",
    "timeout",
    "true",
    "false",
    "skip",
    "menu",
    "btn_1",
    "btn_2",
    "row_1",
    "question_1.response",
    "question_2.response",
    "rest_api_1.data",
    "rest_api_1.data[0].title",
    "rest_api_1.status",
    "flow_1.response",
    "customer_name",
    "{{customer_name}}",
    "{{rest_api_1.data}}",
    "{{question_1.response}}",
    "{{",
    "}}",
    "{{a.b[0].c}}",
    "{{ x[99999999999999999999] }}",
    "__PAGE_NEXT__2",
    "__PAGE_PREV__1",
    "ç ğ ı ö ş ü 😀",
    "\u{0}",
    "http://127.0.0.1/x",
    "http://127.0.0.1/{{question_1.response}}",
    "$.data[*].id",
    "data.items",
];

/// A short string: a known word, a small arbitrary one, or (rarely) a huge one.
pub fn text(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0u8..=15)? {
        0..=8 => (*u.choose(WORDS)?).to_owned(),
        9..=13 => {
            let s: &str = u.arbitrary()?;
            s.chars().take(64).collect()
        }
        14 => format!("{}{}", u.choose(WORDS)?, u.choose(WORDS)?),
        _ => {
            let unit = (*u.choose(WORDS)?).to_owned() + "ş";
            unit.repeat(u.int_in_range(100..=5000)?)
        }
    })
}

/// Any JSON value, bounded in depth; strings from `text`.
pub fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    let leaf = depth == 0 || u.is_empty();
    Ok(match u.int_in_range(0u8..=if leaf { 4 } else { 6 })? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => match u.int_in_range(0u8..=3)? {
            0 => json!(u.arbitrary::<i64>()?),
            1 => json!(u.arbitrary::<u64>()?),
            2 => serde_json::Number::from_f64(u.arbitrary()?)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            _ => json!(u.int_in_range(0..=20)?),
        },
        3 | 4 => Value::String(text(u)?),
        5 => {
            let max = if u.ratio(1, 16)? { 40 } else { 4 };
            let n = u.int_in_range(0..=max)?;
            Value::Array((0..n).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut map = Map::new();
            for _ in 0..n {
                let key = if u.arbitrary()? {
                    (*u.choose(&[
                        "id",
                        "title",
                        "name",
                        "data",
                        "status",
                        "message",
                        "error",
                        "items",
                        "description",
                        "attributes",
                        "flow_token",
                        "response",
                    ])?)
                    .to_owned()
                } else {
                    text(u)?
                };
                map.insert(key, value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

fn maybe_text(u: &mut Unstructured) -> Result<Option<String>> {
    Ok(if u.arbitrary()? { Some(text(u)?) } else { None })
}

fn node_id(u: &mut Unstructured, count: usize) -> Result<String> {
    // Mostly an existing node, sometimes one that does not exist.
    Ok(if u.ratio(1, 12)? {
        text(u)?
    } else {
        format!("n{}", u.int_in_range(0..=count.saturating_sub(1))?)
    })
}

/// The `data` of a node of the given kind.
fn node_data(u: &mut Unstructured, kind: &str) -> Result<Value> {
    let mut data = Map::new();
    data.insert("type".into(), json!(kind));
    data.insert("label".into(), json!(text(u)?));
    match kind {
        "message" => {
            data.insert("content".into(), json!(text(u)?));
        }
        "question" => {
            let qt = *u.choose(&["text", "buttons", "list", "button", "other"])?;
            data.insert("questionType".into(), json!(qt));
            data.insert("content".into(), json!(text(u)?));
            if u.arbitrary()? {
                data.insert("headerText".into(), json!(text(u)?));
            }
            if u.arbitrary()? {
                data.insert("footerText".into(), json!(text(u)?));
            }
            let n = u.int_in_range(0..=5)?;
            let buttons: Vec<Value> = (0..n)
                .map(|i| Ok(json!({"id": format!("btn_{i}"), "title": text(u)?})))
                .collect::<Result<_>>()?;
            data.insert("buttons".into(), Value::Array(buttons));
            let sections = u.int_in_range(0..=3)?;
            let sections: Vec<Value> = (0..sections)
                .map(|_| {
                    let rows = u.int_in_range(0..=12)?;
                    let rows: Vec<Value> = (0..rows)
                        .map(|r| {
                            Ok(json!({"id": format!("row_{r}"), "title": text(u)?,
                                "description": maybe_text(u)?}))
                        })
                        .collect::<Result<_>>()?;
                    Ok(json!({"title": text(u)?, "rows": rows}))
                })
                .collect::<Result<_>>()?;
            data.insert("listSections".into(), Value::Array(sections));
            if u.ratio(1, 3)? {
                let key = if qt == "list" {
                    "dynamicListSource"
                } else {
                    "dynamicButtonsSource"
                };
                data.insert(key.into(), json!(text(u)?));
                data.insert("dynamicLabelField".into(), json!(text(u)?));
                data.insert("dynamicDescField".into(), json!(text(u)?));
            }
            if u.ratio(1, 5)? {
                data.insert("dynamicConnectionId".into(), json!(text(u)?));
            }
            if u.arbitrary()? {
                let rule =
                    *u.choose(&["text", "email", "number", "phone", "regex", "any", "odd"])?;
                data.insert(
                    "validation".into(),
                    json!({"type": rule, "pattern": text(u)?, "minLength": u.int_in_range(0..=5)?,
                        "maxLength": u.int_in_range(0..=50)?, "min": value(u, 0)?, "max": value(u, 0)?,
                        "maxRetries": u.int_in_range(0..=3)?, "errorMessage": text(u)?}),
                );
            }
            if u.arbitrary()? {
                data.insert("timeoutSeconds".into(), json!(u.int_in_range(0..=3600)?));
                data.insert("timeoutMessage".into(), json!(text(u)?));
            }
            if u.ratio(1, 4)? {
                data.insert("variable".into(), json!(text(u)?));
            }
        }
        "condition" => {
            let n = u.int_in_range(0..=3)?;
            let conditions: Vec<Value> = (0..n)
                .map(|i| {
                    let op = *u.choose(&[
                        "==",
                        "!=",
                        ">",
                        "<",
                        ">=",
                        "<=",
                        "contains",
                        "not_contains",
                        "is_empty",
                        "is_not_empty",
                        "starts_with",
                        "ends_with",
                        "matches",
                        "bogus",
                    ])?;
                    Ok(
                        json!({"id": format!("c{i}"), "variable": text(u)?, "operator": op,
                        "value": text(u)?}),
                    )
                })
                .collect::<Result<_>>()?;
            let op = *u.choose(&["AND", "OR", "xor"])?;
            data.insert(
                "conditionGroup".into(),
                json!({"logicalOperator": op, "conditions": conditions}),
            );
        }
        "rest_api" => {
            data.insert("apiUrl".into(), json!(text(u)?));
            let method = *u.choose(&["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "BREW"])?;
            data.insert("apiMethod".into(), json!(method));
            if u.arbitrary()? {
                data.insert("apiResponsePath".into(), json!(text(u)?));
            }
            if u.arbitrary()? {
                data.insert("apiBody".into(), json!(text(u)?));
                let ct = *u.choose(&["application/json", "form", "multipart", "text/plain"])?;
                data.insert("apiContentType".into(), json!(ct));
            }
            if u.arbitrary()? {
                data.insert(
                    "apiQueryParams".into(),
                    json!([{"key": text(u)?, "value": text(u)?}]),
                );
                data.insert(
                    "apiHeaders".into(),
                    json!([{"key": text(u)?, "value": text(u)?}]),
                );
            }
            let auth = *u.choose(&["none", "bearer", "basic", "api_key", "weird"])?;
            data.insert("apiAuthType".into(), json!(auth));
            data.insert("apiAuthToken".into(), json!(text(u)?));
            if u.arbitrary()? {
                data.insert("apiAuthKeyName".into(), json!(text(u)?));
                data.insert("apiAuthKeyValue".into(), json!(text(u)?));
                data.insert(
                    "apiAuthKeyLocation".into(),
                    json!(*u.choose(&["header", "query"])?),
                );
                data.insert("apiAuthUsername".into(), json!(text(u)?));
                data.insert("apiAuthPassword".into(), json!(text(u)?));
                data.insert("apiErrorVariable".into(), json!(text(u)?));
            }
            data.insert("apiTimeout".into(), value(u, 0)?);
            if u.arbitrary()? {
                data.insert("apiFilterField".into(), json!(text(u)?));
                data.insert("apiFilterValue".into(), json!(text(u)?));
            }
            if u.arbitrary()? {
                data.insert("apiOutputVariable".into(), json!(text(u)?));
            }
        }
        "whatsapp_flow" => {
            data.insert("whatsappFlowId".into(), json!(text(u)?));
            data.insert("flowCta".into(), json!(text(u)?));
            data.insert("content".into(), json!(text(u)?));
            data.insert("flowBodyText".into(), json!(text(u)?));
            if u.arbitrary()? {
                data.insert("flowHeaderText".into(), json!(text(u)?));
                data.insert("flowFooterText".into(), json!(text(u)?));
            }
            if u.arbitrary()? {
                data.insert("flowInitialScreen".into(), json!(text(u)?));
                data.insert("flowInitialData".into(), value(u, 2)?);
            }
            data.insert(
                "flowMode".into(),
                json!(*u.choose(&["navigate", "data_exchange", "x"])?),
            );
            if u.arbitrary()? {
                data.insert("flowOutputVariable".into(), json!(text(u)?));
            }
        }
        _ => {}
    }
    // Sometimes a field of any shape where the parser expects another.
    if u.ratio(1, 10)? {
        data.insert(text(u)?, value(u, 3)?);
    }
    Ok(Value::Object(data))
}

/// A chatbot document: 1–24 nodes, one start (or none, or two), dense edges.
#[derive(Debug)]
pub struct ArbDoc(pub Value);

impl<'a> Arbitrary<'a> for ArbDoc {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let count = u.int_in_range(1..=24usize)?;
        let mut nodes = Vec::with_capacity(count);
        for i in 0..count {
            let kind = if i == 0 && !u.ratio(1, 20)? {
                "start"
            } else {
                *u.choose(&[
                    "message",
                    "question",
                    "condition",
                    "rest_api",
                    "whatsapp_flow",
                    "google_calendar",
                    "start",
                    "unknown",
                ])?
            };
            let id = if u.ratio(1, 30)? {
                node_id(u, count)?
            } else {
                format!("n{i}")
            };
            let mut node = json!({"id": id, "type": kind, "position": {"x": 0, "y": i * 100},
                "data": node_data(u, kind)?});
            if u.ratio(1, 40)? {
                node = value(u, 2)?;
            }
            nodes.push(node);
        }
        let edge_count = u.int_in_range(0..=count * 2)?;
        let mut edges = Vec::with_capacity(edge_count);
        for e in 0..edge_count {
            let handle = if u.ratio(1, 3)? {
                Value::Null
            } else if u.arbitrary()? {
                json!(*u.choose(&[
                    "default", "success", "error", "timeout", "true", "false", "btn_0", "btn_1",
                    "btn_2", "row_0", "row_1", "row_11"
                ])?)
            } else {
                json!(text(u)?)
            };
            edges.push(json!({"id": format!("e{e}"), "source": node_id(u, count)?,
                "target": node_id(u, count)?, "sourceHandle": handle}));
        }
        let mut metadata = json!({});
        if u.arbitrary()? {
            metadata = json!({"triggerKeywords": [text(u)?], "restartKeywords": [text(u)?]});
        }
        let doc = if u.ratio(1, 8)? {
            json!({"version": 1, "chatbot": {"name": text(u)?, "nodes": nodes, "edges": edges,
                "metadata": metadata}})
        } else {
            json!({"name": text(u)?, "nodes": nodes, "edges": edges, "metadata": metadata})
        };
        Ok(ArbDoc(doc))
    }
}

/// One input of a turn, as the worker would build it.
#[derive(Debug, Clone)]
pub enum ArbEvent {
    Text(String),
    Button(String),
    ListRow(String),
    FlowReply(Option<String>, Value),
    Timeout,
    FlowSendFailed,
    Started,
}

impl<'a> Arbitrary<'a> for ArbEvent {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0u8..=9)? {
            // Ingest stores a typed NUL as U+FFFD: the engine never sees one there.
            0..=2 => ArbEvent::Text(text(u)?.replace('\0', "\u{fffd}")),
            3 => ArbEvent::Button(if u.arbitrary()? {
                format!("btn_{}", u.int_in_range(0..=4)?)
            } else {
                text(u)?
            }),
            4 => ArbEvent::ListRow(if u.arbitrary()? {
                format!("row_{}", u.int_in_range(0..=12)?)
            } else {
                text(u)?
            }),
            5 | 6 => ArbEvent::FlowReply(maybe_text(u)?, value(u, 3)?),
            7 => ArbEvent::Timeout,
            8 => ArbEvent::FlowSendFailed,
            _ => ArbEvent::Started,
        })
    }
}

impl ArbEvent {
    /// The event; a flow reply's token is sometimes the context's real one. What
    /// comes through ingest has its NULs replaced already, so none are sent here.
    pub fn into_event(self, context: &Context) -> Event {
        let clean = |s: String| s.replace('\0', "\u{fffd}");
        let this = match self {
            ArbEvent::Text(t) => ArbEvent::Text(clean(t)),
            ArbEvent::Button(t) => ArbEvent::Button(clean(t)),
            ArbEvent::ListRow(t) => ArbEvent::ListRow(clean(t)),
            ArbEvent::FlowReply(t, v) => ArbEvent::FlowReply(t.map(clean), v),
            other => other,
        };
        match this {
            ArbEvent::Text(t) => Event::InboundMessage {
                text: Some(t),
                button_id: None,
                list_row_id: None,
            },
            ArbEvent::Button(id) => Event::InboundMessage {
                text: Some(id.clone()),
                button_id: Some(id),
                list_row_id: None,
            },
            ArbEvent::ListRow(id) => Event::InboundMessage {
                text: Some(id.clone()),
                button_id: None,
                list_row_id: Some(id),
            },
            ArbEvent::FlowReply(token, response) => Event::FlowReply {
                flow_token: token.map(|t| {
                    if t.is_empty() {
                        context.flow_token(&context.current_node_id)
                    } else {
                        t
                    }
                }),
                response,
            },
            ArbEvent::Timeout => Event::WaitTimedOut,
            ArbEvent::FlowSendFailed => Event::FlowSendFailed {
                error: "131009".into(),
            },
            ArbEvent::Started => Event::ConversationStarted,
        }
    }
}

/// One answer of the fake HTTP peer.
#[derive(Debug, Clone)]
pub enum ArbAnswer {
    Response(u16, Vec<u8>),
    Error(HttpError),
}

impl<'a> Arbitrary<'a> for ArbAnswer {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u.int_in_range(0u8..=7)? {
            0 => ArbAnswer::Error(match u.int_in_range(0u8..=3)? {
                0 => HttpError::Timeout,
                1 => HttpError::Forbidden(text(u)?),
                2 => HttpError::InvalidRequest(text(u)?),
                _ => HttpError::Transport(text(u)?),
            }),
            1 => ArbAnswer::Response(u.arbitrary()?, u.arbitrary::<Vec<u8>>()?),
            _ => {
                let status =
                    *u.choose(&[200u16, 200, 201, 204, 301, 400, 404, 500, 503, 0, 999])?;
                ArbAnswer::Response(status, value(u, 4)?.to_string().into_bytes())
            }
        })
    }
}

/// Answers requests from a script, in order; the last answer repeats. Records the
/// requests so a target can check them.
pub struct ScriptedHttp {
    answers: Vec<ArbAnswer>,
    next: Mutex<usize>,
}

impl ScriptedHttp {
    pub fn new(answers: Vec<ArbAnswer>) -> Self {
        ScriptedHttp {
            answers,
            next: Mutex::new(0),
        }
    }
}

impl HttpClient for ScriptedHttp {
    async fn send(&self, request: HttpRequest) -> std::result::Result<HttpResponse, HttpError> {
        // A request the engine built must be one reqwest can send.
        assert!(!request.url.is_empty(), "empty URL");
        let answer = {
            let mut next = self.next.lock().unwrap();
            let a = self.answers.get(*next).or(self.answers.last()).cloned();
            *next += 1;
            a
        };
        match answer {
            Some(ArbAnswer::Response(status, body)) => Ok(HttpResponse { status, body }),
            Some(ArbAnswer::Error(e)) => Err(e),
            None => Err(HttpError::Timeout),
        }
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn check_frame(header: &Option<String>, body: &str, footer: &Option<String>, body_max: usize) {
    assert!(!body.is_empty(), "an interactive message without body text");
    assert!(chars(body) <= body_max, "body of {} chars", chars(body));
    if let Some(h) = header {
        assert!(chars(h) <= HEADER_MAX, "header of {} chars", chars(h));
    }
    if let Some(f) = footer {
        assert!(chars(f) <= FOOTER_MAX, "footer of {} chars", chars(f));
    }
}

/// Meta's limits on one send, as the engine built it and as Graph API renders it.
pub fn check_send(send: &Outgoing) {
    match send {
        Outgoing::Text { body } => {
            assert!(
                chars(body) <= TEXT_BODY_MAX,
                "text of {} chars",
                chars(body)
            );
        }
        Outgoing::Buttons {
            header,
            body,
            footer,
            buttons,
        } => {
            check_frame(header, body, footer, INTERACTIVE_BODY_MAX);
            assert!(
                (1..=MAX_BUTTONS).contains(&buttons.len()),
                "{} buttons",
                buttons.len()
            );
            for b in buttons {
                assert!(
                    !b.id.is_empty() && chars(&b.id) <= BUTTON_ID_MAX,
                    "button id {:?}",
                    b.id
                );
                assert!(
                    chars(&b.title) <= BUTTON_TITLE_MAX,
                    "button title {:?}",
                    b.title
                );
            }
        }
        Outgoing::List {
            header,
            body,
            footer,
            button,
            sections,
        } => {
            check_frame(header, body, footer, outbound::limits::LIST_BODY);
            assert!(chars(button) <= LIST_BUTTON_MAX, "list button {:?}", button);
            let rows: usize = sections.iter().map(|s| s.rows.len()).sum();
            assert!((1..=MAX_LIST_ROWS).contains(&rows), "{rows} list rows");
            assert!(sections.len() <= outbound::limits::SECTIONS);
            for s in sections {
                assert!(
                    chars(&s.title) <= SECTION_TITLE_MAX,
                    "section title {:?}",
                    s.title
                );
                for r in &s.rows {
                    assert!(
                        !r.id.is_empty() && chars(&r.id) <= ROW_ID_MAX,
                        "row id {:?}",
                        r.id
                    );
                    assert!(chars(&r.title) <= ROW_TITLE_MAX, "row title {:?}", r.title);
                    if let Some(d) = &r.description {
                        assert!(chars(d) <= ROW_DESCRIPTION_MAX, "row description {d:?}");
                    }
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
            check_frame(header, body, footer, INTERACTIVE_BODY_MAX);
            assert!(
                chars(flow_cta) <= outbound::limits::FLOW_CTA,
                "flow cta {flow_cta:?}"
            );
        }
    }
    // The rendered body must be JSON that round-trips.
    let body = outbound::graph_body("905551112233", send);
    let text = serde_json::to_string(&body).expect("a Graph API body serialises");
    serde_json::from_str::<Value>(&text).expect("a Graph API body parses back");
}

/// A value PostgreSQL's jsonb accepts: no NUL in any string or key. The panic
/// names where the NUL is.
pub fn check_storable(value: &Value, what: &str) {
    fn walk(value: &Value, at: &mut Vec<String>, what: &str) {
        match value {
            Value::String(s) => assert!(!s.contains('\0'), "NUL in {what} at {at:?}: {s:?}"),
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    at.push(i.to_string());
                    walk(v, at, what);
                    at.pop();
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    assert!(!k.contains('\0'), "NUL in a key of {what} at {at:?}: {k:?}");
                    at.push(k.clone());
                    walk(v, at, what);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    walk(value, &mut Vec::new(), what);
}

/// Everything a turn must keep.
pub fn check_turn(result: &TurnResult, limits: &EngineLimits) {
    assert!(
        result.steps <= limits.max_steps_per_turn,
        "{} steps > {}",
        result.steps,
        limits.max_steps_per_turn
    );
    for send in &result.sends {
        check_send(send);
    }
    let ctx = &result.context;
    let vars = Value::Object(ctx.variables.clone());
    let outputs = Value::Object(ctx.node_outputs.clone());
    check_storable(&vars, "variables");
    check_storable(&outputs, "nodeOutputs");
    for id in &ctx.node_history {
        assert!(!id.contains('\0'), "NUL in nodeHistory");
    }
    serde_json::to_string(&vars).expect("variables serialise");
    serde_json::to_string(&outputs).expect("nodeOutputs serialise");
    // The bookkeeping reads back as it was written.
    let state = ctx.state();
    ctx.clone().set_state(&state);
    assert!(state.steps <= limits.max_steps_per_context.max(1) + limits.max_steps_per_turn);
}

/// Runs a future that never waits on real I/O to completion.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
    }
    RT.with(|rt| rt.block_on(f))
}
