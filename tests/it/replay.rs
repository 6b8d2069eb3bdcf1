//! `wabot replay`: conversations that went through the daemon, fed through ingest
//! again (a no-op, or the repair of a lost message) and through another chatbot
//! in a dry run that writes nothing.

use std::process::{Command, Output};

use serde_json::{json, Value};
use sqlx::PgPool;
use wabot::replay::{self, IngestSummary, Selection};
use wabot::store::replay::EventFilter;

use crate::e2e::{
    button_reply, eventually, install_chatbot, load_json, text, Engine, CUSTOMER, UNSENT,
};
use crate::engine::fixture;
use crate::helpers::PHONE_NUMBER_ID;
use crate::webhook::{messages_webhook, now_secs, BUSINESS};

/// The second customer of these tests.
const OTHER: &str = "905559998877";

/// Row counts of every table ingest, the turn stage and the sender write.
async fn all_counts(pool: &PgPool) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for table in [
        "webhook_events",
        "users",
        "conversations",
        "conversation_participants",
        "messages",
        "turn_jobs",
        "message_statuses",
        "conversation_contexts",
        "send_jobs",
        "wabot_turn_log",
    ] {
        out.push((table.to_owned(), crate::webhook::count(pool, table).await));
    }
    out
}

/// A statuses webhook for our replies, addressed to `recipient`.
fn statuses_for(recipient: &str, wamids: &[String], status: &str) -> Vec<u8> {
    let statuses: Vec<Value> = wamids
        .iter()
        .map(|w| {
            json!({"id": w, "status": status, "timestamp": now_secs().to_string(),
                   "recipient_id": recipient,
                   "conversation": {"id": "CONV-1", "origin": {"type": "service"}},
                   "pricing": {"billable": false, "pricing_model": "PMP", "category": "service"}})
        })
        .collect();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": BUSINESS},
            "statuses": statuses}}]}]})
    .to_string()
    .into_bytes()
}

/// Two customers talk to the sample support bot through the daemon: CUSTOMER says
/// hello and picks Prices (4 replies), OTHER says hello (2 replies); every reply
/// is delivered. The daemon is stopped at the end, so what replay queues stays.
async fn conversation() -> Engine {
    let mut engine = Engine::start().await;
    let pool = engine.app.pool.clone();
    install_chatbot(&pool, &load_json(&fixture("support-menu.json"))).await;
    engine.say(text("wamid.IN1", "hello")).await;
    engine.replies(0, 2).await;
    engine
        .say(button_reply("wamid.IN2", "btn_prices", "Prices"))
        .await;
    engine.replies(2, 2).await;
    let other = messages_webhook(
        OTHER,
        "Mehmet",
        vec![crate::webhook::text(
            OTHER,
            "wamid.OTHER1",
            "hello",
            now_secs(),
        )],
    );
    assert_eq!(engine.app.post_webhook(&other).await.status(), 200);
    engine.replies(4, 2).await;
    eventually(&pool, UNSENT, 0).await;

    let sent = engine.graph.accepted();
    let to = |who: &str| -> Vec<String> {
        sent.iter()
            .filter(|r| r.to() == Some(who))
            .filter_map(|r| r.wamid().map(str::to_owned))
            .collect()
    };
    let (mine, theirs) = (to(CUSTOMER), to(OTHER));
    assert_eq!((mine.len(), theirs.len()), (4, 2));
    let delivered = statuses_for(CUSTOMER, &mine, "delivered");
    assert_eq!(engine.app.post_webhook(&delivered).await.status(), 200);
    let delivered = statuses_for(OTHER, &theirs, "delivered");
    assert_eq!(engine.app.post_webhook(&delivered).await.status(), 200);
    engine.app.stop().await;
    engine
}

fn everything() -> Selection {
    Selection::default()
}

#[tokio::test]
async fn replaying_into_the_same_database_changes_nothing() {
    let engine = conversation().await;
    let pool = &engine.app.pool;
    let before = all_counts(pool).await;

    let summary = replay::into_database(pool, &everything(), Some(PHONE_NUMBER_ID))
        .await
        .unwrap();
    // The status webhooks have no raw event: their status rows are their record.
    assert_eq!(
        summary,
        IngestSummary {
            events: 3,
            messages_duplicate: 3,
            ..IngestSummary::default()
        }
    );
    assert_eq!(
        all_counts(pool).await,
        before,
        "a replay of what is stored is a no-op"
    );

    // The command says the same.
    let out = wabot(&engine, &["replay", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["events"], 3);
    assert_eq!(printed["messages_new"], 0);
    assert_eq!(printed["messages_duplicate"], 3);
    assert_eq!(printed["jobs_queued"], 0);
    let out = wabot(&engine, &["replay", "--since", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("messages: 0 new, 3 already stored"),
        "{}",
        stdout(&out)
    );
    assert_eq!(all_counts(pool).await, before);
}

#[tokio::test]
async fn a_lost_message_is_restored_and_its_turn_queued() {
    let engine = conversation().await;
    let pool = &engine.app.pool;
    let before = all_counts(pool).await;
    sqlx::query("DELETE FROM messages WHERE content ->> 'whatsappMessageId' = 'wamid.IN2'")
        .execute(pool)
        .await
        .unwrap();

    let summary = replay::into_database(pool, &everything(), Some(PHONE_NUMBER_ID))
        .await
        .unwrap();
    assert_eq!(summary.messages_new, 1);
    assert_eq!(summary.messages_duplicate, 2);
    assert_eq!(summary.jobs_queued, 1);
    assert_eq!(summary.statuses_new, 0);

    let (kind, content, _, _, _, _) = crate::webhook::message_row(pool, "wamid.IN2").await;
    assert_eq!(kind, "interactive");
    assert_eq!(
        content["raw"]["interactive"]["button_reply"]["id"],
        "btn_prices"
    );
    // Queued for the daemon: unleased and unfinished, so recovery claims it.
    let (locked_by, done): (Option<String>, bool) = sqlx::query_as(
        "SELECT j.locked_by, j.done_at IS NOT NULL FROM turn_jobs j \
         JOIN messages m ON m.id = j.message_id \
         WHERE m.content ->> 'whatsappMessageId' = 'wamid.IN2'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((locked_by, done), (None, false));
    // No second raw event; every other table as it was (the deleted message's job
    // went with it and is back).
    assert_eq!(all_counts(pool).await, before);
}

#[tokio::test]
async fn customer_selects_only_that_customers_webhooks() {
    let engine = conversation().await;
    let pool = &engine.app.pool;
    sqlx::query("DELETE FROM messages WHERE content ->> 'whatsappMessageId' IN ('wamid.IN1', 'wamid.OTHER1')")
        .execute(pool)
        .await
        .unwrap();
    let only = |customer: &str| Selection {
        filter: EventFilter {
            customer: Some(customer.to_owned()),
            ..EventFilter::default()
        },
        limit: None,
    };

    let summary = replay::into_database(pool, &only(OTHER), Some(PHONE_NUMBER_ID))
        .await
        .unwrap();
    // OTHER's message (the statuses of the replies to OTHER are their rows, with
    // no raw event to replay); nothing of CUSTOMER's.
    assert_eq!(summary.events, 1);
    assert_eq!(summary.messages_new, 1);
    assert_eq!(summary.messages_duplicate, 0);
    assert_eq!(summary.statuses_duplicate, 0);
    let restored = |wamid: &'static str| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM messages WHERE content ->> 'whatsappMessageId' = $1",
        )
        .bind(wamid)
        .fetch_one(pool)
        .await
        .unwrap()
    };
    assert_eq!(restored("wamid.OTHER1").await, 1);
    assert_eq!(restored("wamid.IN1").await, 0, "another customer's message");

    // --limit stops after that many webhooks, in the order received.
    let limited = Selection {
        limit: Some(1),
        ..only(CUSTOMER)
    };
    let summary = replay::into_database(pool, &limited, Some(PHONE_NUMBER_ID))
        .await
        .unwrap();
    assert_eq!((summary.events, summary.messages_new), (1, 1));
    assert_eq!(restored("wamid.IN1").await, 1);

    // A range that holds nothing reads nothing.
    let out = wabot(
        &engine,
        &["replay", "--until", "2000-01-01T00:00:00Z", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["events"], 0);
    // Bad input is refused with a clear message, before anything is read.
    for (args, says) in [
        (&["replay", "--customer", "abc"][..], "--customer"),
        (&["replay", "--since", "yesterday"][..], "--since"),
        (
            &["replay", "--since", "1h", "--until", "2h"][..],
            "before --until",
        ),
        (&["replay", "--dry-run"][..], "--chatbot"),
    ] {
        let out = wabot(&engine, args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

/// The support bot with a stock check (a rest_api node) after the prices.
fn with_stock_check() -> Value {
    let mut doc = load_json(&fixture("support-menu.json"));
    doc["name"] = json!("Support Menu v2");
    let nodes = doc["nodes"].as_array_mut().unwrap();
    nodes.push(
        json!({"id": "stock", "type": "rest_api", "data": {"type": "rest_api",
        "label": "Stock", "apiUrl": "http://127.0.0.1:9/stock?key=SECRET-KEY", "apiMethod": "GET",
        "apiTimeout": 1000}}),
    );
    nodes.push(
        json!({"id": "no-stock", "type": "message", "data": {"type": "message",
        "label": "No stock", "content": "We cannot check the stock right now."}}),
    );
    let edges = doc["edges"].as_array_mut().unwrap();
    edges.retain(|e| e["id"] != "e7");
    edges.push(json!({"id": "s1", "source": "answer-prices", "target": "stock"}));
    edges.push(
        json!({"id": "s2", "source": "stock", "target": "goodbye", "sourceHandle": "success"}),
    );
    edges.push(
        json!({"id": "s3", "source": "stock", "target": "no-stock", "sourceHandle": "error"}),
    );
    edges.push(json!({"id": "s4", "source": "no-stock", "target": "goodbye"}));
    doc
}

#[tokio::test]
async fn a_dry_run_shows_the_new_chatbots_answers_next_to_the_old_and_writes_nothing() {
    let engine = conversation().await;
    let pool = &engine.app.pool;
    let before = all_counts(pool).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v2.json");
    std::fs::write(&file, with_stock_check().to_string()).unwrap();
    let file = file.to_str().unwrap();

    let out = wabot(
        &engine,
        &["replay", "--dry-run", "--chatbot", file, "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let texts = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["text"].as_str().unwrap().to_owned())
            .collect()
    };
    let menu = "What can we help you with? [Opening hours | Prices | About us]";
    let welcome = "Hi! Welcome to the Corner Bakery help line.";
    let prices = "Prices: bread from 2 EUR, cakes from 18 EUR, coffee 2.50 EUR.";
    let goodbye = "Thank you for writing to us! Write again any time.";

    let hello = &lines[0];
    assert_eq!(
        (
            hello["customer"].as_str(),
            hello["wamid"].as_str(),
            hello["sent"].as_str()
        ),
        (Some(CUSTOMER), Some("wamid.IN1"), Some("hello"))
    );
    assert_eq!(texts(&hello["new"]), [welcome, menu]);
    assert_eq!(texts(&hello["then"]), [welcome, menu]);
    assert_eq!(hello["same"], true);

    let picked = &lines[1];
    assert_eq!(picked["sent"], "[button btn_prices] Prices");
    assert_eq!(
        texts(&picked["new"]),
        [prices, "We cannot check the stock right now.", goodbye]
    );
    assert_eq!(texts(&picked["then"]), [prices, goodbye]);
    assert_eq!(picked["same"], false);
    let notes = picked["notes"].to_string();
    assert!(
        notes.contains("rest_api call to http://127.0.0.1:9/stock"),
        "{notes}"
    );
    assert!(
        !notes.contains("SECRET-KEY"),
        "the query is not printed: {notes}"
    );

    let other = &lines[2];
    assert_eq!(other["customer"], OTHER);
    assert_eq!(texts(&other["new"]), [welcome, menu]);
    assert_eq!(other["same"], true);
    assert_eq!(lines[3]["type"], "summary");
    assert_eq!(lines[3]["messages"], 3);
    assert_eq!(lines[3]["different"], 1);
    assert_eq!(lines[3]["customers"], 2);

    // For people: each message once, both answers, the difference marked.
    let out = wabot(
        &engine,
        &[
            "replay",
            "--dry-run",
            "--chatbot",
            file,
            "--customer",
            CUSTOMER,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(
        shown.contains("answered with an error (--real-http makes them)"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("== customer {CUSTOMER}")),
        "{shown}"
    );
    assert!(!shown.contains(OTHER), "{shown}");
    assert!(shown.contains("= ["), "{shown}");
    assert!(shown.contains("≠ ["), "{shown}");
    assert!(shown.contains("    new : Prices: bread"), "{shown}");
    assert!(
        shown.contains("          We cannot check the stock right now."),
        "{shown}"
    );
    assert!(shown.contains("    then: Prices: bread"), "{shown}");
    assert!(shown.contains("2 messages of 1 customer from"), "{shown}");
    assert!(
        shown.contains("1 answered differently, 1 the same"),
        "{shown}"
    );

    // --fail-on-diff makes a difference fail the command, for scripts.
    let out = wabot(
        &engine,
        &[
            "replay",
            "--dry-run",
            "--chatbot",
            file,
            "--fail-on-diff",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The same chatbot answers every message the same.
    let same = fixture("support-menu.json");
    let out = wabot(
        &engine,
        &[
            "replay",
            "--dry-run",
            "--chatbot",
            same.to_str().unwrap(),
            "--fail-on-diff",
        ],
    );
    assert!(out.status.success(), "{}", stdout(&out));

    assert_eq!(all_counts(pool).await, before, "a dry run writes nothing");
}

/// Runs the wabot binary against the test's database, serving the test number.
fn wabot(engine: &Engine, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wabot"))
        .args(args)
        .env("DATABASE_URL", &engine.app.config.database_url)
        .env("WABOT_PHONE_NUMBER_ID", PHONE_NUMBER_ID)
        .env("WABOT_LOG_FILTER", "error")
        .output()
        .expect("run wabot")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_dry_run_times_out_a_wait_whose_deadline_passed_before_the_next_message() {
    // Stored traffic only (no daemon answered): an hour between two messages.
    let app = crate::helpers::spawn_app().await;
    let start = now_secs() - 3600;
    for (wamid, body, at) in [
        ("wamid.T1", "hello", start),
        ("wamid.T2", "hello again", start + 3540),
    ] {
        let webhook = messages_webhook(
            CUSTOMER,
            "Ayşe",
            vec![crate::webhook::text(CUSTOMER, wamid, body, at)],
        );
        assert_eq!(app.post_webhook(&webhook).await.status(), 200);
    }
    let bot = json!({"name": "Patient", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "q", "type": "question", "data": {"label": "Q", "questionType": "text",
            "content": "Your name?", "variable": "name", "timeoutSeconds": 60}},
        {"id": "late", "type": "message", "data": {"label": "Late", "content": "Are you still there?"}},
        {"id": "thanks", "type": "message", "data": {"label": "Thanks", "content": "Thanks, {{name}}!"}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "q"},
        {"id": "e2", "source": "q", "target": "thanks"},
        {"id": "e3", "source": "q", "target": "late", "sourceHandle": "timeout"}
    ]});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("patient.json");
    std::fs::write(&file, bot.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wabot"))
        .args([
            "replay",
            "--dry-run",
            "--json",
            "--chatbot",
            file.to_str().unwrap(),
        ])
        .env("DATABASE_URL", &app.config.database_url)
        .env("WABOT_PHONE_NUMBER_ID", PHONE_NUMBER_ID)
        .env("WABOT_LOG_FILTER", "error")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    // The first message starts the chatbot; its wait runs out long before the
    // second one, which then starts it again.
    let first = &lines[0];
    assert_eq!(first["new"][0]["text"], "Your name?");
    assert_eq!(first["new"][1]["text"], "Are you still there?");
    assert_eq!(first["new"][1]["after_timeout"], true);
    assert!(
        first["notes"]
            .to_string()
            .contains("the wait at node `q` ran out"),
        "{first}"
    );
    assert_eq!(first["then"], json!([]), "nothing was answered then");
    assert_eq!(first["same"], false);
    let second = &lines[1];
    assert_eq!(second["sent"], "hello again");
    // Its wait ran out too, by the end of the range (now).
    assert_eq!(
        second["new"],
        json!([{"kind": "text", "text": "Your name?"},
               {"kind": "text", "text": "Are you still there?", "after_timeout": true}])
    );
    // Nothing was written: no context, no job beyond ingest's own.
    assert_eq!(
        crate::webhook::count(&app.pool, "conversation_contexts").await,
        0
    );
}
