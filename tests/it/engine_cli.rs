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
    let sample = fixture("support-menu.json");
    let good = wabot(
        &["chatbot", "validate", sample.to_str().unwrap_or_default()],
        &[],
        "",
    );
    assert!(good.status.success(), "{}", stdout(&good));
    // WhatsApp Builder's sample has no path for typed text at its menu: a warning,
    // not an error.
    let text = stdout(&good);
    assert!(
        text.contains("warning: node `menu` (Main menu): typed text has no path"),
        "{text}"
    );
    assert!(
        text.contains("ok: \"Support Menu\", 7 nodes, 1 warning"),
        "{text}"
    );

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
    let file = fixture("table-booking.json");
    let out = wabot(
        &["chatbot", "render", file.to_str().unwrap_or_default()],
        &[],
        "",
    );
    assert!(out.status.success());
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph chatbot {"), "{dot}");
    assert!(
        dot.contains("\"book\" [label=\"Book the table\\nrest_api · rest_api_1\""),
        "{dot}"
    );
    assert!(
        dot.contains("\"booked\" -> \"confirmed\" [label=\"true\"];"),
        "{dot}"
    );
}

#[test]
fn simulate_gives_a_new_user_a_working_conversation() {
    let file = fixture("support-menu.json");
    let out = wabot(
        &["simulate", file.to_str().unwrap_or_default()],
        &[],
        "2\nhi again\n/quit\n",
    );
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("bot> Hi! Welcome to the Corner Bakery help line."),
        "{text}"
    );
    assert!(text.contains("[2] Prices (btn_prices)"), "{text}");
    assert!(text.contains("you> 2\nbot> Prices: bread"), "{text}");
    assert!(
        text.contains("[conversation completed: flow_completed]"),
        "{text}"
    );
    // A message after the end starts the chatbot again.
    assert_eq!(
        text.matches("bot> Hi! Welcome to the Corner Bakery")
            .count(),
        2,
        "{text}"
    );
}

#[test]
fn simulate_asks_the_sample_menu_again_on_typed_text_then_ends_with_the_reason() {
    let file = fixture("support-menu.json");
    let out = wabot(
        &["simulate", file.to_str().unwrap_or_default()],
        &[],
        "hi\nwhat?\nhello\nagain\n/quit\n",
    );
    assert!(out.status.success());
    let text = stdout(&out);
    // WhatsApp Builder ends at the first typed text without a word, its defect
    // (docs/chatbot-fields.md). The menu is shown at the start and after each of the
    // first two typed texts.
    assert_eq!(
        text.matches("bot> What can we help you with?").count(),
        4,
        "{text}"
    );
    assert!(
        text.contains("you> hi\nbot> What can we help you with?"),
        "{text}"
    );
    assert!(
        text.contains("you> hello\n[conversation completed: no_path_for_typed_text]"),
        "{text}"
    );
    // The next message starts the chatbot again.
    let after = text.split("you> again").nth(1).unwrap_or_default();
    assert!(after.contains("bot> Hi! Welcome"), "{text}");
}

#[test]
fn simulate_ignores_a_skip_word_when_no_conversation_is_active() {
    let file = fixture("support-menu.json");
    let out = wabot(
        &["simulate", file.to_str().unwrap_or_default()],
        &[],
        "3\nİptal\nskip\nhello\n/quit\n",
    );
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("[conversation completed: flow_completed]"),
        "{text}"
    );
    assert_eq!(
        text.matches("[a skip word starts no chatbot]").count(),
        2,
        "{text}"
    );
    // Only `hello` started the chatbot again: two welcomes in all.
    assert_eq!(
        text.matches("bot> Hi! Welcome to the Corner Bakery")
            .count(),
        2,
        "{text}"
    );
    let after_hello = text.split("you> hello").nth(1).unwrap_or_default();
    assert!(after_hello.contains("bot> Hi! Welcome"), "{text}");
}

#[test]
fn validate_and_simulate_warn_about_a_message_cycle() {
    let file = fixture("ping-pong-loop.json");
    let out = wabot(
        &["chatbot", "validate", file.to_str().unwrap_or_default()],
        &[],
        "",
    );
    assert!(out.status.success(), "a warning is not an error");
    let text = stdout(&out);
    assert!(
        text.contains("warning: node `ping` (Ping): nodes `ping`, `pong` form a cycle"),
        "{text}"
    );
    let out = wabot(
        &["simulate", file.to_str().unwrap_or_default()],
        &[("WABOT_MAX_SENDS_PER_TURN", "4")],
        "/quit\n",
    );
    let text = stdout(&out);
    assert_eq!(text.matches("bot> p").count(), 4, "{text}");
    assert!(
        text.contains("[conversation completed: send_limit_exceeded]"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("form a cycle"));
}

#[test]
fn counts_read_as_english_one_warning_two_warnings_no_warnings() {
    let files = [
        "ping-pong-loop.json",
        "flow-desk.json",
        "table-booking.json",
    ]
    .map(fixture);
    let mut args = vec!["chatbot", "validate"];
    args.extend(files.iter().map(|f| f.to_str().unwrap_or_default()));
    let out = wabot(&args, &[], "");
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("3 nodes, 1 warning\n"), "{text}");
    assert!(text.contains("8 nodes, 2 warnings\n"), "{text}");
    assert!(text.contains("9 nodes, 0 warnings\n"), "{text}");
    assert!(!text.contains("1 warnings"), "{text}");
}

#[test]
fn simulate_help_documents_var() {
    let out = wabot(&["simulate", "--help"], &[], "");
    assert!(out.status.success());
    let help = stdout(&out);
    assert!(help.contains("--var <NAME=VALUE>"), "{help}");
    assert!(
        help.contains("Set a variable before the conversation starts"),
        "{help}"
    );
}

#[tokio::test]
async fn simulate_says_in_prose_why_a_rest_api_call_failed() {
    // A port that was just free: the order service is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = tokio::task::spawn_blocking(move || {
        let file = fixture("order-status.json");
        let var = format!("api_base=http://127.0.0.1:{port}/api");
        let args = [
            "simulate",
            file.to_str().unwrap_or_default(),
            "--allow-private",
            "--var",
            var.as_str(),
        ];
        wabot(&args, &[], "ada@example.com\n/quit\n")
    })
    .await
    .expect("simulator");
    assert!(out.status.success());
    let text = stdout(&out);
    let failed = text
        .lines()
        .find(|l| l.starts_with("[rest_api `fetch_orders` (Fetch orders) failed: "))
        .unwrap_or_else(|| panic!("no line about the failed call: {text}"));
    assert!(failed.contains("Connection refused"), "{failed}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for shown in [text.as_str(), &*stderr] {
        for debug in ["Some(", "None", "DataExchange", "Navigate"] {
            assert!(!shown.contains(debug), "Rust debug text `{debug}`: {shown}");
        }
    }
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
    let file = fixture("table-booking.json");
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
