//! HTTP routes and handlers. Handlers stay thin: they check what the wire demands
//! (signatures, sizes), call into `whatsapp`, `store` or `worker`, and map errors to
//! status codes in one place.

pub mod admin;
mod flows;
mod health;
pub mod metrics;
pub mod server;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::app::AppContext;
use crate::worker::ingest::IngestHandle;

/// What every handler can reach: the application context (through `Deref`) and
/// the way into the ingest stage.
#[derive(Clone)]
pub struct AppState {
    pub ctx: Arc<AppContext>,
    pub ingest: IngestHandle,
}

impl std::ops::Deref for AppState {
    type Target = AppContext;
    fn deref(&self) -> &AppContext {
        &self.ctx
    }
}

/// The whole router, with request ids, tracing and a request timeout.
pub fn router(state: AppState) -> Router {
    let request_timeout = Duration::from_secs(state.config.server.request_timeout_secs);
    let on_main = state.config.server.metrics_listen.is_none();
    Router::new()
        .merge(health::routes())
        .merge(if on_main { metrics::routes() } else { Router::new() })
        .merge(webhook::routes())
        .merge(flows::routes(&state.config.flows.endpoint_path))
        .with_state(state)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, request_timeout))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                // The default logs every 5xx at ERROR: under overload that was a line
                // per shed webhook (42,000 in a 30 s run), undoing the handlers'
                // throttled logging and costing CPU when there is none to spare. The
                // handlers log their own failures; the count is in the metrics.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
