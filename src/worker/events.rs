//! The event stage: delivers the event outbox (`store::events`) to the endpoints
//! operators registered, signed as the Standard Webhooks specification says
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256
//! of "id.timestamp.body">`), so any of its client libraries verifies them.
//!
//! An endpoint's events of one conversation go one at a time, in order (the claim
//! hands out only the oldest pending one of each); a failed attempt is retried
//! with a doubling delay until `WABOT_EVENTS_RETRY_SECS` has passed since the event
//! was written (or re-sent), then marked failed, where `wabot webhook deliveries`
//! shows it and `wabot webhook resend` queues it again. Endpoint URLs pass the
//! egress guard of data sources (`WABOT_DATASOURCE_ALLOWED_NETWORKS` opens private
//! networks), with no redirects followed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::app::AppContext;
use crate::egress::{self, Guard};
use crate::store::events::{self, Attempt, Due};

/// Deliveries claimed at once.
const BATCH: i64 = 64;
/// How often the subscribed set is read again (the API's own changes apply at once;
/// this catches `wabot webhook add` from another process).
const REFRESH: Duration = Duration::from_secs(5);
/// The longest delay between two attempts.
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Delivered events and idempotency keys are kept this long.
const KEEP: Duration = Duration::from_secs(7 * 86_400);
/// The most of a receiver's answer kept as the error.
const ERROR_CHARS: usize = 300;

/// The prefix of an endpoint secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new endpoint secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// `v1,<signature>` of one delivery: HMAC-SHA256 keyed with the secret's bytes (the
/// base64 after `whsec_`) over `id.timestamp.body`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .map_err(|e| format!("the endpoint's secret is not base64: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The guard of endpoint URLs: the data sources' (public addresses plus
/// `WABOT_DATASOURCE_ALLOWED_NETWORKS`).
pub fn guard(ctx: &AppContext) -> Guard {
    Guard::new(ctx.config.datasource.allowed_networks.clone())
}

/// Runs the stage until `stop`: keeps `ctx.events` fresh and, with `delivers`,
/// delivers the outbox.
pub async fn run(ctx: Arc<AppContext>, delivers: bool, stop: CancellationToken) {
    let guard = Arc::new(guard(&ctx));
    let timeout = Duration::from_millis(ctx.config.worker.events_timeout_ms);
    let client = match egress::client_builder(guard, egress::Redirects::SameHost)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the events HTTP client; no event is delivered");
            return;
        }
    };
    let poll = Duration::from_millis(ctx.config.worker.poll_interval_ms.max(1));
    let lease = ctx.lease().max(timeout * 2);
    let mut refreshed: Option<Instant> = None;
    let mut purged: Option<Instant> = None;
    loop {
        if refreshed.map_or(true, |t| t.elapsed() >= REFRESH) {
            match ctx.events.refresh(&ctx.pool).await {
                Ok(_) => refreshed = Some(Instant::now()),
                Err(e) => tracing::warn!(error = %e, "cannot read the event endpoints"),
            }
        }
        if !delivers {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => continue,
            }
        }
        if purged.map_or(true, |t| t.elapsed() >= Duration::from_secs(600)) {
            purged = Some(Instant::now());
            if let Err(e) = events::purge_delivered(&ctx.pool, KEEP, 10_000).await {
                tracing::warn!(error = %e, "cannot purge delivered events");
            }
            if let Err(e) = crate::store::api::purge(&ctx.pool, KEEP.as_secs_f64()).await {
                tracing::warn!(error = %e, "cannot purge idempotency keys");
            }
        }
        let mut claimed = 0;
        if !ctx.events.get().is_empty() {
            match events::claim(&ctx.pool, &ctx.holder, lease, BATCH).await {
                Ok(due) => {
                    claimed = due.len();
                    let attempts = due.iter().map(|d| deliver(&ctx, &client, d));
                    futures::future::join_all(attempts).await;
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim events to deliver"),
            }
        }
        if claimed as i64 == BATCH {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// One attempt: post, then record what came of it.
async fn deliver(ctx: &AppContext, client: &reqwest::Client, due: &Due) {
    let started = Instant::now();
    let result = post(client, due).await;
    let took = started.elapsed();
    let attempt = match result {
        Ok(status) => {
            crate::metrics::event_delivery("delivered", took);
            Attempt::Delivered { status }
        }
        Err((status, error)) => {
            let delay = delay(ctx, due.attempts);
            let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            let until = due.retry_from
                + chrono::Duration::seconds(ctx.config.worker.events_retry_secs as i64);
            let give_up = next > until;
            crate::metrics::event_delivery(if give_up { "failed" } else { "retry" }, took);
            if give_up {
                tracing::warn!(
                    delivery = due.id, endpoint = %due.endpoint_id, event = %due.kind,
                    error = %error, attempts = due.attempts + 1,
                    "event not delivered: given up (wabot webhook resend queues it again)"
                );
            } else {
                tracing::info!(
                    delivery = due.id, endpoint = %due.endpoint_id, event = %due.kind,
                    error = %error, retry_in_ms = delay.as_millis() as u64,
                    "event not delivered; retrying"
                );
            }
            Attempt::Failed {
                status,
                error,
                next_attempt_at: next,
                give_up,
            }
        }
    };
    if let Err(e) = events::record(&ctx.pool, due.id, &due.token, &attempt).await {
        // The lease runs out and the event is delivered again: receivers drop the
        // repeat by its webhook-id.
        tracing::warn!(delivery = due.id, error = %e, "cannot record an event delivery");
    }
}

/// The delay before attempt `attempts + 2`: base · 2ⁿ, at most an hour.
fn delay(ctx: &AppContext, attempts: i32) -> Duration {
    let base = Duration::from_millis(ctx.config.worker.events_retry_base_ms);
    base.saturating_mul(1u32 << attempts.clamp(0, 20))
        .min(MAX_DELAY)
}

/// Posts one event; the 2xx status, or the status (if any) and why it failed.
async fn post(client: &reqwest::Client, due: &Due) -> Result<u16, (Option<u16>, String)> {
    let body = serde_json::to_vec(&due.payload).map_err(|e| (None, e.to_string()))?;
    let timestamp = Utc::now().timestamp();
    let signature = sign(&due.secret, &due.webhook_id, timestamp, &body).map_err(|e| (None, e))?;
    let response = client
        .post(&due.url)
        .header("content-type", "application/json")
        .header("webhook-id", &due.webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| (None, egress::error_text(e)))?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let text = response.text().await.unwrap_or_default();
    Err((
        Some(status.as_u16()),
        format!(
            "the endpoint answered {status}: {}",
            crate::text::truncate_chars(text.trim(), ERROR_CHARS)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signs_as_the_specification_says() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, id, 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_new_secret_has_the_prefix_and_32_bytes() {
        let s = new_secret();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s.strip_prefix(SECRET_PREFIX).unwrap())
            .unwrap();
        assert_eq!(bytes.len(), 32);
    }
}
