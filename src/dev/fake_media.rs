//! Media in the fake Graph API: `GET /{version}/{media-id}` answers like Meta
//! (`{url, mime_type, sha256, file_size, id}`) and the URL serves the bytes to a
//! bearer token, as Meta's do. A test puts media in with [`FakeMedia::put`] and can
//! make it misbehave the ways Meta's does ([`Knobs`]): a URL that expires after N
//! bytes or after one use, a wrong checksum, a file over the limit whose size is not
//! announced, an outage of the media endpoint, a stalled transfer, `Range` ignored. An id it was not given is refused
//! as Meta refuses an unknown or expired one (code 100).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use futures::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

/// How one media item misbehaves.
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    /// The first `expiring_urls` URLs handed out for it break after this many bytes
    /// and expire: later GETs of them answer 404, as Meta's expired URLs do.
    pub expire_after_bytes: Option<usize>,
    /// How many URLs expire that way (at least one when `expire_after_bytes` is set).
    pub expiring_urls: u32,
    /// Each URL serves one GET; a second one answers 404.
    pub one_use: bool,
    /// The media endpoint announces the sha256 of other bytes.
    pub wrong_checksum: bool,
    /// Neither the media endpoint nor the URL says how large the file is (no
    /// `file_size`, a chunked body): a size limit must hold while streaming.
    pub hide_size: bool,
    /// The first this many `GET /{media-id}` answer 500 with Meta's code 2
    /// (service temporarily unavailable).
    pub resolve_failures: u32,
    /// The body stops after this many bytes and never goes on (a stalled transfer).
    pub stall_after_bytes: Option<usize>,
    /// Its URLs ignore `Range` (the whole file, 200), as some servers do.
    pub no_range: bool,
    /// A range it serves has its first byte changed (pieces that do not fit).
    pub bad_ranges: bool,
}

struct Item {
    bytes: Bytes,
    mime_type: String,
    knobs: Knobs,
    /// URLs handed out so far.
    urls: u32,
}

struct Url {
    media_id: String,
    /// Bytes served before the connection breaks and the URL expires.
    break_after: Option<usize>,
    one_use: bool,
    used: bool,
    expired: bool,
}

/// The fake's media.
#[derive(Default)]
pub struct FakeMedia {
    items: Mutex<HashMap<String, Item>>,
    urls: Mutex<HashMap<String, Url>>,
    next: AtomicU64,
    /// `GET /{media-id}` calls answered.
    pub resolves: AtomicU64,
    /// GETs of media URLs (expired ones included).
    pub downloads: AtomicU64,
    /// GETs answered with a range of the file (206).
    pub ranges: AtomicU64,
    /// Bytes of media sent.
    pub bytes_served: AtomicU64,
}

impl FakeMedia {
    /// Serves `bytes` as `media_id`; the sha256 a webhook carries for it (base64,
    /// as Meta's webhooks have it).
    pub fn put(&self, media_id: &str, bytes: impl Into<Bytes>, mime_type: &str) -> String {
        self.put_with(media_id, bytes, mime_type, Knobs::default())
    }

    pub fn put_with(
        &self,
        media_id: &str,
        bytes: impl Into<Bytes>,
        mime_type: &str,
        knobs: Knobs,
    ) -> String {
        let bytes = bytes.into();
        let sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
        let item = Item {
            bytes,
            mime_type: mime_type.to_owned(),
            knobs,
            urls: 0,
        };
        lock(&self.items).insert(media_id.to_owned(), item);
        sha
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The routes, to merge into the fake Graph API.
pub fn routes(media: Arc<FakeMedia>) -> Router {
    Router::new()
        .route("/{version}/{media_id}", get(resolve))
        .route("/fake/media/{url}", get(download))
        .with_state(media)
}

fn meta_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "OAuthException", "code": code,
                                "fbtrace_id": "FAKE"}});
    (status, Json(body)).into_response()
}

fn has_bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7)
}

async fn resolve(
    State(media): State<Arc<FakeMedia>>,
    Path((_version, media_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !has_bearer(&headers) {
        return meta_error(StatusCode::UNAUTHORIZED, 190, "no access token");
    }
    media.resolves.fetch_add(1, Ordering::Relaxed);
    let mut items = lock(&media.items);
    let Some(item) = items.get_mut(&media_id) else {
        return meta_error(
            StatusCode::BAD_REQUEST,
            100,
            "Unsupported get request. Object does not exist",
        );
    };
    if item.knobs.resolve_failures > 0 {
        item.knobs.resolve_failures -= 1;
        return meta_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            2,
            "Service temporarily unavailable",
        );
    }
    item.urls += 1;
    let k = &item.knobs;
    let expiring = k
        .expiring_urls
        .max(u32::from(k.expire_after_bytes.is_some()));
    let url = Url {
        media_id: media_id.clone(),
        break_after: k.expire_after_bytes.filter(|_| item.urls <= expiring),
        one_use: k.one_use,
        used: false,
        expired: false,
    };
    let token = format!("m{}", media.next.fetch_add(1, Ordering::Relaxed));
    lock(&media.urls).insert(token.clone(), url);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let sha = if k.wrong_checksum {
        hex::encode(Sha256::digest(b"other bytes"))
    } else {
        hex::encode(Sha256::digest(&item.bytes))
    };
    let mut body = json!({"messaging_product": "whatsapp",
                          "url": format!("http://{host}/fake/media/{token}"),
                          "mime_type": item.mime_type, "sha256": sha, "id": media_id});
    if !k.hide_size {
        body["file_size"] = json!(item.bytes.len());
    }
    Json(body).into_response()
}

async fn download(
    State(media): State<Arc<FakeMedia>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    media.downloads.fetch_add(1, Ordering::Relaxed);
    if !has_bearer(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let (media_id, break_after) = {
        let mut urls = lock(&media.urls);
        let Some(url) = urls.get_mut(&token) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        if url.expired || (url.one_use && url.used) {
            return StatusCode::NOT_FOUND.into_response();
        }
        url.used = true;
        if url.break_after.is_some() {
            // It breaks this time and is gone after.
            url.expired = true;
        }
        (url.media_id.clone(), url.break_after)
    };
    let (bytes, mime, hide_size, stall, no_range, bad_ranges) = {
        let items = lock(&media.items);
        let Some(item) = items.get(&media_id) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        (
            item.bytes.clone(),
            item.mime_type.clone(),
            item.knobs.hide_size,
            item.knobs.stall_after_bytes,
            item.knobs.no_range,
            item.knobs.bad_ranges,
        )
    };
    // `Range: bytes=N-` (what a resumed download asks for), unless told to ignore it.
    let total = bytes.len();
    let from = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n < total && !no_range);
    let bytes = match from {
        Some(n) => {
            media.ranges.fetch_add(1, Ordering::Relaxed);
            let mut rest = bytes.slice(n..).to_vec();
            if bad_ranges {
                rest[0] = rest[0].wrapping_add(1);
            }
            Bytes::from(rest)
        }
        None => bytes,
    };
    // 16 KiB chunks, as a CDN streams; a break sends what comes before it, then
    // fails the body (the connection is cut mid-way).
    let len = bytes.len();
    let cut = break_after.or(stall).map(|n| n.min(len));
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    // (The break, when there is one, comes after these.)
    let end = cut.unwrap_or(len);
    media.bytes_served.fetch_add(end as u64, Ordering::Relaxed);
    let mut at = 0;
    while at < end {
        let next = (at + 16 * 1024).min(end);
        chunks.push(Ok(bytes.slice(at..next)));
        at = next;
    }
    let body = futures::stream::iter(chunks);
    let body = if break_after.is_some() {
        // The bytes before the break reach the client (hyper flushes them while the
        // break waits), then the connection is cut.
        let cut = futures::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            Err(std::io::Error::other("the URL expired mid-way"))
        });
        Body::from_stream(body.chain(cut))
    } else if stall.is_some() {
        Body::from_stream(body.chain(futures::stream::pending()))
    } else {
        Body::from_stream(body)
    };
    let mut response = Response::builder().header(header::CONTENT_TYPE, mime);
    response = match from {
        Some(n) => response.status(StatusCode::PARTIAL_CONTENT).header(
            header::CONTENT_RANGE,
            format!("bytes {n}-{}/{total}", total - 1),
        ),
        None => response.status(StatusCode::OK),
    };
    if !hide_size {
        response = response.header(header::CONTENT_LENGTH, len);
    }
    response
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
