//! Retention of the raw records: `webhook_events`, `webhook_unreadable` and
//! `wabot_turn_log` rows older than `WABOT_RETENTION_DAYS` are deleted in batches
//! of at most [`BATCH`] rows, each its own short statement, with a pause between,
//! so a backlog never holds up ingest or the queues. Chatbot versions that no live
//! conversation needs go too ([`purge_versions`]). Run by maintenance
//! (`recovery::maintain`); several processes may run it at once.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::RetentionConfig;
use crate::store::retention::{self, Purged};
use crate::store::versions;

/// The most rows one statement deletes.
pub const BATCH: i64 = 1000;
/// The pause between two statements.
const PAUSE: Duration = Duration::from_millis(50);
/// The most statements per table in one round: a large backlog (retention turned
/// on for an old database) is worked off over several rounds, and the rest of
/// maintenance keeps its cadence.
const ROUND: usize = 100;

/// What one round purged, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub webhook_events: u64,
    pub webhook_unreadable: u64,
    pub turn_log: u64,
    /// Whether a table still had rows past the age when the round ended (the
    /// round's cap, or `stop`).
    pub more: bool,
}

impl PurgeReport {
    pub fn total(&self) -> u64 {
        self.webhook_events + self.webhook_unreadable + self.turn_log
    }

    fn add(&mut self, table: Purged, n: u64) {
        match table {
            Purged::WebhookEvents => self.webhook_events += n,
            Purged::WebhookUnreadable => self.webhook_unreadable += n,
            Purged::TurnLog => self.turn_log += n,
        }
    }
}

/// One round: purges what is older than the retention age (nothing when it is 0),
/// until done, the round's cap, or `stop`. A database error ends the round with a
/// warning; the next round tries again.
pub async fn purge_expired(
    pool: &PgPool,
    config: &RetentionConfig,
    stop: &CancellationToken,
) -> PurgeReport {
    let mut report = PurgeReport::default();
    if config.days == 0 {
        return report;
    }
    let before = Utc::now() - chrono::Duration::days(i64::from(config.days));
    for table in Purged::ALL {
        let mut statements = 0;
        loop {
            if stop.is_cancelled() {
                report.more = true;
                return report;
            }
            let n = match retention::purge_batch(pool, table, before, BATCH).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, table = table.table(), "retention purge failed");
                    return report;
                }
            };
            report.add(table, n);
            statements += 1;
            if n < BATCH as u64 {
                break;
            }
            if statements >= ROUND {
                report.more = true;
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(PAUSE) => {}
                _ = stop.cancelled() => {}
            }
        }
    }
    if report.total() > 0 {
        tracing::info!(
            webhook_events = report.webhook_events,
            webhook_unreadable = report.webhook_unreadable,
            turn_log = report.turn_log,
            more = report.more,
            days = config.days,
            "purged raw records past the retention age"
        );
    }
    report
}

/// How long after a chatbot's last edit its old versions are kept whatever else:
/// a turn that read the graph before the edit may still be running (a slow rest_api
/// call) and about to pin a new context to it.
pub const VERSIONS_SETTLED: Duration = Duration::from_secs(60 * 60);

/// Deletes the chatbot versions that no live context is pinned to and that are not
/// their chatbot's graph any more (the current graph's version stays: new
/// conversations start on it); chatbots edited within `settled` wait for a later
/// round. Two statements, whatever the number of versions: the chatbots that have
/// such versions, with their graphs (hashed here, as the turn stage hashes them),
/// then one delete that checks the live contexts again.
pub async fn purge_versions(pool: &PgPool, settled: Duration) -> Result<u64, sqlx::Error> {
    let chatbots = versions::purgeable(pool, settled).await?;
    if chatbots.is_empty() {
        return Ok(0);
    }
    let ids: Vec<uuid::Uuid> = chatbots.iter().map(|c| c.id).collect();
    let current: Vec<String> = chatbots
        .iter()
        .map(|c| crate::engine::version::hash(&c.nodes, &c.edges, c.metadata.as_ref()))
        .collect();
    let purged = versions::purge(pool, &ids, &current, settled).await?;
    if purged > 0 {
        tracing::info!(
            versions = purged,
            "purged chatbot versions no conversation needs"
        );
    }
    Ok(purged)
}

/// How old a partial media file is before maintenance deletes it.
const UNFINISHED_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The most batches of [`BATCH`] media jobs one round purges.
const MEDIA_ROUND: usize = 20;

/// Deletes stored media, and the finished download jobs, older than
/// `WABOT_MEDIA_RETENTION_DAYS` (which follows `WABOT_RETENTION_DAYS` unless set;
/// 0 keeps media for ever): batches of [`BATCH`] jobs leased to this process, their
/// files deleted from the media store, then the jobs deleted and each message noted
/// (`content.media.purged`). A file that cannot be deleted keeps its job for a
/// later round. How many jobs it purged.
pub async fn purge_media(
    ctx: &crate::app::AppContext,
    stop: &CancellationToken,
) -> Result<u64, sqlx::Error> {
    // Partial files of killed downloads, whatever the retention (a download runs for
    // WABOT_MEDIA_TIMEOUT_SECS at most; a day is far past it).
    match ctx.media.sweep_unfinished(UNFINISHED_AGE).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "deleted partial media files of killed downloads"),
        Err(e) => tracing::warn!(error = %e, "cannot sweep partial media files"),
    }
    let days = ctx.config.media_retention_days();
    if days == 0 {
        return Ok(0);
    }
    let before = Utc::now() - chrono::Duration::days(i64::from(days));
    let mut purged = 0;
    for _ in 0..MEDIA_ROUND {
        if stop.is_cancelled() {
            break;
        }
        let (token, expired) =
            crate::store::media::claim_expired(&ctx.pool, &ctx.holder, before, BATCH, ctx.lease())
                .await?;
        let mut gone = Vec::with_capacity(expired.len());
        for job in &expired {
            let Some(key) = &job.store_key else {
                gone.push(job.id);
                continue;
            };
            if job.store_kind.as_deref() != Some(ctx.media.kind()) {
                // Stored elsewhere (the store was changed since): not ours to delete.
                tracing::warn!(job = job.id, store = ?job.store_kind, "media past retention is in another store; kept");
                continue;
            }
            match ctx.media.delete(key).await {
                Ok(()) => gone.push(job.id),
                Err(e) => {
                    tracing::warn!(job = job.id, error = %e, "cannot delete media past retention")
                }
            }
        }
        purged += crate::store::media::forget(&ctx.pool, &gone, &token).await?;
        if expired.len() < BATCH as usize {
            break;
        }
    }
    if purged > 0 {
        tracing::info!(jobs = purged, days, "purged media past the retention age");
    }
    Ok(purged)
}
