//! Whether the pipeline has work in hand: what `wabot try` (and anything that must
//! wait for the bot to finish answering rather than sleep) waits on.

use sqlx::PgPool;

/// Turn and send jobs that are unfinished and due now, leased or not. Zero means
/// every committed message has had its turn and every reply due has been handed to
/// the Graph API; timers due later (a question's timeout) and sends backing off
/// until later do not count.
pub async fn due_jobs(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM turn_jobs WHERE done_at IS NULL AND run_at <= now()) \
              + (SELECT count(*) FROM send_jobs \
                 WHERE done_at IS NULL AND next_attempt_at <= now())",
    )
    .fetch_one(pool)
    .await
}
