//! A fake of Meta's Graph API for trying and testing wabot without a WhatsApp number.
//!
//! It answers `POST /{version}/{phone-number-id}/messages` the way Meta does (a fresh
//! wamid per accepted message, `{"success": true}` for a read receipt), keeps every
//! message it accepted per recipient, and, like Meta, posts signed status webhooks
//! back to wabot's `/webhook` for every accepted message: `sent` at once, `delivered`
//! after the status delay, `read` after twice that. `GET /fake/messages` lists what it
//! received, for tests written in any language.
//!
//! A customer known only by username is addressed the way Meta takes it: `recipient`
//! (a BSUID) instead of `to` (`to` wins when both are given); the answer's contact
//! then has `user_id` instead of `wa_id`, and the statuses carry
//! `recipient_user_id` and no `recipient_id`. [`FakeGraph::refuse_next`] makes it
//! answer the next sends with one of Meta's errors (131062, say).
//!
//! `wabot try`, `wabot dev fake-graph` and the load benchmarks all use this one fake.

use std::collections::{HashMap, VecDeque};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::whatsapp::signature;

/// One message as the fake Graph API accepted it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub at: Instant,
    /// The wamid the fake answered with.
    pub wamid: String,
    /// `to` (a phone number) or, for a username customer, `recipient` (a BSUID).
    pub to: String,
    /// The text a person reads first: a text's body, an interactive message's body,
    /// a media caption, a template's name. Empty when the message has none.
    pub text: String,
    /// The request body as wabot sent it.
    pub body: Value,
}

/// One recipient's messages, and their count for callers waiting on it.
pub struct Inbox {
    log: Mutex<Vec<Reply>>,
    count: watch::Sender<usize>,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            log: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
        }
    }

    pub fn replies(&self) -> Vec<Reply> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        *self.count.borrow()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until at least `n` messages arrived; false when `deadline` came first.
    pub async fn wait_for(&self, n: usize, deadline: Instant) -> bool {
        let mut rx = self.count.subscribe();
        let deadline = tokio::time::Instant::from_std(deadline);
        let done = matches!(
            tokio::time::timeout_at(deadline, rx.wait_for(|c| *c >= n)).await,
            Ok(Ok(_))
        );
        done
    }

    fn push(&self, reply: Reply) {
        if let Ok(mut log) = self.log.lock() {
            log.push(reply);
        }
        self.count.send_modify(|c| *c += 1);
    }
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Prefix of the wamids it hands out, so that runs against one database never
    /// reuse one.
    pub run: String,
    /// Signs the status webhooks (wabot's `WABOT_APP_SECRET`).
    pub app_secret: String,
    /// The business number the statuses are addressed from (`WABOT_PHONE_NUMBER_ID`).
    pub phone_number_id: String,
    pub statuses: StatusOptions,
}

/// How statuses are posted back.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub enabled: bool,
    /// `delivered` this long after `sent`, `read` as long after `delivered`.
    pub delay: Duration,
    /// Redeliver a refused status later, as Meta does; otherwise count it refused and
    /// drop it (the load driver: refusals are a figure of their own).
    pub redeliver: bool,
}

#[derive(Default)]
pub struct StatusCounts {
    /// POSTs made (redeliveries included).
    pub posted: AtomicU64,
    pub acked: AtomicU64,
    /// Non-200 answers and failed connections.
    pub refused: AtomicU64,
    /// Statuses dropped: refused and not redelivered, or still refused at the end.
    pub dropped: AtomicU64,
    /// Status deliveries not yet finished (acked or dropped).
    pub pending: AtomicU64,
}

pub struct FakeGraph {
    options: Options,
    inboxes: Mutex<HashMap<String, Arc<Inbox>>>,
    /// Every accepted message, for whoever watches them arrive (`wabot try`).
    feed: broadcast::Sender<Reply>,
    /// Messages accepted (a wamid returned).
    pub accepted: AtomicU64,
    /// Read receipts / typing indicators (`status: read` bodies).
    pub receipts: AtomicU64,
    pub statuses: StatusCounts,
    /// wabot's `/webhook`, known once the daemon listens.
    webhook_url: OnceLock<String>,
    /// Meta error codes to answer the next sends with, in order.
    refusals: Mutex<VecDeque<i64>>,
    client: reqwest::Client,
    stop: CancellationToken,
    /// The template listing and the template send knobs (`fake_templates`).
    pub templates: super::fake_templates::Templates,
    /// Media it serves (`GET /{version}/{media-id}` and the URLs it answers with).
    pub media: Arc<super::fake_media::FakeMedia>,
}

impl FakeGraph {
    /// The messages sent to `to` (a phone number or a BSUID); created empty when
    /// nothing was sent yet, so a caller can wait on it.
    pub fn inbox(&self, to: &str) -> Arc<Inbox> {
        let mut inboxes = match self.inboxes.lock() {
            Ok(inboxes) => inboxes,
            Err(poisoned) => poisoned.into_inner(),
        };
        inboxes
            .entry(to.to_owned())
            .or_insert_with(|| Arc::new(Inbox::new()))
            .clone()
    }

    /// The recipients that received at least one message.
    pub fn recipients(&self) -> Vec<String> {
        let inboxes = match self.inboxes.lock() {
            Ok(inboxes) => inboxes,
            Err(poisoned) => poisoned.into_inner(),
        };
        inboxes
            .iter()
            .filter(|(_, inbox)| !inbox.is_empty())
            .map(|(to, _)| to.clone())
            .collect()
    }

    /// Every message accepted from now on, as it arrives.
    pub fn subscribe(&self) -> broadcast::Receiver<Reply> {
        self.feed.subscribe()
    }

    /// Where status webhooks go; set once (the first call wins).
    pub fn set_webhook_url(&self, url: String) {
        let _ = self.webhook_url.set(url);
    }

    /// Answers the next send (not a read receipt) with Meta's error `code` (HTTP
    /// 400) instead of accepting it; calls queue up.
    pub fn refuse_next(&self, code: i64) {
        if let Ok(mut refusals) = self.refusals.lock() {
            refusals.push_back(code);
        }
    }

    /// Stops posting statuses (pending deliveries give up) and stops the server.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Starts the fake on `addr` (port 0 for any); the fake and its base URL, the value
/// for `WABOT_GRAPH_API_BASE`.
pub async fn start(addr: SocketAddr, options: Options) -> anyhow::Result<(Arc<FakeGraph>, String)> {
    let fake = Arc::new(FakeGraph {
        options,
        inboxes: Mutex::new(HashMap::new()),
        feed: broadcast::channel(1024).0,
        accepted: AtomicU64::new(0),
        receipts: AtomicU64::new(0),
        statuses: StatusCounts::default(),
        webhook_url: OnceLock::new(),
        refusals: Mutex::new(VecDeque::new()),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        stop: CancellationToken::new(),
        templates: Default::default(),
        media: Arc::default(),
    });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/{version}/{phone}/messages", post(messages))
        .route("/fake/messages", get(list))
        .route(
            "/{version}/{phone}/message_templates",
            get(super::fake_templates::list),
        )
        .with_state(fake.clone())
        .merge(super::fake_media::routes(fake.media.clone()));
    let stop = fake.stop.clone();
    tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .into_future(),
    );
    Ok((fake, url))
}

async fn messages(State(fake): State<Arc<FakeGraph>>, body: Bytes) -> Response {
    let at = Instant::now();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if body["status"] == "read" {
        fake.receipts.fetch_add(1, Ordering::Relaxed);
        return Json(json!({"success": true})).into_response();
    }
    let refusal = fake.refusals.lock().ok().and_then(|mut r| r.pop_front());
    if let Some(code) = refusal {
        return (StatusCode::BAD_REQUEST, Json(meta_error(code))).into_response();
    }
    if let Some(refused) = super::fake_templates::intercept(&fake, &body).await {
        return refused;
    }
    let n = fake.accepted.fetch_add(1, Ordering::Relaxed);
    let wamid = format!("wamid.OUT.{}.{n}", fake.options.run);
    // A username customer is addressed by `recipient` (a BSUID) instead of `to`;
    // `to` wins when both are given.
    let by_phone = body["to"].as_str();
    let bsuid = by_phone.is_none();
    let to = by_phone
        .or_else(|| body["recipient"].as_str())
        .unwrap_or_default()
        .to_owned();
    let reply = Reply {
        at,
        wamid: wamid.clone(),
        to: to.clone(),
        text: headline(&body),
        body,
    };
    let callback = reply.body["biz_opaque_callback_data"]
        .as_str()
        .map(str::to_owned);
    fake.inbox(&to).push(reply.clone());
    // Nobody watching is fine: the feed is for `wabot try`.
    let _ = fake.feed.send(reply);
    if fake.options.statuses.enabled {
        fake.statuses.pending.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(post_statuses(
            fake.clone(),
            wamid.clone(),
            to.clone(),
            callback,
        ));
    }
    let id_field = if bsuid { "user_id" } else { "wa_id" };
    let answer = json!({"messaging_product": "whatsapp",
                        "contacts": [{"input": to, id_field: to}],
                        "messages": [{"id": wamid}]});
    (StatusCode::OK, Json(answer)).into_response()
}

/// Meta's error object for `code`.
fn meta_error(code: i64) -> Value {
    let message = match code {
        131062 => "BSUID recipient not supported for this message",
        131047 => "Re-engagement message",
        131026 => "Message undeliverable",
        _ => "(#100) Invalid parameter",
    };
    json!({"error": {"message": message, "type": "OAuthException", "code": code,
                     "error_data": {"messaging_product": "whatsapp", "details": message},
                     "fbtrace_id": "FAKE"}})
}

/// `GET /fake/messages`: every accepted message, oldest first per recipient.
async fn list(State(fake): State<Arc<FakeGraph>>) -> Json<Value> {
    let mut all: Vec<Reply> = fake
        .recipients()
        .iter()
        .flat_map(|to| fake.inbox(to).replies())
        .collect();
    all.sort_by_key(|r| r.at);
    Json(Value::Array(
        all.into_iter()
            .map(|r| json!({"to": r.to, "wamid": r.wamid, "body": r.body}))
            .collect(),
    ))
}

/// The text a person reads first in a Graph API message body.
pub fn headline(body: &Value) -> String {
    let kind = body["type"].as_str().unwrap_or_default();
    let text = match kind {
        "text" => body["text"]["body"].as_str(),
        "interactive" => body["interactive"]["body"]["text"].as_str(),
        "template" => body["template"]["name"].as_str(),
        "image" | "video" | "document" | "audio" | "sticker" => body[kind]["caption"].as_str(),
        "location" => body["location"]["name"].as_str(),
        _ => None,
    };
    text.unwrap_or_default().to_owned()
}

/// `sent` now, `delivered` after the delay, `read` after the delay again.
async fn post_statuses(fake: Arc<FakeGraph>, wamid: String, to: String, callback: Option<String>) {
    let delay = fake.options.statuses.delay;
    for (k, status) in ["sent", "delivered", "read"].into_iter().enumerate() {
        if k > 0 {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = fake.stop.cancelled() => break,
            }
        }
        let body = status_webhook(
            &fake.options.phone_number_id,
            &wamid,
            &to,
            status,
            callback.as_deref(),
        );
        if !deliver(&fake, body).await {
            fake.statuses.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    fake.statuses.pending.fetch_sub(1, Ordering::Relaxed);
}

/// Posts one status webhook; with redelivery, retries a refusal with a growing
/// delay (250 ms doubling to 4 s) until acked or stopped. Whether it was acked.
async fn deliver(fake: &FakeGraph, body: Vec<u8>) -> bool {
    let Some(url) = fake.webhook_url.get() else {
        return false;
    };
    let header = signature::sign(fake.options.app_secret.as_bytes(), &body);
    let mut backoff = Duration::from_millis(250);
    loop {
        fake.statuses.posted.fetch_add(1, Ordering::Relaxed);
        let response = fake
            .client
            .post(url)
            .header(signature::HEADER, &header)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        if matches!(&response, Ok(r) if r.status() == reqwest::StatusCode::OK) {
            fake.statuses.acked.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        fake.statuses.refused.fetch_add(1, Ordering::Relaxed);
        if !fake.options.statuses.redeliver {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = fake.stop.cancelled() => return false,
        }
        backoff = (backoff * 2).min(Duration::from_secs(4));
    }
}

/// A status webhook in Meta's envelope; `sent` and `delivered` carry the
/// conversation and pricing objects, `read` does not; each carries the send's
/// `biz_opaque_callback_data` when it had one.
pub fn status_webhook(
    phone_number_id: &str,
    wamid: &str,
    to: &str,
    status: &str,
    callback: Option<&str>,
) -> Vec<u8> {
    let now = super::unix_now();
    // A BSUID customer's statuses name them by `recipient_user_id` only.
    let recipient = if crate::whatsapp::webhook::is_bsuid(to) {
        "recipient_user_id"
    } else {
        "recipient_id"
    };
    let mut item = json!({"id": wamid, "status": status, "timestamp": now.to_string(),
                          recipient: to});
    if let Some(callback) = callback {
        item["biz_opaque_callback_data"] = json!(callback);
    }
    if status != "read" {
        let mut conversation = json!({"id": format!("conv-{to}"), "origin": {"type": "service"}});
        if status == "sent" {
            conversation["expiration_timestamp"] = json!((now + 86_400).to_string());
        }
        item["conversation"] = conversation;
        item["pricing"] = json!({"billable": false, "pricing_model": "PMP",
                                 "type": "free_customer_service", "category": "service"});
    }
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_number_id},
            "statuses": [item]}}]}]})
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fake() -> (Arc<FakeGraph>, String) {
        let options = Options {
            run: "t".into(),
            app_secret: "s".into(),
            phone_number_id: "1".into(),
            statuses: StatusOptions {
                enabled: false,
                delay: Duration::ZERO,
                redeliver: false,
            },
        };
        start("127.0.0.1:0".parse().unwrap(), options)
            .await
            .unwrap()
    }

    async fn send(url: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{url}/v24.0/1/messages"))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    #[tokio::test]
    async fn a_bsuid_recipient_is_answered_with_its_user_id_and_to_wins_over_it() {
        let (fake, url) = fake().await;
        let bsuid = "US.13491208655302741918";
        let (status, answer) = send(&url, json!({"recipient": bsuid, "type": "text"})).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer["contacts"],
            json!([{"input": bsuid, "user_id": bsuid}])
        );
        let (_, answer) = send(
            &url,
            json!({"to": "905551112233", "recipient": bsuid, "type": "text"}),
        )
        .await;
        assert_eq!(
            answer["contacts"],
            json!([{"input": "905551112233", "wa_id": "905551112233"}])
        );
        assert_eq!(
            (fake.inbox(bsuid).len(), fake.inbox("905551112233").len()),
            (1, 1)
        );

        fake.refuse_next(131062);
        let (status, answer) = send(&url, json!({"recipient": bsuid, "type": "text"})).await;
        assert_eq!((status, &answer["error"]["code"]), (400, &json!(131062)));
        assert_eq!(fake.inbox(bsuid).len(), 1);
        fake.stop();
    }

    #[test]
    fn a_bsuid_customers_statuses_name_them_by_recipient_user_id_only() {
        let body = status_webhook("1", "wamid.X", "US.1", "sent", None);
        let body: Value = serde_json::from_slice(&body).unwrap();
        let status = &body["entry"][0]["changes"][0]["value"]["statuses"][0];
        assert_eq!(status["recipient_user_id"], "US.1");
        assert!(status.get("recipient_id").is_none(), "{status}");
    }
}
