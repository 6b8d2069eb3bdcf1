//! The fake Graph API's templates: `GET /{version}/{waba-id}/message_templates`
//! answered page by page with Meta's cursors, and knobs that make template sends fail
//! the ways Meta's do (throughput 130429, pair rate 131056, the number's messaging
//! limit 131048) or hang, for tests and `wabot dev fake-graph`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::fake_graph::FakeGraph;

/// The templates the fake lists, its page size, and the failures queued for
/// template sends.
pub struct Templates {
    listed: Mutex<Vec<Value>>,
    page_size: AtomicUsize,
    failures: Mutex<VecDeque<i64>>,
    hang: AtomicBool,
    /// Listing requests served (pages).
    pub pages_served: AtomicUsize,
    /// Template sends refused with an injected failure.
    pub refused: AtomicUsize,
}

impl Default for Templates {
    fn default() -> Self {
        Templates {
            listed: Mutex::new(Vec::new()),
            page_size: AtomicUsize::new(100),
            failures: Mutex::new(VecDeque::new()),
            hang: AtomicBool::new(false),
            pages_served: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        }
    }
}

impl Templates {
    /// The templates listed from now on (Meta's objects), `page_size` to a page.
    pub fn set(&self, templates: Vec<Value>, page_size: usize) {
        if let Ok(mut listed) = self.listed.lock() {
            *listed = templates;
        }
        self.page_size.store(page_size.max(1), Ordering::Relaxed);
    }

    /// The next `n` template sends are refused with Meta's error `code`.
    pub fn fail_next(&self, n: usize, code: i64) {
        if let Ok(mut f) = self.failures.lock() {
            f.extend(std::iter::repeat(code).take(n));
        }
    }

    /// Template sends are not answered (and not accepted) while set.
    pub fn hang(&self, on: bool) {
        self.hang.store(on, Ordering::Relaxed);
    }
}

/// `GET /{version}/{waba}/message_templates?after=CURSOR`: a page, and the cursor of
/// the next one while there is one. The cursor is the index of the page's first
/// template, as text.
pub async fn list(
    State(fake): State<Arc<FakeGraph>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Json<Value> {
    let t = &fake.templates;
    t.pages_served.fetch_add(1, Ordering::Relaxed);
    let listed = t.listed.lock().map(|l| l.clone()).unwrap_or_default();
    let size = t.page_size.load(Ordering::Relaxed);
    let start: usize = query
        .get("after")
        .and_then(|a| a.strip_prefix("cursor-"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let end = (start + size).min(listed.len());
    let data: Vec<Value> = listed.get(start..end).unwrap_or_default().to_vec();
    let mut paging = json!({"cursors": {"before": format!("cursor-{start}"),
                                        "after": format!("cursor-{end}")}});
    if end < listed.len() {
        paging["next"] = json!(format!("https://graph.invalid/next?after=cursor-{end}"));
    }
    Json(json!({"data": data, "paging": paging}))
}

/// A template send's injected failure, if one is queued (or the hang is on):
/// answered here instead of accepted.
pub async fn intercept(fake: &FakeGraph, body: &Value) -> Option<Response> {
    if body["type"] != "template" {
        return None;
    }
    let t = &fake.templates;
    if t.hang.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
    let code = t.failures.lock().ok()?.pop_front()?;
    t.refused.fetch_add(1, Ordering::Relaxed);
    let (status, message) = match code {
        130429 => (StatusCode::TOO_MANY_REQUESTS, "Rate limit hit"),
        131056 => (
            StatusCode::BAD_REQUEST,
            "(Business Account, Consumer Account) pair rate limit hit",
        ),
        131048 => (StatusCode::BAD_REQUEST, "Spam rate limit hit"),
        _ => (StatusCode::BAD_REQUEST, "Injected failure"),
    };
    Some(
        (
            status,
            Json(
                json!({"error": {"message": message, "type": "OAuthException", "code": code,
                                  "error_data": {"messaging_product": "whatsapp",
                                                 "details": message},
                                  "fbtrace_id": "FAKE"}}),
            ),
        )
            .into_response(),
    )
}
