//! The engine's [`HttpClient`] over reqwest, for rest_api nodes: a total timeout per
//! request, a cap on the response size, and the egress guard (see [`super`]) on
//! every connection and redirect. Error texts never carry the URL, whose query string
//! may hold an API key.

use std::sync::Arc;

use ipnet::IpNet;

use super::{blocked_cause, client_builder, error_text, Guard, Redirects};
use crate::config::Config;
use crate::engine::http::{HttpClient, HttpError, HttpRequest, HttpResponse};

/// A reqwest client that implements the engine's HTTP interface.
#[derive(Debug, Clone)]
pub struct ReqwestHttp {
    client: reqwest::Client,
    guard: Arc<Guard>,
    max_response_bytes: usize,
}

/// What the client may reach and read.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Private or local networks that are reachable anyway.
    pub allowed_networks: Vec<IpNet>,
    /// Whether every address is reachable (the terminal simulator, where the
    /// person who runs it also wrote the chatbot).
    pub allow_all: bool,
    pub max_response_bytes: usize,
}

impl ReqwestHttp {
    pub fn new(config: &Config) -> anyhow::Result<ReqwestHttp> {
        Ok(ReqwestHttp::with_options(HttpOptions {
            allowed_networks: config.datasource.allowed_networks.clone(),
            allow_all: false,
            max_response_bytes: config.datasource.max_response_bytes,
        })?)
    }

    pub fn with_options(options: HttpOptions) -> Result<ReqwestHttp, reqwest::Error> {
        let guard = Arc::new(if options.allow_all {
            Guard::allow_all()
        } else {
            Guard::new(options.allowed_networks)
        });
        let client = client_builder(guard.clone(), Redirects::Checked).build()?;
        Ok(ReqwestHttp {
            client,
            guard,
            max_response_bytes: options.max_response_bytes,
        })
    }
}

impl HttpClient for ReqwestHttp {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let started = std::time::Instant::now();
        let result = self.exchange(request).await;
        let outcome = match &result {
            Ok(r) if r.status < 400 => "ok",
            Ok(_) => "http_error",
            Err(HttpError::Timeout) => "timeout",
            Err(HttpError::Forbidden(_)) => "refused",
            Err(HttpError::InvalidRequest(_)) => "invalid",
            Err(_) => "error",
        };
        crate::metrics::http_call("rest_api", outcome, started.elapsed());
        result
    }
}

impl ReqwestHttp {
    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        // The request's Debug leaves out header values, the query and the body.
        tracing::debug!(?request, "rest_api request");
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        if url.host().is_none() {
            return Err(HttpError::InvalidRequest("the URL has no host".into()));
        }
        self.guard
            .check_url(&url)
            .map_err(|e| HttpError::Forbidden(e.to_string()))?;
        let mut builder = self
            .client
            .request(request.method, url)
            .timeout(request.timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let exchange = async {
            let mut response = builder.send().await.map_err(classify)?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(classify)? {
                if body.len() + chunk.len() > self.max_response_bytes {
                    return Err(HttpError::Transport(format!(
                        "the response is larger than {} bytes",
                        self.max_response_bytes
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(HttpResponse { status, body })
        };
        // reqwest's timeout covers the body too; this outer one is a backstop.
        match tokio::time::timeout(
            request.timeout + std::time::Duration::from_millis(100),
            exchange,
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout),
        }
    }
}

fn classify(error: reqwest::Error) -> HttpError {
    if error.is_timeout() {
        return HttpError::Timeout;
    }
    if let Some(blocked) = blocked_cause(&error) {
        return HttpError::Forbidden(blocked.to_string());
    }
    HttpError::Transport(error_text(error))
}
