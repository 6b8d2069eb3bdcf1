//! The fake Graph API: answers `POST /{version}/{phone}/messages` like Meta (a fresh
//! wamid per accepted message), records every reply per customer, and, like Meta,
//! posts signed status webhooks back to wabot's `/webhook` for every accepted reply:
//! `sent` at once, `delivered` after the status delay, `read` after twice that.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wabot::whatsapp::signature;

use super::scenario::{user_index, BUSINESS, SECRET};

/// One reply as the fake Graph API received it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub at: Instant,
    pub text: String,
}

/// One customer's replies, and their count for customers waiting on it.
pub struct Inbox {
    log: Mutex<Vec<Reply>>,
    count: watch::Sender<usize>,
}

impl Inbox {
    pub fn replies(&self) -> Vec<Reply> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until at least `n` replies arrived; false when `deadline` came first.
    pub async fn wait_for(&self, n: usize, deadline: Instant) -> bool {
        let mut rx = self.count.subscribe();
        let deadline = tokio::time::Instant::from_std(deadline);
        let done = matches!(
            tokio::time::timeout_at(deadline, rx.wait_for(|c| *c >= n)).await,
            Ok(Ok(_))
        );
        done
    }
}

/// How statuses are posted back.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    pub enabled: bool,
    /// `delivered` this long after `sent`, `read` as long after `delivered`.
    pub delay: Duration,
    /// Redeliver a refused status later, as Meta does (the soak); otherwise count it
    /// refused and drop it (the load driver: refusals are a figure of their own).
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
    run: String,
    inboxes: Vec<Inbox>,
    /// Messages accepted (a wamid returned).
    pub accepted: AtomicU64,
    /// Read receipts / typing indicators (`status: read` bodies).
    pub receipts: AtomicU64,
    /// Sends to a recipient that is none of the customers.
    pub strangers: AtomicU64,
    pub statuses: StatusCounts,
    status_options: StatusOptions,
    /// wabot's `/webhook`, known once the daemon listens.
    webhook_url: OnceLock<String>,
    client: reqwest::Client,
    stop: CancellationToken,
}

impl FakeGraph {
    pub fn inbox(&self, u: usize) -> &Inbox {
        &self.inboxes[u]
    }

    pub fn set_webhook_url(&self, url: String) {
        let _ = self.webhook_url.set(url);
    }

    /// Stops posting statuses (pending deliveries give up) and stops the server.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Starts the fake Graph API on 127.0.0.1 for `customers` customers; its base URL.
pub async fn start(
    run: &str,
    customers: usize,
    status_options: StatusOptions,
) -> anyhow::Result<(Arc<FakeGraph>, String)> {
    let fake = Arc::new(FakeGraph {
        run: run.to_owned(),
        inboxes: (0..customers)
            .map(|_| Inbox {
                log: Mutex::new(Vec::new()),
                count: watch::channel(0).0,
            })
            .collect(),
        accepted: AtomicU64::new(0),
        receipts: AtomicU64::new(0),
        strangers: AtomicU64::new(0),
        statuses: StatusCounts::default(),
        status_options,
        webhook_url: OnceLock::new(),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        stop: CancellationToken::new(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/{version}/{phone}/messages", post(messages))
        .with_state(fake.clone());
    let stop = fake.stop.clone();
    tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .into_future(),
    );
    Ok((fake, url))
}

async fn messages(State(fake): State<Arc<FakeGraph>>, body: Bytes) -> Json<Value> {
    let at = Instant::now();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if body["status"] == "read" {
        fake.receipts.fetch_add(1, Ordering::Relaxed);
        return Json(json!({"success": true}));
    }
    let n = fake.accepted.fetch_add(1, Ordering::Relaxed);
    let wamid = format!("wamid.OUT.{}.{n}", fake.run);
    let to = body["to"].as_str().unwrap_or_default().to_owned();
    let text = body["text"]["body"]
        .as_str()
        .or_else(|| body["interactive"]["body"]["text"].as_str())
        .unwrap_or_default()
        .to_owned();
    match user_index(&to).and_then(|u| fake.inboxes.get(u)) {
        Some(inbox) => {
            if let Ok(mut log) = inbox.log.lock() {
                log.push(Reply { at, text });
            }
            inbox.count.send_modify(|c| *c += 1);
        }
        None => {
            fake.strangers.fetch_add(1, Ordering::Relaxed);
        }
    }
    if fake.status_options.enabled {
        fake.statuses.pending.fetch_add(1, Ordering::Relaxed);
        // Meta echoes the send's callback data in every status of the message.
        let callback = body["biz_opaque_callback_data"].as_str().map(str::to_owned);
        tokio::spawn(post_statuses(
            fake.clone(),
            wamid.clone(),
            to.clone(),
            callback,
        ));
    }
    Json(json!({"messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid}]}))
}

/// `sent` now, `delivered` after the delay, `read` after the delay again.
async fn post_statuses(fake: Arc<FakeGraph>, wamid: String, to: String, callback: Option<String>) {
    let delay = fake.status_options.delay;
    for (k, status) in ["sent", "delivered", "read"].into_iter().enumerate() {
        if k > 0 {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = fake.stop.cancelled() => break,
            }
        }
        if !deliver(
            &fake,
            status_webhook(&wamid, &to, status, callback.as_deref()),
        )
        .await
        {
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
    let header = signature::sign(SECRET.as_bytes(), &body);
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
        if !fake.status_options.redeliver {
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
fn status_webhook(wamid: &str, to: &str, status: &str, callback: Option<&str>) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut item = json!({"id": wamid, "status": status, "timestamp": now.to_string(),
                          "recipient_id": to});
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
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": BUSINESS},
            "statuses": [item]}}]}]})
    .to_string()
    .into_bytes()
}
