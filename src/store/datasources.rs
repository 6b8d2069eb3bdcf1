//! The `data_sources` and `data_source_connections` tables (WhatsApp Builder's own,
//! snake_case columns). Rows come back raw; `datasource::model` validates them.

use secrecy::SecretString;
use serde_json::Value;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// A `data_sources` row; the token is wrapped so that it cannot be printed.
pub struct DataSourceRow {
    pub id: Uuid,
    pub name: String,
    /// REST_API | STRAPI | GRAPHQL
    pub kind: String,
    pub base_url: String,
    /// NONE | BEARER | API_KEY | BASIC
    pub auth_type: String,
    pub auth_token: Option<SecretString>,
    pub auth_header_name: Option<String>,
    pub headers: Option<Value>,
    pub config: Option<Value>,
    pub is_active: bool,
    pub timeout: Option<i32>,
}

/// A `data_source_connections` row. Debug leaves out the default parameters and
/// body, which may carry keys.
#[derive(Clone)]
pub struct ConnectionRow {
    pub id: Uuid,
    pub name: String,
    pub data_source_id: Uuid,
    pub endpoint: String,
    /// GET | POST | PUT | PATCH | DELETE
    pub method: String,
    pub default_params: Option<Value>,
    pub default_body: Option<Value>,
    pub data_key: Option<String>,
    pub transform_config: Option<Value>,
    pub depends_on_connection_id: Option<Uuid>,
    pub param_mapping: Option<Value>,
    pub is_active: bool,
}

impl std::fmt::Debug for ConnectionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("data_source_id", &self.data_source_id)
            .field("endpoint", &crate::text::redact_url(&self.endpoint))
            .field("method", &self.method)
            .field("is_active", &self.is_active)
            .finish_non_exhaustive()
    }
}

/// The data source `id`, if it exists.
#[tracing::instrument(skip(pool))]
pub async fn load_data_source(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<DataSourceRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, name, type::text AS kind, base_url, auth_type::text AS auth_type, \
                auth_token, auth_header_name, headers, config, is_active, timeout \
         FROM data_sources WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(DataSourceRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            kind: r.try_get("kind")?,
            base_url: r.try_get("base_url")?,
            auth_type: r.try_get("auth_type")?,
            auth_token: r
                .try_get::<Option<String>, _>("auth_token")?
                .map(SecretString::from),
            auth_header_name: r.try_get("auth_header_name")?,
            headers: r.try_get("headers")?,
            config: r.try_get("config")?,
            is_active: r.try_get("is_active")?,
            timeout: r.try_get("timeout")?,
        })
    })
    .transpose()
}

/// The connection `id`, if it exists.
#[tracing::instrument(skip(pool))]
pub async fn load_connection(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<ConnectionRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, name, data_source_id, endpoint, method::text AS method, default_params, \
                default_body, data_key, transform_config, depends_on_connection_id, \
                param_mapping, is_active \
         FROM data_source_connections WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(ConnectionRow {
            id: r.try_get("id")?,
            name: r.try_get("name")?,
            data_source_id: r.try_get("data_source_id")?,
            endpoint: r.try_get("endpoint")?,
            method: r.try_get("method")?,
            default_params: r.try_get("default_params")?,
            default_body: r.try_get("default_body")?,
            data_key: r.try_get("data_key")?,
            transform_config: r.try_get("transform_config")?,
            depends_on_connection_id: r.try_get("depends_on_connection_id")?,
            param_mapping: r.try_get("param_mapping")?,
            is_active: r.try_get("is_active")?,
        })
    })
    .transpose()
}
