//! The session rules have one home, so the three ways a conversation runs agree:
//! the daemon (`serve`: webhooks in, the fake Graph API out), `wabot replay
//! --dry-run` over what the daemon stored, and `wabot simulate` in a terminal give
//! the same transcript for the same script (skip words, a re-asked question, a
//! choice, STOP, START).

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::e2e::{button_reply, install_chatbot, load_json, text, Engine};
use crate::engine::fixture;

/// One line of the script: what the customer does.
enum Say {
    Text(&'static str),
    /// A tapped button: its id, its title, and its number in simulate's list.
    Button(&'static str, &'static str, usize),
}

const SCRIPT: &[Say] = &[
    Say::Text("hi"),
    Say::Text("what?"),
    Say::Button("btn_prices", "Prices", 2),
    Say::Text("cancel"),
    Say::Text("STOP"),
    Say::Text("hello"),
    Say::Text("start"),
    Say::Button("btn_hours", "Opening hours", 1),
];

/// What a Graph API body says, as simulate prints it after `bot> `.
fn said(body: &Value) -> String {
    body["text"]["body"]
        .as_str()
        .or_else(|| body["interactive"]["body"]["text"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn serve_replay_and_simulate_tell_the_same_conversation() {
    let bot_file = fixture("support-menu.json");

    // 1. The daemon.
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&bot_file)).await;
    for (n, line) in SCRIPT.iter().enumerate() {
        let wamid = format!("wamid.PARITY{n}");
        match line {
            Say::Text(t) => engine.say(text(&wamid, t)).await,
            Say::Button(id, title, _) => engine.say(button_reply(&wamid, id, title)).await,
        }
        // Each line is answered before the next, as a person would wait.
        crate::e2e::eventually(
            pool,
            "SELECT count(*) FROM turn_jobs WHERE done_at IS NULL AND kind <> 'timeout'",
            0,
        )
        .await;
        crate::e2e::eventually(
            pool,
            "SELECT count(*) FROM send_jobs WHERE done_at IS NULL",
            0,
        )
        .await;
    }
    let served: Vec<String> = engine
        .graph
        .accepted()
        .iter()
        .map(|r| said(&r.body))
        .collect();
    assert_eq!(
        served,
        [
            "Hi! Welcome to the Corner Bakery help line.",
            "What can we help you with?",
            "What can we help you with?",
            "Prices: bread from 2 EUR, cakes from 18 EUR, coffee 2.50 EUR.",
            "Thank you for writing to us! Write again any time.",
            "You will no longer receive messages from us. Reply START to subscribe again.",
            "Hi! Welcome to the Corner Bakery help line.",
            "What can we help you with?",
            "You are subscribed again. Reply STOP to stop.",
            "Opening hours: every day from 7:00 to 19:00, Sundays until 14:00.",
            "Thank you for writing to us! Write again any time.",
        ],
        "the daemon's transcript"
    );

    // 2. The dry run over what the daemon stored: every answer the same.
    let bin = env!("CARGO_BIN_EXE_wabot");
    let out = Command::new(bin)
        .args([
            "replay",
            "--dry-run",
            "--fail-on-diff",
            "--json",
            "--chatbot",
        ])
        .arg(&bot_file)
        .env("DATABASE_URL", &engine.app.config.database_url)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replay found differences:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exchanges: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("same").is_some())
        .collect();
    assert_eq!(exchanges.len(), SCRIPT.len(), "{stdout}");
    assert!(exchanges.iter().all(|e| e["same"] == true), "{stdout}");

    // 3. The terminal: simulate speaks first (as if the customer had written the
    // first line), then takes the rest; a tapped button is its number.
    let input: String = SCRIPT[1..]
        .iter()
        .map(|line| match line {
            Say::Text(t) => format!("{t}\n"),
            Say::Button(_, _, k) => format!("{k}\n"),
        })
        .collect();
    let mut child = Command::new(bin)
        .arg("simulate")
        .arg(&bot_file)
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let simulated: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("bot> "))
        .map(str::to_owned)
        .collect();
    assert_eq!(simulated, served, "simulate's transcript");
}
