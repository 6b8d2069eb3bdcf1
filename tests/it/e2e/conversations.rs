//! Chatbots in the shapes of WhatsApp Builder's own (the fixtures), driven through
//! webhooks step by step.

use serde_json::{json, Value};

use super::*;
use crate::engine::fixture;

#[tokio::test]
async fn the_sample_support_bot_answers_a_button_and_completes_then_starts_again() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&fixture("support-menu.json"))).await;

    engine.say(text("wamid.IN1", "hello")).await;
    let replies = engine.replies(0, 2).await;
    assert_eq!(replies[0].to(), Some(CUSTOMER));
    // Every send names its outbound message in the callback data Meta echoes in the
    // message's statuses.
    let mut first = replies[0].body.clone();
    let callback = first
        .as_object_mut()
        .and_then(|b| b.remove("biz_opaque_callback_data"))
        .expect("callback data");
    let message_id = callback
        .as_str()
        .and_then(|c| c.strip_prefix("wabot:"))
        .unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE id::text = $1")
        .bind(message_id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        stored, 1,
        "the callback data names the stored outbound message"
    );
    assert_eq!(
        first,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": CUSTOMER,
               "type": "text", "text": {"body": "Hi! Welcome to the Corner Bakery help line.", "preview_url": false}})
    );
    assert_eq!(replies[1].body["type"], "interactive");
    assert_eq!(replies[1].body["interactive"]["type"], "button");
    assert_eq!(
        replies[1].body["interactive"]["body"]["text"],
        "What can we help you with?"
    );
    let buttons = &replies[1].body["interactive"]["action"]["buttons"];
    assert_eq!(
        buttons,
        &json!([
            {"type": "reply", "reply": {"id": "btn_hours", "title": "Opening hours"}},
            {"type": "reply", "reply": {"id": "btn_prices", "title": "Prices"}},
            {"type": "reply", "reply": {"id": "btn_team", "title": "About us"}}
        ])
    );
    let (status, node, _) = active_context(pool).await.expect("a waiting context");
    assert_eq!((status.as_str(), node.as_str()), ("waiting_input", "menu"));

    engine
        .say(button_reply("wamid.IN2", "btn_prices", "Prices"))
        .await;
    let replies = engine.replies(2, 2).await;
    assert!(replies[0].text().unwrap().starts_with("Prices: bread"));
    assert!(replies[1]
        .text()
        .unwrap()
        .starts_with("Thank you for writing"));
    assert!(
        active_context(pool).await.is_none(),
        "the context completed"
    );
    let (reason, history): (String, serde_json::Value) = sqlx::query_as(
        "SELECT \"completionReason\"::text, \"nodeHistory\" FROM conversation_contexts",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(reason, "flow_completed");
    assert!(history.to_string().contains("answer-prices"));

    // Every reply is a stored message with its wamid and status `sent`.
    eventually(pool, UNSENT, 0).await;
    let sent: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.status::text, m.content->>'whatsappMessageId' FROM messages m \
         JOIN users u ON u.id = m.\"senderId\" WHERE u.\"phoneNumber\" <> $1 ORDER BY m.\"timestamp\"",
    )
    .bind(CUSTOMER)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(sent.len(), 4);
    let accepted = engine.graph.accepted();
    for (i, (status, wamid)) in sent.iter().enumerate() {
        assert_eq!(status, "sent");
        assert_eq!(Some(wamid.as_str()), accepted[i].wamid(), "reply {i}");
    }

    let (last,): (String,) = sqlx::query_as("SELECT \"lastMessage\"::text FROM conversations")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(last.starts_with("Thank you for writing"), "{last}");

    // A new message after completion starts the chatbot again.
    engine.say(text("wamid.IN3", "again")).await;
    let replies = engine.replies(4, 2).await;
    assert!(replies[0].text().unwrap().starts_with("Hi! Welcome"));
}

/// A loopback reservation API: answers `status` and records what it received.
async fn reservation_api(status: u16) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;
    let seen: Seen = Default::default();
    async fn handle(
        State((seen, status)): State<(Seen, u16)>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        seen.lock().unwrap().push(body.clone());
        let code = StatusCode::from_u16(status).unwrap();
        (code, Json(json!({"json": body, "reference": "R-42"})))
    }
    let app = Router::new()
        .route("/reserve", post(handle))
        .with_state((seen.clone(), status));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/reserve", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// The table-booking bot with its rest_api node pointed at `url`.
fn restaurant_bot(url: &str) -> Value {
    let mut doc = load_json(&fixture("table-booking.json"));
    // WhatsApp Builder's export wraps the chatbot in `chatbot`.
    let bot = if doc.get("nodes").is_some() {
        &mut doc
    } else {
        &mut doc["chatbot"]
    };
    for node in bot["nodes"].as_array_mut().unwrap() {
        if node["type"] == "rest_api" {
            node["data"]["apiUrl"] = json!(url);
        }
    }
    doc
}

#[tokio::test]
async fn the_restaurant_bot_collects_answers_calls_its_api_and_confirms() {
    let (url, seen) = reservation_api(200).await;
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &restaurant_bot(&url)).await;

    engine.say(text("wamid.R1", "hello")).await;
    let r = engine.replies(0, 2).await;
    assert!(r[0]
        .text()
        .unwrap()
        .starts_with("Welcome to Harbour Grill!"));
    assert_eq!(r[1].text(), Some("Whose name should the booking be under?"));
    assert_eq!(r[1].body["type"], "text");

    engine.say(text("wamid.R2", "Ada Lovelace")).await;
    let r = engine.replies(2, 1).await;
    assert_eq!(r[0].body["interactive"]["type"], "button");
    assert_eq!(r[0].text(), Some("How many people are coming?"));

    // Typed text at a buttons prompt follows the `default` edge.
    engine.say(text("wamid.R3", "5 of us")).await;
    let r = engine.replies(3, 1).await;
    assert_eq!(r[0].text(), Some("Which day would you like? (YYYY-MM-DD)"));

    engine.say(text("wamid.R4", "2026-12-24")).await;
    let r = engine.replies(4, 1).await;
    assert_eq!(
        r[0].text(),
        Some("Booked!\n\nName: Ada Lovelace\nPeople: 5 of us\nDay: 2026-12-24\nReference: R-42")
    );
    assert_eq!(
        seen.lock().unwrap().clone(),
        vec![json!({"name": "Ada Lovelace", "size": "5 of us", "date": "2026-12-24"})]
    );

    // The context kept the editor's variable names with their structure.
    let (vars, status): (Value, String) =
        sqlx::query_as("SELECT variables, status::text FROM conversation_contexts")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(status, "completed");
    assert_eq!(vars["question_1"]["response"], "Ada Lovelace");
    assert_eq!(vars["rest_api_1"]["status"], 200);
    assert_eq!(vars["rest_api_1"]["data"]["reference"], "R-42");
    assert_eq!(vars["customer_phone"], CUSTOMER);
    assert_eq!(vars["customer_name"], CUSTOMER_NAME);
}

#[tokio::test]
async fn a_failing_api_takes_the_error_branch() {
    let (url, _) = reservation_api(500).await;
    let engine = Engine::start().await;
    install_chatbot(&engine.app.pool, &restaurant_bot(&url)).await;
    engine.say(text("wamid.E1", "hello")).await;
    engine.replies(0, 2).await;
    engine.say(text("wamid.E2", "Ada")).await;
    engine.replies(2, 1).await;
    engine.say(button_reply("wamid.E3", "size_2", "Two")).await;
    engine.replies(3, 1).await;
    engine.say(text("wamid.E4", "2026-12-31")).await;
    let r = engine.replies(4, 1).await;
    let text = r[0].text().unwrap();
    assert!(
        text.starts_with("Sorry, the booking did not go through ("),
        "{text}"
    );
    assert!(text.contains("Please call us"), "{text}");
}

#[tokio::test]
async fn the_demo_bot_walks_buttons_a_list_a_condition_and_a_flow_to_its_reply() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&fixture("demo-center.json"))).await;

    engine.say(text("wamid.D1", "hi")).await;
    let r = engine.replies(0, 2).await;
    let buttons = &r[1].body["interactive"];
    assert_eq!(
        buttons["header"],
        json!({"type": "text", "text": "Demo center"})
    );
    assert_eq!(buttons["footer"], json!({"text": "Pick one"}));
    assert_eq!(buttons["action"]["buttons"].as_array().unwrap().len(), 3);

    engine
        .say(button_reply("wamid.D2", "btn_demos", "Show demos"))
        .await;
    let r = engine.replies(2, 1).await;
    let list = &r[0].body["interactive"];
    assert_eq!(list["type"], "list");
    assert_eq!(list["action"]["button"], "See the demos");
    let rows: Vec<&str> = list["action"]["sections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["rows"].as_array().unwrap())
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rows,
        [
            "demo_barber",
            "demo_clinic",
            "demo_restaurant",
            "demo_shop",
            "demo_homes"
        ]
    );

    engine
        .say(list_reply("wamid.D3", "demo_barber", "Barber"))
        .await;
    let r = engine.replies(3, 1).await;
    let flow = &r[0].body["interactive"];
    assert_eq!(flow["type"], "flow");
    assert_eq!(flow["body"]["text"], "Choose your barber and a free time");
    let params = &flow["action"]["parameters"];
    assert_eq!(params["flow_message_version"], "3");
    assert_eq!(params["flow_id"], "BARBER_FLOW");
    assert_eq!(params["flow_cta"], "Book now");
    assert_eq!(params["flow_action"], "data_exchange");
    let token = params["flow_token"].as_str().unwrap().to_owned();
    let (status, node, _) = active_context(pool).await.unwrap();
    assert_eq!(
        (status.as_str(), node.as_str()),
        ("waiting_flow", "barber-flow")
    );
    assert!(token.ends_with(":barber-flow"), "{token}");

    let response = json!({"flow_token": token, "barber": "Mehmet Usta",
        "day": "2026-12-01", "time": "14:00",
        "service": "Saç kesimi", "booking_id": "A-7"});
    engine.say(nfm_reply("wamid.D4", &response)).await;
    let r = engine.replies(4, 1).await;
    let text = r[0].text().unwrap();
    assert!(text.contains("Barber: Mehmet Usta"), "{text}");
    assert!(text.contains("#A-7"), "{text}");
    let (vars,): (Value,) = sqlx::query_as("SELECT variables FROM conversation_contexts")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(vars["flow_1"]["response"]["barber"], "Mehmet Usta");
}

#[tokio::test]
async fn a_question_that_waits_too_long_follows_its_timeout_edge() {
    let bot = json!({"name": "Patient", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "q", "type": "question", "data": {"label": "Q", "questionType": "text",
            "content": "Are you there?", "timeoutSeconds": 1}},
        {"id": "late", "type": "message", "data": {"label": "Late", "content": "Too late, bye."}},
        {"id": "ok", "type": "message", "data": {"label": "Ok", "content": "Thanks!"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "q"},
        {"id": "e2", "source": "q", "target": "ok"},
        {"id": "e3", "source": "q", "target": "late", "sourceHandle": "timeout"}
    ]});
    let engine = Engine::start().await;
    install_chatbot(&engine.app.pool, &bot).await;
    engine.say(text("wamid.T1", "hi")).await;
    assert_eq!(engine.replies(0, 1).await[0].text(), Some("Are you there?"));
    // Nobody answers: the timer job fires the `timeout` edge.
    let r = engine.replies(1, 1).await;
    assert_eq!(r[0].text(), Some("Too late, bye."));
    let (reason,): (Option<String>,) =
        sqlx::query_as("SELECT \"completionReason\"::text FROM conversation_contexts")
            .fetch_one(&engine.app.pool)
            .await
            .unwrap();
    assert_eq!(reason.as_deref(), Some("flow_completed"));
}

#[tokio::test]
async fn a_flow_message_meta_refuses_takes_the_flow_nodes_error_edge() {
    let bot = json!({"name": "Flow or not", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "f", "type": "whatsapp_flow", "data": {"label": "Form", "whatsappFlowId": "FLOW_1",
            "flowCta": "Open", "flowBodyText": "Please fill in the form"}},
        {"id": "bad", "type": "message", "data": {"label": "Bad", "content": "The form is unavailable."}},
        {"id": "good", "type": "message", "data": {"label": "Good", "content": "Thanks {{flow_1.response.name}}"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "f"},
        {"id": "e2", "source": "f", "target": "good"},
        {"id": "e3", "source": "f", "target": "bad", "sourceHandle": "error"}
    ]});
    let engine = Engine::start().await;
    install_chatbot(&engine.app.pool, &bot).await;
    engine
        .graph
        .fail_next(1, crate::support_graph::Failure::Undeliverable);
    engine.say(text("wamid.FF1", "hi")).await;
    let r = engine.replies(0, 1).await;
    assert_eq!(r[0].text(), Some("The form is unavailable."));
    let flow_requests = engine
        .graph
        .requests()
        .iter()
        .filter(|r| r.body["interactive"]["type"] == "flow")
        .count();
    assert_eq!(flow_requests, 1, "the refused Flow message is not retried");
}

#[tokio::test]
async fn a_flow_node_opens_its_flow_the_way_the_flow_row_says() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    let insert_flow = |meta_id: &'static str, endpoint: Option<&'static str>| async move {
        sqlx::query_scalar::<_, uuid::Uuid>(
            "INSERT INTO whatsapp_flows (whatsapp_flow_id, name, \"flowJson\", endpoint_uri) \
             VALUES ($1, $1, $2, $3) RETURNING id",
        )
        .bind(meta_id)
        .bind(json!({"version": "7.0", "screens": [{"id": "WELCOME"}, {"id": "DONE", "terminal": true}],
                     "routing_model": {"WELCOME": ["DONE"], "DONE": []}}))
        .bind(endpoint)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let with_endpoint = insert_flow(
        "META_FLOW_ENDPOINT",
        Some("https://bot.example.com/flows/endpoint"),
    )
    .await;
    let static_flow = insert_flow("META_FLOW_STATIC", None).await;

    let bot = json!({"name": "Two flows", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "f1", "type": "whatsapp_flow", "data": {"label": "Dynamic", "whatsappFlowId": with_endpoint.to_string(),
            "flowCta": "Open", "flowBodyText": "Dynamic form"}},
        {"id": "f2", "type": "whatsapp_flow", "data": {"label": "Static", "whatsappFlowId": static_flow.to_string(),
            "flowCta": "Open", "flowBodyText": "Static form"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "f1"},
        {"id": "e2", "source": "f1", "target": "f2"}
    ]});
    install_chatbot(pool, &bot).await;

    engine.say(text("wamid.FL1", "hi")).await;
    let r = engine.replies(0, 1).await;
    let params = &r[0].body["interactive"]["action"]["parameters"];
    assert_eq!(
        params["flow_id"], "META_FLOW_ENDPOINT",
        "Meta's id, not our uuid"
    );
    assert_eq!(params["flow_action"], "data_exchange");
    assert!(params.get("flow_action_payload").is_none(), "{params}");

    let token = params["flow_token"].as_str().unwrap().to_owned();
    engine
        .say(nfm_reply(
            "wamid.FL2",
            &json!({"flow_token": token, "ok": true}),
        ))
        .await;
    let r = engine.replies(1, 1).await;
    let params = &r[0].body["interactive"]["action"]["parameters"];
    assert_eq!(params["flow_id"], "META_FLOW_STATIC");
    assert_eq!(params["flow_action"], "navigate");
    assert_eq!(params["flow_action_payload"]["screen"], "WELCOME");
}

#[tokio::test]
async fn a_list_question_takes_its_rows_from_a_data_source_connection() {
    use axum::{extract::Query, routing::get, Json, Router};
    async fn brands(Query(q): Query<std::collections::HashMap<String, String>>) -> Json<Value> {
        let country = q.get("country").cloned().unwrap_or_default();
        Json(json!({"data": {"items": [
            {"slug": "bosch", "name": "Bosch", "origin": country},
            {"slug": "arcelik", "name": "Arçelik", "origin": country}
        ]}}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, Router::new().route("/api/brands", get(brands)))
            .await
            .unwrap()
    });

    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    let source: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO data_sources (name, type, base_url) VALUES ('shop', 'REST_API', $1) RETURNING id",
    )
    .bind(&base)
    .fetch_one(pool)
    .await
    .unwrap();
    let connection: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO data_source_connections \
            (name, data_source_id, endpoint, data_key, transform_config, param_mapping) \
         VALUES ('brands', $1, '/api/brands', 'data.items', \
                 '{\"idField\":\"slug\",\"titleField\":\"name\",\"descriptionField\":\"origin\"}', \
                 '{\"country\":\"$.customer_name\"}') RETURNING id",
    )
    .bind(source)
    .fetch_one(pool)
    .await
    .unwrap();
    let bot = json!({"name": "Brands", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "q", "type": "question", "data": {"label": "Brand", "questionType": "list",
            "content": "Pick a brand", "listButtonText": "Brands",
            "dynamicConnectionId": connection.to_string()}},
        {"id": "m", "type": "message", "data": {"label": "Picked", "content": "You picked {{question_1.response}}"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "q"},
        {"id": "e2", "source": "q", "target": "m"}
    ]});
    install_chatbot(pool, &bot).await;

    engine.say(text("wamid.DS1", "hi")).await;
    let r = engine.replies(0, 1).await;
    let rows = &r[0].body["interactive"]["action"]["sections"][0]["rows"];
    assert_eq!(
        rows,
        &json!([
            {"id": "bosch", "title": "Bosch", "description": CUSTOMER_NAME},
            {"id": "arcelik", "title": "Arçelik", "description": CUSTOMER_NAME}
        ]),
        "rows from the connection, param_mapping filled from the variables"
    );
    engine
        .say(list_reply("wamid.DS2", "arcelik", "Arçelik"))
        .await;
    let r = engine.replies(1, 1).await;
    assert_eq!(r[0].text(), Some("You picked arcelik"));
}

/// Inbound turn jobs not finished yet (a waiting context also has a timer job).
const OPEN_TURNS: &str =
    "SELECT count(*) FROM turn_jobs WHERE done_at IS NULL AND kind = 'inbound'";

#[tokio::test]
async fn a_skip_word_with_no_conversation_active_starts_nothing() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&fixture("support-menu.json"))).await;
    let contexts = "SELECT count(*) FROM conversation_contexts";

    engine.say(text("wamid.SK1", "İptal")).await;
    eventually(pool, OPEN_TURNS, 0).await;
    eventually(pool, contexts, 0).await;
    assert!(engine.graph.accepted().is_empty(), "nothing was sent");

    // Any other text starts the chatbot; after it completes, a skip word again
    // starts nothing.
    engine.say(text("wamid.SK2", "hello")).await;
    let r = engine.replies(0, 2).await;
    assert!(r[0].text().unwrap().starts_with("Hi! Welcome"));
    engine
        .say(button_reply("wamid.SK3", "btn_hours", "Opening hours"))
        .await;
    engine.replies(2, 2).await;
    engine.say(text("wamid.SK4", "skip")).await;
    eventually(pool, OPEN_TURNS, 0).await;
    eventually(pool, contexts, 1).await;
    assert!(active_context(pool).await.is_none());
    assert_eq!(engine.graph.accepted().len(), 4);
}
