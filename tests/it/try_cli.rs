//! `wabot try` and `wabot dev fake-graph` as a newcomer runs them: the real binary,
//! input piped, the whole pipeline answering through the fake Graph API.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::helpers::{drop_when_the_test_passes, scratch_database_name, server_url, sign};
use crate::serve::wabot;

/// Runs `wabot try ARGS` with `input` piped; its stdout, once it exited 0.
async fn try_chat(args: &[&str], input: &str) -> String {
    let database = scratch_database_name("wabot_test");
    drop_when_the_test_passes(&database);
    let mut child = wabot()
        .arg("try")
        .args(["--database", &database])
        .args(args)
        .env("DATABASE_URL", server_url())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("wabot try ends after its input does")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn try_chats_with_the_sample_through_the_whole_pipeline() {
    let out = try_chat(&[], "hi\n2\n").await;
    let transcript: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("you:"))
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(
        transcript,
        [
            "you: hi",
            "bot: Hi! Welcome to the Corner Bakery help line.",
            "bot: What can we help you with?",
            "     [1] Opening hours   [2] Prices   [3] About us",
            "you: Prices",
            "bot: Prices: bread from 2 EUR, cakes from 18 EUR, coffee 2.50 EUR.",
            "bot: Thank you for writing to us! Write again any time.",
        ],
        "whole output:\n{out}"
    );
    assert!(out.contains("wabot conversation show 15550001234"), "{out}");
}

#[tokio::test]
async fn typed_text_at_the_samples_buttons_is_asked_again_and_a_title_picks() {
    let out = try_chat(&["--phone", "15550009999"], "hi\nwhat?\nopening hours\n").await;
    let asked = out.matches("bot: What can we help you with?").count();
    assert_eq!(
        asked, 2,
        "the question is asked again after typed text:\n{out}"
    );
    assert!(
        out.contains("you: Opening hours\nbot: Opening hours: every day"),
        "a title typed in any case picks that button:\n{out}"
    );
}

#[tokio::test]
async fn try_refuses_a_chatbot_with_errors_naming_the_node() {
    let database = scratch_database_name("wabot_test");
    let out = wabot()
        .args(["try", "--database", &database])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/chatbots/bad-graph.json"
        ))
        .env("DATABASE_URL", server_url())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: node"), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("wabot: ")).count(),
        1,
        "the failure is said once:\n{stderr}"
    );
}

/// `wabot dev fake-graph`: accepts a send like Meta, prints it, lists it, and posts
/// signed statuses to the webhook it was given.
#[tokio::test]
async fn dev_fake_graph_answers_like_meta_and_posts_signed_statuses() {
    // A receiver for the status webhooks, checking each signature.
    let (tx, mut statuses) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let receiver = axum::Router::new().route(
        "/webhook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let signed = headers["x-hub-signature-256"].to_str().unwrap().to_owned();
                    assert_eq!(signed, sign(&body, "dev-secret"));
                    let _ = tx.send(serde_json::from_slice(&body).unwrap());
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let webhook = format!("http://{}/webhook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let mut child = wabot()
        .args([
            "dev",
            "fake-graph",
            "--listen",
            "127.0.0.1:0",
            "--webhook",
            &webhook,
        ])
        .args(["--status-delay-ms", "10", "--phone-number-id", "777"])
        .env("WABOT_APP_SECRET", "dev-secret")
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), stderr.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_owned();

    let client = reqwest::Client::new();
    let sent: Value = client
        .post(format!("{base}/v21.0/777/messages"))
        .json(
            &json!({"messaging_product": "whatsapp", "to": "15550001111",
                      "type": "text", "text": {"body": "hello"}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let wamid = sent["messages"][0]["id"].as_str().unwrap().to_owned();

    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
        .await
        .expect("the accepted message is printed")
        .unwrap()
        .expect("a line on stdout");
    let printed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(printed["wamid"], wamid.as_str());
    assert_eq!(printed["body"]["text"]["body"], "hello");

    let listed: Value = client
        .get(format!("{base}/fake/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["to"], "15550001111");

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while seen.len() < 3 && Instant::now() < deadline {
        let Ok(Some(hook)) = tokio::time::timeout(Duration::from_secs(30), statuses.recv()).await
        else {
            break;
        };
        let value = &hook["entry"][0]["changes"][0]["value"];
        assert_eq!(value["metadata"]["phone_number_id"], "777");
        assert_eq!(value["statuses"][0]["id"], wamid.as_str());
        seen.push(value["statuses"][0]["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["sent", "delivered", "read"]);
    child.kill().await.unwrap();
}
