//! A Graph API that cannot be reached is one condition, shown where an operator
//! looks: this process's heartbeat row and `wabot status` name the URL and the
//! cause while it lasts, and clear once Meta answers again.

use std::time::Duration;

use axum::Json;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::e2e::{install_chatbot, text};
use crate::helpers::{spawn_app_with, ACCESS_TOKEN};
use crate::shutdown::Logs;
use crate::webhook::messages_webhook;

/// A loopback port nothing listens on (it was free a moment ago).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls this process's `send_hold` until `done` says yes; panics after 20 s.
async fn hold_until(
    pool: &PgPool,
    holder: &str,
    done: impl Fn(&Option<String>) -> bool,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let hold: Option<Option<String>> =
            sqlx::query_scalar("SELECT send_hold FROM wabot_processes WHERE holder = $1")
                .bind(holder)
                .fetch_optional(pool)
                .await
                .unwrap();
        if let Some(hold) = &hold {
            if done(hold) {
                return hold.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "send_hold stayed {hold:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_unreachable_graph_api_is_in_the_heartbeat_and_in_wabot_status_until_it_answers() {
    let (logs, _guard) = Logs::capture();
    let port = closed_port();
    let base = format!("http://127.0.0.1:{port}");
    let app = spawn_app_with(|c| {
        c.worker.enabled = true;
        c.whatsapp.graph_api_base = base.clone();
        c.whatsapp.graph_timeout_ms = 2_000;
        c.worker.send_retry_base_ms = 50;
        c.worker.send_max_attempts = 1_000;
    })
    .await;
    let bot = json!({"name": "Hello", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "hi", "type": "message", "data": {"label": "Hi", "content": "Hello!"}}
    ], "edges": [{"id": "e1", "source": "s", "target": "hi"}]});
    install_chatbot(&app.pool, &bot).await;
    let body = messages_webhook(
        crate::e2e::CUSTOMER,
        crate::e2e::CUSTOMER_NAME,
        vec![text("wamid.U1", "hi")],
    );
    assert_eq!(app.post_webhook(&body).await.status(), 200);

    let holder = app.state.holder.clone();
    let hold = hold_until(&app.pool, &holder, Option::is_some)
        .await
        .unwrap();
    assert!(
        hold.starts_with(&format!("Graph API unreachable at {base}: ")),
        "{hold}"
    );
    assert!(hold.contains("Connection refused"), "the cause: {hold}");
    assert!(!hold.contains(ACCESS_TOKEN), "{hold}");

    // `wabot status`, as an operator runs it, shows it for this process.
    let out = crate::serve::wabot()
        .args(["status", "--json"])
        .env("DATABASE_URL", &app.config.database_url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let holds = status["sending"]["holds"].as_array().unwrap();
    let ours = holds
        .iter()
        .find(|h| h["holder"] == holder.as_str())
        .unwrap_or_else(|| panic!("no hold of {holder}: {status:#}"));
    assert_eq!(ours["reason"], hold.as_str());
    assert_eq!(ours["kind"], "graph_unreachable");
    assert!(ours["since"].is_string(), "{ours}");
    assert_eq!(status["sending"]["failing"], true, "{status:#}");
    assert_eq!(status["sending"]["on_hold"], false, "calls are still tried");
    let screen = crate::serve::wabot()
        .arg("status")
        .env("DATABASE_URL", &app.config.database_url)
        .output()
        .await
        .unwrap();
    let screen = String::from_utf8_lossy(&screen.stdout);
    assert!(
        screen.contains("SENDING FAILING (retried with backoff) in "),
        "{screen}"
    );

    // Meta answers on that port again: the replies go, and the condition clears.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port is still free");
    let meta = axum::Router::new().fallback(|| async {
        Json(json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.BACK"}]}))
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, meta).await;
    });
    hold_until(&app.pool, &holder, Option::is_none).await;
    crate::e2e::eventually(
        &app.pool,
        "SELECT count(*) FROM send_jobs WHERE done_at IS NULL",
        0,
    )
    .await;

    // The reply was tried several times, and the log has one warning for all of
    // them, naming the URL and the cause, and one line when it was over.
    let attempts: i32 = sqlx::query_scalar("SELECT max(attempts) FROM send_jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(attempts >= 2, "tried {attempts} times");
    let warnings = logs.messages("WARN");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].starts_with(&format!("Graph API unreachable at {base} (")),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("Connection refused"), "{warnings:?}");
    let back = format!("Graph API reachable again at {base}");
    let infos = logs.messages("INFO");
    assert_eq!(
        infos.iter().filter(|m| m.starts_with(&back)).count(),
        1,
        "{infos:#?}"
    );
}
