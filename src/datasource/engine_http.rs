//! The HTTP the engine asks for during a turn, answered the same way by the daemon's
//! turns and by `wabot replay --real-http`: rest_api nodes go out through the guarded
//! reqwest client; the `wabot-connection:<id>` requests of dynamic questions are
//! answered from that data source connection.

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::DataSourceClient;
use crate::egress::rest_api::ReqwestHttp;
use crate::engine::http::{HttpClient, HttpError, HttpRequest, HttpResponse, CONNECTION_SCHEME};

pub struct EngineHttp {
    pub rest: ReqwestHttp,
    pub pool: PgPool,
    pub datasources: DataSourceClient,
}

impl HttpClient for EngineHttp {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let Some(id) = request.url.strip_prefix(CONNECTION_SCHEME) else {
            return self.rest.send(request).await;
        };
        let id = Uuid::parse_str(id)
            .map_err(|_| HttpError::InvalidRequest(format!("`{id}` is not a connection id")))?;
        let input: Value = request
            .body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        let resolve = super::resolve_connection_items(&self.pool, &self.datasources, id, &input);
        match tokio::time::timeout(request.timeout, resolve).await {
            Err(_) => Err(HttpError::Timeout),
            // The question's error edge sees a failed call, with the reason as body.
            Ok(Err(e)) => Ok(HttpResponse {
                status: 502,
                body: e.to_string().into_bytes(),
            }),
            Ok(Ok(items)) => Ok(HttpResponse {
                status: 200,
                body: serde_json::to_vec(&items).unwrap_or_default(),
            }),
        }
    }
}
