//! Retention: raw records past `WABOT_RETENTION_DAYS` are purged in batches, newer
//! ones kept; `message_statuses` keeps what its columns do not, not a raw copy.

use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wabot::config::RetentionConfig;
use wabot::worker::retention::{purge_expired, PurgeReport, BATCH};

use crate::helpers::spawn_app;
use crate::webhook::{count, messages_webhook, now_secs, statuses_webhook, text};

async fn backdate(pool: &PgPool, table: &str, column: &str, ids: &[i64], days: i32) {
    sqlx::query(&format!(
        "UPDATE {table} SET {column} = now() - make_interval(days => $2) WHERE id = ANY($1)"
    ))
    .bind(ids)
    .bind(days)
    .execute(pool)
    .await
    .unwrap();
}

async fn ids(pool: &PgPool, table: &str) -> Vec<i64> {
    sqlx::query_scalar(&format!("SELECT id FROM {table} ORDER BY id"))
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn raw_records_past_the_age_are_purged_and_newer_ones_kept() {
    let app = spawn_app().await;
    let pool = &app.pool;
    for i in 0..4 {
        let body = messages_webhook(
            "905550000001",
            "A",
            vec![text(
                "905550000001",
                &format!("wamid.R{i}"),
                "hi",
                now_secs(),
            )],
        );
        assert_eq!(app.post_webhook(&body).await.status(), 200);
    }
    assert_eq!(app.post_webhook(b"not json").await.status(), 200);
    assert_eq!(app.post_webhook(b"[1]").await.status(), 200);
    let conversation: uuid::Uuid = sqlx::query_scalar("SELECT id FROM conversations")
        .fetch_one(pool)
        .await
        .unwrap();
    for job in 0..3_i64 {
        sqlx::query(
            "INSERT INTO wabot_turn_log (conversation_id, job_id, kind) VALUES ($1, $2, 'inbound')",
        )
        .bind(conversation)
        .bind(job)
        .execute(pool)
        .await
        .unwrap();
    }
    let events = ids(pool, "webhook_events").await;
    let unreadable = ids(pool, "webhook_unreadable").await;
    let log = ids(pool, "wabot_turn_log").await;
    assert_eq!((events.len(), unreadable.len(), log.len()), (4, 2, 3));
    // Old: two events, one unreadable body, two log rows; one event just inside.
    backdate(pool, "webhook_events", "received_at", &events[..2], 8).await;
    backdate(pool, "webhook_events", "received_at", &events[2..3], 6).await;
    backdate(
        pool,
        "webhook_unreadable",
        "received_at",
        &unreadable[..1],
        30,
    )
    .await;
    backdate(pool, "wabot_turn_log", "created_at", &log[..2], 8).await;
    // And a backlog of several batches.
    let backlog = BATCH * 2 + 500;
    sqlx::query(
        "INSERT INTO webhook_events (received_at, body) \
         SELECT now() - interval '9 days', '{}'::jsonb FROM generate_series(1, $1)",
    )
    .bind(backlog)
    .execute(pool)
    .await
    .unwrap();

    let stop = CancellationToken::new();
    let off = purge_expired(pool, &RetentionConfig { days: 0 }, &stop).await;
    assert_eq!(off, PurgeReport::default(), "0 keeps everything");
    assert_eq!(count(pool, "webhook_events").await, 4 + backlog);

    let report = purge_expired(pool, &RetentionConfig { days: 7 }, &stop).await;
    assert_eq!(
        report,
        PurgeReport {
            webhook_events: 2 + backlog as u64,
            webhook_unreadable: 1,
            turn_log: 2,
            more: false,
        }
    );
    assert_eq!(ids(pool, "webhook_events").await, events[2..].to_vec());
    assert_eq!(
        ids(pool, "webhook_unreadable").await,
        unreadable[1..].to_vec()
    );
    assert_eq!(ids(pool, "wabot_turn_log").await, log[2..].to_vec());
    // What the events recorded stays: the messages are rows of their own.
    assert_eq!(count(pool, "messages").await, 4);
    // Nothing left to do.
    let again = purge_expired(pool, &RetentionConfig { days: 7 }, &stop).await;
    assert_eq!(again.total(), 0);

    // A stopped process purges nothing more.
    backdate(pool, "webhook_events", "received_at", &events[2..], 8).await;
    stop.cancel();
    let stopped = purge_expired(pool, &RetentionConfig { days: 7 }, &stop).await;
    assert_eq!((stopped.total(), stopped.more), (0, true));
    assert_eq!(count(pool, "webhook_events").await, 2);
}

#[tokio::test]
async fn statuses_keep_only_what_their_columns_do_not_hold() {
    let app = spawn_app().await;
    let pool = &app.pool;
    let delivered = std::fs::read("fixtures/webhooks/status_delivered.json").unwrap();
    assert_eq!(app.post_webhook(&delivered).await.status(), 200);
    let read = statuses_webhook(&[("wamid.FIXTURE.OUTBOUND1", "read")]);
    assert_eq!(app.post_webhook(&read).await.status(), 200);

    let rows: Vec<(String, Option<Value>, i32)> = sqlx::query_as(
        "SELECT status, extra, pg_column_size(s.*) FROM message_statuses s ORDER BY status",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2);
    let (status, extra, _) = &rows[0];
    assert_eq!(status, "delivered");
    let extra = extra
        .as_ref()
        .expect("the conversation and pricing objects");
    assert_eq!(extra["conversation"]["id"], "CONVERSATION-FIXTURE-1");
    assert_eq!(extra["pricing"]["category"], "service");
    for typed in ["id", "status", "timestamp", "recipient_id", "errors"] {
        assert!(extra.get(typed).is_none(), "{typed} is a column already");
    }
    assert_eq!((rows[1].0.as_str(), &rows[1].1), ("read", &None));
    let raw_column: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns \
         WHERE table_name = 'message_statuses' AND column_name = 'raw'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(raw_column, 0, "no second raw copy");

    // The migration reverts to the raw column rebuilt from the row, and back.
    loop {
        let reverted = wabot::store::revert_last(pool).await.unwrap();
        let name = reverted.expect("the status migration is applied");
        if name.contains("status extra") {
            break;
        }
    }
    let (raw,): (Value,) =
        sqlx::query_as("SELECT raw FROM message_statuses WHERE status = 'delivered'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(raw["id"], "wamid.FIXTURE.OUTBOUND1");
    assert_eq!(raw["status"], "delivered");
    assert_eq!(raw["timestamp"], "1764000021");
    assert_eq!(raw["recipient_id"], "905320000001");
    assert_eq!(raw["pricing"]["pricing_model"], "PMP");
    wabot::store::migrate(pool).await.unwrap();
    let extra: Option<Value> =
        sqlx::query_scalar("SELECT extra FROM message_statuses WHERE status = 'delivered'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(extra.unwrap()["pricing"]["pricing_model"], "PMP");
}

/// The planner's statistics of a table the pipeline grows are refreshed once it
/// changed by more than autovacuum's threshold, and not again until it does.
#[tokio::test]
async fn grown_tables_with_stale_statistics_are_found_and_analyzed() {
    use wabot::store::planner;
    let pool = crate::helpers::fresh_pool().await;
    // Everything wabot keeps is analyzed once, as a daemon would at its start.
    for table in planner::stale(&pool).await.unwrap() {
        planner::analyze(&pool, &table).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO users (id, name, \"phoneNumber\") \
         SELECT gen_random_uuid(), 'c' || n, '9055500' || lpad(n::text, 5, '0') \
         FROM generate_series(1, 300) n",
    )
    .execute(&pool)
    .await
    .unwrap();
    // The activity statistics arrive within a second or so.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let stale = planner::stale(&pool).await.unwrap();
        if stale.iter().any(|t| t == "users") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "users never went stale: {stale:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    planner::analyze(&pool, "users").await.unwrap();
    let analyzed: Option<f32> =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'users'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(analyzed, Some(300.0), "the planner knows the table's size");
    let stale = planner::stale(&pool).await.unwrap();
    assert!(!stale.iter().any(|t| t == "users"), "{stale:?}");

    // Only the tables it knows: a name is spliced into the statement.
    assert!(planner::analyze(&pool, "users; DROP TABLE messages")
        .await
        .is_err());
    assert!(planner::analyze(&pool, "whatsapp_config").await.is_err());
}
