//! The engine's hot paths: compiling chatbots, a whole conversation, interpolation
//! and condition groups. Pure CPU; no database, no network.

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};
use uuid::Uuid;
use wabot::engine::condition::evaluate;
use wabot::engine::http::NoHttp;
use wabot::engine::node::{Condition, ConditionNode, Operator};
use wabot::engine::vars::render;
use wabot::engine::{compile, run_turn, ChatbotDoc, Context, Customer, EngineLimits, Event};

/// The chatbot files of `dir` as (name, document); none when `dir` is absent.
fn chatbots_in(dir: &Path, prefix: &str) -> Vec<(String, ChatbotDoc)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        // bad-*.json are the validator's examples of what does not compile.
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("bad-"))
        })
        .map(|p| {
            let value: Value =
                serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("JSON");
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                format!("{prefix}{name}"),
                ChatbotDoc::from_json(&value).expect("a chatbot"),
            )
        })
        .collect()
}

/// The fixture chatbots, and WhatsApp Builder's own when `../shared` is beside the
/// checkout (named `wb/...`).
fn samples() -> Vec<(String, ChatbotDoc)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut docs = chatbots_in(&root.join("fixtures/chatbots"), "");
    docs.extend(chatbots_in(
        &root.join("../shared/whatsapp-builder/chatbots"),
        "wb/",
    ));
    docs.sort_by(|a, b| a.0.cmp(&b.0));
    docs
}

fn bench_compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    for (name, doc) in samples() {
        group.bench_function(&name, |b| {
            b.iter(|| compile(black_box(&doc)).expect("compiles"))
        });
    }
    group.finish();
}

fn bench_conversation(c: &mut Criterion) {
    let docs = samples();
    let (_, doc) = docs
        .iter()
        .find(|(name, _)| name == "sector-loop")
        .expect("fixtures/chatbots/sector-loop.json");
    let (bot, _) = compile(doc).expect("compiles");
    let limits = EngineLimits::default();
    let now = Utc
        .with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
        .single()
        .expect("time");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let click = |id: &str| Event::InboundMessage {
        text: None,
        button_id: Some(id.into()),
        list_row_id: None,
        answer: None,
    };
    let pick = |id: &str| Event::InboundMessage {
        text: None,
        button_id: None,
        list_row_id: Some(id.into()),
        answer: None,
    };
    // The sector bot: intro, the list, three conditions, a flow and its reply, goodbye.
    let script = [
        Event::ConversationStarted,
        click("btn_go"),
        pick("demo_clinic"),
        Event::FlowReply {
            flow_token: None,
            response: json!({"doctor": "Dr. Demir", "day": "2026-12-01", "booking_id": "K1"}),
        },
        click("btn_done"),
    ];
    c.bench_function("conversation/sector_loop", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let customer = Customer {
                    phone: "905550000000".into(),
                    name: Some("Bench".into()),
                    ..Customer::default()
                };
                let mut ctx =
                    Context::start(Uuid::nil(), Uuid::nil(), Uuid::nil(), &bot, &customer);
                let mut sent = 0;
                for event in script.iter().cloned() {
                    let result = run_turn(&bot, ctx, event, now, &NoHttp, &limits).await;
                    sent += result.sends.len();
                    ctx = result.context;
                }
                assert!(!ctx.is_active);
                black_box(sent)
            })
        })
    });
}

fn variables() -> Map<String, Value> {
    let items: Vec<Value> = (0..20)
        .map(|i| json!({"name": format!("Item {i}"), "price": i * 10}))
        .collect();
    json!({
        "customer_name": "Ayşe Yılmaz",
        "question_1": {"response": "ada@example.com"},
        "flow_1": {"response": {"city": "İzmir", "district": "Karşıyaka", "date": "2026-12-01"}},
        "rest_api_1": {"status": 200, "data": items},
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

fn bench_interpolation(c: &mut Criterion) {
    let vars = variables();
    let line = "Dear {{customer_name}}, your appointment in {{flow_1.response.city}}/{{flow_1.response.district}} \
                on {{flow_1.response.date}} is confirmed; first item {{rest_api_1.data[0].name}} costs \
                {{rest_api_1.data[0].price}} TL; contact {{question_1.response}}; unknown {{missing.value}}.\n";
    let template = line.repeat(40);
    let lists = "Your items:\n{{rest_api_1.data}}\n".repeat(5);
    c.bench_function("interpolate/long_template_280_placeholders", |b| {
        b.iter(|| render(black_box(&template), &vars))
    });
    c.bench_function("interpolate/arrays_as_numbered_lists", |b| {
        b.iter(|| render(black_box(&lists), &vars))
    });
}

fn bench_conditions(c: &mut Criterion) {
    let vars = variables();
    let condition = |variable: &str, op: Operator, value: &str| Condition {
        variable: variable.into(),
        op,
        value: value.into(),
    };
    let conditions = vec![
        condition("rest_api_1.status", Operator::Eq, "200"),
        condition("flow_1.response.city", Operator::Contains, "izm"),
        condition("rest_api_1.data[3].price", Operator::Ge, "30"),
        condition("question_1.response", Operator::IsNotEmpty, ""),
        condition("customer_name", Operator::NotContains, "mehmet"),
        condition("rest_api_1.data[19].price", Operator::Lt, "1000"),
        condition("flow_1.response.date", Operator::Ne, "2026-12-02"),
        condition("missing.value", Operator::IsEmpty, ""),
    ];
    let all = ConditionNode {
        conditions: conditions.clone(),
        any: false,
    };
    let any = ConditionNode {
        conditions,
        any: true,
    };
    c.bench_function("condition/and_group_of_8", |b| {
        b.iter(|| assert!(evaluate(black_box(&all), &vars)))
    });
    c.bench_function("condition/or_group_of_8", |b| {
        b.iter(|| assert!(evaluate(black_box(&any), &vars)))
    });
}

criterion_group!(
    benches,
    bench_compile,
    bench_conversation,
    bench_interpolation,
    bench_conditions
);
criterion_main!(benches);
