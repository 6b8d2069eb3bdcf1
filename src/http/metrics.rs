//! `GET /metrics`: Prometheus' text exposition of everything [`crate::metrics`]
//! records. Served on the main listener, or on `WABOT_METRICS_LISTEN` alone when
//! that is set (the main listener faces Meta and the internet; queue depths and
//! error rates are nobody else's business).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The exposition format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/metrics", get(scrape))
}

async fn scrape() -> Response {
    match crate::metrics::render() {
        Some(text) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "metrics are not recorded by this process",
        )
            .into_response(),
    }
}
