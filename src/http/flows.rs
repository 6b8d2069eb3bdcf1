//! `POST /flows/endpoint` (path from `WABOT_FLOWS_ENDPOINT_PATH`): Meta's WhatsApp
//! Flows data_exchange endpoint.
//!
//! Order of checks, each with Meta's status code: the signature over the raw bytes
//! (432), the decryption (421), the flow token (427). The answer is JSON encrypted
//! with the request's AES key and the inverted IV, base64, `text/plain`. The whole
//! answer fits in `WABOT_FLOWS_DEADLINE_MS`: data sources get what is left of it, and
//! a slow one leaves its dropdown empty with an `error_message` instead of a hang.
//!
//! With no private key configured the route answers 503 and logs why: Meta's health
//! check then fails visibly instead of the endpoint pretending to work.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::AppState;
use crate::datasource::flow::endpoint::{Endpoint, FlowError};
use crate::whatsapp::flows::{self as meta, FlowRequest};
use crate::whatsapp::flows_crypto::{EncryptedRequest, ResponseSealer};
use crate::whatsapp::signature;

pub fn routes(path: &str) -> Router<AppState> {
    Router::new().route(path, post(endpoint))
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

#[tracing::instrument(skip_all)]
async fn endpoint(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let mut action = None;
    let response = answer(&state, &headers, body, &mut action).await;
    let result = match response.status().as_u16() {
        200 => "ok",
        432 => "signature_refused",
        421 => "undecryptable",
        427 => "token_invalid",
        400 => "bad_request",
        503 => "unavailable",
        _ => "error",
    };
    let action = action.as_deref().unwrap_or(match result {
        "undecryptable" | "signature_refused" => "undecryptable",
        _ => "unknown",
    });
    crate::metrics::flows_request(action, result, started.elapsed());
    response
}

/// The endpoint's answer; `action` is set once the request could be read.
async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    body: Bytes,
    action: &mut Option<String>,
) -> Response {
    let deadline = Instant::now() + Duration::from_millis(state.config.flows.deadline_ms);
    let Some(key) = state.flows_key.clone() else {
        tracing::error!(
            "Flows endpoint called but no private key is configured (WABOT_FLOWS_PRIVATE_KEY)"
        );
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let credentials = match state.credentials.current().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the credentials to verify a Flows request");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let Some(secret) = credentials.app_secret.as_ref() else {
        tracing::error!(
            "no app secret configured (WABOT_APP_SECRET): Flows requests cannot be verified"
        );
        return status(meta::SIGNATURE_FAILED).into_response();
    };
    let header = headers.get(signature::HEADER).and_then(|v| v.to_str().ok());
    if let Err(e) = signature::verify(secret.expose_secret().as_bytes(), &body, header) {
        tracing::warn!(error = %e, "Flows request refused");
        return status(meta::SIGNATURE_FAILED).into_response();
    }

    // The RSA private-key operation takes milliseconds of CPU: it runs on the
    // blocking pool so that it never stalls the tasks sharing this worker thread.
    let decrypted = tokio::task::spawn_blocking(move || {
        serde_json::from_slice::<EncryptedRequest>(&body)
            .map_err(|e| e.to_string())
            .and_then(|r| key.decrypt_request(&r).map_err(|e| e.to_string()))
    })
    .await
    .unwrap_or_else(|e| Err(format!("the decryption task failed: {e}")));
    let (plain, sealer) = match decrypted {
        Ok(pair) => pair,
        Err(reason) => {
            tracing::warn!(%reason, "Flows request cannot be decrypted");
            return status(meta::DECRYPTION_FAILED).into_response();
        }
    };
    let request = match FlowRequest::parse(&plain) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "decrypted Flows request is not the expected JSON");
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    *action = Some(request.action.to_string());
    tracing::info!(action = %request.action, screen = request.screen.as_deref().unwrap_or("-"), "Flows request");

    let endpoint = Endpoint {
        pool: &state.pool,
        datasources: &state.datasources,
        deadline,
    };
    match endpoint.answer(&request).await {
        Ok(body) => sealed(StatusCode::OK, &sealer, &body),
        Err(FlowError::DeadToken) => {
            tracing::info!("Flows request with an unknown or finished flow token");
            sealed(
                status(meta::TOKEN_INVALID),
                &sealer,
                &meta::token_invalid_response(),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "Flows request failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn sealed(code: StatusCode, sealer: &ResponseSealer, body: &Value) -> Response {
    let text = sealer.seal(body.to_string().as_bytes());
    (code, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}
