//! Durable background work: the turn worker and the sender.
//!
//! Both claim rows from work tables in PostgreSQL (`FOR UPDATE SKIP LOCKED`, with
//! leases), so any number of wabot processes can share one database.

pub mod rest_api;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::AppState;

/// Starts the background workers; the tracker is closed and awaited on shutdown.
pub fn spawn(state: AppState, shutdown: CancellationToken) -> TaskTracker {
    let tracker = TaskTracker::new();
    if !state.config.worker.enabled {
        return tracker;
    }
    let _ = shutdown;
    tracker
}
