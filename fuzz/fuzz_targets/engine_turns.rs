//! A compiled chatbot + a conversation of arbitrary events (texts, buttons, list
//! rows, Flow replies, timeouts, rest_api answers of any status and body) →
//! `run_turn` over and over. After every turn: the step limit held, every send
//! obeys Meta's limits, the context is storable (`wabot_fuzz::check_turn`).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use chrono::{Duration, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;
use wabot::engine::{self, Context, Customer, EngineLimits, Event};
use wabot_fuzz::{block_on, check_turn, ArbAnswer, ArbDoc, ArbEvent, ScriptedHttp};

fuzz_target!(|data: &[u8]| {
    // `{` starts a chatbot document (a fixture), then a NUL, then the conversation;
    // anything else is a generated chatbot.
    let (doc, rest) = match data.iter().position(|&b| b == 0) {
        Some(end) if data.first() == Some(&b'{') => {
            match serde_json::from_slice::<serde_json::Value>(&data[..end]) {
                Ok(doc) => (doc, &data[end + 1..]),
                Err(_) => return,
            }
        }
        _ => {
            let mut u = Unstructured::new(data);
            let Ok(doc) = ArbDoc::arbitrary(&mut u) else {
                return;
            };
            let used = data.len() - u.len();
            (doc.0, &data[used..])
        }
    };
    // A chatbot lives in jsonb columns, which cannot hold a NUL: neither can its
    // labels and templates.
    let mut doc = doc;
    wabot::store::ingest::make_storable(&mut doc);
    let mut u = Unstructured::new(rest);
    let Ok((bot, _)) = engine::compile_json(&doc) else {
        return;
    };
    let Ok(answers) = Vec::<ArbAnswer>::arbitrary(&mut u) else {
        return;
    };
    let Ok(events) = Vec::<(ArbEvent, u16)>::arbitrary(&mut u) else {
        return;
    };
    let http = ScriptedHttp::new(answers);
    let limits = EngineLimits {
        max_steps_per_turn: 25,
        max_steps_per_context: 200,
        ..EngineLimits::default()
    };
    let customer = Customer {
        phone: "905551112233".into(),
        name: Some("Ayşe".into()),
    };
    let mut now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    let mut context = Context::start(Uuid::nil(), Uuid::nil(), Uuid::nil(), &bot, &customer);
    let mut event = Event::ConversationStarted;
    let mut pending = events.into_iter().take(40);
    loop {
        let result = block_on(engine::run_turn(&bot, context, event, now, &http, &limits));
        check_turn(&result, &limits);
        context = if result.restart {
            Context::start(Uuid::nil(), Uuid::nil(), Uuid::nil(), &bot, &customer)
        } else {
            result.context
        };
        let Some((next, minutes)) = pending.next() else {
            break;
        };
        now += Duration::minutes(i64::from(minutes % 2000));
        event = if result.restart {
            Event::ConversationStarted
        } else {
            next.into_event(&context)
        };
    }
});
