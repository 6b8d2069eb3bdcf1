//! The operator API: JSON over HTTP under `/v1`, on its own listener
//! (`WABOT_ADMIN_LISTEN`, never the one that faces Meta). Handlers are thin: they
//! check the token's scope, read and validate the request, and call the same
//! `service` functions as the CLI. Errors are RFC 9457 problem documents
//! (`problem.rs`); the OpenAPI document is generated from the handlers' annotations
//! and served at `/v1/openapi.json`.

pub mod auth;
mod body;
mod handlers;
pub mod problem;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::app::AppContext;
use auth::Limiter;
use problem::Problem;

/// The largest request body the API takes (a chatbot document with its Flows).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// What the API's handlers reach.
#[derive(Clone)]
pub struct AdminState {
    pub ctx: Arc<AppContext>,
    pub limiter: Arc<Limiter>,
}

/// The `/v1` router.
pub fn router(ctx: Arc<AppContext>) -> Router {
    let request_timeout = Duration::from_secs(ctx.config.server.request_timeout_secs);
    let state = AdminState {
        ctx,
        limiter: Arc::new(Limiter::default()),
    };
    use handlers::*;
    Router::new()
        .route("/v1/openapi.json", get(openapi_json))
        .route("/v1/status", get(status))
        .route("/v1/conversations", get(list_conversations))
        .route("/v1/conversations/{who}", get(transcript))
        .route("/v1/conversations/{who}/pause", post(pause))
        .route("/v1/conversations/{who}/resume", post(resume))
        .route("/v1/customers/{phone}/opt-out", post(opt_out))
        .route("/v1/customers/{phone}/opt-in", post(opt_in))
        .route("/v1/chatbots", post(import_chatbot))
        .route("/v1/chatbots/validate", post(validate_chatbot))
        .route("/v1/chatbots/{id}/activate", post(activate_chatbot))
        .route("/v1/chatbots/{id}/deactivate", post(deactivate_chatbot))
        .route("/v1/chatbots/{id}/versions", get(chatbot_versions))
        .route("/v1/replay", post(replay))
        .route("/v1/messages", post(send_message))
        .route("/v1/templates", get(list_templates))
        .route("/v1/templates/sync", post(sync_templates))
        .route("/v1/campaigns", get(list_campaigns).post(start_campaign))
        .route("/v1/campaigns/{id}", get(campaign_status))
        .route("/v1/campaigns/{id}/pause", post(pause_campaign))
        .route("/v1/campaigns/{id}/resume", post(resume_campaign))
        .route("/v1/campaigns/{id}/cancel", post(cancel_campaign))
        .route("/v1/webhooks", get(list_webhooks).post(add_webhook))
        .route("/v1/webhooks/{id}", delete(remove_webhook))
        .route("/v1/webhooks/deliveries", get(deliveries))
        .route("/v1/webhooks/deliveries/{id}/resend", post(resend_delivery))
        .fallback(not_found)
        .with_state(state)
        .layer(middleware::from_fn(count_requests))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
}

async fn not_found() -> Problem {
    Problem::not_found("no such route; GET /v1/openapi.json lists them")
}

/// `wabot_api_requests_total` by route template and status.
async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    crate::metrics::api_request(&route, response.status().as_u16());
    response
}

/// The bearer scheme every route but this document's uses.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wabot operator API",
        description = "Conversations, customers, chatbots, messages, templates, campaigns and event endpoints of a \
                       wabot daemon. Authenticate with `Authorization: Bearer <token>` \
                       (`wabot token create`); errors are RFC 9457 problem documents."
    ),
    paths(
        handlers::openapi_json,
        handlers::status,
        handlers::list_conversations,
        handlers::transcript,
        handlers::pause,
        handlers::resume,
        handlers::opt_out,
        handlers::opt_in,
        handlers::import_chatbot,
        handlers::validate_chatbot,
        handlers::activate_chatbot,
        handlers::deactivate_chatbot,
        handlers::chatbot_versions,
        handlers::replay,
        handlers::send_message,
        handlers::list_templates,
        handlers::sync_templates,
        handlers::start_campaign,
        handlers::list_campaigns,
        handlers::campaign_status,
        handlers::pause_campaign,
        handlers::resume_campaign,
        handlers::cancel_campaign,
        handlers::list_webhooks,
        handlers::add_webhook,
        handlers::remove_webhook,
        handlers::deliveries,
        handlers::resend_delivery,
    ),
    components(schemas(Problem, problem::FieldError)),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

/// The OpenAPI document, as served.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

impl IntoResponse for body::Rejected {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}
