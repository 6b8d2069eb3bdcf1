//! Bursts, duplicates, Meta's failures, crashes and several processes: every inbound
//! message answered once, in order.

use std::time::Duration;

use super::*;
use crate::helpers::{spawn_on_pool, test_config};
use crate::support_graph::{Failure, Outcome};

fn echo_bot() -> Value {
    load_json(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/e2e/echo-loop.json"
    )))
}

/// The echo texts the fake Graph API accepted, in order.
fn echoes(graph: &FakeGraph) -> Vec<String> {
    graph
        .accepted()
        .iter()
        .filter_map(|r| r.text())
        .filter(|t| t.starts_with("echo: "))
        .map(str::to_owned)
        .collect()
}

/// The inbound texts in the order their turns were queued.
async fn queued_texts(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT m.content->>'text' FROM turn_jobs j JOIN messages m ON m.id = j.message_id \
         ORDER BY j.id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Starts the echo conversation and waits for its first prompt.
async fn started(engine: &Engine) {
    install_chatbot(&engine.app.pool, &echo_bot()).await;
    engine.say(text("wamid.START", "start")).await;
    assert_eq!(engine.replies(0, 1).await[0].text(), Some("Say something"));
}

#[tokio::test]
async fn five_messages_posted_at_once_are_all_answered_in_order() {
    let engine = Engine::start().await;
    started(&engine).await;

    let posts = (1..=5).map(|i| engine.say(text(&format!("wamid.B{i}"), &format!("m{i}"))));
    futures::future::join_all(posts).await;

    // Each answer: its echo, then the prompt again.
    engine.replies(1, 10).await;
    let queued = queued_texts(&engine.app.pool).await;
    let expected: Vec<String> = queued[1..].iter().map(|t| format!("echo: {t}")).collect();
    assert_eq!(echoes(&engine.graph), expected, "answered in arrival order");
    let texts: Vec<String> = engine.graph.accepted()[1..]
        .iter()
        .map(|r| r.text().unwrap().to_owned())
        .collect();
    for pair in texts.chunks(2) {
        assert!(
            pair[0].starts_with("echo: ") && pair[1] == "Say something",
            "never interleaved: {texts:?}"
        );
    }
}

#[tokio::test]
async fn a_message_delivered_twice_concurrently_gets_one_reply() {
    let engine = Engine::start().await;
    started(&engine).await;
    for i in 1..=3 {
        let message = text(&format!("wamid.D{i}"), &format!("d{i}"));
        tokio::join!(engine.say(message.clone()), engine.say(message));
    }
    engine.replies(1, 6).await;
    // Give a wrongly doubled turn the time to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(echoes(&engine.graph), ["echo: d1", "echo: d2", "echo: d3"]);
    assert_eq!(engine.graph.accepted().len(), 7);
}

#[tokio::test]
async fn throttling_server_errors_and_timeouts_delay_replies_but_never_lose_or_double_them() {
    let engine = Engine::start().await;
    started(&engine).await;
    engine.graph.fail_next(2, Failure::Throttled);
    engine.graph.fail_next(1, Failure::ServerError);
    engine.graph.fail_next(1, Failure::Hang);
    for i in 1..=3 {
        engine
            .say(text(&format!("wamid.F{i}"), &format!("f{i}")))
            .await;
    }
    engine.replies(1, 6).await;
    assert_eq!(echoes(&engine.graph), ["echo: f1", "echo: f2", "echo: f3"]);
    let failures = engine
        .graph
        .requests()
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Injected(_)))
        .count();
    assert_eq!(failures, 4, "every injected failure was met and retried");
    eventually(&engine.app.pool, UNSENT, 0).await;
}

#[tokio::test]
async fn undeliverable_and_window_closed_fail_once_and_the_conversation_goes_on() {
    let engine = Engine::start().await;
    started(&engine).await;
    engine.graph.fail_next(1, Failure::WindowClosed);
    engine.say(text("wamid.W1", "w1")).await;
    // "echo: w1" failed with 131047; the prompt after it still goes.
    engine.replies(1, 1).await;
    engine.graph.fail_next(1, Failure::Undeliverable);
    engine.say(text("wamid.W2", "w2")).await;
    engine.replies(2, 1).await;
    engine.say(text("wamid.W3", "w3")).await;
    engine.replies(3, 2).await;
    assert_eq!(echoes(&engine.graph), ["echo: w3"]);

    let failed: Vec<(String, i64)> = sqlx::query_as(
        "SELECT content->>'text', (content->'error'->>'code')::bigint FROM messages \
         WHERE status = 'failed' ORDER BY \"timestamp\"",
    )
    .fetch_all(&engine.app.pool)
    .await
    .unwrap();
    assert_eq!(
        failed,
        [
            ("echo: w1".to_owned(), 131047),
            ("echo: w2".to_owned(), 131026)
        ]
    );
    // Not retried: one request each.
    let tried = |t: &str| {
        engine
            .graph
            .requests()
            .iter()
            .filter(|r| r.text() == Some(t))
            .count()
    };
    assert_eq!((tried("echo: w1"), tried("echo: w2")), (1, 1));
}

#[tokio::test]
async fn two_processes_on_one_database_run_each_turn_once_and_send_each_reply_once() {
    let engine = Engine::start().await;
    let mut second_config = test_config(&engine.app.config.database_url);
    second_config.worker = engine.app.config.worker.clone();
    second_config.whatsapp = engine.app.config.whatsapp.clone();
    let second_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(wabot::store::connect_options(&engine.app.config.database_url).unwrap())
        .await
        .unwrap();
    let second = spawn_on_pool(second_config, second_pool).await;
    install_chatbot(&engine.app.pool, &echo_bot()).await;

    // Ten customers, each a start and three answers, posted to both processes.
    let customers: Vec<String> = (0..10).map(|i| format!("9055500000{i:02}")).collect();
    let mut posts = Vec::new();
    for (i, wa_id) in customers.iter().enumerate() {
        for (j, body) in ["start", "a", "b", "c"].iter().enumerate() {
            let target = if (i + j) % 2 == 0 {
                &engine.app
            } else {
                &second
            };
            let msg = crate::webhook::text(wa_id, &format!("wamid.P{i}.{j}"), body, now_secs());
            posts.push((target, messages_webhook(wa_id, "P", vec![msg])));
        }
    }
    for chunk in posts.chunks(10) {
        let sent = chunk.iter().map(|(app, body)| app.post_webhook(body));
        for response in futures::future::join_all(sent).await {
            assert_eq!(response.status(), 200);
        }
    }
    // Per customer: 1 prompt + 3 × (echo + prompt) = 7 replies.
    let all = engine
        .graph
        .wait_for_accepted(70, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.graph.accepted().len(), 70, "no reply sent twice");
    for wa_id in &customers {
        let mine: Vec<&str> = all
            .iter()
            .filter(|r| r.to() == Some(wa_id.as_str()))
            .filter_map(|r| r.text())
            .collect();
        assert_eq!(mine.len(), 7, "{wa_id}: {mine:?}");
    }
    let (jobs, done): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE done_at IS NOT NULL AND last_error IS NULL) \
         FROM turn_jobs WHERE kind = 'inbound'",
    )
    .fetch_one(&engine.app.pool)
    .await
    .unwrap();
    assert_eq!((jobs, done), (40, 40));
}

/// `wabot serve` as a real process against `database_url` and the fake Graph API.
async fn serve_process(database_url: &str, graph: &FakeGraph) -> (tokio::process::Child, String) {
    let mut child = crate::serve::wabot()
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("WABOT_LISTEN", "127.0.0.1:0")
        .env("WABOT_GRAPH_API_BASE", graph.url())
        .env("WABOT_GRAPH_TIMEOUT_MS", "500")
        .env("WABOT_ACCESS_TOKEN", crate::helpers::ACCESS_TOKEN)
        .env("WABOT_PHONE_NUMBER_ID", crate::helpers::PHONE_NUMBER_ID)
        .env("WABOT_APP_SECRET", crate::helpers::APP_SECRET)
        .env("WABOT_POLL_INTERVAL_MS", "50")
        .env("WABOT_LEASE_SECS", "2")
        .env("WABOT_SEND_RETRY_BASE_MS", "20")
        .spawn()
        .unwrap();
    let addr = crate::serve::wait_until_listening(&mut child).await;
    (child, format!("http://{addr}"))
}

async fn post_signed(base: &str, body: &[u8]) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/webhook"))
        .header(
            "x-hub-signature-256",
            crate::helpers::sign(body, crate::helpers::APP_SECRET),
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_daemon_killed_mid_conversation_is_restarted_and_answers_everything() {
    let graph = FakeGraph::start().await;
    let database_url = crate::serve::new_database_url();
    let (mut first, base) = serve_process(&database_url, &graph).await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&database_url)
        .await
        .unwrap();
    install_chatbot(&pool, &echo_bot()).await;

    let say = |wamid: &str, body: &str| {
        messages_webhook(CUSTOMER, CUSTOMER_NAME, vec![text(wamid, body)])
    };
    assert_eq!(post_signed(&base, &say("wamid.K0", "start")).await, 200);
    graph.wait_for_accepted(1, Duration::from_secs(20)).await;

    // Meta stops answering: the replies are in flight when the process dies.
    graph.fail_next(3, Failure::Hang);
    for (i, body) in ["k1", "k2", "k3"].iter().enumerate() {
        assert_eq!(
            post_signed(&base, &say(&format!("wamid.K{}", i + 1), body)).await,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = first.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap();
    first.wait().await.unwrap();

    let (mut second, _) = serve_process(&database_url, &graph).await;
    let all = graph.wait_for_accepted(7, Duration::from_secs(40)).await;
    assert_eq!(
        all.len(),
        7,
        "a prompt, then echo + prompt for each of three"
    );
    assert_eq!(echoes(&graph), ["echo: k1", "echo: k2", "echo: k3"]);
    let unanswered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM turn_jobs WHERE done_at IS NULL AND kind = 'inbound'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unanswered, 0);
    second.kill().await.ok();
}

#[tokio::test]
async fn finished_jobs_are_purged_after_their_retention_and_open_ones_never() {
    let engine = Engine::start().await;
    started(&engine).await;
    for i in 1..=2 {
        engine
            .say(text(&format!("wamid.G{i}"), &format!("g{i}")))
            .await;
    }
    engine.replies(1, 4).await;
    eventually(&engine.app.pool, UNSENT, 0).await;
    let pool = &engine.app.pool;
    // Age one finished turn and one finished send past the retention.
    sqlx::query("UPDATE turn_jobs SET done_at = now() - interval '2 hours' WHERE id = (SELECT min(id) FROM turn_jobs WHERE done_at IS NOT NULL)")
        .execute(pool).await.unwrap();
    sqlx::query("UPDATE send_jobs SET done_at = now() - interval '2 hours' WHERE id = (SELECT min(id) FROM send_jobs)")
        .execute(pool).await.unwrap();
    let before: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM turn_jobs), (SELECT count(*) FROM send_jobs)")
            .fetch_one(pool)
            .await
            .unwrap();
    let purged = wabot::store::turns::purge_finished(pool, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(purged, 2);
    let after: (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM turn_jobs), (SELECT count(*) FROM send_jobs)")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((after.0, after.1), (before.0 - 1, before.1 - 1));
}

#[tokio::test]
async fn a_conversation_with_a_turn_in_flight_is_not_claimed_again_and_timers_wait_behind_messages()
{
    use wabot::store::turns::{claim, schedule_timeout};
    let pool = crate::helpers::fresh_pool().await;
    let conversation: Uuid =
        sqlx::query_scalar("INSERT INTO conversations DEFAULT VALUES RETURNING id")
            .fetch_one(&pool)
            .await
            .unwrap();
    let lease = Duration::from_secs(30);
    // A timer (older id, due now) and a customer message that arrived after it.
    let mut tx = pool.begin().await.unwrap();
    schedule_timeout(&mut tx, conversation, chrono::Utc::now(), &json!({}))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let inbound: i64 = sqlx::query_scalar(
        "INSERT INTO turn_jobs (conversation_id, kind) VALUES ($1, 'inbound') RETURNING id",
    )
    .bind(conversation)
    .fetch_one(&pool)
    .await
    .unwrap();

    // The message goes first: the timer waits behind it.
    let first = claim(&pool, "w1", lease, 10).await.unwrap();
    assert_eq!(first.iter().map(|j| j.id).collect::<Vec<_>>(), [inbound]);
    // While it runs, nothing else of the conversation is claimable, by anyone.
    assert!(claim(&pool, "w2", lease, 10).await.unwrap().is_empty());
    assert!(claim(&pool, "w1", lease, 10).await.unwrap().is_empty());

    sqlx::query("UPDATE turn_jobs SET done_at = now() WHERE id = $1")
        .bind(inbound)
        .execute(&pool)
        .await
        .unwrap();
    let next = claim(&pool, "w2", lease, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].kind, wabot::store::turns::JobKind::Timeout);
}

#[tokio::test]
async fn a_wait_timeout_fires_after_the_daemon_restarts() {
    let bot = json!({"name": "Patient", "nodes": [
        {"id": "s", "type": "start", "data": {"label": "Start"}},
        {"id": "q", "type": "question", "data": {"label": "Q", "questionType": "text",
            "content": "Still there?", "timeoutSeconds": 2}},
        {"id": "late", "type": "message", "data": {"label": "Late", "content": "Timed out."}}
    ], "edges": [
        {"id": "e1", "source": "s", "target": "q"},
        {"id": "e2", "source": "q", "target": "late", "sourceHandle": "timeout"}
    ]});
    let mut engine = Engine::start().await;
    install_chatbot(&engine.app.pool, &bot).await;
    engine.say(text("wamid.RT1", "hi")).await;
    assert_eq!(engine.replies(0, 1).await[0].text(), Some("Still there?"));

    // The daemon stops before the wait runs out; another one starts on the database.
    let config = engine.app.config.clone();
    engine.app.stop().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .connect_with(wabot::store::connect_options(&config.database_url).unwrap())
        .await
        .unwrap();
    let _restarted = spawn_on_pool(config, pool).await;
    let r = engine.replies(1, 1).await;
    assert_eq!(r[0].text(), Some("Timed out."));
}

#[tokio::test]
async fn an_expired_token_holds_every_reply_until_the_token_changes() {
    let engine = Engine::start().await;
    install_chatbot(&engine.app.pool, &echo_bot()).await;
    // Meta now wants another token than the one wabot has: 190 on every send.
    engine.graph.set_token("rotated-token");
    engine.say(text("wamid.TK1", "start")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(engine.graph.accepted().is_empty());
    let tried = engine.graph.requests().len();
    assert!(
        tried <= 2,
        "sending holds instead of hammering Meta: {tried} calls"
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE status = 'pending'")
        .fetch_one(&engine.app.pool)
        .await
        .unwrap();
    assert_eq!(pending, 1, "the reply waits, neither failed nor lost");
    // `wabot status` reads the hold and its reason from the process's heartbeat;
    // the reason never carries the token.
    let hold = held_reason(&engine.app.pool, true).await.expect("a hold");
    assert!(hold.contains("190"), "{hold}");
    assert!(!hold.contains(crate::helpers::ACCESS_TOKEN), "{hold}");

    // The operator stores the new token (WhatsApp Builder's settings page does this).
    store_access_token(&engine.app.pool, "rotated-token").await;
    let r = engine.replies(0, 1).await;
    assert_eq!(r[0].text(), Some("Say something"));
    assert_eq!(held_reason(&engine.app.pool, false).await, None);
}

/// Waits until this database's one process reports a send hold (`held`) or none,
/// and returns the reason.
async fn held_reason(pool: &sqlx::PgPool, held: bool) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let hold: Option<Option<String>> =
            sqlx::query_scalar("SELECT send_hold FROM wabot_processes")
                .fetch_optional(pool)
                .await
                .unwrap();
        let hold = hold.flatten();
        if hold.is_some() == held {
            return hold;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the process never reported held = {held}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Replies that wait in a full send queue keep their leases: none is claimed again
/// by the recovery poll and sent twice, however long Meta takes (issue 19: a
/// campaign's jobs waiting behind an overloaded sender were sent twice).
#[tokio::test]
async fn replies_waiting_for_a_full_send_queue_keep_their_leases_and_go_out_once() {
    let engine = Engine::start_with(|c| {
        // One job in memory at a time, a lease of one second, Meta taking 0.3 s a
        // message: nine replies committed at once wait up to 2.7 s for their turn.
        c.pipeline.send_queue = 1;
        c.worker.lease_secs = 1;
    })
    .await;
    engine.graph.answer_after(Duration::from_millis(300));
    let bot = json!({
        "name": "Three in a row",
        "nodes": [
            {"id": "start", "type": "start", "position": {"x": 0, "y": 0}, "data": {"label": "Start", "type": "start"}},
            {"id": "m1", "type": "message", "position": {"x": 0, "y": 100}, "data": {"label": "M1", "type": "message", "content": "one"}},
            {"id": "m2", "type": "message", "position": {"x": 0, "y": 200}, "data": {"label": "M2", "type": "message", "content": "two"}},
            {"id": "m3", "type": "message", "position": {"x": 0, "y": 300}, "data": {"label": "M3", "type": "message", "content": "three"}}
        ],
        "edges": [
            {"id": "e1", "source": "start", "target": "m1"},
            {"id": "e2", "source": "m1", "target": "m2"},
            {"id": "e3", "source": "m2", "target": "m3"}
        ]
    });
    install_chatbot(&engine.app.pool, &bot).await;
    // Three customers in one webhook: their turns are committed, and their nine
    // replies handed to the sender, together.
    let customers = ["905550000001", "905550000002", "905550000003"];
    let ts = now_secs().to_string();
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": crate::webhook::BUSINESS},
            "contacts": customers.iter().map(|c| json!({"profile": {"name": c}, "wa_id": c})).collect::<Vec<_>>(),
            "messages": customers.iter().enumerate().map(|(i, c)| json!(
                {"from": c, "id": format!("wamid.Q{i}"), "timestamp": ts, "type": "text", "text": {"body": "hi"}}
            )).collect::<Vec<_>>()}}]}]})
    .to_string();
    let response = engine.app.post_webhook(body.as_bytes()).await;
    assert_eq!(response.status(), 200);

    engine
        .graph
        .wait_for_accepted(9, Duration::from_secs(20))
        .await;
    eventually(
        &engine.app.pool,
        "SELECT count(*) FROM send_jobs WHERE done_at IS NULL",
        0,
    )
    .await;
    // Long enough for a lease lost meanwhile to expire and be claimed again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut sent: Vec<(String, String)> = engine
        .graph
        .accepted()
        .iter()
        .map(|r| {
            (
                r.to().unwrap_or("").to_owned(),
                r.text().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(sent.len(), 9, "each reply sent once: {sent:?}");
    sent.sort();
    sent.dedup();
    assert_eq!(sent.len(), 9, "no reply sent twice");
    for customer in customers {
        let texts: Vec<_> = engine
            .graph
            .accepted()
            .iter()
            .filter(|r| r.to() == Some(customer))
            .filter_map(|r| r.text().map(str::to_owned))
            .collect();
        assert_eq!(texts, ["one", "two", "three"], "in order to {customer}");
    }
}

/// A reply Meta accepted keeps its lease until its outcome is written: a recorder
/// that waits (here on the wamid's lock, which a status batch can hold) longer than
/// the lease does not let the recovery poll claim the job and send it again.
#[tokio::test]
async fn a_sent_reply_whose_record_waits_past_its_lease_is_not_sent_again() {
    let engine = Engine::start_with(|c| c.worker.lease_secs = 1).await;
    install_chatbot(&engine.app.pool, &echo_bot()).await;
    // The reply's wamid is the fake's next one: hold its lock as a status batch would.
    let wamid = engine.graph.next_wamid();
    let mut holder = engine.app.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 7))")
        .bind(&wamid)
        .execute(&mut *holder)
        .await
        .unwrap();
    engine.say(text("wamid.L1", "hello")).await;
    engine
        .graph
        .wait_for_accepted(1, Duration::from_secs(20))
        .await;
    // Three leases long: a lease let go at the call would have run out and been
    // claimed by the recovery poll (every 50 ms) by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 7))")
        .bind(&wamid)
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);
    eventually(&engine.app.pool, UNSENT, 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let accepted = engine.graph.accepted();
    assert_eq!(
        accepted
            .iter()
            .map(|r| r.text().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["Say something"],
        "the prompt went out once"
    );
    let wamid_stored: Option<String> = sqlx::query_scalar(
        "SELECT content->>'whatsappMessageId' FROM messages WHERE content->>'text' = 'Say something'",
    )
    .fetch_one(&engine.app.pool)
    .await
    .unwrap();
    assert_eq!(wamid_stored.as_deref(), Some(wamid.as_str()));
}
