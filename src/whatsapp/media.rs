//! Meta's media download protocol (PROTOCOL.md "Media download"), and only that.
//!
//! `GET /{version}/{media-id}` with the bearer token answers `{url, mime_type,
//! sha256, file_size, id}`; `GET <url>` with the same token streams the bytes. The
//! URL is valid for about five minutes, so an answer of 401, 403 or 404 from it
//! means "resolve the id again" ([`FetchError::Expired`]), not "gone". Media ids of
//! inbound media stay retrievable for about seven days.
//!
//! The download URL is never logged: it is Meta's signed link to the customer's
//! file. The token travels in a header only.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use secrecy::ExposeSecret;
use serde::Deserialize;

use crate::config::WhatsAppConfig;
use crate::credentials::Credentials;
use crate::whatsapp::graph::{GraphError, MetaError};

/// The media kinds a message can carry, with Meta's size limit for each: images 5
/// MB, audio and video 16 MB, documents 100 MB, stickers 500 KB (animated; static
/// ones are smaller still).
pub fn max_bytes(kind: &str) -> Option<u64> {
    const MB: u64 = 1024 * 1024;
    match kind {
        "image" => Some(5 * MB),
        "audio" | "video" => Some(16 * MB),
        "document" => Some(100 * MB),
        "sticker" => Some(500 * 1024),
        _ => None,
    }
}

/// What `GET /{media-id}` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct MediaInfo {
    pub url: String,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    /// Meta sends it as a number; some answers carry it as a string.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub file_size: Option<u64>,
    #[serde(default)]
    pub id: Option<String>,
}

impl std::fmt::Display for MediaInfo {
    /// Without the URL (see the module's note).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "media {} ({}, {} bytes)",
            self.id.as_deref().unwrap_or("?"),
            self.mime_type.as_deref().unwrap_or("no type"),
            self.file_size
                .map_or_else(|| "unknown".to_owned(), |n| n.to_string())
        )
    }
}

fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(match value {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// Why the bytes could not be fetched from a media URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// 401, 403 or 404 from the URL: it expired; resolve the media id again.
    #[error("the media URL expired (HTTP {0})")]
    Expired(u16),
    /// Any other non-2xx answer.
    #[error("the media URL answered HTTP {0}")]
    Status(u16),
    #[error("the media download timed out")]
    Timeout,
    #[error("cannot reach the media URL: {0}")]
    Transport(String),
    #[error("no WhatsApp credentials: {0} is not configured")]
    NotConfigured(&'static str),
}

impl FetchError {
    /// Whether trying again later may help.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Status(status) => *status == 429 || *status >= 500,
            FetchError::NotConfigured(_) => false,
            _ => true,
        }
    }
}

/// A media body on its way: where it starts in the file, its announced length and
/// its bytes.
pub struct MediaBody {
    /// 0 for a whole file (200); the first byte's position for a range (206).
    pub offset: u64,
    pub content_length: Option<u64>,
    pub chunks: BoxStream<'static, Result<Bytes, FetchError>>,
}

/// The Graph API client of media downloads. Its own `reqwest::Client`: a download
/// of 100 MB must not be cut by the message calls' total timeout; it has a connect
/// timeout and a read timeout (a stalled transfer), and the caller bounds the
/// whole download.
#[derive(Clone)]
pub struct MediaClient {
    http: reqwest::Client,
    base: String,
    version: String,
    /// The timeout of the `GET /{media-id}` call (`WABOT_GRAPH_TIMEOUT_MS`).
    resolve_timeout: Duration,
}

impl MediaClient {
    pub fn new(config: &WhatsAppConfig) -> Result<MediaClient, reqwest::Error> {
        let timeout = Duration::from_millis(config.graph_timeout_ms);
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .read_timeout(timeout.max(Duration::from_secs(1)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("wabot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(MediaClient {
            http,
            base: config.graph_api_base.trim_end_matches('/').to_owned(),
            version: config.graph_api_version.clone(),
            resolve_timeout: timeout,
        })
    }

    /// `GET /{version}/{media-id}`: where the bytes are now, and what Meta says of
    /// them.
    pub async fn resolve(
        &self,
        credentials: &Credentials,
        media_id: &str,
    ) -> Result<MediaInfo, GraphError> {
        let token = credentials
            .access_token
            .as_ref()
            .ok_or(GraphError::NotConfigured("the access token"))?;
        if !is_media_id(media_id) {
            // Never becomes a path: refused as Meta refuses an unknown id.
            return Err(GraphError::Meta {
                status: 400,
                error: MetaError {
                    message: format!("`{media_id}` is not a media id"),
                    code: 100,
                    ..MetaError::default()
                },
            });
        }
        let version = credentials.api_version.as_deref().unwrap_or(&self.version);
        let url = format!("{}/{version}/{media_id}", self.base);
        let response = self
            .http
            .get(&url)
            .bearer_auth(token.expose_secret())
            .timeout(self.resolve_timeout)
            .send()
            .await
            .map_err(graph_transport)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(graph_transport)?;
        if (200..300).contains(&status) {
            return match serde_json::from_str::<MediaInfo>(&text) {
                Ok(info) if !info.url.is_empty() => Ok(info),
                _ => Err(GraphError::Unexpected { status, body: text }),
            };
        }
        #[derive(Deserialize)]
        struct Envelope {
            error: MetaError,
        }
        Err(match serde_json::from_str::<Envelope>(&text) {
            Ok(envelope) => GraphError::Meta {
                status,
                error: envelope.error,
            },
            Err(_) => GraphError::Unexpected { status, body: text },
        })
    }

    /// `GET <url>` with the token: the body as a stream, once the answer is a 2xx.
    /// From `from` > 0 it asks for the rest only (`Range: bytes=from-`); a server
    /// that ignores the range answers the whole file (offset 0).
    pub async fn fetch(
        &self,
        credentials: &Credentials,
        url: &str,
        from: u64,
    ) -> Result<MediaBody, FetchError> {
        let token = credentials
            .access_token
            .as_ref()
            .ok_or(FetchError::NotConfigured("the access token"))?;
        let mut request = self.http.get(url).bearer_auth(token.expose_secret());
        if from > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={from}-"));
        }
        let response = request.send().await.map_err(fetch_transport)?;
        let status = response.status().as_u16();
        match status {
            200..=299 => Ok(MediaBody {
                offset: if status == 206 {
                    response
                        .headers()
                        .get(reqwest::header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(range_start)
                        // A 206 that does not say where it starts cannot be appended.
                        .ok_or(FetchError::Status(206))?
                } else {
                    0
                },
                content_length: response.content_length(),
                chunks: response.bytes_stream().map_err(fetch_transport).boxed(),
            }),
            401 | 403 | 404 => Err(FetchError::Expired(status)),
            _ => Err(FetchError::Status(status)),
        }
    }
}

/// The first byte's position in a `Content-Range: bytes START-END/TOTAL` header.
pub fn range_start(value: &str) -> Option<u64> {
    let range = value.trim().strip_prefix("bytes ")?;
    range.split_once('-')?.0.trim().parse().ok()
}

/// Meta's media ids are digits; anything outside a conservative alphabet is refused
/// before it becomes part of a URL path.
pub fn is_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn graph_transport(e: reqwest::Error) -> GraphError {
    if e.is_timeout() {
        return GraphError::Timeout;
    }
    GraphError::Transport(crate::egress::error_text(e))
}

fn fetch_transport(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout;
    }
    FetchError::Transport(crate::egress::error_text(e))
}

/// Whether `expected` (Meta's `sha256`: base64 in webhooks, hex from the media
/// endpoint) names `digest`.
pub fn checksum_matches(expected: &str, digest: &[u8]) -> bool {
    use base64::Engine as _;
    let expected = expected.trim();
    if expected.len() == 64 && expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(expected).is_ok_and(|d| d == digest);
    }
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .any(|e| e.decode(expected).is_ok_and(|d| d == digest))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use sha2::Digest;

    use super::*;

    #[test]
    fn checksums_match_in_hex_or_base64_and_nothing_else() {
        let digest = sha2::Sha256::digest(b"hello");
        let hex = hex::encode(digest);
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
        for good in [hex.clone(), hex.to_uppercase(), b64, url] {
            assert!(checksum_matches(&good, &digest), "{good}");
        }
        let other = sha2::Sha256::digest(b"hellO");
        assert!(!checksum_matches(&hex::encode(other), &digest));
        assert!(!checksum_matches("c2hhMjU2LWltYWdl", &digest));
        assert!(!checksum_matches("", &digest));
    }

    #[test]
    fn a_content_range_says_where_the_body_starts() {
        assert_eq!(range_start("bytes 50000-199999/200000"), Some(50_000));
        assert_eq!(range_start("bytes 0-9/*"), Some(0));
        assert_eq!(range_start("items 1-2/3"), None);
        assert_eq!(range_start("bytes */200"), None);
    }

    #[test]
    fn limits_are_meta_s_and_ids_are_checked() {
        assert_eq!(max_bytes("image"), Some(5 * 1024 * 1024));
        assert_eq!(max_bytes("sticker"), Some(500 * 1024));
        assert_eq!(max_bytes("text"), None);
        assert!(is_media_id("1000000000000001"));
        assert!(!is_media_id("../me"));
        assert!(!is_media_id("1?x=2"));
    }

    #[test]
    fn the_media_endpoint_answer_parses_and_prints_without_its_url() {
        let info: MediaInfo = serde_json::from_str(
            r#"{"url":"https://lookaside.example/secret?hash=x","mime_type":"image/jpeg",
                "sha256":"abc","file_size":"1234","id":"77","messaging_product":"whatsapp"}"#,
        )
        .unwrap();
        assert_eq!(info.file_size, Some(1234));
        assert!(!info.to_string().contains("lookaside"));
    }
}
