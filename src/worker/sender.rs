//! The sender: claims due send jobs and delivers them through the Graph API.
//!
//! Per conversation one message is in flight at a time, in queue order (the claim
//! query guarantees it, also across processes); different conversations are sent in
//! parallel, up to `max_in_flight`, within the per-number rate limit. What happens
//! after a failed call depends on Meta's error code: retry with backoff and jitter,
//! fail for good with the error kept, or, when the token is rejected (190), hold all
//! sending until the credentials change.
//!
//! `send_one` is one step (claim one job, send it, record the outcome) for tests;
//! `run` is the loop `wabot serve` runs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::Config;
use crate::credentials::{CredentialStore, Credentials};
use crate::store::outbox::{self, SendJob};
use crate::whatsapp::graph::{Backoff, ErrorClass, GraphClient, GraphError};
use crate::worker::rate_limit::RateLimiter;

/// The reason kept on a message that was not sent because the window was closed.
pub const WINDOW_CLOSED: &str = "24-hour window closed";

/// How the sender behaves; `from_config` reads `worker.*`.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// How long a claimed job stays ours; renewed right before each call.
    pub lease: Duration,
    /// Calls to Meta a retryable message gets before it fails.
    pub max_attempts: u32,
    /// The first retry delay; see `backoff`.
    pub retry_base: Duration,
    /// The longest retry delay.
    pub retry_cap: Duration,
    /// How often an idle sender looks for jobs it was not woken for.
    pub poll_interval: Duration,
    /// Messages per second per business number.
    pub rate_per_sec: u32,
    /// Messages of different conversations sent at once.
    pub max_in_flight: usize,
}

impl SenderOptions {
    pub fn from_config(config: &Config) -> SenderOptions {
        let w = &config.worker;
        SenderOptions {
            lease: Duration::from_secs(w.lease_secs),
            max_attempts: w.send_max_attempts,
            retry_base: Duration::from_millis(w.send_retry_base_ms),
            retry_cap: Duration::from_secs(15 * 60),
            poll_interval: Duration::from_millis(w.poll_interval_ms),
            rate_per_sec: w.send_rate_per_sec,
            // Enough parallel calls to reach the rate at Meta's usual latency.
            max_in_flight: (w.send_rate_per_sec as usize / 2).clamp(8, 256),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// No job was due.
    Idle,
    /// Sending is on hold: the token was rejected (or there is none) and the
    /// credentials have not changed since. The job, if one was claimed, went back.
    Held,
    /// Meta accepted the message.
    Sent { message_id: Uuid, wamid: String },
    /// A retryable error; the job is due again at `next_attempt_at`.
    Retrying {
        message_id: Uuid,
        attempts: i32,
        next_attempt_at: DateTime<Utc>,
    },
    /// The message failed for good; `error` is what was kept on it.
    Failed { message_id: Uuid, error: Value },
    /// The lease expired before the call and another sender may hold the job: it
    /// was not sent.
    LeaseLost { message_id: Uuid },
}

/// A hold on all sending, and the credentials it applies to.
struct Hold {
    fingerprint: [u8; 32],
}

/// The sender of one process.
pub struct Sender {
    pool: PgPool,
    graph: GraphClient,
    credentials: CredentialStore,
    options: SenderOptions,
    worker_id: String,
    limiter: RateLimiter,
    hold: std::sync::Mutex<Option<Hold>>,
}

impl Sender {
    pub fn new(
        pool: PgPool,
        credentials: CredentialStore,
        graph: GraphClient,
        options: SenderOptions,
    ) -> Sender {
        let worker_id = format!(
            "sender-{}-{}",
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        Sender {
            pool,
            graph,
            credentials,
            limiter: RateLimiter::new(options.rate_per_sec),
            options,
            worker_id,
            hold: std::sync::Mutex::new(None),
        }
    }

    /// The id this sender leases jobs under (`send_jobs.locked_by`).
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// One step: claims the oldest due job (of a conversation with nothing in
    /// flight), sends it and records the outcome. `now` is the time the step acts at
    /// (leases, backoff, the 24-hour window), so tests can move it.
    pub async fn send_one(&self, now: DateTime<Utc>) -> Result<SendOutcome, sqlx::Error> {
        if self.held().await? {
            return Ok(SendOutcome::Held);
        }
        let lease_until = now + self.options.lease;
        let mut jobs = outbox::claim(&self.pool, &self.worker_id, now, lease_until, 1).await?;
        let Some(job) = jobs.pop() else {
            return Ok(SendOutcome::Idle);
        };
        self.process(job, now, &CancellationToken::new()).await
    }

    /// Sends until `shutdown`, woken by `wake` (a turn committed replies) or every
    /// poll interval; then finishes the calls in flight and returns.
    pub async fn run(self: Arc<Self>, wake: Arc<Notify>, shutdown: CancellationToken) {
        if self.options.lease <= self.graph.timeout() {
            tracing::warn!(
                "WABOT_LEASE_SECS is not longer than WABOT_GRAPH_TIMEOUT_MS: a slow send may \
                 be claimed by another process and sent twice"
            );
        }
        tracing::info!(worker = %self.worker_id, "sender started");
        let in_flight = Arc::new(Semaphore::new(self.options.max_in_flight));
        let tasks = TaskTracker::new();
        // Signalled when a send finishes, so the conversation's next job goes at once.
        let finished = Arc::new(Notify::new());
        let poll = self.options.poll_interval;
        while !shutdown.is_cancelled() {
            match self.held().await {
                Ok(false) => {}
                Ok(true) => {
                    pause(&shutdown, None, poll).await;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error.cause_chain = ?e, "sender cannot read the credentials");
                    pause(&shutdown, None, poll).await;
                    continue;
                }
            }
            let free = in_flight.available_permits();
            if free == 0 {
                pause(&shutdown, Some(&finished), poll).await;
                continue;
            }
            let now = Utc::now();
            let jobs = match outbox::claim(
                &self.pool,
                &self.worker_id,
                now,
                now + self.options.lease,
                free as i64,
            )
            .await
            {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::error!(error.cause_chain = ?e, "sender cannot claim jobs");
                    pause(&shutdown, None, poll).await;
                    continue;
                }
            };
            if jobs.is_empty() {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = pause(&shutdown, Some(&finished), poll) => {}
                }
                continue;
            }
            for job in jobs {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let sender = self.clone();
                let finished = finished.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    let message_id = job.message_id;
                    match sender.process(job, now, &shutdown).await {
                        Ok(outcome) => tracing::debug!(%message_id, ?outcome, "send step"),
                        Err(e) => tracing::error!(
                            %message_id, error.cause_chain = ?e,
                            "cannot record a send; the job is retried when its lease expires"
                        ),
                    }
                    drop(permit);
                    finished.notify_one();
                });
            }
        }
        tasks.close();
        tasks.wait().await;
        tracing::info!(worker = %self.worker_id, "sender stopped");
    }

    /// Sends one claimed job and records the outcome.
    async fn process(
        &self,
        job: SendJob,
        now: DateTime<Utc>,
        shutdown: &CancellationToken,
    ) -> Result<SendOutcome, sqlx::Error> {
        // Outside the 24-hour window only templates may go; anything else would be
        // refused with 131047, so it fails here without a doomed call. With no
        // recorded customer message the window is unknown, and Meta decides.
        let free_form = job.body.get("type").and_then(Value::as_str) != Some("template");
        if let Some(last) = job.last_customer_message_at {
            if free_form && now - last > chrono::Duration::hours(24) {
                let error = json!({
                    "reason": WINDOW_CLOSED,
                    "message": WINDOW_CLOSED,
                    "lastCustomerMessageAt": last,
                });
                outbox::fail(&self.pool, &job, job.attempts, &error, now).await?;
                tracing::info!(message_id = %job.message_id, "not sent: {WINDOW_CLOSED}");
                return Ok(SendOutcome::Failed {
                    message_id: job.message_id,
                    error,
                });
            }
        }

        let credentials = self.credentials.current().await?;
        if self.is_held_for(&credentials) {
            let error = json!({ "reason": "sending is on hold: the access token was rejected" });
            outbox::release(&self.pool, job.id, &self.worker_id, &error).await?;
            return Ok(SendOutcome::Held);
        }
        let number = credentials.phone_number_id.clone().unwrap_or_default();
        tokio::select! {
            _ = self.limiter.acquire(&number) => {}
            _ = shutdown.cancelled() => {
                // Stopping: hand the job back rather than wait for a token.
                outbox::release(&self.pool, job.id, &self.worker_id, &Value::Null).await?;
                return Ok(SendOutcome::Idle);
            }
        }
        // The call is bounded by the Graph timeout; the lease the claim granted at
        // `now` must outlast it. When waiting for the rate limiter ate into it, the
        // lease is renewed first (a durable write saved on the common path), and a
        // job whose lease ran out meanwhile is not sent by us.
        let lease = chrono::Duration::from_std(self.options.lease).unwrap_or_default();
        let call = chrono::Duration::from_std(self.graph.timeout() * 2).unwrap_or_default();
        if now + lease - Utc::now() < call {
            let lease_until = Utc::now().max(now) + self.options.lease;
            if !outbox::renew(&self.pool, job.id, &self.worker_id, lease_until).await? {
                return Ok(SendOutcome::LeaseLost {
                    message_id: job.message_id,
                });
            }
        }

        let result = self.graph.send_message(&credentials, &job.body).await;
        let done_at = Utc::now().max(now);
        let error = match result {
            Ok(accepted) => {
                // Meta has the message now: recording that must not fail on a passing
                // database error, or the job would be sent again when its lease runs
                // out. `complete` is idempotent, so it is simply tried again.
                let mut tries = 0;
                loop {
                    match outbox::complete(&self.pool, &job, &accepted.wamid, done_at).await {
                        Ok(_) => break,
                        Err(e) if tries < 5 => {
                            tries += 1;
                            tracing::warn!(error = %e, tries, "cannot record an accepted send yet");
                            tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                return Ok(SendOutcome::Sent {
                    message_id: job.message_id,
                    wamid: accepted.wamid,
                });
            }
            Err(error) => error,
        };
        let attempts = job.attempts + 1;
        let kept = error.to_json();
        match error.class() {
            ErrorClass::TokenInvalid => {
                self.hold_for(&credentials, &error);
                outbox::release(&self.pool, job.id, &self.worker_id, &kept).await?;
                Ok(SendOutcome::Held)
            }
            ErrorClass::Retryable(schedule) if attempts < self.options.max_attempts as i32 => {
                let delay = backoff(&self.options, schedule, attempts);
                let next_attempt_at = now + delay;
                tracing::warn!(
                    message_id = %job.message_id, attempts, code = ?error.code(),
                    retry_in_ms = delay.as_millis() as u64, "send failed; retrying: {error}"
                );
                outbox::retry_later(&self.pool, job.id, &self.worker_id, next_attempt_at, &kept)
                    .await?;
                Ok(SendOutcome::Retrying {
                    message_id: job.message_id,
                    attempts,
                    next_attempt_at,
                })
            }
            ErrorClass::Retryable(_) | ErrorClass::Permanent => {
                tracing::warn!(
                    message_id = %job.message_id, attempts, code = ?error.code(),
                    "send failed for good: {error}"
                );
                outbox::fail(&self.pool, &job, attempts, &kept, done_at).await?;
                Ok(SendOutcome::Failed {
                    message_id: job.message_id,
                    error: kept,
                })
            }
        }
    }

    /// Whether sending is on hold; lifts the hold when the credentials changed. While
    /// held, each call reads the credentials afresh, so a rotated token is seen at
    /// the next poll.
    async fn held(&self) -> Result<bool, sqlx::Error> {
        if !self.hold_is_set() {
            return Ok(false);
        }
        self.credentials.invalidate().await;
        let credentials = self.credentials.current().await?;
        if self.is_held_for(&credentials) {
            return Ok(true);
        }
        if let Ok(mut hold) = self.hold.lock() {
            if hold.take().is_some() {
                tracing::warn!("WhatsApp credentials changed: sending resumes");
            }
        }
        Ok(false)
    }

    fn hold_is_set(&self) -> bool {
        self.hold.lock().map(|h| h.is_some()).unwrap_or(false)
    }

    fn is_held_for(&self, credentials: &Credentials) -> bool {
        let fingerprint = fingerprint(credentials);
        self.hold
            .lock()
            .map(|h| h.as_ref().is_some_and(|h| h.fingerprint == fingerprint))
            .unwrap_or(false)
    }

    fn hold_for(&self, credentials: &Credentials, error: &GraphError) {
        let Ok(mut hold) = self.hold.lock() else {
            return;
        };
        let fingerprint = fingerprint(credentials);
        if hold.as_ref().is_some_and(|h| h.fingerprint == fingerprint) {
            return;
        }
        *hold = Some(Hold { fingerprint });
        // Loud, and once per rejected token: an operator has to act.
        tracing::error!(
            code = ?error.code(),
            "SENDING IS ON HOLD: the WhatsApp access token was rejected or is missing \
             ({error}). No message is sent until the token changes (whatsapp_config or \
             WABOT_ACCESS_TOKEN); queued messages wait."
        );
    }
}

/// The delay before attempt `attempts + 1`: base · 2ⁿ (base · 4ⁿ after 131056),
/// capped, with "equal jitter" (half fixed, half random) so that senders which
/// failed together do not retry together.
pub fn backoff(options: &SenderOptions, schedule: Backoff, attempts: i32) -> Duration {
    let factor: u32 = match schedule {
        Backoff::Exponential => 2,
        Backoff::PairRate => 4,
    };
    let exponent = attempts.clamp(1, 16) as u32;
    let full = options
        .retry_base
        .saturating_mul(factor.saturating_pow(exponent))
        .min(options.retry_cap);
    let half = full / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

/// Identifies the credentials a hold applies to without keeping the token itself.
fn fingerprint(credentials: &Credentials) -> [u8; 32] {
    let mut hasher = Sha256::new();
    if let Some(token) = &credentials.access_token {
        hasher.update(token.expose_secret().as_bytes());
    }
    hasher.update([0]);
    hasher.update(
        credentials
            .phone_number_id
            .as_deref()
            .unwrap_or("")
            .as_bytes(),
    );
    hasher.finalize().into()
}

/// Waits for `period`, for `signal` if given, or for shutdown, whichever is first.
async fn pause(shutdown: &CancellationToken, signal: Option<&Notify>, period: Duration) {
    let signalled = async {
        match signal {
            Some(signal) => signal.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(period) => {}
        _ = signalled => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SenderOptions {
        SenderOptions::from_config(&Config::default())
    }

    #[test]
    fn backoff_grows_with_attempts_and_stays_within_the_cap() {
        let o = options();
        for attempts in 1..=12 {
            let full = (o.retry_base * 2u32.pow(attempts as u32)).min(o.retry_cap);
            let d = backoff(&o, Backoff::Exponential, attempts);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempts}: {d:?} vs {full:?}"
            );
        }
        // Meta's advice for 131056: 4ⁿ seconds.
        let d = backoff(&o, Backoff::PairRate, 2);
        assert!(
            d >= Duration::from_secs(8) && d <= Duration::from_secs(16),
            "{d:?}"
        );
        assert!(backoff(&o, Backoff::PairRate, 30) <= o.retry_cap);
    }
}
