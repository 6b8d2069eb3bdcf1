//! Errors of the operator API, in one shape: RFC 9457 problem documents
//! (`application/problem+json`), with the fields a validation error names.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::service::{messages::Refused, webhooks::Invalid, NotFound};

/// One field a request got wrong.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field, as a path into the body (`text`, `events[1]`) or a parameter.
    pub field: String,
    pub detail: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:wabot:problem:<kind>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The fields at fault (validation errors).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:wabot:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// A request that names a field wrongly.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Problem {
        let detail = detail.into();
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            format!("{field}: {detail}"),
        );
        p.errors.push(FieldError {
            field: field.to_owned(),
            detail,
        });
        p
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    pub fn unauthorized(detail: &str) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn internal(e: &anyhow::Error) -> Problem {
        tracing::error!(error = %format!("{e:#}"), "operator API request failed");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{e:#}"),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wabot\""),
            );
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<anyhow::Error> for Problem {
    fn from(e: anyhow::Error) -> Problem {
        if let Some(nf) = e.downcast_ref::<NotFound>() {
            return Problem::not_found(nf.0.clone());
        }
        if let Some(invalid) = e.downcast_ref::<Invalid>() {
            return Problem::from_invalid(invalid);
        }
        if is_unavailable(&e) {
            return Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("{e:#}"),
            );
        }
        Problem::internal(&e)
    }
}

impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Problem {
        Problem::from(anyhow::Error::new(e))
    }
}

impl Problem {
    pub fn from_invalid(invalid: &Invalid) -> Problem {
        let field = match invalid {
            Invalid::Url(_) => "url",
            Invalid::Events(_) => "events",
            Invalid::Description => "description",
        };
        let text = invalid.to_string();
        let detail = text
            .strip_prefix(&format!("{field}: "))
            .unwrap_or(&text)
            .to_owned();
        Problem::invalid(field, detail)
    }
}

impl From<Refused> for Problem {
    fn from(r: Refused) -> Problem {
        match r {
            Refused::Invalid(field, detail) => Problem::invalid(field, detail),
            Refused::NoConversation(_) => {
                Problem::new(StatusCode::NOT_FOUND, "no-conversation", r.to_string())
            }
            Refused::WindowClosed(..) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "window-closed",
                r.to_string(),
            ),
            Refused::OptedOut(..) => Problem::new(StatusCode::CONFLICT, "opted-out", r.to_string()),
            Refused::KeyReused(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                r.to_string(),
            ),
            Refused::Database(e) => Problem::from(e),
        }
    }
}

/// The database cannot be reached just now: a 503 the client may retry.
fn is_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed)
        )
    })
}
