//! The pipeline: batched stages with pushed work, PostgreSQL as the durable record
//! and the recovery path rather than the conveyor belt.
//!
//! ```text
//! http ──► ingest (batch tx) ──leased jobs──► turns (batch read, engine, batch tx)
//!                                               │ leased send jobs
//!                                               ▼
//!                         sender (per conversation in order) ──► Graph API
//!                                               │ outcomes
//!                                               ▼
//!                                        recorder (batch tx)
//! recovery (slow poll): expired leases, due timers, jobs another process left
//! ```
//!
//! [`Pipeline::start`] builds the stages around one [`AppContext`];
//! [`Pipeline::drain`] stops them in order within a deadline: ingest finishes what
//! was queued, the turn stage what was queued and started, the sender what was
//! committed; every lease not finished is handed back.

pub mod campaigns;
pub mod events;
pub mod ingest;
pub mod media;
pub mod monitor;
pub mod proactive;
pub mod rate_limit;
pub mod receipts;
pub mod recovery;
pub mod retention;
pub mod sender;
pub mod templates;
pub mod turns;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::app::AppContext;
use crate::store;
use ingest::IngestHandle;
use sender::SenderStage;
use turns::TurnStage;

/// The lease tokens of one queue that this process holds in memory.
#[derive(Default)]
pub struct Tokens(Mutex<HashSet<String>>);

impl Tokens {
    pub fn hold(&self, token: &str) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(token.to_owned());
        }
    }
    pub fn release(&self, token: &str) {
        if let Ok(mut set) = self.0.lock() {
            set.remove(token);
        }
    }
    /// Holds every token of a batch, under one lock.
    pub fn hold_all<'a>(&self, tokens: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut set) = self.0.lock() {
            set.extend(tokens.into_iter().map(str::to_owned));
        }
    }
    /// Releases every token of a batch, under one lock.
    pub fn release_all<'a>(&self, tokens: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut set) = self.0.lock() {
            for token in tokens {
                set.remove(token);
            }
        }
    }
    pub fn len(&self) -> usize {
        self.0.lock().map(|s| s.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn snapshot(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The leases this process holds in memory (turn and send jobs, queued or running):
/// the lease keeper renews them, so that a job waiting its turn is not taken over.
#[derive(Default)]
pub struct Leases {
    pub turns: Tokens,
    pub sends: Tokens,
    kept: Mutex<Option<Instant>>,
}

impl Leases {
    /// Records a renewal of every lease held that began at `began`: the leases it
    /// renewed run from then (the database's clock read during the statement), not
    /// from when the statement returned, which may be seconds later under load.
    fn mark_kept(&self, began: Instant) {
        if let Ok(mut kept) = self.kept.lock() {
            *kept = Some(began);
        }
    }
    /// When the last renewal of every lease held began (`None`: none yet).
    pub fn kept_at(&self) -> Option<Instant> {
        self.kept.lock().ok().and_then(|k| *k)
    }
    /// Whether the keeper renewed every lease within `within`.
    pub fn kept_recently(&self, within: Duration) -> bool {
        self.kept_at().is_some_and(|at| at.elapsed() < within)
    }
}

/// Wraps a task of the pipeline so that it ends at its next await once `kill` is
/// cancelled (the application was dropped, or its `run` future aborted: a test's
/// stand-in for a killed process).
fn killable<F>(kill: &CancellationToken, task: F) -> impl std::future::Future<Output = ()>
where
    F: std::future::Future<Output = ()>,
{
    let kill = kill.clone();
    async move {
        tokio::select! {
            _ = kill.cancelled() => {}
            _ = task => {}
        }
    }
}

/// Spawns a [`killable`] task of the pipeline.
pub fn spawn_killable<F>(kill: &CancellationToken, task: F) -> JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(killable(kill, task))
}

/// [`spawn_killable`] on a task tracker, so a drain can wait for the task.
pub fn spawn_tracked<F>(tracker: &TaskTracker, kill: &CancellationToken, task: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tracker.spawn(killable(kill, task));
}

/// The running stages.
pub struct Pipeline {
    ctx: Arc<AppContext>,
    kill: CancellationToken,
    ingest_close: CancellationToken,
    ingest_tasks: TaskTracker,
    turns: Option<JoinHandle<()>>,
    turns_idle: CancellationToken,
    turns_stop: CancellationToken,
    sender: Option<SenderStage>,
    sender_stop: CancellationToken,
    recovery: TaskTracker,
    recovery_stop: CancellationToken,
    keeper: TaskTracker,
    keeper_stop: CancellationToken,
    /// Inbound media downloads (with the worker only).
    media: Option<media::MediaStage>,
}

impl Pipeline {
    /// Starts the stages; the handle is what webhook handlers submit to. With the
    /// worker disabled (`WABOT_WORKER_ENABLED=false`) webhooks are still stored, but
    /// no turn runs here: their jobs wait, unleased, for a process that runs them.
    pub fn start(ctx: Arc<AppContext>) -> anyhow::Result<(Pipeline, IngestHandle)> {
        let kill = CancellationToken::new();
        let leases = Arc::new(Leases::default());
        let ingest_close = CancellationToken::new();
        let ingest_tasks = TaskTracker::new();
        let turns_idle = CancellationToken::new();
        let turns_stop = CancellationToken::new();
        let sender_stop = CancellationToken::new();
        let recovery = TaskTracker::new();
        let recovery_stop = CancellationToken::new();
        let keeper = TaskTracker::new();
        let keeper_stop = CancellationToken::new();

        let sender = SenderStage::start(
            ctx.pool.clone(),
            ctx.credentials.clone(),
            ctx.graph.clone(),
            &ctx.config,
            ctx.holder.clone(),
            leases.clone(),
            sender_stop.clone(),
            kill.clone(),
            ctx.events.clone(),
        );
        let (sink, rx) = turns::queue(&ctx, leases.clone());
        let turn_sink = sink.clone();
        let enabled = ctx.config.worker.enabled;
        let turns = if enabled {
            let stage = Arc::new(TurnStage::new(
                ctx.clone(),
                leases.clone(),
                sink.clone(),
                sender.sink.clone(),
            )?);
            Some(spawn_killable(
                &kill,
                stage.run(rx, turns_idle.clone(), turns_stop.clone(), kill.clone()),
            ))
        } else {
            drop(rx);
            None
        };
        let ingest = ingest::start(
            ctx.clone(),
            if enabled { Some(sink.clone()) } else { None },
            ingest_close.clone(),
            &ingest_tasks,
            &kill,
        );
        if enabled {
            let poll = recovery::recover(
                ctx.clone(),
                sink,
                sender.sink.clone(),
                recovery_stop.clone(),
            );
            spawn_tracked(&recovery, &kill, poll);
            let maintain = recovery::maintain(ctx.clone(), recovery_stop.clone());
            spawn_tracked(&recovery, &kill, maintain);
            let statistics = recovery::keep_statistics(ctx.clone(), recovery_stop.clone());
            spawn_tracked(&recovery, &kill, statistics);
            let campaigns = campaigns::run(ctx.clone(), sender.sink.clone(), recovery_stop.clone());
            spawn_tracked(&recovery, &kill, campaigns);
            let sync = templates::run_periodic(ctx.clone(), recovery_stop.clone());
            spawn_tracked(&recovery, &kill, sync);
            let keep = recovery::keep_leases(ctx.clone(), leases.clone(), keeper_stop.clone());
            spawn_tracked(&keeper, &kill, keep);
        }
        // Every process keeps the subscribed event set fresh (ingest writes events
        // too); only one with the worker delivers them.
        spawn_tracked(
            &recovery,
            &kill,
            events::run(ctx.clone(), enabled, recovery_stop.clone()),
        );
        let media = if enabled {
            Some(media::MediaStage::start(ctx.clone(), &kill)?)
        } else {
            None
        };
        let watched = monitor::Watched {
            leases,
            ingest: ingest.clone(),
            turns: enabled.then(|| turn_sink.clone()),
            sends: sender.sink.clone(),
        };
        spawn_tracked(
            &keeper,
            &kill,
            monitor::run(ctx.clone(), watched, keeper_stop.clone()),
        );
        Ok((
            Pipeline {
                ctx,
                kill,
                ingest_close,
                ingest_tasks,
                turns,
                turns_idle,
                turns_stop,
                sender: Some(sender),
                sender_stop,
                recovery,
                recovery_stop,
                keeper,
                keeper_stop,
                media,
            },
            ingest,
        ))
    }

    /// Stops the stages in order, within `deadline`: ingest stores what was queued
    /// (its handlers are waiting), the turn stage runs and commits what it holds, the
    /// sender sends what was committed. What cannot finish is cut short a little
    /// before the deadline (see [`cut_at`]), every task still running is ended, and
    /// the leases left are handed back, so another process (or the next start)
    /// takes their jobs at once instead of after `WABOT_LEASE_SECS`.
    ///
    /// Every wait here ends when its stage is done, never on a clone of a sink or a
    /// handle going away (the monitor keeps clones until the end): an idle pipeline
    /// drains in a few milliseconds.
    pub async fn drain(mut self, deadline: tokio::time::Instant) {
        let started = tokio::time::Instant::now();
        let cut = cut_at(started, deadline);
        let mut cut_short: Vec<&'static str> = Vec::new();
        // No new claims (and no pushes from the poll); maintenance ends its
        // statement at once. The lease keeper keeps going until the end.
        self.recovery_stop.cancel();
        self.recovery.close();
        if let Some(media) = &self.media {
            media.stop_claiming();
        }
        if tokio::time::timeout_at(cut, self.recovery.wait())
            .await
            .is_err()
        {
            cut_short.push("recovery");
        }
        self.ingest_close.cancel();
        self.ingest_tasks.close();
        if tokio::time::timeout_at(cut, self.ingest_tasks.wait())
            .await
            .is_err()
        {
            cut_short.push("ingest");
        }
        if let Some(sender) = &self.sender {
            sender.draining(cut);
        }
        if let Some(turns) = self.turns.take() {
            // The stage ends by itself once its queue is empty and its turns are
            // committed; `turns_stop` cuts it short.
            self.turns_idle.cancel();
            tokio::pin!(turns);
            if tokio::time::timeout_at(cut, &mut turns).await.is_err() {
                cut_short.push("turns");
                self.turns_stop.cancel();
                let _ = tokio::time::timeout_at(deadline, turns).await;
            }
        }
        if let Some(sender) = self.sender.take() {
            if tokio::time::timeout_at(cut, sender.sent()).await.is_err() {
                cut_short.push("sender");
                // Waits end at once; calls in flight get until the deadline.
                self.sender_stop.cancel();
                let _ = tokio::time::timeout_at(deadline, sender.sent()).await;
            }
            // Meta has the messages of these records: writing them spares a re-send.
            let _ = tokio::time::timeout_at(deadline, sender.close()).await;
        }
        // Downloads run beside the other stages; those still running at the cut
        // end, and their jobs are handed back below.
        if let Some(media) = &self.media {
            if tokio::time::timeout_at(cut, media.finished())
                .await
                .is_err()
            {
                cut_short.push("media");
                media.cut();
                let _ = tokio::time::timeout_at(deadline, media.finished()).await;
            }
        }
        self.keeper_stop.cancel();
        self.keeper.close();
        let _ = tokio::time::timeout_at(deadline, self.keeper.wait()).await;
        // Whatever still runs (a call or a turn past the deadline) ends here, before
        // its lease is handed back: nothing of this process acts on a job after that.
        self.kill.cancel();
        self.hand_back(started, &cut_short).await;
    }

    /// Hands back every lease this process still holds, saying what was handed back
    /// and which stage did not finish, and signs the process off.
    async fn hand_back(&self, started: tokio::time::Instant, cut_short: &[&'static str]) {
        let pool = &self.ctx.pool;
        let holder = &self.ctx.holder;
        let turn_jobs = match within(store::turns::release_all(pool, holder)).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand back turn jobs; their leases will expire");
                0
            }
        };
        let send_jobs = match within(store::outbox::release_all(pool, holder)).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand back send jobs; their leases will expire");
                0
            }
        };
        let media_jobs = match within(store::media::release_all(pool, holder)).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand back media downloads; their leases will expire");
                0
            }
        };
        let took_ms = started.elapsed().as_millis() as u64;
        if turn_jobs + send_jobs + media_jobs > 0 {
            tracing::warn!(
                turn_jobs, send_jobs, media_jobs, took_ms, cut_short = ?cut_short,
                "the drain handed back {send_jobs} send jobs, {turn_jobs} turn jobs and \
                 {media_jobs} media downloads unfinished; the next process takes them at once"
            );
        } else if !cut_short.is_empty() {
            tracing::warn!(took_ms, cut_short = ?cut_short, "the drain cut stages short; no job was left");
        } else {
            tracing::info!(took_ms, "drained: nothing left unfinished");
        }
        if let Err(e) = within(store::monitor::signed_off(pool, holder)).await {
            tracing::debug!(error = %e, "cannot mark this process stopped in wabot_processes");
        }
    }
}

/// How long each statement of the hand-back may take, after the deadline.
const HAND_BACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs one statement of the hand-back, for at most [`HAND_BACK_TIMEOUT`]: a
/// database that does not answer now will not soon, and the leases then expire.
async fn within<T>(
    statement: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(HAND_BACK_TIMEOUT, statement).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {HAND_BACK_TIMEOUT:?}")),
    }
}

/// When a drain that began at `started` stops waiting for stages that have not
/// finished: a fifth of the drain time before `deadline`, at most 2 s, so that the
/// calls and turns still running can end and the leases be handed back by the
/// deadline.
pub fn cut_at(
    started: tokio::time::Instant,
    deadline: tokio::time::Instant,
) -> tokio::time::Instant {
    let total = deadline.saturating_duration_since(started);
    deadline - (total / 5).min(Duration::from_secs(2))
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // After a drain this ends nothing that still runs; without one (the
        // application dropped, `run` aborted) it stops every stage at once.
        self.kill.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_leaves_a_fifth_of_the_drain_at_most_two_seconds_for_the_hand_back() {
        let start = tokio::time::Instant::now();
        let secs = Duration::from_secs;
        assert_eq!(cut_at(start, start + secs(20)), start + secs(18));
        assert_eq!(cut_at(start, start + secs(60)), start + secs(58));
        assert_eq!(
            cut_at(start, start + secs(2)),
            start + Duration::from_millis(1600)
        );
        // A drain that begins past its deadline (the requests took it all) cuts at
        // once.
        let late = start + secs(5);
        assert_eq!(cut_at(late, start + secs(3)), start + secs(3));
    }
}
