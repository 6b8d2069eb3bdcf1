//! People in conversations, the operator's side, as an operator runs it (the built
//! binary): `wabot conversation pause` / `resume`, `wabot customer opt-out` /
//! `opt-in`, the handover section of `wabot status`; and the sender's guard: a
//! message the business starts never goes to a customer who opted out, a reply
//! does, and a send error never opts anyone out.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;
use wabot::engine::Outgoing;
use wabot::store::outbox;
use wabot::worker::turns::outbound_row;

use crate::e2e::{eventually, text, Engine, CUSTOMER};
use crate::helpers::{spawn_app, TestApp, PHONE_NUMBER_ID};
use crate::support_graph::{Failure, FakeGraph};
use crate::webhook::{messages_webhook, now_secs};

/// Runs the built binary against `database_url`; (exit code, stdout, stderr).
async fn wabot(database_url: &str, args: &[&str]) -> (i32, String, String) {
    let output = crate::serve::wabot()
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("WABOT_LOG_FILTER", "off")
        .output()
        .await
        .expect("run wabot");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the binary and expects success; its stdout.
async fn ok(app: &TestApp, args: &[&str]) -> String {
    let (code, out, err) = wabot(&app.config.database_url, args).await;
    assert_eq!(code, 0, "wabot {args:?}: {out}{err}");
    out
}

/// `wa_id` writes one message; returns its conversation.
async fn customer_writes(app: &TestApp, wa_id: &str, wamid: &str) -> Uuid {
    let body = messages_webhook(
        wa_id,
        "Müşteri",
        vec![crate::webhook::text(wa_id, wamid, "merhaba", now_secs())],
    );
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    sqlx::query_scalar("SELECT conversation_id FROM conversation_keys WHERE customer_wa_id = $1")
        .bind(wa_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn handover_row(pool: &PgPool, conversation: Uuid) -> Option<(String, String)> {
    sqlx::query_as("SELECT state, source FROM wabot_handover WHERE conversation_id = $1")
        .bind(conversation)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn pause_and_resume_change_the_handover_row() {
    let app = spawn_app().await;
    let conversation = customer_writes(&app, CUSTOMER, "wamid.PAUSE1").await;

    let out = ok(&app, &["conversation", "pause", "+90 555 111 22 33"]).await;
    assert_eq!(
        out.trim(),
        format!(
            "paused: the bot stays silent in conversation {conversation} with +{CUSTOMER} on \
             business number {PHONE_NUMBER_ID} until `wabot conversation resume`"
        )
    );
    assert_eq!(
        handover_row(&app.pool, conversation).await,
        Some(("paused".into(), "operator".into()))
    );

    // The transcript says so, on the screen and in --json.
    let screen = ok(&app, &["conversation", "show", CUSTOMER]).await;
    assert!(
        screen.contains("PAUSED by an operator since")
            && screen.contains("until `wabot conversation resume`"),
        "{screen}"
    );
    let json: Value =
        serde_json::from_str(&ok(&app, &["conversation", "show", CUSTOMER, "--json"]).await)
            .unwrap();
    assert_eq!(json["handover"]["state"], "paused");
    assert_eq!(json["handover"]["source"], "operator");
    assert!(json["opt_out"].is_null(), "{json}");

    // An agent's conversation paused stays paused, and says what it was.
    sqlx::query("UPDATE wabot_handover SET state = 'agent', source = 'inbox'")
        .execute(&app.pool)
        .await
        .unwrap();
    let out = ok(&app, &["conversation", "pause", &conversation.to_string()]).await;
    assert!(out.trim().ends_with("(an agent had it)"), "{out}");
    assert_eq!(
        handover_row(&app.pool, conversation).await,
        Some(("paused".into(), "operator".into()))
    );

    let id = conversation.to_string();
    let out = ok(&app, &["conversation", "resume", &id]).await;
    assert!(
        out.starts_with("resumed: the customer's next message starts the chatbot afresh"),
        "{out}"
    );
    assert!(out.contains("was paused since"), "{out}");
    // Released: the turn stage starts the chatbot afresh at the next message and
    // deletes the row.
    assert_eq!(
        handover_row(&app.pool, conversation).await,
        Some(("released".into(), "operator".into()))
    );
    let json: Value =
        serde_json::from_str(&ok(&app, &["conversation", "show", &id, "--json"]).await).unwrap();
    assert_eq!(json["handover"]["state"], "released", "{json}");
    let screen = ok(&app, &["conversation", "show", &id]).await;
    assert!(
        screen.contains("RESUMED by an operator at")
            && screen.contains("the customer's next message starts the chatbot afresh"),
        "{screen}"
    );

    let out = ok(&app, &["conversation", "resume", CUSTOMER]).await;
    assert!(out.starts_with("nothing to resume"), "{out}");

    // Nobody to pause: an error, exit 1.
    let (code, _, err) = wabot(
        &app.config.database_url,
        &["conversation", "pause", "905550000000"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("no conversation with +905550000000"), "{err}");
}

#[tokio::test]
async fn status_lists_the_customers_waiting_for_an_agent() {
    let app = spawn_app().await;
    let waiting = customer_writes(&app, "905550000001", "wamid.ST1").await;
    let with_agent = customer_writes(&app, "905550000002", "wamid.ST2").await;
    let paused = customer_writes(&app, "905550000003", "wamid.ST3").await;
    let newer = customer_writes(&app, "905550000004", "wamid.ST4").await;
    sqlx::query(
        "INSERT INTO wabot_handover (conversation_id, state, source, since, last_agent_at) VALUES \
         ($1, 'requested', 'keyword', now() - interval '3 minutes 4 seconds', \
          now() - interval '3 minutes 4 seconds'), \
         ($2, 'agent', 'inbox', now() - interval '1 hour', now()), \
         ($3, 'paused', 'operator', now(), now()), \
         ($4, 'requested', 'node', now() - interval '10 seconds', now() - interval '10 seconds')",
    )
    .bind(waiting)
    .bind(with_agent)
    .bind(paused)
    .bind(newer)
    .execute(&app.pool)
    .await
    .unwrap();

    let json: Value = serde_json::from_str(&ok(&app, &["status", "--json"]).await).unwrap();
    let h = &json["handover"];
    assert_eq!(h["waiting_count"], 2, "{h}");
    assert_eq!(h["with_agent"], 1);
    assert_eq!(h["paused"], 1);
    let listed = h["waiting"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    // The longest-waiting first.
    assert_eq!(listed[0]["customer_wa_id"], "905550000001");
    assert_eq!(listed[0]["conversation_id"], waiting.to_string());
    assert_eq!(listed[0]["source"], "keyword");
    let age = listed[0]["age_secs"].as_f64().unwrap();
    assert!((184.0..240.0).contains(&age), "{age}");
    assert_eq!(listed[1]["customer_wa_id"], "905550000004");

    let screen = ok(&app, &["status"]).await;
    assert!(screen.contains("\nWaiting for an agent (2)\n"), "{screen}");
    let first = screen
        .lines()
        .find(|l| l.contains("+905550000001"))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(first.contains("3m 0"), "{first}");
    assert!(first.contains(&waiting.to_string()), "{first}");
    assert!(
        screen.contains("with an agent: 1 conversation; paused by an operator: 1 conversation"),
        "{screen}"
    );
    // The waiting customer's transcript says so too.
    let transcript = ok(&app, &["conversation", "show", "905550000001"]).await;
    assert!(
        transcript.contains("WAITING FOR AN AGENT (keyword) for 3m"),
        "{transcript}"
    );
}

/// The business user's id (its "phoneNumber" is the business number).
async fn business_user(pool: &PgPool) -> Uuid {
    sqlx::query_scalar("SELECT id FROM users WHERE \"phoneNumber\" = $1")
        .bind(PHONE_NUMBER_ID)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Queues one text to the customer, as a turn's commit does (unleased: the
/// daemon's recovery poll claims it); returns the message id.
async fn queue(pool: &PgPool, conversation: Uuid, body: &str, business_initiated: bool) -> Uuid {
    let business = business_user(pool).await;
    let row = outbound_row(
        conversation,
        business,
        CUSTOMER,
        &Outgoing::Text { body: body.into() },
    );
    let mut tx = pool.begin().await.unwrap();
    let id = outbox::enqueue(&mut tx, &row).await.unwrap();
    // What a timer's turn commit marks, in the same transaction.
    sqlx::query("UPDATE send_jobs SET business_initiated = $2 WHERE message_id = $1")
        .bind(id)
        .bind(business_initiated)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn message(pool: &PgPool, id: Uuid) -> (String, Value, Option<Value>) {
    sqlx::query_as(
        "SELECT m.status::text, m.content, j.last_error FROM messages m \
         JOIN send_jobs j ON j.message_id = m.id WHERE m.id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn texts_sent(graph: &FakeGraph) -> Vec<String> {
    graph
        .requests()
        .iter()
        .filter_map(|r| r.text().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_business_initiated_send_never_reaches_a_customer_who_opted_out() {
    let engine = Engine::start().await;
    let app = &engine.app;
    let pool = &app.pool;
    // No chatbot: the customer's message gets no answer of its own.
    engine.say(text("wamid.OPT1", "merhaba")).await;
    let conversation: Uuid = sqlx::query_scalar(
        "SELECT conversation_id FROM conversation_keys WHERE customer_wa_id = $1",
    )
    .bind(CUSTOMER)
    .fetch_one(pool)
    .await
    .unwrap();

    let out = ok(app, &["customer", "opt-out", &format!("+{CUSTOMER}")]).await;
    assert_eq!(
        out.trim(),
        format!(
            "opted out: +{CUSTOMER} gets no message business number {PHONE_NUMBER_ID} starts \
             (replies to their own messages still go) until `wabot customer opt-in`"
        )
    );
    let source: String = sqlx::query_scalar(
        "SELECT source FROM wabot_opt_outs WHERE business_phone_number_id = $1 \
         AND customer_wa_id = $2",
    )
    .bind(PHONE_NUMBER_ID)
    .bind(CUSTOMER)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(source, "operator");
    let again = ok(app, &["customer", "opt-out", CUSTOMER]).await;
    assert!(again.starts_with("already opted out"), "{again}");

    // A timer's message: failed with the reason, never sent.
    let timer = queue(pool, conversation, "Still there?", true).await;
    eventually(
        pool,
        &format!("SELECT count(*) FROM messages WHERE id = '{timer}' AND status = 'failed'"),
        1,
    )
    .await;
    let (_, content, last_error) = message(pool, timer).await;
    assert_eq!(content["error"]["reason"], "opted_out", "{content}");
    assert_eq!(content["error"]["message"], "the customer opted out (STOP)");
    assert_eq!(last_error.unwrap()["reason"], "opted_out");

    // A reply to the same customer goes.
    let reply = queue(pool, conversation, "Here is your answer", false).await;
    let accepted = engine.replies(0, 1).await;
    assert_eq!(accepted[0].to(), Some(CUSTOMER));
    assert_eq!(accepted[0].text(), Some("Here is your answer"));
    eventually(
        pool,
        &format!("SELECT count(*) FROM messages WHERE id = '{reply}' AND status = 'sent'"),
        1,
    )
    .await;

    // The transcript shows the opt-out and why the timer's message failed.
    let screen = ok(app, &["conversation", "show", CUSTOMER]).await;
    assert!(
        screen.contains("OPTED OUT since") && screen.contains("by an operator"),
        "{screen}"
    );
    assert!(
        screen.contains("FAILED: the customer opted out (STOP)"),
        "{screen}"
    );
    let json: Value =
        serde_json::from_str(&ok(app, &["conversation", "show", CUSTOMER, "--json"]).await)
            .unwrap();
    assert_eq!(json["opt_out"]["source"], "operator");
    assert_eq!(json["opt_out"]["business_phone_number_id"], PHONE_NUMBER_ID);

    // Opted in again, the business may start a conversation again.
    let out = ok(app, &["customer", "opt-in", CUSTOMER]).await;
    assert_eq!(
        out.trim(),
        format!(
            "opted in: +{CUSTOMER} gets messages business number {PHONE_NUMBER_ID} starts again"
        )
    );
    let again = ok(app, &["customer", "opt-in", CUSTOMER]).await;
    assert!(again.starts_with("not opted out"), "{again}");
    queue(pool, conversation, "Your order shipped", true).await;
    let accepted = engine.replies(1, 1).await;
    assert_eq!(accepted[0].text(), Some("Your order shipped"));

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        texts_sent(&engine.graph),
        vec!["Here is your answer", "Your order shipped"],
        "the opted-out customer's timer message never reached Meta"
    );
}

#[tokio::test]
async fn a_send_error_never_opts_anyone_out() {
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    engine.say(text("wamid.ERR1", "merhaba")).await;
    let conversation: Uuid = sqlx::query_scalar(
        "SELECT conversation_id FROM conversation_keys WHERE customer_wa_id = $1",
    )
    .bind(CUSTOMER)
    .fetch_one(pool)
    .await
    .unwrap();

    // Meta refuses both: the customer's number cannot get messages (131026).
    engine.graph.fail_next(2, Failure::Undeliverable);
    let reply = queue(pool, conversation, "Here is your answer", false).await;
    let timer = queue(pool, conversation, "Still there?", true).await;
    eventually(
        pool,
        &format!(
            "SELECT count(*) FROM messages WHERE id IN ('{reply}', '{timer}') AND status = 'failed'"
        ),
        2,
    )
    .await;
    let (_, content, _) = message(pool, timer).await;
    assert_eq!(content["error"]["code"], 131026, "{content}");
    // Meta's later `failed` status for a sent message does not either.
    let sent = queue(pool, conversation, "One more", true).await;
    let accepted = engine.replies(0, 1).await;
    let wamid = accepted[0].wamid().unwrap().to_owned();
    eventually(
        pool,
        &format!("SELECT count(*) FROM messages WHERE id = '{sent}' AND status = 'sent'"),
        1,
    )
    .await;
    let body = crate::webhook::statuses_webhook(&[(&wamid, "failed")]);
    assert_eq!(engine.app.post_webhook(&body).await.status(), 200);
    eventually(
        pool,
        &format!("SELECT count(*) FROM messages WHERE id = '{sent}' AND status = 'failed'"),
        1,
    )
    .await;
    eventually(pool, "SELECT count(*) FROM wabot_opt_outs", 0).await;
}
