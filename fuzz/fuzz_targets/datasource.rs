//! A data source's response → GraphQL errors → `data_key` extraction → transform
//! → the rows of a dynamic list question (through the engine, as the worker hands
//! connection items to it) → Meta's limits on the list sent.
#![no_main]

use std::sync::LazyLock;

use arbitrary::{Arbitrary, Unstructured};
use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use uuid::Uuid;
use wabot::datasource::extract;
use wabot::datasource::model::{transform_from_json, SourceType};
use wabot::engine::{self, CompiledChatbot, Context, Customer, EngineLimits, Event};
use wabot_fuzz::{block_on, check_turn, ArbAnswer, ScriptedHttp};

/// One list question whose rows come from a connection, and one whose buttons do.
static BOTS: LazyLock<[CompiledChatbot; 2]> = LazyLock::new(|| {
    let bot = |qt: &str| {
        let doc = json!({"name": "ds", "nodes": [
            {"id": "s", "type": "start", "data": {"type": "start"}},
            {"id": "q", "type": "question", "data": {"type": "question", "questionType": qt,
                "content": "Pick one", "listButtonText": "Choose", "dynamicConnectionId": "c1"}},
            {"id": "m", "type": "message", "data": {"type": "message", "content": "{{question_1.response}}"}}
        ], "edges": [{"id": "e1", "source": "s", "target": "q"}, {"id": "e2", "source": "q", "target": "m"}]});
        engine::compile_json(&doc)
            .expect("the fixed chatbot compiles")
            .0
    };
    [bot("list"), bot("buttons")]
});

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(kind) = u.int_in_range(0u8..=2) else {
        return;
    };
    let kind = [SourceType::RestApi, SourceType::Strapi, SourceType::Graphql][kind as usize];
    let Ok(data_key) = Option::<String>::arbitrary(&mut u) else {
        return;
    };
    let Ok(transform) = wabot_fuzz::value(&mut u, 2) else {
        return;
    };
    let Ok(raw) = <&[u8]>::arbitrary(&mut u) else {
        return;
    };
    let response = match serde_json::from_slice::<Value>(raw) {
        Ok(v) => v,
        Err(_) => match wabot_fuzz::value(&mut u, 6) {
            Ok(v) => v,
            Err(_) => return,
        },
    };

    let _ = extract::graphql_errors(&response);
    let _ = extract::query_text(&response);
    let Ok(items) = extract::item_array(kind, data_key.as_deref(), &response) else {
        return;
    };
    let config = transform_from_json("fuzz", &transform).unwrap_or_default();
    let rows = extract::transform(kind, items, &config);
    assert!(rows.len() <= items.len());

    // The worker answers the engine's `wabot-connection:` request with the items.
    let body = serde_json::to_vec(&rows).unwrap();
    let limits = EngineLimits::default();
    for bot in BOTS.iter() {
        let http = ScriptedHttp::new(vec![ArbAnswer::Response(200, body.clone())]);
        let customer = Customer::default();
        let context = Context::start(Uuid::nil(), Uuid::nil(), Uuid::nil(), bot, &customer);
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let result = block_on(engine::run_turn(
            bot,
            context,
            Event::ConversationStarted,
            now,
            &http,
            &limits,
        ));
        check_turn(&result, &limits);
        // Pick the first row offered, or a paging row, for a second turn.
        let picked = result.sends.iter().find_map(|s| match s {
            engine::Outgoing::List { sections, .. } => sections
                .iter()
                .flat_map(|s| &s.rows)
                .last()
                .map(|r| r.id.clone()),
            engine::Outgoing::Buttons { buttons, .. } => buttons.first().map(|b| b.id.clone()),
            _ => None,
        });
        if let Some(id) = picked {
            let event = Event::InboundMessage {
                text: Some(id.clone()),
                button_id: None,
                list_row_id: Some(id),
            };
            let second = block_on(engine::run_turn(
                bot,
                result.context,
                event,
                now,
                &http,
                &limits,
            ));
            check_turn(&second, &limits);
        }
    }
});
