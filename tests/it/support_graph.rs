//! A fake Graph API: a real HTTP server on loopback that answers like Meta's
//! `/{version}/{phone_number_id}/messages`, records every request, and can be told to
//! fail the next requests the ways Meta does.
//!
//! ```ignore
//! let graph = FakeGraph::start().await;           // expects helpers::ACCESS_TOKEN
//! cfg.whatsapp.graph_api_base = graph.url();
//! graph.fail_next(2, Failure::Throttled);
//! graph.wait_for_accepted(3, Duration::from_secs(10)).await;
//! let bodies: Vec<Value> = graph.accepted().into_iter().map(|r| r.body).collect();
//! ```
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::helpers;

/// The Graph API version the fake serves: wabot's default.
pub const VERSION: &str = "v24.0";

/// A failure the fake can inject, each as Meta sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 with code 130429 (throughput reached).
    Throttled,
    /// 400 with code 131056 (pair rate limit).
    PairRate,
    /// 500 with code 131000 (something went wrong).
    ServerError,
    /// No answer for longer than any sane client timeout.
    Hang,
    /// 400 with code 131047 (24-hour window closed).
    WindowClosed,
    /// 400 with code 131026 (message undeliverable).
    Undeliverable,
    /// 401 with code 190 (access token expired).
    TokenExpired,
}

/// What the fake did with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A message accepted, with the wamid returned.
    Accepted { wamid: String },
    /// A read receipt / typing indicator accepted.
    Read,
    /// An injected failure.
    Injected(Failure),
    /// Refused: wrong token (190), wrong path or a body Meta would refuse (100).
    Refused { status: u16, code: i64 },
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct GraphRequest {
    pub method: String,
    pub path: String,
    /// The `Authorization` header as received.
    pub authorization: Option<String>,
    pub body: Value,
    pub outcome: Outcome,
}

impl GraphRequest {
    /// The wamid the fake returned, when it accepted the message.
    pub fn wamid(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Accepted { wamid } => Some(wamid),
            _ => None,
        }
    }

    /// The recipient of a message request.
    pub fn to(&self) -> Option<&str> {
        self.body.get("to").and_then(Value::as_str)
    }

    /// The text a message carries: a text body or an interactive body text.
    pub fn text(&self) -> Option<&str> {
        self.body
            .pointer("/text/body")
            .or_else(|| self.body.pointer("/interactive/body/text"))
            .and_then(Value::as_str)
    }
}

struct Inner {
    token: Mutex<String>,
    phone_number_id: String,
    version: String,
    hang_for: Duration,
    /// How long each message request waits before it is answered.
    answer_after: Mutex<Duration>,
    requests: Mutex<Vec<GraphRequest>>,
    script: Mutex<VecDeque<Failure>>,
    counter: AtomicU64,
    run_id: String,
}

/// The running fake; the server stops when this is dropped.
pub struct FakeGraph {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeGraph {
    /// A fake for `helpers::ACCESS_TOKEN` and `helpers::PHONE_NUMBER_ID`.
    pub async fn start() -> FakeGraph {
        FakeGraph::start_with(helpers::ACCESS_TOKEN, helpers::PHONE_NUMBER_ID).await
    }

    pub async fn start_with(token: &str, phone_number_id: &str) -> FakeGraph {
        let inner = Arc::new(Inner {
            token: Mutex::new(token.to_owned()),
            phone_number_id: phone_number_id.to_owned(),
            version: VERSION.to_owned(),
            hang_for: Duration::from_secs(60),
            answer_after: Mutex::new(Duration::ZERO),
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            counter: AtomicU64::new(0),
            run_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_uppercase(),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Graph API");
        let addr = listener.local_addr().expect("bound address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGraph {
            addr,
            inner,
            server,
        }
    }

    /// The base URL, for `whatsapp.graph_api_base`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<GraphRequest> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// The message requests that were accepted (got a wamid), in arrival order.
    pub fn accepted(&self) -> Vec<GraphRequest> {
        self.requests()
            .into_iter()
            .filter(|r| matches!(r.outcome, Outcome::Accepted { .. }))
            .collect()
    }

    /// The wamid the next accepted message will get (to fake a status that
    /// arrives before the sender has stored it).
    pub fn next_wamid(&self) -> String {
        wamid(
            &self.inner.run_id,
            self.inner.counter.load(Ordering::SeqCst) + 1,
        )
    }

    /// The next `n` message requests fail with `failure` (after any already queued).
    pub fn fail_next(&self, n: usize, failure: Failure) {
        let mut script = self.inner.script.lock().unwrap();
        script.extend(std::iter::repeat(failure).take(n));
    }

    /// From now on every message request waits `delay` before it is answered (a
    /// Meta that is slow, not failing).
    pub fn answer_after(&self, delay: Duration) {
        *self.inner.answer_after.lock().unwrap() = delay;
    }

    /// From now on only `token` is accepted; any other gets 401 with code 190.
    pub fn set_token(&self, token: &str) {
        *self.inner.token.lock().unwrap() = token.to_owned();
    }

    /// Waits until at least `n` messages were accepted; panics after `timeout`.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> Vec<GraphRequest> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let accepted = self.accepted();
            if accepted.len() >= n {
                return accepted;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the fake Graph API accepted {} of {n} messages within {timeout:?}; requests: {:#?}",
                    accepted.len(),
                    self.requests()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn meta_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({
        "error": {
            "message": format!("(#{code}) {message}"),
            "type": "OAuthException",
            "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": message},
            "fbtrace_id": "FakeTrace",
        }
    });
    (status, Json(body)).into_response()
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = uri.path().to_owned();
    let mut record = GraphRequest {
        method: method.to_string(),
        path: path.clone(),
        authorization: authorization.clone(),
        body: body.clone(),
        outcome: Outcome::Read,
    };
    // The template catalogue (`templates sync`): the fixture's, on one page.
    if method == Method::GET && path.ends_with("/message_templates") {
        inner.requests.lock().unwrap().push(record);
        let catalogue: Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/templates/catalogue.json"
        )))
        .expect("the fixture catalogue");
        return Json(json!({"data": catalogue, "paging": {}})).into_response();
    }
    let expected_path = format!("/{}/{}/messages", inner.version, inner.phone_number_id);
    let expected_auth = format!("Bearer {}", inner.token.lock().unwrap());
    let is_read = body.get("status").and_then(Value::as_str) == Some("read");

    let refused = if method != Method::POST || path != expected_path {
        Some((StatusCode::BAD_REQUEST, 100, "Unsupported post request"))
    } else if authorization.as_deref() != Some(expected_auth.as_str()) {
        Some((
            StatusCode::UNAUTHORIZED,
            190,
            "Error validating access token: Session has expired",
        ))
    } else if !valid_body(&body, is_read) {
        Some((StatusCode::BAD_REQUEST, 100, "Invalid parameter"))
    } else {
        None
    };
    if let Some((status, code, message)) = refused {
        record.outcome = Outcome::Refused {
            status: status.as_u16(),
            code,
        };
        inner.requests.lock().unwrap().push(record);
        return meta_error(status, code, message);
    }
    if is_read {
        inner.requests.lock().unwrap().push(record);
        return Json(json!({"success": true})).into_response();
    }

    let delay = *inner.answer_after.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let failure = inner.script.lock().unwrap().pop_front();
    if let Some(failure) = failure {
        record.outcome = Outcome::Injected(failure);
        inner.requests.lock().unwrap().push(record);
        return match failure {
            Failure::Throttled => {
                meta_error(StatusCode::TOO_MANY_REQUESTS, 130429, "Rate limit hit")
            }
            Failure::PairRate => meta_error(StatusCode::BAD_REQUEST, 131056, "Pair rate limit hit"),
            Failure::ServerError => meta_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                131000,
                "Something went wrong",
            ),
            Failure::WindowClosed => {
                meta_error(StatusCode::BAD_REQUEST, 131047, "Re-engagement message")
            }
            Failure::Undeliverable => {
                meta_error(StatusCode::BAD_REQUEST, 131026, "Message undeliverable")
            }
            Failure::TokenExpired => {
                meta_error(StatusCode::UNAUTHORIZED, 190, "Access token has expired")
            }
            Failure::Hang => {
                // The client gives up first; when it hangs up this future is dropped.
                tokio::time::sleep(inner.hang_for).await;
                meta_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    131000,
                    "Something went wrong",
                )
            }
        };
    }

    let n = inner.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let wamid = wamid(&inner.run_id, n);
    let to = body.get("to").cloned().unwrap_or(Value::Null);
    record.outcome = Outcome::Accepted {
        wamid: wamid.clone(),
    };
    inner.requests.lock().unwrap().push(record);
    Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": wamid}],
    }))
    .into_response()
}

fn wamid(run_id: &str, n: u64) -> String {
    format!("wamid.FAKE{run_id}{n:08}")
}

/// The checks Meta makes that a rendering bug would trip.
fn valid_body(body: &Value, is_read: bool) -> bool {
    if body.get("messaging_product").and_then(Value::as_str) != Some("whatsapp") {
        return false;
    }
    if is_read {
        return body.get("message_id").and_then(Value::as_str).is_some();
    }
    let Some(kind) = body.get("type").and_then(Value::as_str) else {
        return false;
    };
    body.get("to")
        .and_then(Value::as_str)
        .is_some_and(|to| !to.is_empty())
        && body.get(kind).is_some_and(Value::is_object)
        && valid_kind(kind, &body[kind])
}

/// Meta's rules for the message types beyond text: media by `link` or `id` (one of
/// them), captions only where Meta shows them, a file name only on documents; the
/// actions of CTA URL and location request messages.
fn valid_kind(kind: &str, object: &Value) -> bool {
    let has = |key: &str| object.get(key).is_some();
    match kind {
        "image" | "video" | "audio" | "document" | "sticker" => {
            has("link") != has("id")
                && !(has("caption") && matches!(kind, "audio" | "sticker"))
                && !(has("filename") && kind != "document")
        }
        "interactive" => match object["type"].as_str() {
            Some("cta_url") => {
                object["action"]["name"] == "cta_url"
                    && object["action"]["parameters"]["display_text"].is_string()
                    && object["action"]["parameters"]["url"].is_string()
            }
            Some("location_request_message") => object["action"]["name"] == "send_location",
            _ => true,
        },
        _ => true,
    }
}
