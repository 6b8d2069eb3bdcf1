//! A webhook body → signature check → typed envelope → the rows ingest would write
//! (everything up to the database).
//!
//! The first byte picks the signature header: the right one (most inputs, so the
//! parser is reached), a wrong one, or fuzzer bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use wabot::store::ingest;
use wabot::worker::ingest::{content, rows};
use wabot::whatsapp::signature;
use wabot::whatsapp::webhook::{ChangeValue, Envelope};

const SECRET: &[u8] = b"fuzz-app-secret";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let good = signature::sign(SECRET, body);
    let header = match mode % 8 {
        0 => Some(String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned()),
        1 => None,
        2 => Some(good.replace('a', "b")),
        _ => Some(good.clone()),
    };
    let verified = signature::verify(SECRET, body, header.as_deref());
    if header.as_deref() == Some(good.as_str()) {
        assert!(verified.is_ok(), "the right signature was refused");
    } else if verified.is_ok() {
        // Only the exact signature (modulo case of hex) may pass.
        let h = header.unwrap_or_default().to_ascii_lowercase();
        assert_eq!(h.trim(), good, "a wrong signature passed");
    }
    if verified.is_err() {
        return;
    }

    // What http/webhook.rs does after the signature.
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    ingest::make_storable(&mut value);
    wabot_fuzz::check_storable(&value, "the stored webhook");
    let Ok(envelope) = Envelope::from_value(&value) else {
        return;
    };
    let _ = envelope.fields();
    for change in envelope.entry.iter().flat_map(|e| &e.changes) {
        let ChangeValue::Messages(v) = &change.value else {
            continue;
        };
        for message in &v.messages {
            let wamid = message.id.clone().unwrap_or_default();
            let stored = content::build(message, &wamid, Some(uuid::Uuid::nil()));
            assert!(
                stored.preview.chars().count() <= 1000,
                "preview over varchar(1000)"
            );
            wabot_fuzz::check_storable(&stored.content, "messages.content");
            assert!(!stored.db_type.is_empty());
            let _ = message.kind.db_type();
            if let Some(from) = &message.from {
                let _ = v.profile_name(from);
            }
        }
        for status in &v.statuses {
            let _ = status.is_delivery();
            let _ = status.status.db_status();
            let _ = status.status.as_str();
            wabot_fuzz::check_storable(&content::errors_json(&status.errors), "status errors");
        }
        wabot_fuzz::check_storable(&content::errors_json(&v.errors), "errors");
    }

    // The rows the ingest stage stores, built by the pipeline's own reader.
    let stored = rows(
        &envelope,
        ingest::RawEvent::New(value.to_string()),
        chrono::Utc::now(),
        Some("106540352242922"),
    );
    for m in &stored.messages {
        assert!(m.business.chars().count() <= ingest::PHONE_MAX_CHARS);
        assert!(m.customer.chars().count() <= ingest::PHONE_MAX_CHARS);
        assert!(m.wamid.chars().count() <= ingest::WAMID_MAX_CHARS);
        assert!(m.customer_name.chars().count() <= ingest::NAME_MAX_CHARS);
        assert!(m.preview.chars().count() <= 1000, "preview over varchar(1000)");
        assert!(!m.wamid.trim().is_empty() && !m.customer.trim().is_empty());
        wabot_fuzz::check_storable(&m.content, "messages.content");
    }
    for s in &stored.statuses {
        assert!(s.wamid.chars().count() <= ingest::WAMID_MAX_CHARS && !s.wamid.is_empty());
        wabot_fuzz::check_storable(&s.errors, "message_statuses.errors");
        if let Some(extra) = &s.extra {
            wabot_fuzz::check_storable(extra, "message_statuses.extra");
        }
    }
    wabot_fuzz::check_storable(&stored.errors, "webhook_events.errors");
});
