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
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use uuid::Uuid;

use super::AppState;
use crate::datasource::flow::{self as screens, Next};
use crate::store;
use crate::store::flows::TokenTarget;
use crate::whatsapp::flows_crypto::{EncryptedRequest, ResponseSealer};

/// Meta's status codes for the endpoint.
const DECRYPTION_FAILED: u16 = 421;
const TOKEN_INVALID: u16 = 427;
const SIGNATURE_FAILED: u16 = 432;

/// Time kept back from the deadline for the answer's own work (encrypting, writing).
const ANSWER_MARGIN: Duration = Duration::from_millis(25);

pub fn routes(path: &str) -> Router<AppState> {
    Router::new().route(path, post(endpoint))
}

/// A decrypted request.
#[derive(Debug, Deserialize)]
struct FlowRequest {
    action: String,
    #[serde(default)]
    screen: Option<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    flow_token: Option<String>,
}

/// Why a request got no screen.
#[derive(Debug, thiserror::Error)]
enum FlowError {
    #[error("the flow token maps to no live conversation context")]
    DeadToken,
    #[error("the Flow has no screen to start on (no whatsapp_flows row or flowInitialScreen)")]
    NoScreen,
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

#[tracing::instrument(skip_all)]
async fn endpoint(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
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
        return status(SIGNATURE_FAILED).into_response();
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature_valid(secret.expose_secret().as_bytes(), signature, &body) {
        tracing::warn!("Flows request with a missing or wrong X-Hub-Signature-256");
        return status(SIGNATURE_FAILED).into_response();
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
            return status(DECRYPTION_FAILED).into_response();
        }
    };
    let request: FlowRequest = match serde_json::from_slice(&plain) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "decrypted Flows request is not the expected JSON");
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    tracing::info!(action = %request.action, screen = request.screen.as_deref().unwrap_or("-"), "Flows request");

    match answer(&state, &request, deadline).await {
        Ok(body) => sealed(StatusCode::OK, &sealer, &body),
        Err(FlowError::DeadToken) => {
            tracing::info!("Flows request with an unknown or finished flow token");
            let body = json!({"error_msg": "This form is no longer available."});
            sealed(status(TOKEN_INVALID), &sealer, &body)
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

/// HMAC-SHA256 of the raw bytes, `sha256=<hex>`, compared in constant time.
fn signature_valid(secret: &[u8], header: Option<&str>, body: &[u8]) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

async fn answer(
    state: &AppState,
    request: &FlowRequest,
    deadline: Instant,
) -> Result<Value, FlowError> {
    if request.action == "ping" {
        return Ok(json!({"data": {"status": "active"}}));
    }
    // Error notifications: the client tells us it could not use our last answer.
    if request.action == "error_notification" || request.data.get("error").is_some() {
        let error = request
            .data
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("-");
        let message = request
            .data
            .get("error_message")
            .and_then(Value::as_str)
            .unwrap_or("-");
        tracing::warn!(%error, %message, "the Flow client reported an error");
        return Ok(json!({"data": {"acknowledged": true}}));
    }
    let token = request.flow_token.as_deref().unwrap_or_default();
    let target = live_target(state, token).await?;
    match request.action.as_str() {
        "INIT" => init(state, token, &target, deadline).await,
        "BACK" => back(state, token, &target, request, deadline).await,
        _ => exchange(state, token, &target, request, deadline).await,
    }
}

/// Parses `<context uuid>:<node id>` and finds its live context.
async fn live_target(state: &AppState, token: &str) -> Result<TokenTarget, FlowError> {
    let Some((context, node)) = token.split_once(':') else {
        return Err(FlowError::DeadToken);
    };
    let Ok(context_id) = Uuid::parse_str(context) else {
        return Err(FlowError::DeadToken);
    };
    store::flows::token_target(&state.pool, context_id, node)
        .await?
        .ok_or(FlowError::DeadToken)
}

fn flow_json(target: &TokenTarget) -> Value {
    target
        .flow
        .as_ref()
        .map(|f| f.flow_json.clone())
        .unwrap_or(Value::Null)
}

async fn init(
    state: &AppState,
    token: &str,
    target: &TokenTarget,
    deadline: Instant,
) -> Result<Value, FlowError> {
    let flow_json = flow_json(target);
    let screen =
        screens::initial_screen(&flow_json, &target.node_data).ok_or(FlowError::NoScreen)?;
    store::flows::session_start(&state.pool, token, target.context_id, &json!({})).await?;
    let mut data = screens::initial_data(&target.node_data);
    let input = Value::Object(data.clone());
    let filled = fill(state, target, &screen, true, &input, deadline).await;
    data.extend(filled);
    Ok(json!({"screen": screen, "data": data}))
}

async fn back(
    state: &AppState,
    token: &str,
    target: &TokenTarget,
    request: &FlowRequest,
    deadline: Instant,
) -> Result<Value, FlowError> {
    let flow_json = flow_json(target);
    let screen = request
        .screen
        .clone()
        .or_else(|| screens::initial_screen(&flow_json, &target.node_data))
        .ok_or(FlowError::NoScreen)?;
    let gathered =
        store::flows::session_merge(&state.pool, token, target.context_id, &json!({})).await?;
    Ok(serve_screen(state, target, &flow_json, &screen, &gathered, deadline).await)
}

/// The answer that shows `screen`: its data sources filled, what the user picked
/// earlier carried over.
async fn serve_screen(
    state: &AppState,
    target: &TokenTarget,
    flow_json: &Value,
    screen: &str,
    gathered: &Value,
    deadline: Instant,
) -> Value {
    let initial = screens::initial_screen(flow_json, &target.node_data);
    let is_initial = initial.as_deref() == Some(screen);
    let data = fill(state, target, screen, is_initial, gathered, deadline).await;
    json!({"screen": screen, "data": carried(flow_json, screen, gathered, data)})
}

async fn exchange(
    state: &AppState,
    token: &str,
    target: &TokenTarget,
    request: &FlowRequest,
    deadline: Instant,
) -> Result<Value, FlowError> {
    let flow_json = flow_json(target);
    let submitted = match &request.data {
        Value::Object(map) => Value::Object(map.clone()),
        _ => json!({}),
    };
    let gathered =
        store::flows::session_merge(&state.pool, token, target.context_id, &submitted).await?;
    let current = request.screen.as_deref().unwrap_or_default();
    match screens::next_screen(&flow_json, current, &submitted) {
        Next::Complete => {
            store::flows::session_end(&state.pool, token).await?;
            let mut params = gathered.as_object().cloned().unwrap_or_default();
            params.remove("next_screen");
            params.insert("flow_token".into(), Value::String(token.to_owned()));
            Ok(
                json!({"screen": "SUCCESS", "data": {"extension_message_response": {"params": params}}}),
            )
        }
        Next::Screen(next) => {
            Ok(serve_screen(state, target, &flow_json, &next, &gathered, deadline).await)
        }
    }
}

/// The data of `screen` from its components, `error_message` included when some
/// failed, within what is left before the deadline.
async fn fill(
    state: &AppState,
    target: &TokenTarget,
    screen: &str,
    initial: bool,
    input: &Value,
    deadline: Instant,
) -> Map<String, Value> {
    let Some(flow) = target.flow.as_ref() else {
        return Map::new();
    };
    let all = screens::components(flow);
    let wanted = screens::components_for(&all, screen, initial, input);
    if wanted.is_empty() {
        return Map::new();
    }
    let budget = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(ANSWER_MARGIN);
    let resolved =
        screens::resolve_screen(&state.pool, &state.datasources, &wanted, input, budget).await;
    let mut data = resolved.data;
    if let Some(message) = resolved.error_message {
        data.insert("error_message".into(), Value::String(message));
    }
    data
}

/// Adds the gathered values that `screen` declares in its `data` schema (a summary
/// screen showing earlier picks), without overwriting resolved fields.
fn carried(
    flow_json: &Value,
    screen: &str,
    gathered: &Value,
    mut data: Map<String, Value>,
) -> Map<String, Value> {
    let declared = flow_json
        .get("screens")
        .and_then(Value::as_array)
        .and_then(|s| {
            s.iter()
                .find(|s| s.get("id").and_then(Value::as_str) == Some(screen))
        })
        .and_then(|s| s.get("data"))
        .and_then(Value::as_object);
    if let (Some(declared), Some(gathered)) = (declared, gathered.as_object()) {
        for (name, value) in gathered {
            if declared.contains_key(name) && !data.contains_key(name) {
                data.insert(name.clone(), value.clone());
            }
        }
    }
    data
}
