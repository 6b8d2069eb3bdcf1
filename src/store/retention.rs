//! Retention: the raw records that only audits and `wabot replay` read, purged
//! after an age in small batches.
//!
//! Each call deletes at most `batch` rows, oldest first, found through the table's
//! time index and deleted by primary key, as one statement (its own short
//! transaction). It takes no table lock and skips rows another transaction holds,
//! so ingest, which only inserts new rows, never waits on it.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A table retention purges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purged {
    /// `webhook_events`, by `received_at`.
    WebhookEvents,
    /// `webhook_unreadable`, by `received_at`.
    WebhookUnreadable,
    /// `wabot_turn_log`, by `created_at`.
    TurnLog,
}

impl Purged {
    pub const ALL: [Purged; 3] = [
        Purged::WebhookEvents,
        Purged::WebhookUnreadable,
        Purged::TurnLog,
    ];

    pub fn table(self) -> &'static str {
        match self {
            Purged::WebhookEvents => "webhook_events",
            Purged::WebhookUnreadable => "webhook_unreadable",
            Purged::TurnLog => "wabot_turn_log",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Purged::WebhookEvents => {
                "DELETE FROM webhook_events WHERE id IN ( \
                    SELECT id FROM webhook_events WHERE received_at < $1 \
                    ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            }
            Purged::WebhookUnreadable => {
                "DELETE FROM webhook_unreadable WHERE id IN ( \
                    SELECT id FROM webhook_unreadable WHERE received_at < $1 \
                    ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            }
            Purged::TurnLog => {
                "DELETE FROM wabot_turn_log WHERE id IN ( \
                    SELECT id FROM wabot_turn_log WHERE created_at < $1 \
                    ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            }
        }
    }
}

/// Deletes at most `batch` rows of `table` older than `before`; how many it deleted.
pub async fn purge_batch(
    pool: &PgPool,
    table: Purged,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(table.sql())
        .bind(before)
        .bind(batch.max(1))
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}
