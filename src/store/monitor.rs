//! What the daemon reports about itself: the queues' state for `/metrics`, and this
//! process's row in `wabot_processes` for `wabot status`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One database queue at a glance.
#[derive(Debug, Clone, Copy, Default, sqlx::FromRow)]
pub struct QueueStats {
    /// Unfinished jobs (timers not yet due included).
    pub depth: i64,
    /// Due now and not leased: waiting for a worker.
    pub due: i64,
    /// How long the oldest of those has been due, in seconds.
    pub oldest_due_secs: Option<f64>,
}

/// The turn queue (`turn_jobs`) and the send queue (`send_jobs`). Both scans use the
/// queues' partial indexes on unfinished jobs, so they cost what the backlog costs.
pub async fn queue_stats(pool: &PgPool) -> Result<(QueueStats, QueueStats), sqlx::Error> {
    let turns = one_queue(pool, "turn_jobs", "run_at").await?;
    let sends = one_queue(pool, "send_jobs", "next_attempt_at").await?;
    Ok((turns, sends))
}

/// One queue's stats; `due_column` is when a job falls due. Both names are this
/// module's constants, never input.
async fn one_queue(
    pool: &PgPool,
    table: &'static str,
    due_column: &'static str,
) -> Result<QueueStats, sqlx::Error> {
    let waiting =
        format!("{due_column} <= now() AND (locked_until IS NULL OR locked_until < now())");
    sqlx::query_as(&format!(
        "SELECT count(*) AS depth, count(*) FILTER (WHERE {waiting}) AS due, \
                extract(epoch FROM now() - min({due_column}) FILTER (WHERE {waiting}))::float8 \
                    AS oldest_due_secs \
         FROM {table} WHERE done_at IS NULL"
    ))
    .fetch_one(pool)
    .await
}

/// This process as it reports itself.
#[derive(Debug, Clone)]
pub struct ProcessRow {
    pub holder: String,
    pub pid: i32,
    pub hostname: Option<String>,
    pub version: String,
    pub started_at: DateTime<Utc>,
    /// Why sending is on hold, and since when.
    pub send_hold: Option<SendHold>,
    pub turn_leases: i32,
    pub send_leases: i32,
}

/// Why nothing goes out from a process.
#[derive(Debug, Clone, PartialEq)]
pub struct SendHold {
    /// `token_rejected` (nothing is tried until the token changes) or
    /// `graph_unreachable` (calls are tried and retried with backoff).
    pub kind: &'static str,
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// Upserts this process's row (`seen_at = now()`), and drops rows nobody has
/// refreshed for a day (processes long gone).
pub async fn heartbeat(pool: &PgPool, row: &ProcessRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO wabot_processes (holder, pid, hostname, version, started_at, seen_at, \
             send_hold, send_hold_since, turn_leases, send_leases, send_hold_kind) \
         VALUES ($1, $2, $3, $4, $5, now(), $6, $7, $8, $9, $10) \
         ON CONFLICT (holder) DO UPDATE SET seen_at = now(), send_hold = EXCLUDED.send_hold, \
             send_hold_since = EXCLUDED.send_hold_since, \
             send_hold_kind = EXCLUDED.send_hold_kind, turn_leases = EXCLUDED.turn_leases, \
             send_leases = EXCLUDED.send_leases",
    )
    .bind(&row.holder)
    .bind(row.pid)
    .bind(&row.hostname)
    .bind(&row.version)
    .bind(row.started_at)
    .bind(row.send_hold.as_ref().map(|h| h.reason.as_str()))
    .bind(row.send_hold.as_ref().map(|h| h.since))
    .bind(row.turn_leases)
    .bind(row.send_leases)
    .bind(row.send_hold.as_ref().map(|h| h.kind))
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM wabot_processes WHERE seen_at < now() - interval '1 day'")
        .execute(pool)
        .await?;
    Ok(())
}

/// Marks this process stopped at the end of a drain: its row stays (for `status`)
/// with no leases and no hold.
pub async fn signed_off(pool: &PgPool, holder: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE wabot_processes SET turn_leases = 0, send_leases = 0, send_hold = NULL, \
             send_hold_since = NULL, send_hold_kind = NULL, seen_at = now(), stopped_at = now() WHERE holder = $1",
    )
    .bind(holder)
    .execute(pool)
    .await?;
    Ok(())
}
