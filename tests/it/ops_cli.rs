//! `wabot status` and `wabot conversation show` as an operator runs them (the built
//! binary), over a database a real conversation went through: the daemon answered
//! webhooks, the fake Graph API accepted (and once refused) the replies, Meta's
//! statuses came back.

use std::process::{Command, Output};

use serde_json::Value;
use sqlx::PgPool;

use crate::e2e::{
    button_reply, eventually, install_chatbot, load_json, text, Engine, CUSTOMER, UNSENT,
};
use crate::engine::fixture;
use crate::helpers::{sign, spawn_app_with, APP_SECRET, PHONE_NUMBER_ID, VERIFY_TOKEN};
use crate::support_graph::{Failure, FakeGraph};
use crate::webhook::statuses_webhook;

/// A token as long as Meta's, so that its last four characters may be shown.
const LONG_TOKEN: &str = "EAAGtestTOKENabcdefghijklmnopqrstuvwxyz0123456789Zk9q";
const ROW_VERIFY_TOKEN: &str = "row-verify-token-secret";

/// Runs the built binary against `database_url` in an empty directory (no
/// `wabot.toml`), with no fallback credentials in its environment.
pub fn wabot(database_url: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().expect("a temporary directory");
    Command::new(env!("CARGO_BIN_EXE_wabot"))
        .args(args)
        .current_dir(dir.path())
        .env("DATABASE_URL", database_url)
        .env("WABOT_LOG_FILTER", "off")
        .env_remove("WABOT_ACCESS_TOKEN")
        .env_remove("WABOT_APP_SECRET")
        .env_remove("WABOT_VERIFY_TOKEN")
        .env_remove("WABOT_PHONE_NUMBER_ID")
        .env_remove("WABOT_BUSINESS_ACCOUNT_ID")
        .output()
        .expect("run wabot")
}

fn json_of(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Checks that the table under the line `header` (its column names, in the order
/// given) lines up: every row's cell starts where its heading starts (a heading of
/// a right-aligned column: ends where it ends), and two spaces part the columns.
/// Counted in characters. Returns the table's rows.
fn assert_aligned<'a>(screen: &'a str, header: &[(&str, bool)]) -> Vec<&'a str> {
    let names: Vec<&str> = header.iter().map(|(n, _)| *n).collect();
    let mut lines = screen.lines();
    let head = lines
        .find(|l| {
            let words: Vec<&str> = l
                .split("  ")
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .collect();
            words == names
        })
        .unwrap_or_else(|| panic!("no table headed {names:?}: {screen}"));
    // (start, end) of each heading, in characters.
    let mut from = 0;
    let spans: Vec<(usize, usize)> = names
        .iter()
        .map(|name| {
            let at = from + head[from..].find(name).expect("the heading");
            from = at + name.len();
            let start = head[..at].chars().count();
            (start, start + name.chars().count())
        })
        .collect();
    let rows: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).collect();
    assert!(!rows.is_empty(), "the table has rows: {screen}");
    for row in &rows {
        let chars: Vec<char> = row.chars().collect();
        let at = |i: usize| chars.get(i).copied().unwrap_or(' ');
        for (n, ((start, end), (name, right))) in spans.iter().zip(header).enumerate() {
            let shown = format!("`{name}` in\n{head}\n{row}");
            if *right {
                assert!(at(end - 1) != ' ' && at(*end) == ' ', "{shown}");
                continue;
            }
            // The last column may be empty (the line ends before it).
            if n + 1 == spans.len() && chars.len() <= *start {
                continue;
            }
            assert!(at(*start) != ' ', "{shown}");
            assert!(
                *start < 2 || at(start - 1) == ' ' && at(start - 2) == ' ',
                "{shown}"
            );
        }
    }
    rows
}

/// The daemon with its worker on, its credentials in an active `whatsapp_config`
/// row (the environment holds the same token, so no send races the first read).
async fn start_engine() -> Engine {
    let graph = FakeGraph::start_with(LONG_TOKEN, PHONE_NUMBER_ID).await;
    let url = graph.url();
    let app = spawn_app_with(|c| {
        c.worker.enabled = true;
        c.whatsapp.graph_api_base = url;
        c.whatsapp.graph_timeout_ms = 500;
        c.whatsapp.access_token = Some(LONG_TOKEN.to_owned().into());
        c.worker.send_retry_base_ms = 10;
        c.worker.send_rate_per_sec = 1000;
        c.worker.lease_secs = 5;
    })
    .await;
    wabot::store::whatsapp_config::insert(
        &app.pool,
        &wabot::store::whatsapp_config::NewConfig {
            phone_number_id: PHONE_NUMBER_ID,
            business_account_id: "987654321",
            access_token: LONG_TOKEN,
            webhook_verify_token: ROW_VERIFY_TOKEN,
            app_secret: Some(APP_SECRET),
            is_active: true,
        },
    )
    .await
    .expect("whatsapp_config row");
    Engine { app, graph }
}

/// hello → welcome + menu (the welcome delivered and read), then "Prices" → the
/// prices answer refused by Meta (131047) and the goodbye sent.
async fn converse(engine: &Engine) -> Vec<String> {
    let pool = &engine.app.pool;
    install_chatbot(pool, &load_json(&fixture("support-menu.json"))).await;
    engine.say(text("wamid.OPS1", "hello")).await;
    let first = engine.replies(0, 2).await;
    eventually(pool, UNSENT, 0).await;
    let welcome = first[0].wamid().unwrap().to_owned();
    let menu = first[1].wamid().unwrap().to_owned();
    // The welcome is delivered and read; the menu, Meta says later, was not delivered.
    let body = statuses_webhook(&[
        (&welcome, "delivered"),
        (&welcome, "read"),
        (&menu, "failed"),
    ]);
    assert_eq!(engine.app.post_webhook(&body).await.status(), 200);
    eventually(
        pool,
        &format!(
            "SELECT count(*) FROM messages WHERE status = 'read' \
             AND content->>'whatsappMessageId' = '{welcome}'"
        ),
        1,
    )
    .await;

    engine.graph.fail_next(1, Failure::WindowClosed);
    engine
        .say(button_reply("wamid.OPS2", "btn_prices", "Prices"))
        .await;
    engine.replies(2, 1).await;
    eventually(pool, UNSENT, 0).await;
    eventually(
        pool,
        "SELECT count(*) FROM messages WHERE status = 'failed'",
        2,
    )
    .await;
    vec![welcome, menu]
}

/// Rows the lead's heartbeat will write: a live process holding its sends (with a
/// timer leased to it) and one that stopped two hours ago.
async fn processes(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO wabot_processes (holder, pid, hostname, version, started_at, seen_at, \
             send_hold, send_hold_since, turn_leases, send_leases, send_hold_kind) VALUES \
         ('p4242-live', 4242, 'box-a', '0.1.0', now() - interval '1 hour', now(), \
          'the access token was rejected (190)', now() - interval '5 minutes', 1, 0, \
          'token_rejected'), \
         ('p17-gone', 17, 'box-b', '0.1.0', now() - interval '3 hours', \
          now() - interval '2 hours', NULL, NULL, 0, 0, NULL)",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO turn_jobs (conversation_id, kind, run_at, locked_by, locked_until, attempts) \
         SELECT id, 'timeout', now() + interval '10 minutes', 'p4242-live:0123abcd', \
                now() + interval '10 minutes', 1 FROM conversations",
    )
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn status_and_transcript_show_a_real_conversation() {
    let engine = start_engine().await;
    let wamids = converse(&engine).await;
    let pool = engine.app.pool.clone();
    // A signed body that is not JSON: kept as unreadable, answered 200.
    let garbage = b"{not json".to_vec();
    let response = engine
        .app
        .client
        .post(format!("{}/webhook", engine.app.address))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(&garbage, APP_SECRET))
        .body(garbage)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Meta reports an error of its own in a webhook.
    let errors = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/webhooks/errors.json"),
    )
    .unwrap();
    assert_eq!(engine.app.post_webhook(&errors).await.status(), 200);
    processes(&pool).await;
    let db = engine.app.config.database_url.clone();

    // --- wabot status --json
    let out = wabot(&db, &["status", "--json"]);
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    for secret in [LONG_TOKEN, APP_SECRET, ROW_VERIFY_TOKEN, VERIFY_TOKEN] {
        assert!(!raw.contains(secret), "a secret is printed: {raw}");
    }
    let status = json_of(&out);
    let bots = status["chatbots"].as_array().unwrap();
    assert_eq!(bots.len(), 1, "{status:#}");
    assert_eq!(bots[0]["name"], "Support Menu");
    assert_eq!(bots[0]["compiles"], true);
    assert_eq!(bots[0]["nodes"], 7);
    assert_eq!(bots[0]["active_contexts"], 0, "the conversation completed");

    let w = &status["whatsapp"];
    assert_eq!(w["source"], "database");
    assert_eq!(w["phone_number_id"], PHONE_NUMBER_ID);
    assert_eq!(w["api_version"], "v24.0");
    assert_eq!(w["access_token"]["set"], true);
    assert_eq!(w["access_token"]["last4"], "Zk9q");
    assert_eq!(
        w["app_secret"],
        serde_json::json!({"set": true, "last4": null})
    );
    assert_eq!(w["verify_token"]["set"], true);
    assert_eq!(w["verify_token"]["last4"], Value::Null);

    // The queues: nothing left of the conversation but the leased timer.
    let queues = status["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 1, "{queues:#?}");
    assert_eq!(queues[0]["queue"], "turn");
    assert_eq!(queues[0]["kind"], "timeout");
    assert_eq!(queues[0]["open"], 1);
    assert_eq!(queues[0]["leased"], 1);
    assert_eq!(queues[0]["waiting"], 0);
    assert_eq!(queues[0]["oldest_waiting_secs"], Value::Null);

    assert_eq!(status["sending"]["on_hold"], true);
    assert_eq!(status["sending"]["failing"], false);
    assert_eq!(status["sending"]["queued"], 0);
    let holds = status["sending"]["holds"].as_array().unwrap();
    assert_eq!(holds.len(), 1, "the stopped process holds nothing");
    assert_eq!(holds[0]["holder"], "p4242-live");
    assert_eq!(holds[0]["reason"], "the access token was rejected (190)");
    assert_eq!(holds[0]["kind"], "token_rejected");

    // The daemon of this test reports itself (its heartbeat), beside the two rows
    // inserted above.
    let procs = status["processes"].as_array().unwrap();
    assert_eq!(procs.len(), 3, "{procs:#?}");
    let process = |holder: &str| {
        procs
            .iter()
            .find(|p| p["holder"] == holder)
            .unwrap_or_else(|| panic!("no process {holder} in {procs:#?}"))
    };
    let own = process(&engine.app.state.holder);
    assert_eq!(own["alive"], true);
    assert_eq!(own["pid"], std::process::id());
    assert_eq!(own["send_hold"], Value::Null);
    let live = process("p4242-live");
    assert_eq!(live["alive"], true);
    assert_eq!(live["leased_turns"], 1);
    assert_eq!(live["pid"], 4242);
    assert_eq!(process("p17-gone")["alive"], false);
    let leases = status["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 1, "{leases:#?}");
    assert_eq!(leases[0]["holder"], "p4242-live");
    assert_eq!(leases[0]["queue"], "turn");
    assert_eq!(leases[0]["jobs"], 1);

    let groups = status["errors"]["groups"].as_array().unwrap();
    let group = |kind: &str| {
        groups
            .iter()
            .find(|g| g["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {groups:#?}"))
    };
    assert_eq!(group("send_refused")["code"], "131047");
    assert_eq!(group("send_refused")["count"], 1);
    assert_eq!(group("webhook_unreadable")["count"], 1);
    assert_eq!(group("delivery_failed")["code"], "131026");
    assert_eq!(group("delivery_failed")["count"], 1);
    assert_eq!(group("webhook_error")["code"], "131000");
    assert_eq!(
        group("webhook_error")["example"],
        "The message could not be processed."
    );
    assert_eq!(groups.len(), 4, "nothing else went wrong: {groups:#?}");

    // --- the screen says the same, without secrets
    let out = wabot(&db, &["status"]);
    assert!(out.status.success());
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    for secret in [LONG_TOKEN, APP_SECRET, ROW_VERIFY_TOKEN] {
        assert!(!screen.contains(secret), "a secret is printed: {screen}");
    }
    assert!(screen.contains("\"Support Menu\""), "{screen}");
    assert!(screen.contains("access token set (…Zk9q)"), "{screen}");
    assert!(screen.contains("SENDING ON HOLD in p4242-live"), "{screen}");
    assert!(screen.contains("p17-gone STOPPED"), "{screen}");
    assert!(screen.contains("send_refused"), "{screen}");
    // Counts in the right number; no Rust debug text.
    assert!(
        screen.contains("compiles: 7 nodes, 1 warning; 0 active conversations"),
        "{screen}"
    );
    assert!(screen.contains("(190); 0 sends queued"), "{screen}");
    assert!(screen.contains("leases now: 1 turn, 0 sends"), "{screen}");
    for debug in ["Some(", "None", "1 warnings", "1 turns"] {
        assert!(!screen.contains(debug), "`{debug}` in {screen}");
    }
    // Every table lines up, whatever the width of its cells.
    let errors = assert_aligned(
        &screen,
        &[
            ("kind", false),
            ("code", false),
            ("count", true),
            ("last", false),
            ("latest example", false),
        ],
    );
    assert_eq!(errors.len(), 4, "{screen}");
    assert!(
        errors
            .iter()
            .any(|r| r.contains("webhook_error")
                && r.ends_with("The message could not be processed.")),
        "{screen}"
    );
    assert_aligned(
        &screen,
        &[
            ("queue", false),
            ("open", true),
            ("waiting", true),
            ("leased", true),
            ("scheduled", true),
            ("expired", true),
            ("retrying", true),
            ("longest wait", false),
            ("oldest", false),
        ],
    );

    // --- wabot conversation show +PHONE --json
    let phone = format!("+{CUSTOMER}");
    let shown = json_of(&wabot(&db, &["conversation", "show", &phone, "--json"]));
    assert_eq!(shown["conversation"]["customer_phone"], CUSTOMER);
    assert_eq!(
        shown["conversation"]["business_phone_number_id"],
        PHONE_NUMBER_ID
    );
    let items = shown["items"].as_array().unwrap();
    let line: Vec<String> = items
        .iter()
        .map(|i| match i["item"].as_str().unwrap() {
            "message" => format!(
                "{} {}",
                i["direction"].as_str().unwrap(),
                i["status"].as_str().unwrap()
            ),
            other => format!("{other} {}", i["kind"].as_str().unwrap()),
        })
        .collect();
    assert_eq!(
        line,
        [
            "in delivered",
            "turn inbound",
            "out read",
            "out failed",
            "in delivered",
            "turn inbound",
            "out failed",
            "out sent"
        ],
        "{items:#?}"
    );
    assert_eq!(shown["total_items"], 8);
    assert_eq!(items[0]["summary"], "hello");
    assert_eq!(items[0]["wamid"], "wamid.OPS1");
    // The turn log lists the nodes a turn handled: it ran start, welcome and the
    // menu question, which waits for the answer.
    assert_eq!(
        items[1]["nodes"],
        serde_json::json!(["start", "welcome", "menu"])
    );
    assert_eq!(items[1]["current_node_id"], "menu");
    assert_eq!(items[1]["status"], "waiting_input");
    assert_eq!(items[1]["sends"], 2);
    assert_eq!(items[2]["wamid"], wamids[0].as_str());
    assert_eq!(
        items[2]["summary"],
        "Hi! Welcome to the Corner Bakery help line."
    );
    let history: Vec<&str> = items[2]["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["delivered", "read"]);
    assert!(
        items[3]["summary"]
            .as_str()
            .unwrap()
            .ends_with("[buttons: Opening hours | Prices | About us]"),
        "{:#}",
        items[3]
    );
    assert_eq!(items[3]["error"]["code"], 131026);
    assert_eq!(
        items[3]["statuses"][0]["errors"][0]["code"], 131026,
        "{:#}",
        items[3]
    );
    assert_eq!(items[4]["summary"], "[button] Prices (btn_prices)");
    assert_eq!(
        items[5]["nodes"],
        serde_json::json!(["menu", "answer-prices", "goodbye"])
    );
    assert_eq!(items[5]["completion_reason"], "flow_completed");
    let vars = items[5]["variables"].as_object().unwrap();
    assert!(!vars.contains_key("__wabot"), "{vars:?}");
    assert_eq!(vars["question_1"]["response"], "btn_prices");
    assert_eq!(vars["customer_phone"], CUSTOMER);
    assert_eq!(items[6]["error"]["code"], 131047);
    assert!(items[6]["summary"]
        .as_str()
        .unwrap()
        .starts_with("Prices: bread"));
    assert_eq!(shown["context"]["status"], "completed");
    // The leased timer shows as pending.
    let pending = shown["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0]["kind"], "timeout");
    assert_eq!(pending[0]["leased"], true);

    // Without `+`, by id, and --limit: the same conversation.
    let id = shown["conversation"]["id"].as_str().unwrap().to_owned();
    let by_id = json_of(&wabot(&db, &["conversation", "show", &id, "--json"]));
    assert_eq!(by_id["items"], shown["items"]);
    let last = json_of(&wabot(
        &db,
        &["conversation", "show", CUSTOMER, "--json", "--limit", "2"],
    ));
    assert_eq!(last["total_items"], 8);
    assert_eq!(last["items"].as_array().unwrap()[..], items[6..]);

    // The screen.
    let out = wabot(&db, &["conversation", "show", &phone]);
    assert!(out.status.success());
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        screen
            .contains("TURN  start > welcome > menu (3 steps, 2 sends); now `menu`, waiting_input"),
        "{screen}"
    );
    assert!(
        screen.contains("FAILED: 131026 Message undeliverable (Receiver is incapable)\n"),
        "{screen}"
    );
    assert!(
        screen.contains("FAILED: (#131047) Re-engagement message, HTTP 400\n"),
        "{screen}"
    );
    assert!(screen.contains("Pending turn jobs"), "{screen}");
    assert!(!screen.contains("__wabot"), "{screen}");
    let pending = assert_aligned(
        &screen,
        &[
            ("kind", false),
            ("job", true),
            ("due", false),
            ("state", false),
            ("attempts", true),
            ("last error", false),
        ],
    );
    assert_eq!(pending.len(), 1, "{screen}");
    assert!(
        pending[0].contains("timeout") && pending[0].contains("running"),
        "{screen}"
    );
    // Each message's summary starts in the same column, after its type.
    let starts: Vec<usize> = screen
        .lines()
        .filter(|l| l.contains("  IN   ") || l.contains("  OUT  "))
        .map(|l| {
            let chars: Vec<char> = l.chars().collect();
            // The time, the arrow, the type, then spaces up to the summary.
            let kind = 30 + chars[30..].iter().position(|c| *c == ' ').expect("a type");
            kind + chars[kind..]
                .iter()
                .position(|c| *c != ' ')
                .expect("a summary")
        })
        .collect();
    assert_eq!(starts.len(), 6, "{screen}");
    assert!(
        starts.iter().all(|s| *s == starts[0]),
        "{starts:?}: {screen}"
    );
    for debug in ["Some(", "None"] {
        assert!(!screen.contains(debug), "`{debug}` in {screen}");
    }
}

#[tokio::test]
async fn unknown_or_malformed_conversations_are_clear_errors() {
    let app = crate::helpers::spawn_app().await;
    let db = app.config.database_url.clone();
    for (who, expected) in [
        ("+15550001111", "no conversation with +15550001111"),
        ("15550001111", "no conversation with +15550001111"),
        (
            "6f1c1d4e-8f0e-4a53-9d59-3d2a4b1c0e9f",
            "no conversation has the id 6f1c1d4e-8f0e-4a53-9d59-3d2a4b1c0e9f",
        ),
        ("hello", "neither a phone number"),
    ] {
        let out = wabot(&db, &["conversation", "show", who]);
        assert_eq!(out.status.code(), Some(1), "{who}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{who}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // An empty database: no chatbot, environment credentials unset, nothing queued.
    let status = json_of(&wabot(&db, &["status", "--json"]));
    assert_eq!(status["chatbots"], serde_json::json!([]));
    assert_eq!(status["whatsapp"]["source"], "environment");
    assert_eq!(status["whatsapp"]["access_token"]["set"], false);
    assert_eq!(status["queues"], serde_json::json!([]));
    assert_eq!(status["sending"]["on_hold"], false);
    assert_eq!(status["errors"]["groups"], serde_json::json!([]));
    let out = wabot(&db, &["status"]);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("none: a new conversation gets no answer"),
        "{screen}"
    );
    // A database that does not exist is refused, not created.
    let missing = db.replace("wabot_test_", "wabot_missing_");
    assert_ne!(missing, db);
    let out = wabot(&missing, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
}
