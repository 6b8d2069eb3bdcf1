//! `wabot chatbot ...` and `wabot simulate` as a user runs them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use uuid::Uuid;

use crate::engine::{fixture, spawn_orders_api};
use crate::helpers;

fn wabot(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wabot"))
        .args(args)
        .envs(env.iter().copied())
        .env("WABOT_LOG_FILTER", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wabot");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wabot finishes")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn validate_reports_errors_with_node_names_and_exits_1() {
    let sample = helpers::shared("whatsapp-builder/chatbots/sample-chatbot.json");
    let good = wabot(
        &["chatbot", "validate", sample.to_str().unwrap_or_default()],
        &[],
        "",
    );
    assert!(good.status.success(), "{}", stdout(&good));
    assert!(stdout(&good).contains("ok: \"Müşteri Destek Botu\", 7 nodes"));

    let bad = fixture("bad-graph.json");
    let out = wabot(
        &[
            "chatbot",
            "validate",
            sample.to_str().unwrap_or_default(),
            bad.to_str().unwrap_or_default(),
        ],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("error: node `mystery` (Mystery): unknown node type `teleport`"),
        "{text}"
    );
    assert!(text.contains("9 errors"), "{text}");
}

#[test]
fn render_prints_dot_with_labels_and_handles() {
    let file = helpers::shared("whatsapp-builder/chatbots/restaurant-reservation-bot.json");
    let out = wabot(
        &["chatbot", "render", file.to_str().unwrap_or_default()],
        &[],
        "",
    );
    assert!(out.status.success());
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph chatbot {"), "{dot}");
    assert!(
        dot.contains("\"rest-api-1\" [label=\"Create Reservation\\nrest_api · rest_api_1\""),
        "{dot}"
    );
    assert!(
        dot.contains("\"condition-1\" -> \"success-msg\" [label=\"true\"];"),
        "{dot}"
    );
}

#[test]
fn simulate_gives_a_new_user_a_working_conversation() {
    let file = helpers::shared("whatsapp-builder/chatbots/sample-chatbot.json");
    let out = wabot(
        &["simulate", file.to_str().unwrap_or_default()],
        &[],
        "2\nhi again\n/quit\n",
    );
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("bot> Merhaba! WhatsApp Builder Destek"),
        "{text}"
    );
    assert!(text.contains("[2] Fiyat Bilgisi (btn_price)"), "{text}");
    assert!(
        text.contains("you> 2\nbot> Fiyat Bilgisi - Starter Paket"),
        "{text}"
    );
    assert!(
        text.contains("[conversation completed: flow_completed]"),
        "{text}"
    );
    // A message after the end starts the chatbot again.
    assert_eq!(
        text.matches("bot> Merhaba! WhatsApp Builder Destek")
            .count(),
        2,
        "{text}"
    );
}

#[tokio::test]
async fn simulate_makes_rest_api_calls_for_real() {
    let base = spawn_orders_api().await;
    let out = tokio::task::spawn_blocking(move || {
        let file = fixture("order-status.json");
        let var = format!("api_base={base}/api");
        let args = [
            "simulate",
            file.to_str().unwrap_or_default(),
            "--allow-private",
            "--var",
            var.as_str(),
            "--name",
            "Deniz",
        ];
        wabot(&args, &[], "ada@example.com\n2\n")
    })
    .await
    .expect("simulator");
    let text = stdout(&out);
    assert!(text.contains("bot> Hello Deniz!"), "{text}");
    assert!(text.contains("[2] Order #2 — shipped (ord-2)"), "{text}");
    assert!(
        text.contains("bot> Order ord-2 selected. Your first order is Order #1."),
        "{text}"
    );
}

#[tokio::test]
async fn import_stores_the_chatbot_and_prints_its_id() {
    let url = helpers::create_empty_database().await;
    let migrate = wabot(&["migrate", "run"], &[("DATABASE_URL", &url)], "");
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let file = helpers::shared("whatsapp-builder/chatbots/restaurant-reservation-bot.json");
    let out = wabot(
        &[
            "chatbot",
            "import",
            file.to_str().unwrap_or_default(),
            "--activate",
        ],
        &[("DATABASE_URL", &url)],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: Uuid = stdout(&out).trim().parse().expect("a uuid");
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let row = wabot::store::chatbots::load(&pool, id)
        .await
        .expect("load")
        .expect("row");
    assert!(row.is_active);
    assert_eq!(row.status, "active");

    let bad = fixture("bad-graph.json");
    let refused = wabot(
        &["chatbot", "import", bad.to_str().unwrap_or_default()],
        &[("DATABASE_URL", &url)],
        "",
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not imported"));
}
