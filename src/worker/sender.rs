//! The sender: committed replies in, Graph API calls out, outcomes recorded in
//! batches.
//!
//! Replies reach the sender in memory, straight from the turn commit that made them
//! ([`SendSink::push_all`]), leased to this process. Per conversation one message
//! is in flight at a time, in job order (a conversation's jobs wait in an ordered
//! map; one task per conversation sends them one after the other); different
//! conversations are sent in parallel, up to `max_in_flight` calls, within the
//! per-number rate limit, over the Graph client's keep-alive pool. Meta's answers
//! go to a recorder that writes whatever has queued in one transaction: the next
//! message of a conversation goes as soon as Meta accepted the previous one, and
//! the record follows (a crash in between re-sends that one message after its
//! lease runs out: Meta has no idempotency key).
//!
//! What happens after a failed call depends on Meta's error code: retry with
//! backoff and jitter (the job stays ours, its attempts and due time recorded),
//! fail for good with the error kept, or, when the token is rejected (190), hold
//! all sending until the credentials change.
//!
//! When the Graph API cannot be reached at all (connection refused, DNS, TLS, a
//! timeout) every queued reply fails the same way; that is one condition, not one
//! per call: a warning naming the URL and the cause when it starts, a throttled
//! reminder while it lasts, an info line when Meta answers again, and the
//! condition in this process's heartbeat for `wabot status`.
//!
//! [`Sender::send_one`] is one step (claim one job, send it, record the outcome at
//! once) for tests and tools.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::Config;
use crate::credentials::{CredentialStore, Credentials};
use crate::store::events::{Subscribed, Subscriptions};
use crate::store::outbox::{self, SendJob, SendRecord};
use crate::telemetry::Throttle;
use crate::whatsapp::graph::{Backoff, ErrorClass, GraphClient, GraphError};
use crate::worker::rate_limit::RateLimiter;
use crate::worker::{spawn_killable, spawn_tracked, Leases};

/// The reason kept on a message that was not sent because the window was closed.
pub const WINDOW_CLOSED: &str = "24-hour window closed";

/// The `reason` kept on a business-initiated message not sent because its customer
/// opted out.
pub const OPTED_OUT: &str = "opted_out";

/// How the sender behaves; `from_config` reads `worker.*`.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// How long a claimed job stays ours without being kept.
    pub lease: Duration,
    /// Calls to Meta a retryable message gets before it fails.
    pub max_attempts: u32,
    /// The first retry delay; see `backoff`.
    pub retry_base: Duration,
    /// The longest retry delay.
    pub retry_cap: Duration,
    /// How often a held sender looks at the credentials again.
    pub poll_interval: Duration,
    /// Messages per second per business number.
    pub rate_per_sec: u32,
    /// Messages of different conversations sent at once.
    pub max_in_flight: usize,
    /// The Graph API's base URL (`WABOT_GRAPH_API_BASE`), named when it cannot be
    /// reached. It holds no secret: the token travels in a header.
    pub graph_base: String,
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
            graph_base: config
                .whatsapp
                .graph_api_base
                .trim_end_matches('/')
                .to_owned(),
        }
    }
}

/// What one attempt did.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    /// No job was due.
    Idle,
    /// Sending is on hold: the token was rejected (or there is none) and the
    /// credentials have not changed since.
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
    checked: std::time::Instant,
    /// Meta's refusal, as an operator should read it (no secret in it).
    reason: String,
    since: DateTime<Utc>,
}

/// How often a Graph API that stays unreachable is mentioned again.
const UNREACHABLE_REMINDER_SECS: u64 = 60;

/// The Graph API could not be reached by the last call that tried.
struct Outage {
    /// The latest call's error, as an operator should read it.
    cause: String,
    since: DateTime<Utc>,
    /// The reminders while it lasts; the first hit is the warning that opened it.
    reminder: Throttle,
}

/// Whether a failed call never reached Meta (see `GraphError::unreachable_because`).
fn unreachable(error: &GraphError) -> bool {
    error.unreachable_because().is_some()
}

/// Where outcomes go: written at once (steps), or to the batching recorder.
enum Recording {
    Direct,
    Batched(mpsc::Sender<ToRecorder>),
}

/// What the batching recorder is handed, in order.
enum ToRecorder {
    /// An outcome to write.
    Record(SendRecord),
    /// A job this process is done with: its lease is let go (no longer renewed)
    /// once every outcome handed over before this is written. Until then the lease
    /// keeper renews it: a job whose outcome waits in the recorder's queue must not
    /// be claimed again and sent twice.
    LetGo(String),
}

/// Sends one job at a time for a caller that drives it: the pipeline's
/// conversation tasks, or `send_one`.
pub struct Sender {
    pool: PgPool,
    graph: GraphClient,
    credentials: CredentialStore,
    options: SenderOptions,
    holder: String,
    limiter: RateLimiter,
    hold: Mutex<Option<Hold>>,
    /// Set while the Graph API cannot be reached.
    outage: Mutex<Option<Outage>>,
    /// When the last hold was lifted: a job queued before then waited through it,
    /// and is looked at again before its call (it may have been finished meanwhile).
    lifted: Mutex<Option<std::time::Instant>>,
    /// Woken when a hold or an outage begins or ends, so that the heartbeat shows
    /// it without waiting for its next beat.
    changed: tokio::sync::Notify,
    recording: Recording,
    /// The event types some endpoint takes (`message.failed` is written with a
    /// failure's record).
    events: Subscriptions,
}

impl Sender {
    /// A sender that records every outcome at once (steps, tests).
    pub fn new(
        pool: PgPool,
        credentials: CredentialStore,
        graph: GraphClient,
        options: SenderOptions,
    ) -> Sender {
        let holder = format!(
            "sender-{}-{}",
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        Sender::with_holder(
            pool,
            credentials,
            graph,
            options,
            holder,
            Recording::Direct,
            Subscriptions::default(),
        )
    }

    fn with_holder(
        pool: PgPool,
        credentials: CredentialStore,
        graph: GraphClient,
        options: SenderOptions,
        holder: String,
        recording: Recording,
        events: Subscriptions,
    ) -> Sender {
        Sender {
            pool,
            graph,
            credentials,
            limiter: RateLimiter::new(options.rate_per_sec),
            options,
            holder,
            hold: Mutex::new(None),
            outage: Mutex::new(None),
            lifted: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
            recording,
            events,
        }
    }

    /// The prefix of the lease tokens this sender claims under (`send_jobs.locked_by`).
    pub fn worker_id(&self) -> &str {
        &self.holder
    }

    /// One step: claims the oldest due job (of a conversation with nothing in
    /// flight), sends it and records the outcome. `now` is the time the step acts at
    /// (leases, backoff, the 24-hour window), so tests can move it.
    pub async fn send_one(&self, now: DateTime<Utc>) -> Result<SendOutcome, sqlx::Error> {
        if self.held().await? {
            return Ok(SendOutcome::Held);
        }
        let mut jobs =
            outbox::claim(&self.pool, &self.holder, Some(now), self.options.lease, 1).await?;
        let Some(job) = jobs.pop() else {
            return Ok(SendOutcome::Idle);
        };
        let outcome = self.attempt(&job, now, Some(now), true).await?;
        if outcome == SendOutcome::Held {
            // A step does not keep the job: it goes back for whoever sends next.
            let error = json!({ "reason": "sending is on hold: the access token was rejected" });
            self.record(SendRecord::Release {
                job_id: job.id,
                token: job.token.clone().unwrap_or_default(),
                error,
            })
            .await?;
        }
        Ok(outcome)
    }

    /// A sender on its own, with no turn stage in front of it: claims due jobs when
    /// woken and every poll interval, and sends them as the pipeline's sender does,
    /// until `shutdown`; then finishes the calls in flight and hands back the rest.
    pub async fn run(self: Arc<Self>, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
        let leases = Arc::new(Leases::default());
        let stop = CancellationToken::new();
        let kill = CancellationToken::new();
        let sink = SendSink::new(self.clone(), leases.clone(), 1024, stop.clone(), kill);
        // No drain deadline here: at shutdown the calls in flight finish, waits end.
        let poll = self.options.poll_interval;
        while !shutdown.is_cancelled() {
            let free = sink.shared.in_flight.available_permits().max(1) as i64;
            match outbox::claim(&self.pool, &self.holder, None, self.options.lease, free).await {
                Ok(jobs) if !jobs.is_empty() => {
                    sink.push_all(jobs).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error.cause_chain = ?e, "sender cannot claim jobs"),
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.cancelled() => {}
            }
            let tokens = leases.sends.snapshot();
            if let Err(e) = outbox::keep_leases(&self.pool, &tokens, self.options.lease).await {
                tracing::warn!(error = %e, "cannot renew send leases");
            }
        }
        stop.cancel();
        sink.shared.tasks.close();
        sink.shared.tasks.wait().await;
        if let Err(e) = outbox::release_all(&self.pool, &self.holder).await {
            tracing::warn!(error = %e, "cannot hand back send jobs; their leases will expire");
        }
    }

    /// Sends one job once and records the outcome (but a hold, which the caller
    /// handles). With `renew` (when the lease was last granted), the lease is renewed
    /// first when less than two call timeouts of it may be left by the time of the
    /// call; a `step` hands a job to retry back to the queue.
    async fn attempt(
        &self,
        job: &SendJob,
        now: DateTime<Utc>,
        renew: Option<DateTime<Utc>>,
        step: bool,
    ) -> Result<SendOutcome, sqlx::Error> {
        // A message the business starts (a timer's) never goes to a customer who
        // opted out (STOP). Replies (the flag unset) pay nothing for this check.
        if job.business_initiated {
            let credentials = self.credentials.current().await?;
            let number = credentials.phone_number_id.as_deref();
            if outbox::opted_out(&self.pool, job, number).await? {
                let error = json!({
                    "reason": OPTED_OUT,
                    "message": "the customer opted out (STOP)",
                });
                self.record(failed(job, job.attempts, &error)).await?;
                crate::metrics::send("opted_out");
                tracing::info!(message_id = %job.message_id, "not sent: the customer opted out");
                return Ok(SendOutcome::Failed {
                    message_id: job.message_id,
                    error,
                });
            }
        }

        // Outside the 24-hour window only templates may go; anything else would be
        // refused with 131047, so it fails here without a doomed call. With no
        // recorded customer message the window is unknown, and Meta decides.
        let replaced;
        let mut job = job;
        // A chatbot's template: Meta's components come from the synced catalogue.
        if job
            .body
            .get(crate::whatsapp::templates::UNRESOLVED_PARAMETERS)
            .is_some()
        {
            match crate::worker::templates::resolve_body(&self.pool, job).await? {
                Ok(body) => {
                    crate::store::templates::set_job_body(&self.pool, job.id, &body).await?;
                    replaced = SendJob {
                        body,
                        ..job.clone()
                    };
                    job = &replaced;
                }
                Err(why) => {
                    let error = json!({"reason": "template not sendable", "message": why});
                    self.record(failed(job, job.attempts, &error)).await?;
                    crate::metrics::send("failed");
                    tracing::warn!(message_id = %job.message_id, "not sent: {why}");
                    return Ok(SendOutcome::Failed {
                        message_id: job.message_id,
                        error,
                    });
                }
            }
        }
        let window_replaced;
        let mut fallback_problem = None;
        if let Some(last) = job.last_customer_message_at {
            let free_form = job.body.get("type").and_then(Value::as_str) != Some("template");
            if free_form && now - last > chrono::Duration::hours(24) {
                // The chatbot's windowClosedTemplate goes in its place, when it has one
                // (read only here, on this rare path).
                match crate::worker::templates::window_closed_body(&self.pool, job).await? {
                    Ok(Some(body)) => {
                        let why = json!({"reason": WINDOW_CLOSED, "lastCustomerMessageAt": last});
                        crate::store::templates::replace_with_template(
                            &self.pool,
                            job.id,
                            job.message_id,
                            &body,
                            &why,
                        )
                        .await?;
                        crate::metrics::send("window_closed_template");
                        tracing::info!(message_id = %job.message_id, "{WINDOW_CLOSED}: the windowClosedTemplate is sent instead");
                        window_replaced = SendJob {
                            body,
                            ..job.clone()
                        };
                        job = &window_replaced;
                    }
                    Ok(None) => {}
                    Err(why) => fallback_problem = Some(why),
                }
            }
        }
        if let Some(last) = job.last_customer_message_at {
            let free_form = job.body.get("type").and_then(Value::as_str) != Some("template");
            if free_form && now - last > chrono::Duration::hours(24) {
                let mut error = json!({
                    "reason": WINDOW_CLOSED,
                    "message": WINDOW_CLOSED,
                    "lastCustomerMessageAt": last,
                });
                if let Some(why) = fallback_problem {
                    error["fallback"] = json!(why);
                }
                self.record(failed(job, job.attempts, &error)).await?;
                crate::metrics::send("window_closed");
                tracing::info!(message_id = %job.message_id, "not sent: {WINDOW_CLOSED}");
                return Ok(SendOutcome::Failed {
                    message_id: job.message_id,
                    error,
                });
            }
        }

        let credentials = self.credentials.current().await?;
        if self.is_held_for(&credentials) {
            crate::metrics::send("held");
            return Ok(SendOutcome::Held);
        }
        let number = credentials.phone_number_id.clone().unwrap_or_default();
        self.limiter.acquire(&number).await;
        let token = job.token.as_deref().unwrap_or_default();
        if let Some(leased_at) = renew {
            // The call is bounded by the Graph timeout; the lease granted at `now`
            // must outlast it. When waiting for the rate limiter ate into it, the
            // lease is renewed first, and a job whose lease ran out meanwhile is not
            // sent by us.
            let lease = chrono::Duration::from_std(self.options.lease).unwrap_or_default();
            let call = chrono::Duration::from_std(self.graph.timeout() * 2).unwrap_or_default();
            if leased_at + lease - Utc::now() < call
                && !outbox::renew(&self.pool, job.id, token, self.options.lease).await?
            {
                crate::metrics::send("lease_lost");
                return Ok(SendOutcome::LeaseLost {
                    message_id: job.message_id,
                });
            }
        }

        let call = std::time::Instant::now();
        let answer = self.graph.send_message(&credentials, &job.body).await;
        crate::metrics::graph_request(call.elapsed());
        match &answer {
            Err(e) if unreachable(e) => self.cannot_reach(e),
            // Nothing was called without credentials: it says nothing either way.
            Err(GraphError::NotConfigured(_)) => {}
            _ => self.reached(),
        }
        let error = match answer {
            Ok(accepted) => {
                crate::metrics::send("sent");
                self.record(SendRecord::Sent {
                    job_id: job.id,
                    message_id: job.message_id,
                    wamid: accepted.wamid.clone(),
                })
                .await?;
                return Ok(SendOutcome::Sent {
                    message_id: job.message_id,
                    wamid: accepted.wamid,
                });
            }
            Err(error) => error,
        };
        let attempts = job.attempts + 1;
        let kept = error.to_json();
        crate::metrics::send_error(error.code());
        match error.class() {
            ErrorClass::TokenInvalid => {
                crate::metrics::send("held");
                self.hold_for(&credentials, &error);
                Ok(SendOutcome::Held)
            }
            ErrorClass::Retryable(schedule) if attempts < self.options.max_attempts as i32 => {
                crate::metrics::send("retry");
                let delay = backoff(&self.options, schedule, attempts);
                let next_attempt_at = now + delay;
                // Meta refusing for a while retries every queued reply: one line
                // per interval, the rest counted in wabot_sends_total{result="retry"}.
                // An unreachable Graph API has its own lines (`cannot_reach`).
                static RETRYING: Throttle = Throttle::new("send_retry", 10);
                let line = if unreachable(&error) {
                    None
                } else {
                    RETRYING.hit()
                };
                if let Some(count) = line {
                    tracing::warn!(
                        message_id = %job.message_id, attempts, code = error.code(), count,
                        retry_in_ms = delay.as_millis() as u64,
                        "send failed; retrying (count since the last such line): {error}"
                    );
                }
                self.record(SendRecord::Retry {
                    job_id: job.id,
                    token: token.to_owned(),
                    next_attempt_at,
                    error: kept,
                    // A step hands the job back; a conversation task keeps it and
                    // retries it itself.
                    release: step,
                })
                .await?;
                Ok(SendOutcome::Retrying {
                    message_id: job.message_id,
                    attempts,
                    next_attempt_at,
                })
            }
            ErrorClass::Retryable(_) | ErrorClass::Permanent => {
                crate::metrics::send("failed");
                tracing::warn!(
                    message_id = %job.message_id, attempts, code = error.code(),
                    "send failed for good: {error}"
                );
                self.record(failed(job, attempts, &kept)).await?;
                Ok(SendOutcome::Failed {
                    message_id: job.message_id,
                    error: kept,
                })
            }
        }
    }

    async fn record(&self, record: SendRecord) -> Result<(), sqlx::Error> {
        match &self.recording {
            Recording::Batched(tx) => {
                if let Err(mpsc::error::SendError(ToRecorder::Record(record))) =
                    tx.send(ToRecorder::Record(record)).await
                {
                    // The recorder has stopped (the end of a drain): write it here.
                    return record_durably(
                        &self.pool,
                        std::slice::from_ref(&record),
                        self.events.get(),
                    )
                    .await;
                }
                Ok(())
            }
            Recording::Direct => {
                record_durably(&self.pool, std::slice::from_ref(&record), self.events.get()).await
            }
        }
    }

    /// Lets go of the lease of a job this process is done with, once what was
    /// recorded of it is written: at once when outcomes are written directly (or
    /// the recorder has stopped, and wrote them directly), else by the recorder.
    async fn let_go(&self, leases: &Leases, token: String) {
        if let Recording::Batched(tx) = &self.recording {
            if tx.send(ToRecorder::LetGo(token.clone())).await.is_ok() {
                return;
            }
        }
        leases.sends.release(&token);
    }

    /// Whether sending is on hold; lifts the hold when the credentials changed. While
    /// held, the credentials are read afresh at most once per poll interval, so a
    /// rotated token is seen soon without a query per waiting conversation.
    async fn held(&self) -> Result<bool, sqlx::Error> {
        // Held: look at the credentials again at most once per poll interval.
        match self.hold.lock() {
            Ok(mut hold) => match hold.as_mut() {
                None => return Ok(false),
                Some(h) if h.checked.elapsed() < self.options.poll_interval => return Ok(true),
                Some(h) => h.checked = std::time::Instant::now(),
            },
            Err(_) => return Ok(false),
        }
        self.credentials.invalidate().await;
        let credentials = self.credentials.current().await?;
        if self.is_held_for(&credentials) {
            return Ok(true);
        }
        if let Ok(mut hold) = self.hold.lock() {
            if hold.take().is_some() {
                if let Ok(mut lifted) = self.lifted.lock() {
                    *lifted = Some(std::time::Instant::now());
                }
                crate::metrics::sending_held(false);
                tracing::warn!("WhatsApp credentials changed: sending resumes");
                self.changed.notify_one();
            }
        }
        Ok(false)
    }

    /// Whether a hold was lifted since `queued_at`: a job queued then waited
    /// through it (an agent may have taken its conversation meanwhile).
    fn waited_through_a_hold(&self, queued_at: std::time::Instant) -> bool {
        self.lifted
            .lock()
            .map(|l| l.is_some_and(|at| at > queued_at))
            .unwrap_or(false)
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
        *hold = Some(Hold {
            fingerprint,
            checked: std::time::Instant::now(),
            reason: error.to_string(),
            since: Utc::now(),
        });
        crate::metrics::sending_held(true);
        // Loud, and once per rejected token: an operator has to act.
        tracing::error!(
            code = error.code(),
            "SENDING IS ON HOLD: the WhatsApp access token was rejected or is missing \
             ({error}). No message is sent until the token changes (whatsapp_config or \
             WABOT_ACCESS_TOKEN); queued messages wait."
        );
        self.changed.notify_one();
    }

    /// A call could not reach the Graph API: the warning when that starts, then a
    /// reminder per interval with the calls that failed meanwhile.
    fn cannot_reach(&self, error: &GraphError) {
        let Ok(mut outage) = self.outage.lock() else {
            return;
        };
        let url = &self.options.graph_base;
        let cause = error
            .unreachable_because()
            .unwrap_or_else(|| error.to_string());
        match outage.as_mut() {
            None => {
                let reminder = Throttle::new("graph_unreachable", UNREACHABLE_REMINDER_SECS);
                // The warning below is the first line of the outage.
                reminder.hit();
                tracing::warn!(
                    url = %url, cause = %cause,
                    "Graph API unreachable at {url} ({cause}); replies wait and are \
                     retried with backoff"
                );
                *outage = Some(Outage {
                    cause,
                    since: Utc::now(),
                    reminder,
                });
                self.changed.notify_one();
            }
            Some(o) => {
                if let Some(failed) = o.reminder.hit() {
                    let since = o.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    tracing::warn!(
                        url = %url, cause = %cause, failed_calls = failed, since = %since,
                        "Graph API still unreachable at {url} since {since} ({cause})"
                    );
                }
                o.cause = cause;
            }
        }
    }

    /// A call reached the Graph API (whatever it answered): ends an outage.
    fn reached(&self) {
        let Some(outage) = self.outage.lock().ok().and_then(|mut o| o.take()) else {
            return;
        };
        let down_secs = (Utc::now() - outage.since).num_seconds().max(0);
        let url = &self.options.graph_base;
        tracing::info!(
            url = %url, down_secs,
            "Graph API reachable again at {url}; queued replies are being sent"
        );
        self.changed.notify_one();
    }

    /// Why the Graph API cannot be reached, and since when (`None`: the last call
    /// that tried reached it).
    fn outage(&self) -> Option<(String, DateTime<Utc>)> {
        let outage = self.outage.lock().ok()?;
        let url = &self.options.graph_base;
        outage.as_ref().map(|o| {
            (
                format!("Graph API unreachable at {url}: {}", o.cause),
                o.since,
            )
        })
    }
}

fn failed(job: &SendJob, attempts: i32, error: &Value) -> SendRecord {
    SendRecord::Failed {
        job_id: job.id,
        message_id: job.message_id,
        conversation_id: job.conversation_id,
        attempts,
        error: error.clone(),
    }
}

/// Writes records, retrying a passing database error: Meta has the message, and a
/// record that is not written means a re-send when the lease runs out. Every record
/// is idempotent, so writing one twice is harmless.
async fn record_durably(
    pool: &PgPool,
    records: &[SendRecord],
    events: Subscribed,
) -> Result<(), sqlx::Error> {
    let mut tries = 0u64;
    loop {
        match outbox::record_batch(pool, records, events).await {
            Ok(()) => return Ok(()),
            Err(e) if tries < 5 => {
                tries += 1;
                tracing::warn!(error = %e, tries, records = records.len(), "cannot record sends yet");
                tokio::time::sleep(Duration::from_millis(200 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One queued job and the queue slot it takes.
struct Queued {
    job: SendJob,
    /// When it was queued here.
    at: std::time::Instant,
    /// When the webhook of the turn this is the first reply of arrived.
    since: Option<DateTime<Utc>>,
    _slot: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Conversation {
    /// Waiting jobs, in job order.
    waiting: BTreeMap<i64, Queued>,
    /// Whether a task is sending this conversation's jobs.
    running: bool,
    /// The drain stopped it: later jobs are not sent by this process either (they
    /// would overtake the one handed back), nor kept in the queue.
    stopped: bool,
}

struct Shared {
    sender: Arc<Sender>,
    leases: Arc<Leases>,
    conversations: Mutex<HashMap<Uuid, Conversation>>,
    /// Bounds the jobs held in memory.
    queue: Arc<Semaphore>,
    /// The queue's size.
    capacity: usize,
    /// Bounds the calls in flight.
    in_flight: Semaphore,
    tasks: TaskTracker,
    /// Cancelled when the drain begins; `cut` is set by then.
    draining: CancellationToken,
    /// When the drain stops waiting for this stage: a wait (backoff, hold) that
    /// would end later is not worth starting, and its job is handed back at once.
    cut: std::sync::OnceLock<tokio::time::Instant>,
    /// Cancelled at the drain's cut: waits (backoff, hold) end, jobs stay
    /// leased until the pipeline hands them back.
    stop: CancellationToken,
    kill: CancellationToken,
}

/// Where committed replies go: the sender of this process.
#[derive(Clone)]
pub struct SendSink {
    shared: Arc<Shared>,
}

/// The sender stage: the sink, and the recorder to await when it is closed.
pub struct SenderStage {
    pub sink: SendSink,
    recorder: tokio::task::JoinHandle<()>,
    /// Tells the recorder that no more records come through its queue.
    recorder_close: CancellationToken,
}

impl SenderStage {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        pool: PgPool,
        credentials: CredentialStore,
        graph: GraphClient,
        config: &Config,
        holder: String,
        leases: Arc<Leases>,
        stop: CancellationToken,
        kill: CancellationToken,
        events: Subscriptions,
    ) -> SenderStage {
        let options = SenderOptions::from_config(config);
        if options.lease <= graph.timeout() {
            tracing::warn!(
                "WABOT_LEASE_SECS is not longer than WABOT_GRAPH_TIMEOUT_MS: a slow send may \
                 be claimed by another process and sent twice"
            );
        }
        let (tx, rx) = mpsc::channel(config.pipeline.send_queue.max(1));
        let recorder_close = CancellationToken::new();
        let recorder = spawn_killable(
            &kill,
            record_loop(
                pool.clone(),
                rx,
                config.pipeline.send_batch,
                recorder_close.clone(),
                events.clone(),
                leases.clone(),
            ),
        );
        let sender = Sender::with_holder(
            pool,
            credentials,
            graph,
            options,
            holder,
            Recording::Batched(tx),
            events,
        );
        SenderStage {
            sink: SendSink::new(
                Arc::new(sender),
                leases,
                config.pipeline.send_queue,
                stop,
                kill,
            ),
            recorder,
            recorder_close,
        }
    }

    /// The drain begins; it stops waiting for this stage at `cut`. From now on a
    /// conversation whose next step is a wait past `cut` (a backoff) or with no end
    /// in sight (a hold) stops there: its jobs stay leased, for the pipeline to hand
    /// back, instead of holding the drain until its deadline.
    pub fn draining(&self, cut: tokio::time::Instant) {
        let shared = &self.sink.shared;
        let _ = shared.cut.set(cut);
        shared.draining.cancel();
    }

    /// Resolves once every job in memory was sent, failed for good or stopped (see
    /// [`SenderStage::draining`]; the stop token ends every wait). Jobs pushed later
    /// are waited for too.
    pub async fn sent(&self) {
        self.sink.shared.tasks.close();
        self.sink.shared.tasks.wait().await;
    }

    /// Writes the outcomes still queued for the recorder and ends it. Clones of the
    /// sink may live on (the monitor has one): the recorder does not wait for them
    /// to go, and a record made after this is written directly.
    pub async fn close(self) {
        self.recorder_close.cancel();
        let _ = self.recorder.await;
    }
}

impl SendSink {
    fn new(
        sender: Arc<Sender>,
        leases: Arc<Leases>,
        queue: usize,
        stop: CancellationToken,
        kill: CancellationToken,
    ) -> SendSink {
        SendSink {
            shared: Arc::new(Shared {
                in_flight: Semaphore::new(sender.options.max_in_flight),
                sender,
                leases,
                conversations: Mutex::new(HashMap::new()),
                queue: Arc::new(Semaphore::new(queue.max(1))),
                capacity: queue.max(1),
                tasks: TaskTracker::new(),
                draining: CancellationToken::new(),
                cut: std::sync::OnceLock::new(),
                stop,
                kill,
            }),
        }
    }

    /// Queues leased jobs (others wait for the recovery poll), waiting while the
    /// queue is full.
    pub async fn push_all(&self, jobs: Vec<SendJob>) {
        self.push_replies(jobs, &HashMap::new()).await
    }

    /// Queues leased jobs; `first_replies` maps the first reply of a turn (its
    /// `message_id`) to when that turn's webhook arrived, for the turn latency.
    pub async fn push_replies(
        &self,
        jobs: Vec<SendJob>,
        first_replies: &HashMap<Uuid, DateTime<Utc>>,
    ) {
        // Every lease of the batch is held (renewed by the lease keeper) from now,
        // not from when its job finds a queue slot: a full queue can keep the last
        // jobs of a large batch waiting here longer than a lease, and a lease that
        // expired meanwhile would be claimed by the recovery poll and sent twice.
        let leased: Vec<SendJob> = jobs.into_iter().filter(|j| j.token.is_some()).collect();
        let sends = &self.shared.leases.sends;
        sends.hold_all(leased.iter().filter_map(|j| j.token.as_deref()));
        let mut jobs = leased.into_iter();
        while let Some(job) = jobs.next() {
            let since = first_replies.get(&job.message_id).copied();
            let Ok(slot) = self.shared.queue.clone().acquire_owned().await else {
                // The stage is gone: these jobs are not ours to renew any more.
                let left: Vec<SendJob> = std::iter::once(job).chain(jobs).collect();
                sends.release_all(left.iter().filter_map(|j| j.token.as_deref()));
                return;
            };
            let conversation = job.conversation_id;
            let start = {
                let Ok(mut map) = self.shared.conversations.lock() else {
                    return;
                };
                let entry = map.entry(conversation).or_default();
                if entry.stopped {
                    // Leased to us and handed back with the rest; its slot is free.
                    continue;
                }
                entry.waiting.insert(
                    job.id,
                    Queued {
                        job,
                        at: std::time::Instant::now(),
                        since,
                        _slot: slot,
                    },
                );
                !std::mem::replace(&mut entry.running, true)
            };
            if start {
                let shared = self.shared.clone();
                let task = async move { shared.run_conversation(conversation).await };
                spawn_tracked(&self.shared.tasks, &self.shared.kill, task);
            }
        }
    }

    /// How many jobs background work (a campaign) may queue now without waiting:
    /// the free slots beyond the half of the queue kept for conversation replies.
    /// Work queued within it never waits in [`SendSink::push_all`] for a slot.
    pub fn room_for_background(&self) -> usize {
        let free = self.shared.queue.available_permits();
        free.saturating_sub(self.shared.capacity / 2)
    }

    /// Why sending is on hold, and since when (`None`: it is not).
    pub fn hold(&self) -> Option<(String, DateTime<Utc>)> {
        let hold = self.shared.sender.hold.lock().ok()?;
        hold.as_ref().map(|h| (h.reason.clone(), h.since))
    }

    /// Why the Graph API cannot be reached (naming its URL), and since when
    /// (`None`: the last call that tried reached it).
    pub fn graph_unreachable(&self) -> Option<(String, DateTime<Utc>)> {
        self.shared.sender.outage()
    }

    /// Resolves when a hold or a Graph API outage begins or ends.
    pub async fn changed(&self) {
        self.shared.sender.changed.notified().await
    }

    /// Jobs waiting or being sent, for tests and the shutdown log.
    pub fn queued(&self) -> usize {
        self.shared
            .conversations
            .lock()
            .map(|m| m.values().map(|c| c.waiting.len()).sum())
            .unwrap_or(0)
    }
}

impl Shared {
    /// Sends a conversation's jobs one after the other until none is left, or until
    /// the drain stops one: then the rest stay leased (in order, for whoever takes
    /// them next) and nothing more of this conversation is sent here.
    async fn run_conversation(self: Arc<Self>, conversation: Uuid) {
        loop {
            let next = {
                let Ok(mut map) = self.conversations.lock() else {
                    return;
                };
                let Some(entry) = map.get_mut(&conversation) else {
                    return;
                };
                match entry.waiting.pop_first() {
                    Some((_, queued)) => queued,
                    None => {
                        map.remove(&conversation);
                        return;
                    }
                }
            };
            let token = next.job.token.clone().unwrap_or_default();
            if self.stop.is_cancelled() || !self.send(next.job, next.since, next.at).await {
                // The job stays leased and is handed back with the rest. The entry
                // stays, stopped, so that a job pushed after this one never
                // overtakes it.
                if let Ok(mut map) = self.conversations.lock() {
                    if let Some(entry) = map.get_mut(&conversation) {
                        entry.waiting.clear();
                        entry.stopped = true;
                    }
                }
                return;
            }
            self.sender.let_go(&self.leases, token).await;
        }
    }

    /// Sends one job until Meta accepted it or it failed for good (true), or until
    /// the drain stopped it (false: it stays leased, to be handed back).
    async fn send(
        &self,
        mut job: SendJob,
        since: Option<DateTime<Utc>>,
        queued_at: std::time::Instant,
    ) -> bool {
        loop {
            match self.sender.held().await {
                Ok(false) => {}
                Ok(true) => {
                    // A hold lasts until someone changes the token: waiting for it
                    // would hold the drain until its deadline for nothing.
                    if self.draining.is_cancelled()
                        || self.pause(self.sender.options.poll_interval).await
                    {
                        return false;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error.cause_chain = ?e, "sender cannot read the credentials");
                    if self.pause(self.sender.options.poll_interval).await {
                        return false;
                    }
                    continue;
                }
            }
            if self.sender.waited_through_a_hold(queued_at) && !self.still_ours(&job).await {
                return true;
            }
            let outcome = {
                let Ok(_call) = self.in_flight.acquire().await else {
                    return false;
                };
                // The lease keeper renews every lease this process holds, so the
                // lease is checked only when the keeper has fallen behind: it then
                // runs from the keeper's last renewal (or from a lease ago, when it
                // never renewed), and is renewed, or found lost, before the call.
                let lease = self.sender.options.lease;
                let renew = (!self.leases.kept_recently(lease / 2)).then(|| {
                    let since = self.leases.kept_at().map_or(lease, |at| at.elapsed());
                    Utc::now() - chrono::Duration::from_std(since).unwrap_or_default()
                });
                self.sender.attempt(&job, Utc::now(), renew, false).await
            };
            match outcome {
                Ok(SendOutcome::Retrying {
                    attempts,
                    next_attempt_at,
                    ..
                }) => {
                    job.attempts = attempts;
                    let wait = (next_attempt_at - Utc::now()).to_std().unwrap_or_default();
                    if self.pause(wait).await {
                        return false;
                    }
                    // A call that timed out may have been accepted: Meta's `sent`
                    // status (it carries the message's callback data) then finished
                    // the job, and it must not go out twice.
                    if !self.still_ours(&job).await {
                        return true;
                    }
                }
                Ok(SendOutcome::Held) => {}
                Ok(outcome) => {
                    if let (SendOutcome::Sent { .. }, Some(since)) = (&outcome, since) {
                        crate::metrics::turn_latency(
                            (Utc::now() - since).to_std().unwrap_or_default(),
                        );
                    }
                    tracing::debug!(message_id = %job.message_id, ?outcome, "send step");
                    return true;
                }
                Err(e) => {
                    tracing::error!(
                        message_id = %job.message_id, error.cause_chain = ?e,
                        "cannot record a send; the job is retried when its lease expires"
                    );
                    return true;
                }
            }
        }
    }

    /// Renews the job's lease before a call that follows a wait (a backoff, a
    /// hold); false when the job was finished meanwhile (Meta's `sent` status
    /// confirmed an earlier call, or an agent took the conversation: the trigger
    /// `wabot_handover_silences_bot`) or taken over, and must not be sent by us.
    async fn still_ours(&self, job: &SendJob) -> bool {
        let token = job.token.as_deref().unwrap_or_default();
        let lease = self.sender.options.lease;
        match outbox::renew(&self.sender.pool, job.id, token, lease).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::info!(message_id = %job.message_id, "not sent: the job was finished meanwhile (Meta confirmed it, or an agent took the conversation) or taken over");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the send job before sending it again");
                true
            }
        }
    }

    /// Sleeps `period`; true when the drain stopped the wait instead: at once when
    /// it would end past the drain's cut (also when the drain begins during it), or
    /// at the cut.
    async fn pause(&self, period: Duration) -> bool {
        let until = tokio::time::Instant::now() + period;
        loop {
            if self.cut.get().is_some_and(|cut| until > *cut) {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                _ = self.draining.cancelled(), if !self.draining.is_cancelled() => {}
                _ = self.stop.cancelled() => return true,
            }
        }
    }
}

/// Writes queued records, everything that queued while the last write was in
/// flight in one transaction, until `close`; then what is queued by then.
async fn record_loop(
    pool: PgPool,
    mut rx: mpsc::Receiver<ToRecorder>,
    max: usize,
    close: CancellationToken,
    events: Subscriptions,
    leases: Arc<Leases>,
) {
    let mut batch = Vec::new();
    loop {
        let received = tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, max.max(1)) => n,
            _ = close.cancelled() => {
                // Closed, the channel yields what it holds and then ends, however
                // many senders of records are still alive (`Sender::record` writes
                // directly once the channel is closed).
                rx.close();
                rx.recv_many(&mut batch, max.max(1)).await
            }
        };
        if received == 0 {
            return;
        }
        let mut records = Vec::with_capacity(batch.len());
        let mut done = Vec::new();
        for item in batch.drain(..) {
            match item {
                ToRecorder::Record(record) => records.push(record),
                ToRecorder::LetGo(token) => done.push(token),
            }
        }
        if !records.is_empty() {
            if let Err(e) = record_durably(&pool, &records, events.get()).await {
                tracing::error!(
                    error.cause_chain = ?e, records = records.len(),
                    "cannot record sends; their jobs are retried when their leases expire"
                );
            }
        }
        // Written (or not writable: then the lease must run out for the job to be
        // retried): the keeper stops renewing them.
        leases.sends.release_all(done.iter().map(String::as_str));
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
