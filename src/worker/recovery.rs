//! The slow path: the one place a claim query runs.
//!
//! Pushed work covers the common case; what it cannot see is picked up here, at a
//! low cadence (`WABOT_POLL_INTERVAL_MS`): jobs whose lease expired (a crashed or
//! killed process), due timers, jobs queued behind another process's work, failed
//! Flow sends, turns and sends handed back by a drain. The lease keeper renews the
//! leases of everything this process holds in memory, and maintenance purges
//! finished jobs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::store;
use crate::worker::sender::SendSink;
use crate::worker::turns::TurnSink;
use crate::worker::{AppContext, Leases};

/// Claims what nobody holds, every poll interval, until `stop`.
pub async fn recover(
    ctx: Arc<AppContext>,
    turns: TurnSink,
    sends: SendSink,
    stop: CancellationToken,
) {
    let every = Duration::from_millis(ctx.config.worker.poll_interval_ms.max(10));
    let limit = ctx.config.pipeline.turn_batch.max(1) as i64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        match store::turns::claim(&ctx.pool, &ctx.holder, ctx.lease(), limit).await {
            Ok(jobs) => {
                if !jobs.is_empty() {
                    tracing::debug!(jobs = jobs.len(), "recovered turn jobs");
                }
                crate::metrics::lease_takeovers(
                    "turn",
                    jobs.iter().filter(|j| j.taken_over).count(),
                );
                tokio::select! {
                    _ = turns.push_all(jobs.into_iter().map(Into::into).collect()) => {}
                    _ = stop.cancelled() => return,
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot claim turn jobs"),
        }
        match store::outbox::claim(&ctx.pool, &ctx.holder, None, ctx.lease(), limit).await {
            Ok(jobs) => {
                if !jobs.is_empty() {
                    tracing::debug!(jobs = jobs.len(), "recovered send jobs");
                }
                crate::metrics::lease_takeovers(
                    "send",
                    jobs.iter().filter(|j| j.taken_over).count(),
                );
                tokio::select! {
                    _ = sends.push_all(jobs) => {}
                    _ = stop.cancelled() => return,
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot claim send jobs"),
        }
    }
}

/// Renews every lease this process holds in memory, three times per lease, until
/// `stop`.
pub async fn keep_leases(ctx: Arc<AppContext>, leases: Arc<Leases>, stop: CancellationToken) {
    let lease = ctx.lease();
    let every = lease / 3;
    leases.mark_kept(Instant::now());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let began = Instant::now();
        let (turn_tokens, send_tokens) = (leases.turns.snapshot(), leases.sends.snapshot());
        let kept = async {
            store::turns::keep_leases(&ctx.pool, &turn_tokens, lease).await?;
            store::outbox::keep_leases(&ctx.pool, &send_tokens, lease).await
        }
        .await;
        match kept {
            Ok(_) => leases.mark_kept(began),
            Err(e) => tracing::warn!(error = %e, "cannot renew leases"),
        }
    }
}

/// Every ten seconds, analyzes the tables the pipeline grows whose statistics went
/// stale (`store::planner`), so that the connections' generic plans are made for
/// the tables as they are, not as they were when the database was new; until
/// `stop`. Several processes may do it at once: an analyze is harmless twice.
pub async fn keep_statistics(ctx: Arc<AppContext>, stop: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(10);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.cancelled() => return,
        }
        let stale = match store::planner::stale(&ctx.pool).await {
            Ok(stale) => stale,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the planner's statistics");
                continue;
            }
        };
        for table in stale {
            let began = Instant::now();
            let analyzed = tokio::select! {
                analyzed = store::planner::analyze(&ctx.pool, &table) => analyzed,
                _ = stop.cancelled() => return,
            };
            match analyzed {
                Ok(()) => tracing::debug!(
                    table,
                    took_ms = began.elapsed().as_millis() as u64,
                    "planner statistics refreshed"
                ),
                Err(e) => tracing::warn!(table, error = %e, "cannot analyze"),
            }
        }
    }
}

/// Every minute, drops finished jobs kept for an hour and vacuums the queues, and
/// the chatbot versions nothing needs.
/// Several processes may do it at once; the statements are idempotent, so a drain
/// does not wait for a purge or a VACUUM to end: `stop` abandons it (the next
/// round, here or elsewhere, does it again).
pub async fn maintain(ctx: Arc<AppContext>, stop: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(60);
    const KEEP: Duration = Duration::from_secs(60 * 60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.cancelled() => return,
        }
        let purged = tokio::select! {
            purged = store::turns::purge_finished(&ctx.pool, KEEP) => purged,
            _ = stop.cancelled() => return,
        };
        match purged {
            Ok(0) => {}
            Ok(n) => tracing::debug!(jobs = n, "purged finished jobs"),
            Err(e) => tracing::warn!(error = %e, "queue maintenance failed"),
        }
        let settled = crate::worker::retention::VERSIONS_SETTLED;
        let purged = tokio::select! {
            purged = crate::worker::retention::purge_versions(&ctx.pool, settled) => purged,
            _ = stop.cancelled() => return,
        };
        if let Err(e) = purged {
            tracing::warn!(error = %e, "chatbot version purge failed");
        }
        crate::worker::retention::purge_expired(&ctx.pool, &ctx.config.retention, &stop).await;
        if let Err(e) = crate::worker::retention::purge_media(&ctx, &stop).await {
            tracing::warn!(error = %e, "media retention purge failed");
        }
    }
}
