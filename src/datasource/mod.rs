//! Data sources and connections: external REST, Strapi and GraphQL APIs resolved
//! over HTTP into `{id, title, description}` items.
//!
//! A data source (`data_sources`) is a base URL with credentials; a connection
//! (`data_source_connections`) is one endpoint of it, how to call it and how to read
//! its items. Connections feed WhatsApp Flow dropdowns (see [`flow`]) and dynamic
//! question rows ([`resolve_connection_items`]). Every request goes through the
//! egress guard ([`crate::egress`]), has a timeout and a response size cap.

pub mod client;
mod engine_http;
pub mod extract;
pub mod flow;
pub mod model;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

pub use client::DataSourceClient;
pub use engine_http::EngineHttp;
pub use model::{Connection, DataSource};

use crate::store;

/// One dropdown / list row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub description: Option<String>,
}

/// Why a data source or a connection gave no items. Messages never contain tokens,
/// header values or full URLs.
#[derive(Debug, thiserror::Error)]
pub enum DataSourceError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} is not active")]
    Inactive(String),
    #[error("invalid configuration of {0}")]
    Invalid(String),
    #[error("{0}")]
    Blocked(crate::egress::BlockedAddress),
    #[error("{0}")]
    Redirect(crate::egress::CrossHostRedirect),
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("request failed: {0}")]
    Http(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("answer is not JSON")]
    NotJson,
    #[error("GraphQL errors: {0}")]
    Graphql(String),
    #[error("data_key `{key}` leads to {found}, not to an array of items")]
    DataKey { key: String, found: &'static str },
    #[error("connection `{connection}` needs parameter `{param}` from `{path}`, which the input does not have")]
    MissingInput {
        connection: String,
        param: String,
        path: String,
    },
    #[error("connection chain of {0} loops or is deeper than 8")]
    Chain(Uuid),
    #[error("database: {0}")]
    Store(#[from] sqlx::Error),
}

/// Loads and validates data source `id`.
pub async fn load_source(pool: &PgPool, id: Uuid) -> Result<DataSource, DataSourceError> {
    let row = store::datasources::load_data_source(pool, id)
        .await?
        .ok_or_else(|| DataSourceError::NotFound(format!("data source {id}")))?;
    DataSource::try_from(row)
}

/// Loads and validates connection `id`.
pub async fn load_connection(pool: &PgPool, id: Uuid) -> Result<Connection, DataSourceError> {
    let row = store::datasources::load_connection(pool, id)
        .await?
        .ok_or_else(|| DataSourceError::NotFound(format!("connection {id}")))?;
    Connection::try_from(row)
}

/// The connection `id` and its `depends_on_connection_id` ancestors, nearest first.
/// A loop or a chain deeper than eight is a configuration error.
pub async fn load_chain(pool: &PgPool, id: Uuid) -> Result<Vec<Connection>, DataSourceError> {
    let mut chain: Vec<Connection> = Vec::new();
    let mut next = Some(id);
    while let Some(current) = next {
        if chain.len() >= 8 || chain.iter().any(|c| c.id == Some(current)) {
            return Err(DataSourceError::Chain(id));
        }
        let connection = load_connection(pool, current).await?;
        next = connection.depends_on;
        chain.push(connection);
    }
    Ok(chain)
}

/// For the executor's dynamic question rows: resolves connection `connection_id`
/// with `input` (the JSON document its param_mapping JSONPaths read, typically the
/// context's variables) into items. The connection's `depends_on_connection_id` chain
/// is checked; a parameter missing from the input names the connection and path.
pub async fn resolve_connection_items(
    pool: &PgPool,
    client: &DataSourceClient,
    connection_id: Uuid,
    input: &Value,
) -> Result<Vec<Item>, DataSourceError> {
    let mut chain = load_chain(pool, connection_id).await?;
    let connection = chain.remove(0);
    let source = load_source(pool, connection.data_source_id).await?;
    client.items(&source, &connection, input).await
}
