//! Signed webhooks wabot cannot read: Meta sent them (the signature says so), so they
//! are acknowledged, never refused into a redelivery loop, and kept whole with the
//! reason in `webhook_unreadable`.

use crate::helpers::spawn_app;
use crate::webhook::count;

#[tokio::test]
async fn signed_but_unreadable_webhooks_are_kept_raw_and_acknowledged() {
    let app = spawn_app().await;
    let envelope = |inner: &str| {
        format!(
            r#"{{"object":"whatsapp_business_account","entry":[{{"id":"W","changes":[{{"field":"messages","value":{inner}}}]}}]}}"#
        )
        .into_bytes()
    };
    let mut deep = String::from(r#"{"messaging_product":"whatsapp","x":"#);
    deep.push_str(&"[".repeat(120));
    deep.push_str(&"]".repeat(120));
    deep.push('}');
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend(envelope("{}"));
    let mut invalid_utf8 = envelope(r#"{"messaging_product":"whatsapp","x":"XX"}"#);
    let at = invalid_utf8.windows(2).position(|w| w == b"XX").unwrap();
    invalid_utf8[at] = 0xC3;
    invalid_utf8[at + 1] = 0x28;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"hello".to_vec()),
        ("a JSON array", b"[1]".to_vec()),
        (
            "a lone surrogate",
            envelope(r#"{"messaging_product":"whatsapp","x":"\ud800"}"#),
        ),
        (
            "a timestamp out of range",
            envelope(
                r#"{"messaging_product":"whatsapp","statuses":[{"id":"w","status":"sent","timestamp":1e400}]}"#,
            ),
        ),
        ("a UTF-8 BOM", bom),
        ("invalid UTF-8", invalid_utf8),
        ("nested 120 deep", envelope(&deep)),
    ];
    for (done, (name, body)) in cases.iter().enumerate() {
        let response = app.post_webhook(body).await;
        assert_eq!(response.status(), 200, "{name}");
        let kept: i64 = count(&app.pool, "webhook_unreadable").await;
        let events = count(&app.pool, "webhook_events").await;
        // Each is kept once: read (as an event) or, failing that, raw.
        assert_eq!(kept + events, done as i64 + 1, "{name}");
    }
    // What was kept is the exact bytes, with why.
    let (raw, error): (Vec<u8>, String) =
        sqlx::query_as("SELECT raw, error FROM webhook_unreadable ORDER BY id LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(raw, b"hello");
    assert!(error.contains("not JSON"), "{error}");
    assert!(count(&app.pool, "webhook_unreadable").await >= 5);
}
