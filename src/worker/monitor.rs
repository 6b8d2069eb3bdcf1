//! The pipeline reporting on itself, every few seconds: the database queues' depth
//! and the age of their oldest due job, the in-memory queues between the stages and
//! the pool as gauges for `/metrics`; and this process's row in `wabot_processes`
//! (alive, leases held, sending on hold or the Graph API unreachable, and why) for
//! `wabot status`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::store;
use crate::store::monitor::{ProcessRow, SendHold};
use crate::worker::ingest::IngestHandle;
use crate::worker::sender::SendSink;
use crate::worker::turns::TurnSink;
use crate::worker::{AppContext, Leases};

/// How often the monitor samples and reports: every ten poll intervals, at most
/// every 5 s (the default poll interval of 500 ms gives 5 s).
pub fn every(ctx: &AppContext) -> Duration {
    (Duration::from_millis(ctx.config.worker.poll_interval_ms.max(10)) * 10)
        .min(Duration::from_secs(5))
}

/// What the monitor looks at.
pub struct Watched {
    pub leases: Arc<Leases>,
    pub ingest: IngestHandle,
    pub turns: Option<TurnSink>,
    pub sends: SendSink,
}

/// Samples and reports every [`every`], and at once when sending is held or the
/// Graph API becomes unreachable (or either ends), until `stop`.
pub async fn run(ctx: Arc<AppContext>, watched: Watched, stop: CancellationToken) {
    let started_at = Utc::now();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    metrics::sending_held(false);
    let every = every(&ctx);
    loop {
        sample(&ctx, &watched).await;
        let row = ProcessRow {
            holder: ctx.holder.clone(),
            pid: std::process::id() as i32,
            hostname: hostname.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at,
            // One field says why nothing goes out: a rejected token (nothing is
            // tried) before an unreachable Graph API (calls are tried and fail).
            send_hold: watched
                .sends
                .hold()
                .map(|(reason, since)| SendHold {
                    kind: "token_rejected",
                    reason,
                    since,
                })
                .or_else(|| {
                    watched
                        .sends
                        .graph_unreachable()
                        .map(|(reason, since)| SendHold {
                            kind: "graph_unreachable",
                            reason,
                            since,
                        })
                }),
            turn_leases: watched.leases.turns.len() as i32,
            send_leases: watched.leases.sends.len() as i32,
        };
        if let Err(e) = store::monitor::heartbeat(&ctx.pool, &row).await {
            tracing::debug!(error = %e, "cannot report this process in wabot_processes");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = watched.sends.changed() => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn sample(ctx: &AppContext, watched: &Watched) {
    let idle = ctx.pool.num_idle();
    metrics::pool(ctx.pool.size().saturating_sub(idle as u32), idle);
    metrics::stage_queue("ingest", watched.ingest.queued());
    if let Some(turns) = &watched.turns {
        metrics::stage_queue("turns", turns.queued());
    }
    metrics::stage_queue("sends", watched.sends.queued());
    match store::monitor::queue_stats(&ctx.pool).await {
        Ok((turns, sends)) => {
            for (name, q) in [("turn", turns), ("send", sends)] {
                let oldest = q
                    .oldest_due_secs
                    .map(|s| Duration::from_secs_f64(s.max(0.0)));
                metrics::queue(name, q.depth, q.due, oldest);
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the queues' state"),
    }
    match store::media::queue_stats(&ctx.pool).await {
        Ok(q) => {
            let oldest = q
                .oldest_due_secs
                .map(|s| Duration::from_secs_f64(s.max(0.0)));
            metrics::queue("media", q.depth, q.due, oldest);
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the media queue's state"),
    }
    match store::people::counts(&ctx.pool).await {
        Ok(counts) => {
            for state in store::people::STATES {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == state)
                    .map_or(0, |(_, n)| *n);
                metrics::handover(state, n);
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot count the conversations handed over"),
    }
}
