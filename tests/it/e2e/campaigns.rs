//! Campaigns end to end: a few hundred recipients, one opted out, Meta's throughput
//! errors, the daemon killed mid-way and started again: every other recipient gets
//! the template exactly once. And Meta's messaging limit pausing a campaign until
//! it is resumed.

use std::time::Duration;

use super::templates::{daemon, fake_meta, inbox, sync, wabot_cli};
use super::*;
use crate::helpers::spawn_on_pool;

/// `n` recipients from 905550000000 up, with their parameters; (CSV text, numbers).
fn recipients_csv(n: usize) -> (String, Vec<String>) {
    let numbers: Vec<String> = (0..n).map(|i| format!("90555{:07}", i)).collect();
    let mut csv = String::from("phone,first_name,day\n");
    for (i, number) in numbers.iter().enumerate() {
        csv.push_str(&format!("+{number},Customer {i},Friday\n"));
    }
    // Listed twice: sent once.
    csv.push_str(&format!("{},Again,Friday\n", numbers[0]));
    (csv, numbers)
}

fn write_temp(text: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::new(text)
}

/// A file removed when dropped (std only).
mod tempfile_path {
    pub struct TempPath(pub std::path::PathBuf);
    impl TempPath {
        pub fn new(text: &str) -> TempPath {
            let path = std::env::temp_dir().join(format!("wabot-{}.csv", uuid::Uuid::new_v4()));
            std::fs::write(&path, text).unwrap();
            TempPath(path)
        }
        pub fn as_str(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

async fn status_json(app: &TestApp, url: &str, id: &str) -> Value {
    let (code, out, err) = wabot_cli(app, url, &["campaign", "status", id, "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

/// Polls the campaign's status until `check` holds, for at most 40 s.
async fn until(app: &TestApp, url: &str, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let s = status_json(app, url, id).await;
        if check(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "campaign status stayed {s}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_campaign_killed_mid_way_sends_every_recipient_exactly_once() {
    let (fake, url) = fake_meta(true, 100).await;
    let mut app = daemon(&fake, &url, |c| c.worker.lease_secs = 2).await;
    sync(&app).await;
    let (csv, numbers) = recipients_csv(300);
    let file = write_temp(&csv);
    let opted = numbers[7].clone();
    let (code, _, err) = wabot_cli(&app, &url, &["customer", "opt-out", &opted]).await;
    assert_eq!(code, 0, "{err}");

    // A file with a bad line is refused whole, naming the line.
    let bad = write_temp("phone,first_name,day\n905550000001,A,Friday\nnope,B,Friday\n");
    let (code, _, err) = wabot_cli(
        &app,
        &url,
        &[
            "campaign",
            "start",
            "--template",
            "appointment_reminder",
            "--language",
            "en_US",
            "--recipients",
            bad.as_str(),
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("line 3:") && err.contains("nothing was stored"),
        "{err}"
    );

    // Meta throttles the first sends.
    fake.templates.fail_next(6, 130429);
    fake.templates.fail_next(2, 131056);
    let (code, out, err) = wabot_cli(
        &app,
        &url,
        &[
            "campaign",
            "start",
            "--template",
            "appointment_reminder",
            "--language",
            "en_US",
            "--recipients",
            file.as_str(),
            "--rate",
            "150",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("300 recipient(s) (1 listed twice, sent once)"),
        "{out}"
    );
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();

    // Mid-way, Meta stops answering and the daemon is killed with sends in flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fake.accepted.load(std::sync::atomic::Ordering::Relaxed) < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the campaign did not start sending"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fake.templates.hang(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let address = app.address.clone();
    let mut config = app.config.clone();
    app.kill();
    drop(app);
    let before = fake.accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(before < 299, "killed mid-way ({before} sent)");
    fake.templates.hang(false);

    // Started again on the same database and address (Meta's statuses keep coming).
    config.listen = address.trim_start_matches("http://").parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .connect_with(wabot::store::connect_options(&config.database_url).unwrap())
        .await
        .unwrap();
    let app = spawn_on_pool(config, pool).await;
    let status = until(&app, &url, &id, |s| {
        s["sent"] == 299 && s["state"] == "finished"
    })
    .await;
    assert_eq!(status["skipped"], 1, "{status}");
    assert_eq!(status["failed"], 0, "{status}");
    assert_eq!(status["total"], 300, "{status}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for number in &numbers {
        let got = fake.inbox(number).len();
        let expected = usize::from(number != &opted);
        assert_eq!(got, expected, "+{number} got {got} message(s)");
    }
    // The eight throttled sends were refused, retried and (above) sent once each.
    assert_eq!(
        fake.templates
            .refused
            .load(std::sync::atomic::Ordering::Relaxed),
        8
    );
    let body = &fake.inbox(&numbers[3]).replies()[0].body;
    assert_eq!(
        body["template"]["components"][0]["parameters"][0],
        json!({"type": "text", "text": "Customer 3", "parameter_name": "first_name"})
    );

    // Deliveries, reads and a reply are counted.
    let reply = messages_webhook(
        &numbers[3],
        "Customer 3",
        vec![crate::webhook::text(
            &numbers[3],
            "wamid.CR1",
            "thanks",
            now_secs(),
        )],
    );
    assert_eq!(app.post_webhook(&reply).await.status(), 200);
    let status = until(&app, &url, &id, |s| s["read"] == 299 && s["replied"] == 1).await;
    assert_eq!(status["delivered"], 299, "{status}");
}

#[tokio::test]
async fn meta_s_messaging_limit_pauses_a_campaign_until_it_is_resumed() {
    let (fake, url) = fake_meta(false, 100).await;
    let app = daemon(&fake, &url, |_| {}).await;
    sync(&app).await;
    let (csv, numbers) = recipients_csv(20);
    let file = write_temp(&csv);
    fake.templates.fail_next(1, 131048);
    let (code, out, err) = wabot_cli(
        &app,
        &url,
        &[
            "campaign",
            "start",
            "--template",
            "appointment_reminder",
            "--language",
            "en_US",
            "--recipients",
            file.as_str(),
            "--rate",
            "5",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    let paused = until(&app, &url, &id, |s| s["state"] == "paused").await;
    let reason = paused["pauseReason"].as_str().unwrap();
    assert!(reason.contains("131048"), "{reason}");
    let (code, out, _) = wabot_cli(&app, &url, &["campaign", "status", &id]).await;
    assert_eq!(code, 0);
    assert!(out.contains("paused (Meta's messaging limit"), "{out}");
    // Paused: nothing more goes.
    let sent = fake.accepted.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        fake.accepted.load(std::sync::atomic::Ordering::Relaxed),
        sent
    );

    let (code, out, err) = wabot_cli(&app, &url, &["campaign", "resume", &id]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = wabot_cli(&app, &url, &["campaign", "resume", &id]).await;
    assert_ne!(code, 0);
    assert!(err.contains("cannot be resumed"), "{err}");
    until(&app, &url, &id, |s| {
        s["sent"] == 20 && s["state"] == "finished"
    })
    .await;
    for number in &numbers {
        inbox(&fake, number, 1).await;
        assert_eq!(fake.inbox(number).len(), 1, "+{number}");
    }
    let (code, _, err) = wabot_cli(&app, &url, &["campaign", "cancel", &id]).await;
    assert_ne!(code, 0);
    assert!(err.contains("is finished"), "{err}");
}

#[tokio::test]
async fn a_running_campaign_never_holds_up_a_chatbot_s_reply() {
    let (fake, url) = fake_meta(false, 100).await;
    // A number allowed 25 messages a second: the campaign may take 20 of them.
    let app = daemon(&fake, &url, |c| c.worker.send_rate_per_sec = 25).await;
    sync(&app).await;
    install_chatbot(
        &app.pool,
        &load_json(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/e2e/echo-loop.json"
        ))),
    )
    .await;
    let (csv, _) = recipients_csv(200);
    let file = write_temp(&csv);
    let (code, out, err) = wabot_cli(
        &app,
        &url,
        &[
            "campaign",
            "start",
            "--template",
            "appointment_reminder",
            "--language",
            "en_US",
            "--recipients",
            file.as_str(),
            "--rate",
            "100",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while fake.accepted.load(std::sync::atomic::Ordering::Relaxed) < 40 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the campaign did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A customer writes while most of the campaign is still to go.
    let asked = std::time::Instant::now();
    let body = messages_webhook(CUSTOMER, CUSTOMER_NAME, vec![text("wamid.RF1", "start")]);
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let reply = inbox(&fake, CUSTOMER, 1).await;
    let took = asked.elapsed();
    assert_eq!(reply[0]["text"]["body"], "Say something");
    assert!(took < Duration::from_secs(2), "the reply took {took:?}");
    let status = status_json(&app, &url, &id).await;
    assert!(
        status["pending"].as_i64().unwrap() > 50,
        "the campaign was still going: {status}"
    );
}

#[tokio::test]
async fn a_campaign_with_a_chatbot_places_each_recipient_there() {
    let (fake, url) = fake_meta(false, 100).await;
    let app = daemon(&fake, &url, |_| {}).await;
    sync(&app).await;
    let chatbot = install_chatbot(&app.pool, &super::templates::reminder_bot())
        .await
        .to_string();
    let (csv, numbers) = recipients_csv(3);
    let file = write_temp(&csv);
    let (code, out, err) = wabot_cli(
        &app,
        &url,
        &[
            "campaign",
            "start",
            "--template",
            "appointment_reminder",
            "--language",
            "en_US",
            "--recipients",
            file.as_str(),
            "--chatbot",
            &chatbot,
            "--node",
            "q",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let id = out
        .split_whitespace()
        .nth(1)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    until(&app, &url, &id, |s| s["sent"] == 3).await;
    let placed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM conversation_contexts \
         WHERE \"isActive\" AND \"currentNodeId\" = 'q' AND status = 'waiting_input'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(placed, 3);
    // The quick replies carry the question's button ids as their payloads.
    let sent = &fake.inbox(&numbers[1]).replies()[0].body;
    assert_eq!(
        sent["template"]["components"][2],
        json!({"type": "button", "sub_type": "quick_reply", "index": "1",
               "parameters": [{"type": "payload", "payload": "no"}]})
    );
    // The second recipient taps "No".
    let tap = messages_webhook(
        &numbers[1],
        "Customer 1",
        vec![super::templates::quick_reply(
            &numbers[1],
            "wamid.CQ1",
            "no",
            "No",
        )],
    );
    assert_eq!(app.post_webhook(&tap).await.status(), 200);
    let replies = inbox(&fake, &numbers[1], 2).await;
    assert_eq!(replies[1]["text"]["body"], "We will call to move it.");
    until(&app, &url, &id, |s| s["replied"] == 1).await;
}
