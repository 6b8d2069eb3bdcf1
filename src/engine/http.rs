//! The HTTP interface the engine calls rest_api nodes through. The caller provides
//! the implementation (`egress::rest_api` over reqwest; tests use a loopback
//! server), so the engine itself never touches the network.

use std::future::Future;
use std::time::Duration;

/// The URL scheme of a data source connection: a question with `dynamicConnectionId`
/// asks the caller for `wabot-connection:<id>` with the context's variables as the
/// JSON body, and expects a JSON array of `{id, title, description?}` back.
pub const CONNECTION_SCHEME: &str = "wabot-connection:";

/// One request a rest_api node makes, fully built. Debug shows the URL without its
/// query, header names without values and the body's size: all may hold keys.
#[derive(Clone, PartialEq)]
pub struct HttpRequest {
    pub method: http::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// The whole request's deadline; the implementation must honour it.
    pub timeout: Duration,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &crate::text::redact_url(&self.url))
            .field("headers", &names)
            .field(
                "body",
                &self.body.as_ref().map(|b| format!("<{} bytes>", b.len())),
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why no response came back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HttpError {
    #[error("the request timed out")]
    Timeout,
    #[error("the URL is not allowed: {0}")]
    Forbidden(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Transport(String),
}

/// Sends one HTTP request. The future must be `Send` so turns can run on any
/// worker task.
pub trait HttpClient: Sync {
    fn send(
        &self,
        request: HttpRequest,
    ) -> impl Future<Output = Result<HttpResponse, HttpError>> + Send;
}

/// A client that refuses every request, for turns known not to need HTTP and for
/// benchmarks of graphs without rest_api nodes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHttp;

impl HttpClient for NoHttp {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        Err(HttpError::Forbidden(format!(
            "no HTTP client for {}",
            crate::text::redact_url(&request.url)
        )))
    }
}
