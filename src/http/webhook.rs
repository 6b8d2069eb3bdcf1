//! `GET /webhook` (Meta's subscription handshake) and `POST /webhook` (everything
//! Meta delivers).
//!
//! The POST handler reads the raw body (at most 3 MiB), checks its signature over
//! those exact bytes, parses it, reads it into rows and hands them to the ingest
//! stage, answering 200 only once the batch holding it has committed. Every other
//! answer makes Meta deliver again, which is what we want whenever something was
//! not stored. When the ingest stage's queue is full the answer is 503 at once:
//! shedding early keeps memory and sockets flat under overload.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::AppState;
use crate::store::ingest::{self, IngestError, RawEvent, WebhookRows};
use crate::telemetry::Throttle;
use crate::whatsapp::signature::{self, SignatureError};
use crate::whatsapp::webhook::statuses::StatusOnly;
use crate::whatsapp::webhook::{Envelope, ParseError};
use crate::worker::ingest::SubmitError;

/// Meta's limit for one webhook POST.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/webhook",
        get(verify)
            .post(receive)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
    )
}

/// Why a webhook request was not accepted; each maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook signature refused: {0}")]
    Signature(#[from] SignatureError),
    #[error("no app secret is configured (whatsapp_config.app_secret or WABOT_APP_SECRET)")]
    NoAppSecret,
    #[error("the verify token does not match")]
    VerifyTokenMismatch,
    #[error("could not read the credentials")]
    Credentials(#[source] sqlx::Error),
    #[error("could not store the webhook")]
    Store(#[from] IngestError),
    #[error("the ingest queue is full; Meta will deliver again")]
    Overloaded,
    #[error("wabot is stopping")]
    Stopping,
    #[error("storing the webhook took longer than {0:?}")]
    Timeout(Duration),
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let status = match &self {
            WebhookError::Signature(_) => StatusCode::UNAUTHORIZED,
            WebhookError::VerifyTokenMismatch => StatusCode::FORBIDDEN,
            // Meta retries these for days: fixing the configuration or the database
            // in that time loses nothing.
            WebhookError::NoAppSecret | WebhookError::Store(IngestError::Database(_)) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            WebhookError::Credentials(_)
            | WebhookError::Store(IngestError::Unavailable(_))
            | WebhookError::Timeout(_)
            | WebhookError::Overloaded
            | WebhookError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        };
        // Each of these can repeat thousands of times a second (an overload burst, a
        // rotated app secret, a database outage): `wabot_webhooks_received_total`
        // counts every one, the log gets a line per condition per interval.
        static SHED: Throttle = Throttle::new("webhook_shed", 10);
        static FAILED: Throttle = Throttle::new("webhook_not_stored", 10);
        static REFUSED: Throttle = Throttle::new("webhook_refused", 10);
        if matches!(self, WebhookError::Overloaded | WebhookError::Stopping) {
            if let Some(count) = SHED.hit() {
                tracing::warn!(error = %self, count, "webhooks shed with 503 (count since the last such line); Meta delivers them again");
            }
        } else if status.is_server_error() {
            if let Some(count) = FAILED.hit() {
                tracing::error!(error.cause_chain = ?anyhow::Error::from(self), count, "webhooks not stored (count since the last such line)");
            }
        } else if let Some(count) = REFUSED.hit() {
            tracing::warn!(error = %self, count, "webhooks refused (count since the last such line)");
        }
        // The body says nothing about the cause: that is for the log.
        let text = status.canonical_reason().unwrap_or("error");
        (status, text).into_response()
    }
}

/// The query Meta sends to verify the callback URL (no `Debug`: it holds the
/// verify token).
#[derive(Deserialize)]
pub struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

async fn verify(
    State(state): State<AppState>,
    Query(handshake): Query<Handshake>,
) -> Result<String, WebhookError> {
    let credentials = state
        .credentials
        .current()
        .await
        .map_err(WebhookError::Credentials)?;
    let expected = credentials
        .verify_token
        .as_ref()
        .map(|t| t.expose_secret().as_bytes());
    let given = handshake.verify_token.as_deref().map(str::as_bytes);
    let token_ok = match (expected, given) {
        (Some(expected), Some(given)) => signature::secrets_equal(expected, given),
        _ => false,
    };
    if handshake.mode.as_deref() != Some("subscribe") || !token_ok {
        return Err(WebhookError::VerifyTokenMismatch);
    }
    tracing::info!("webhook subscription verified");
    Ok(handshake.challenge.unwrap_or_default())
}

async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, WebhookError> {
    if !state.ingest.has_room() {
        return Err(WebhookError::Overloaded);
    }
    let received_at = chrono::Utc::now();
    let header = headers
        .get(signature::HEADER)
        .map(|v| v.to_str().map_err(|_| SignatureError::Malformed))
        .transpose()?;
    let credentials = state
        .credentials
        .current()
        .await
        .map_err(WebhookError::Credentials)?;
    let secret = credentials
        .app_secret
        .as_ref()
        .ok_or(WebhookError::NoAppSecret)?;
    signature::verify(secret.expose_secret().as_bytes(), &body, header)?;

    // Six webhooks in seven hold only statuses: read those without building a
    // `Value` (a body that spells a NUL escape needs the scrub below).
    let status_only = std::str::from_utf8(&body)
        .ok()
        .filter(|_| !has_nul_escape(&body))
        .and_then(|text| Some((text, StatusOnly::parse(text)?)));
    let rows = match status_only {
        Some((text, statuses)) => crate::worker::ingest::status_rows(&statuses, text, received_at),
        None => match read(
            &state,
            &body,
            received_at,
            credentials.phone_number_id.as_deref(),
        )
        .await?
        {
            Some(rows) => rows,
            None => return Ok(StatusCode::OK),
        },
    };
    submit(&state, rows).await
}

/// Reads any other body into rows the general way (a `Value`, then the lenient
/// envelope); `None` when it could not be read, having kept it in
/// `webhook_unreadable`.
async fn read(
    state: &AppState,
    body: &Bytes,
    received_at: chrono::DateTime<chrono::Utc>,
    served: Option<&str>,
) -> Result<Option<WebhookRows>, WebhookError> {
    let parsed = serde_json::from_slice::<serde_json::Value>(body)
        .map_err(ParseError::from)
        .and_then(|mut value| {
            // Only a body that spells a NUL escape can hold one; skip the walk otherwise.
            let scrubbed = has_nul_escape(body) && ingest::make_storable(&mut value);
            if scrubbed {
                tracing::warn!("webhook strings contained NUL characters; stored as U+FFFD");
            }
            let envelope = Envelope::from_value(&value)?;
            // The raw event is the text Meta signed, unless NULs had to go. JSON that
            // parsed is UTF-8; the fallback only keeps that assumption from panicking.
            let text = match (scrubbed, std::str::from_utf8(body)) {
                (false, Ok(text)) => text.to_owned(),
                _ => value.to_string(),
            };
            Ok((text, envelope))
        });
    let (text, envelope) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            // Signed, so Meta sent it: a refusal would be redelivered for days. Keep
            // it whole with the reason, acknowledge it, and let an operator look.
            let id =
                ingest::store_unreadable(&state.pool, received_at, body, &e.to_string()).await?;
            crate::metrics::webhook_unreadable();
            tracing::warn!(unreadable_id = id, error = %e, "a signed webhook could not be read; kept in webhook_unreadable");
            return Ok(None);
        }
    };
    Ok(Some(crate::worker::ingest::rows(
        &envelope,
        RawEvent::New(text),
        received_at,
        served,
    )))
}

/// Hands the rows to the ingest stage and waits for their commit.
async fn submit(state: &AppState, rows: WebhookRows) -> Result<StatusCode, WebhookError> {
    // The pool's acquire timeout bounds the wait for a connection; this bounds a
    // batch whose connection hangs mid-transaction, well inside Meta's patience.
    let limit = Duration::from_millis(state.config.database.acquire_timeout_ms)
        .saturating_mul(3)
        .max(Duration::from_secs(10));
    let outcome = match tokio::time::timeout(limit, state.ingest.submit(rows)).await {
        Err(_) => return Err(WebhookError::Timeout(limit)),
        Ok(Err(SubmitError::Overloaded)) => return Err(WebhookError::Overloaded),
        Ok(Err(SubmitError::Stopped)) => return Err(WebhookError::Stopping),
        Ok(Err(SubmitError::Store(e))) => return Err(e.into()),
        Ok(Ok(outcome)) => outcome,
    };
    tracing::debug!(
        event_id = outcome.event_id,
        messages = outcome.messages_total,
        new = outcome.messages_new,
        skipped = outcome.messages_skipped,
        statuses = outcome.statuses_total,
        statuses_new = outcome.statuses_new,
        statuses_pending = outcome.statuses_pending,
        errors = outcome.errors,
        "webhook stored"
    );
    Ok(StatusCode::OK)
}

fn has_nul_escape(body: &[u8]) -> bool {
    body.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\\')
        .any(|(i, _)| {
            body.get(i + 1..i + 6)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"u0000"))
        })
}
