//! Durable background work: the turn worker and the sender.
//!
//! Both claim rows from work tables in PostgreSQL (`FOR UPDATE SKIP LOCKED`, with
//! leases), so any number of wabot processes can share one database.

pub mod rate_limit;
pub mod rest_api;
pub mod sender;
pub mod turns;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::AppState;

/// Starts the background workers; the tracker is closed and awaited on shutdown.
pub fn spawn(state: AppState, shutdown: CancellationToken) -> anyhow::Result<TaskTracker> {
    let tracker = TaskTracker::new();
    if !state.config.worker.enabled {
        return Ok(tracker);
    }
    let turns = Arc::new(turns::TurnWorker::new(state.clone())?);
    tracker.spawn(turns.run(state.work_notify.clone(), shutdown.clone()));
    let sender = Arc::new(sender::Sender::new(
        state.pool.clone(),
        state.credentials.clone(),
        state.graph.clone(),
        sender::SenderOptions::from_config(&state.config),
    ));
    tracker.spawn(sender.run(state.send_notify.clone(), shutdown.clone()));
    tracker.spawn(maintain_queues(state.pool.clone(), shutdown));
    Ok(tracker)
}

/// Every minute, drops finished jobs kept for an hour and vacuums the queues. Several
/// processes may do it at once; the statements are idempotent.
async fn maintain_queues(pool: sqlx::PgPool, shutdown: CancellationToken) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(60);
    const KEEP: std::time::Duration = std::time::Duration::from_secs(60 * 60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
        match crate::store::turns::purge_finished(&pool, KEEP).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(jobs = n, "purged finished jobs"),
            Err(e) => tracing::warn!(error = %e, "queue maintenance failed"),
        }
    }
}
