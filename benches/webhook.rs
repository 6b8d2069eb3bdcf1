//! The CPU cost of the webhook front door: the signature check over the raw bytes,
//! and parsing the fixture payloads (and Meta's samples, when `../shared` is there)
//! into the typed envelope (one message, and a 1,000-message batch, Meta's maximum).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use wabot::whatsapp::signature;
use wabot::whatsapp::webhook::Envelope;

const SECRET: &[u8] = b"bench-app-secret";

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel)
}

/// The fixture payloads by name, and Meta's samples too when `../shared` is beside
/// the checkout.
fn samples() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/webhooks");
    for entry in std::fs::read_dir(fixtures)
        .expect("fixtures/webhooks")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let (true, Ok(bytes)) = (name.ends_with(".json"), std::fs::read(entry.path())) {
            out.push((format!("fixture_{}", name.trim_end_matches(".json")), bytes));
        }
    }
    for dir in [
        "whatsapp/samples/meta-docs",
        "whatsapp/samples/meta-postman/webhooks",
    ] {
        let Ok(entries) = std::fs::read_dir(shared(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let wanted = name.ends_with(".json")
                && (name.starts_with("webhook_") || dir.ends_with("webhooks"))
                && !name.contains("FRAGMENT");
            if let (true, Ok(bytes)) = (wanted, std::fs::read(entry.path())) {
                out.push((name.trim_end_matches(".json").to_owned(), bytes));
            }
        }
    }
    out.sort();
    out
}

/// A `messages` webhook with `n` text messages from `n` customers.
fn batch(n: usize) -> Vec<u8> {
    let messages: Vec<Value> = (0..n)
        .map(|i| {
            json!({"from": format!("1650555{i:04}"), "id": format!("wamid.BENCH{i:08}"),
                   "timestamp": "1750000000", "type": "text",
                   "text": {"body": "Hello, I would like to know more about my order status please"}})
        })
        .collect();
    let contacts: Vec<Value> = (0..n)
        .map(|i| json!({"profile": {"name": format!("Customer {i}")}, "wa_id": format!("1650555{i:04}")}))
        .collect();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": contacts, "messages": messages}}]}]})
    .to_string()
    .into_bytes()
}

fn signature_verification(c: &mut Criterion) {
    let mut group = c.benchmark_group("signature/verify");
    for (name, body) in [("one_message", batch(1)), ("1000_messages", batch(1000))] {
        let header = signature::sign(SECRET, &body);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| signature::verify(SECRET, black_box(body), Some(black_box(&header))))
        });
    }
    group.finish();
}

fn parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse/sample");
    for (name, body) in samples() {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| Envelope::parse(black_box(body)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("parse/batch");
    let body = batch(1000);
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000_messages", |b| {
        b.iter(|| Envelope::parse(black_box(&body)))
    });
    group.finish();
}

/// A status webhook (the fake Graph API's `delivered`, as Meta sends it) into its
/// rows: the general way (a `Value`, the envelope, `rows`) and the status-only path
/// the handler takes for it.
fn status_rows(c: &mut Criterion) {
    use wabot::store::ingest::RawEvent;
    use wabot::whatsapp::webhook::statuses::StatusOnly;
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "statuses": [{"id": "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
                "status": "delivered", "timestamp": "1764000020", "recipient_id": "16505551234",
                "biz_opaque_callback_data": "wabot:6f1c2a4e-8a55-4d0b-9a43-2b7d1f0e9c11",
                "conversation": {"id": "conv-16505551234", "origin": {"type": "service"}},
                "pricing": {"billable": true, "pricing_model": "PMP", "category": "service",
                            "type": "regular"}}]}}]}]})
    .to_string();
    let now = chrono::Utc::now();
    let mut group = c.benchmark_group("status/rows");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("general", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(body.as_bytes())).unwrap();
            let envelope = Envelope::from_value(&value).unwrap();
            let raw = RawEvent::New(body.clone());
            wabot::worker::ingest::rows(&envelope, raw, now, Some("106540352242922"))
        })
    });
    group.bench_function("status_only", |b| {
        b.iter(|| {
            let text = std::str::from_utf8(black_box(body.as_bytes())).unwrap();
            let parsed = StatusOnly::parse(text).unwrap();
            wabot::worker::ingest::status_rows(&parsed, text, now)
        })
    });
    group.finish();
}

criterion_group!(benches, signature_verification, parsing, status_rows);
criterion_main!(benches);
