//! The media stage: downloads inbound media to the media store, away from ingest.
//!
//! Ingest writes a download job with each media message (`store::media`); this
//! stage claims due jobs every poll interval (`FOR UPDATE SKIP LOCKED`, leased like
//! the other queues, the leases kept while a download runs) and runs up to
//! `WABOT_MEDIA_CONCURRENCY` downloads at once. A download resolves the media id
//! (`GET /{media-id}`), streams the bytes from Meta's URL into the store while
//! hashing and counting them, and resolves the id again when the URL expired (it
//! lives minutes); after a break or an expiry it asks for the rest only (`Range`).
//! It ends in one of three ways:
//! - stored: the location joins the message's content (`content.media.stored`);
//! - given up, with a reason in the message's content (`content.media.failed`):
//!   "too large" (past Meta's limit for the kind), "checksum mismatch" (nothing is
//!   kept), "unavailable" (Meta refused the media id), "attempts exhausted";
//! - retried later with exponential backoff (network, Meta's 5xx, the store).
//!
//! Shutdown: the drain stops the claims at once, lets running downloads finish
//! until the cut, then ends them; their leases are handed back with the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::media::{MediaStore, MediaWriter};
use crate::store::media::{self as queue, MediaJob, Stored};
use crate::whatsapp::graph::ErrorClass;
use crate::whatsapp::media::{self as meta, FetchError, MediaClient, MediaInfo};
use crate::worker::{AppContext, Tokens};

/// Resolutions of the media id after the first, in one attempt, when the URL
/// expired.
const RE_RESOLVES: u32 = 2;
/// Broken transfers in one attempt (each is tried again, first on the same URL,
/// which may have expired meanwhile: then the id is resolved again).
const BREAKS: u32 = 3;
/// The longest delay between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// The running stage.
pub struct MediaStage {
    tasks: TaskTracker,
    /// No new claims (the drain began).
    stop_claiming: CancellationToken,
    /// Running downloads end now (the drain's cut).
    cut: CancellationToken,
}

impl MediaStage {
    /// Starts the claim loop and the lease keeper.
    pub fn start(ctx: Arc<AppContext>, kill: &CancellationToken) -> anyhow::Result<MediaStage> {
        let client = MediaClient::new(&ctx.config.whatsapp)
            .map_err(|e| anyhow::anyhow!("cannot build the media download client: {e}"))?;
        let stage = MediaStage {
            tasks: TaskTracker::new(),
            stop_claiming: CancellationToken::new(),
            cut: CancellationToken::new(),
        };
        let tokens = Arc::new(Tokens::default());
        let run = Runner {
            ctx: ctx.clone(),
            client,
            tokens: tokens.clone(),
            downloads: stage.tasks.clone(),
            cut: stage.cut.clone(),
            kill: kill.clone(),
        };
        crate::worker::spawn_tracked(
            &stage.tasks,
            kill,
            run.claim_loop(stage.stop_claiming.clone()),
        );
        crate::worker::spawn_killable(kill, keep_leases(ctx, tokens, stage.tasks.clone()));
        Ok(stage)
    }

    /// Stops claiming; running downloads go on.
    pub fn stop_claiming(&self) {
        self.stop_claiming.cancel();
        self.tasks.close();
    }

    /// Waits until the claim loop and every download ended.
    pub async fn finished(&self) {
        self.tasks.wait().await;
    }

    /// Ends running downloads now (what they wrote is dropped; their leases are
    /// handed back by the drain).
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

/// Renews the leases of running downloads, three times per lease, until the stage
/// ended.
async fn keep_leases(ctx: Arc<AppContext>, tokens: Arc<Tokens>, tasks: TaskTracker) {
    let lease = ctx.lease();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lease / 3) => {}
            _ = tasks.wait() => return,
        }
        if let Err(e) = queue::keep_leases(&ctx.pool, &tokens.snapshot(), lease).await {
            tracing::warn!(error = %e, "cannot renew the leases of media downloads");
        }
    }
}

struct Runner {
    ctx: Arc<AppContext>,
    client: MediaClient,
    tokens: Arc<Tokens>,
    downloads: TaskTracker,
    cut: CancellationToken,
    kill: CancellationToken,
}

impl Runner {
    /// Claims as many due jobs as there are free download slots and starts them;
    /// waits for a free slot when all are busy. When the queue had no more due
    /// jobs it waits until ingest queues a download here (`ctx.wake.media`), or for
    /// the idle poll (`AppContext::idle_poll`: another process's downloads, retries
    /// come due): an idle stage costs no statement per poll interval.
    async fn claim_loop(self, stop: CancellationToken) {
        let idle = self.ctx.idle_poll();
        let slots = Arc::new(Semaphore::new(self.ctx.config.media.concurrency.max(1)));
        let this = Arc::new(self);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(idle) => {}
                _ = this.ctx.wake.media.notified() => {}
                _ = stop.cancelled() => return,
            }
            loop {
                if slots.available_permits() == 0 {
                    tokio::select! {
                        slot = slots.acquire() => drop(slot),
                        _ = stop.cancelled() => return,
                    }
                }
                let free = slots.available_permits();
                let ctx = &this.ctx;
                let jobs =
                    match queue::claim(&ctx.pool, &ctx.holder, ctx.lease(), free as i64).await {
                        Ok(jobs) => jobs,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot claim media downloads");
                            break;
                        }
                    };
                let more = jobs.len() == free;
                let takeovers = jobs.iter().filter(|j| j.taken_over).count();
                crate::metrics::lease_takeovers("media", takeovers);
                for job in jobs {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        break;
                    };
                    this.tokens.hold(&job.token);
                    let runner = this.clone();
                    crate::worker::spawn_tracked(&this.downloads, &this.kill, async move {
                        runner.run(job).await;
                        drop(permit);
                    });
                }
                if !more || stop.is_cancelled() {
                    break;
                }
            }
        }
    }

    /// One attempt at one job, and its record.
    async fn run(&self, job: MediaJob) {
        let started = Instant::now();
        let limit = Duration::from_secs(self.ctx.config.media.timeout_secs.max(1));
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(limit, download(&self.ctx, &self.client, &job)) => {
                outcome.unwrap_or_else(|_| Outcome::Retry(format!(
                    "the download took longer than WABOT_MEDIA_TIMEOUT_SECS ({}s)",
                    limit.as_secs()
                )))
            }
            // The lease is handed back by the drain; the partial file is dropped with
            // its writer.
            _ = self.cut.cancelled() => return,
        };
        let took = started.elapsed();
        let pool = &self.ctx.pool;
        let (result, bytes, written) = match outcome {
            Outcome::Stored(stored) => {
                let size = stored.size;
                match queue::finish_stored(pool, job.id, &job.token, &stored).await {
                    Ok(true) => {
                        tracing::info!(job = job.id, kind = %job.kind, bytes = size,
                                       store = %stored.store_kind, "media stored");
                        ("stored", size as u64, Ok(true))
                    }
                    other => ("stored", size as u64, other),
                }
            }
            Outcome::GiveUp { reason, detail } => {
                tracing::warn!(job = job.id, kind = %job.kind, reason, detail = %detail,
                               "media download given up");
                let written = queue::give_up(pool, job.id, &job.token, reason, &detail).await;
                (reason_label(reason), 0, written)
            }
            Outcome::Retry(error) => {
                let max = self.ctx.config.media.max_attempts.max(1);
                if job.attempts >= max as i32 {
                    let detail = format!("{} attempts; the last: {error}", job.attempts);
                    tracing::warn!(job = job.id, kind = %job.kind, detail = %detail,
                                   "media download given up");
                    let written =
                        queue::give_up(pool, job.id, &job.token, EXHAUSTED, &detail).await;
                    ("exhausted", 0, written)
                } else {
                    let delay = backoff(self.ctx.config.media.retry_base_ms, job.attempts);
                    tracing::info!(job = job.id, kind = %job.kind, error = %error,
                                   retry_in_ms = delay.as_millis() as u64,
                                   "media download will be retried");
                    let written = queue::retry_later(pool, job.id, &job.token, &error, delay)
                        .await
                        .map(|()| true);
                    ("retry", 0, written)
                }
            }
        };
        match written {
            Ok(true) => crate::metrics::media_download(result, bytes, took),
            Ok(false) => {
                tracing::warn!(
                    job = job.id,
                    "media job's lease was taken over; its result is not recorded"
                );
                crate::metrics::media_download("lease_lost", 0, took);
            }
            Err(e) => tracing::warn!(job = job.id, error = %e, "cannot record a media download"),
        }
        self.tokens.release(&job.token);
    }
}

/// The reasons a download is given up: stable phrases, kept in the message.
pub const TOO_LARGE: &str = "too large";
pub const CHECKSUM_MISMATCH: &str = "checksum mismatch";
pub const UNAVAILABLE: &str = "unavailable";
pub const EXHAUSTED: &str = "attempts exhausted";
pub const MESSAGE_DELETED: &str = "message deleted";

fn reason_label(reason: &str) -> &'static str {
    match reason {
        TOO_LARGE => "too_large",
        CHECKSUM_MISMATCH => "checksum_mismatch",
        UNAVAILABLE => "unavailable",
        MESSAGE_DELETED => "message_deleted",
        _ => "given_up",
    }
}

/// The delay before attempt `attempts + 1`: base · 2^(attempts-1), at most
/// [`MAX_BACKOFF`], with ±20 % jitter so that a burst does not come back at once.
pub fn backoff(base_ms: u64, attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 20) as u32 - 1;
    let delay = Duration::from_millis(base_ms.max(1))
        .saturating_mul(1u32 << exp)
        .min(MAX_BACKOFF);
    delay.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

/// How one attempt ended.
enum Outcome {
    Stored(Stored),
    GiveUp {
        reason: &'static str,
        detail: String,
    },
    Retry(String),
}

fn give_up(reason: &'static str, detail: impl Into<String>) -> Outcome {
    Outcome::GiveUp {
        reason,
        detail: detail.into(),
    }
}

/// What one GET of the bytes did.
enum Fetched {
    Done(Stored),
    /// The URL answered 401/403/404: resolve the id again.
    Expired(String),
    /// The transfer broke or was short: try again.
    Broken(String),
    End(Outcome),
}

async fn download(ctx: &AppContext, client: &MediaClient, job: &MediaJob) -> Outcome {
    let Some(limit) = meta::max_bytes(&job.kind) else {
        return give_up(UNAVAILABLE, format!("`{}` is not a media kind", job.kind));
    };
    let Some(message_id) = job.message_id else {
        return give_up(
            MESSAGE_DELETED,
            "the message was deleted before its media was downloaded",
        );
    };
    let credentials = match ctx.credentials.current().await {
        Ok(c) => c,
        Err(e) => return Outcome::Retry(format!("cannot read the WhatsApp credentials: {e}")),
    };
    let mut info = match resolve(client, &credentials, job).await {
        Ok(info) => info,
        Err(outcome) => return outcome,
    };
    let key = crate::media::key_for(
        &job.kind,
        message_id,
        info.mime_type.as_deref().or(job.mime_type.as_deref()),
        job.created_at,
    );
    // Every turn of the loop counts a break or a resolution, both bounded. What was
    // received survives both: the next GET asks for the rest.
    let (mut resolves, mut breaks) = (0, 0);
    let mut partial = Partial::default();
    loop {
        if let Some(size) = info.file_size.filter(|&s| s > limit) {
            partial.reset().await;
            return too_large(&job.kind, size, limit);
        }
        let store = ctx.media.as_ref();
        match fetch(
            store,
            client,
            &credentials,
            job,
            &info,
            &key,
            limit,
            &mut partial,
        )
        .await
        {
            Fetched::Done(stored) => return Outcome::Stored(stored),
            Fetched::End(outcome) => {
                partial.reset().await;
                return outcome;
            }
            Fetched::Broken(why) => {
                breaks += 1;
                if breaks >= BREAKS {
                    partial.reset().await;
                    return Outcome::Retry(format!("the transfer kept breaking: {why}"));
                }
            }
            Fetched::Expired(why) => {
                if resolves >= RE_RESOLVES {
                    partial.reset().await;
                    return Outcome::Retry(format!("the media URL kept expiring: {why}"));
                }
                resolves += 1;
                tracing::debug!(job = job.id, why = %why, "media URL expired; resolving the id again");
                info = match resolve(client, &credentials, job).await {
                    Ok(info) => info,
                    Err(outcome) => {
                        partial.reset().await;
                        return outcome;
                    }
                };
            }
        }
    }
}

/// What one attempt has received so far, kept across a broken transfer and a URL
/// resolved again.
#[derive(Default)]
struct Partial {
    writer: Option<Box<dyn MediaWriter>>,
    hasher: Sha256,
    total: u64,
    /// The bytes came in more than one piece.
    resumed: bool,
    /// Start over from the first byte from now on (a resumed file did not check out).
    whole_only: bool,
}

impl Partial {
    /// Drops what was received; nothing is kept.
    async fn reset(&mut self) {
        if let Some(writer) = self.writer.take() {
            let _ = writer.abort().await;
        }
        self.hasher = Sha256::new();
        self.total = 0;
        self.resumed = false;
    }
}

/// `GET /{media-id}`; an error becomes the attempt's outcome.
async fn resolve(
    client: &MediaClient,
    credentials: &crate::credentials::Credentials,
    job: &MediaJob,
) -> Result<MediaInfo, Outcome> {
    client
        .resolve(credentials, &job.media_id)
        .await
        .map_err(|e| match e.class() {
            ErrorClass::Permanent => {
                give_up(UNAVAILABLE, format!("Meta refused the media id: {e}"))
            }
            // A token refused may be replaced: retried like an outage, within the bound.
            ErrorClass::Retryable(_) | ErrorClass::TokenInvalid => {
                Outcome::Retry(format!("cannot resolve the media id: {e}"))
            }
        })
}

fn too_large(kind: &str, size: u64, limit: u64) -> Outcome {
    give_up(
        TOO_LARGE,
        format!("{size} bytes or more; Meta's limit for {kind} is {limit} bytes"),
    )
}

/// One GET of the bytes into the object at `key`, after what `partial` holds (a
/// range), or from the start when the server sends the whole file: hashed and
/// counted as they stream, never past `limit`; when the file is complete, the
/// checksum is checked before the object is kept.
#[allow(clippy::too_many_arguments)]
async fn fetch(
    store: &dyn MediaStore,
    client: &MediaClient,
    credentials: &crate::credentials::Credentials,
    job: &MediaJob,
    info: &MediaInfo,
    key: &str,
    limit: u64,
    partial: &mut Partial,
) -> Fetched {
    if partial.whole_only {
        partial.reset().await;
    }
    let mut body = match client.fetch(credentials, &info.url, partial.total).await {
        Ok(body) => body,
        Err(e @ FetchError::Expired(_)) => return Fetched::Expired(e.to_string()),
        Err(e) if e.is_transient() => return Fetched::Broken(e.to_string()),
        Err(e) => return Fetched::End(give_up(UNAVAILABLE, e.to_string())),
    };
    if body.offset != partial.total {
        // The whole file again (the range was ignored), or a range that does not
        // follow what we have: start over.
        let asked = partial.total;
        partial.reset().await;
        if body.offset != 0 {
            return Fetched::Broken(format!(
                "asked for the bytes from {asked}, got them from {}",
                body.offset
            ));
        }
    } else if body.offset > 0 {
        partial.resumed = true;
    }
    if let Some(size) = body
        .content_length
        .map(|n| n + body.offset)
        .filter(|&s| s > limit)
    {
        return Fetched::End(too_large(&job.kind, size, limit));
    }
    if partial.writer.is_none() {
        match store.begin(key).await {
            Ok(w) => partial.writer = Some(w),
            Err(e) => return Fetched::End(Outcome::Retry(format!("the media store: {e}"))),
        }
    }
    let Some(writer) = partial.writer.as_mut() else {
        return Fetched::End(Outcome::Retry("the media store: no writer".to_owned()));
    };
    while let Some(chunk) = body.chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            // Kept: the next GET asks for the rest.
            Err(e) => return Fetched::Broken(format!("after {} bytes: {e}", partial.total)),
        };
        partial.total += chunk.len() as u64;
        if partial.total > limit {
            return Fetched::End(too_large(&job.kind, partial.total, limit));
        }
        partial.hasher.update(&chunk);
        if let Err(e) = writer.write(chunk).await {
            return Fetched::End(Outcome::Retry(format!("the media store: {e}")));
        }
    }
    let total = partial.total;
    match info.file_size {
        Some(size) if total < size => {
            return Fetched::Broken(format!("{total} bytes received, Meta announced {size}"));
        }
        Some(size) if total > size => {
            partial.reset().await;
            return Fetched::Broken(format!("{total} bytes received, Meta announced {size}"));
        }
        _ => {}
    }
    let digest = std::mem::take(&mut partial.hasher).finalize();
    for (whose, expected) in [("the webhook's", &job.sha256), ("Meta's", &info.sha256)] {
        if let Some(expected) = expected.as_deref().filter(|s| !s.is_empty()) {
            if !meta::checksum_matches(expected, &digest) {
                if partial.resumed {
                    // Pieces that do not fit together: once more from the first byte.
                    partial.reset().await;
                    partial.whole_only = true;
                    return Fetched::Broken(format!(
                        "the sha256 of a resumed transfer differs from {whose}; starting over"
                    ));
                }
                return Fetched::End(give_up(
                    CHECKSUM_MISMATCH,
                    format!(
                        "sha256 of the {total} bytes received is {}, {whose} is {expected}",
                        hex::encode(digest)
                    ),
                ));
            }
        }
    }
    let Some(writer) = partial.writer.take() else {
        return Fetched::End(Outcome::Retry("the media store: no writer".to_owned()));
    };
    if let Err(e) = writer.finish().await {
        return Fetched::End(Outcome::Retry(format!("the media store: {e}")));
    }
    let mime_type = info.mime_type.clone().or_else(|| job.mime_type.clone());
    let sha256 = hex::encode(digest);
    Fetched::Done(Stored {
        store_kind: store.kind().to_owned(),
        key: key.to_owned(),
        size: total as i64,
        content: json!({
            "store": store.kind(),
            "key": key,
            "size": total,
            "sha256": sha256,
            "mime_type": mime_type,
            "at": chrono::Utc::now(),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_within_jitter_and_is_capped() {
        for (attempts, base) in [(1, 1000u64), (2, 2000), (3, 4000)] {
            let d = backoff(1000, attempts).as_millis() as u64;
            assert!(d >= base * 8 / 10 && d <= base * 12 / 10, "{attempts}: {d}");
        }
        assert!(backoff(1000, 40) <= MAX_BACKOFF.mul_f64(1.2));
    }
}
