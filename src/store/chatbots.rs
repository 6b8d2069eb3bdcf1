//! The `chatbots` table: load a chatbot, list the active ones for the caller to
//! choose from (`engine::compile::choose_chatbot`), insert one (`wabot chatbot
//! import`). Plain rows in and out; the documents the engine compiles are made from
//! them in `engine::doc`.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

/// One `chatbots` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChatbotRow {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub nodes: Value,
    pub edges: Value,
    #[sqlx(rename = "isActive")]
    pub is_active: bool,
    pub status: String,
    pub metadata: Option<Value>,
    #[sqlx(rename = "createdAt")]
    pub created_at: DateTime<Utc>,
    #[sqlx(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, description, nodes, edges, \"isActive\", status::text AS status, \
                       metadata, \"createdAt\", \"updatedAt\"";

/// The chatbot `id`.
#[tracing::instrument(skip(pool))]
pub async fn load(pool: &PgPool, id: Uuid) -> Result<Option<ChatbotRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM chatbots WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The chatbot's `updatedAt`, to check the compiled cache without loading the graph.
#[tracing::instrument(skip(pool))]
pub async fn updated_at(pool: &PgPool, id: Uuid) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT \"updatedAt\" FROM chatbots WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The active chatbots' `(id, metadata)`, oldest first: what a new conversation's
/// chatbot is chosen from.
#[tracing::instrument(skip(pool))]
pub async fn active_metadata(pool: &PgPool) -> Result<Vec<(Uuid, Option<Value>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, metadata FROM chatbots WHERE \"isActive\" = true ORDER BY \"createdAt\", id",
    )
    .fetch_all(pool)
    .await
}

/// One active chatbot as a new conversation's chatbot is chosen from.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Candidate {
    pub id: Uuid,
    pub metadata: Option<Value>,
    #[sqlx(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

/// The active chatbots with their versions, oldest first.
pub async fn active_candidates(pool: &PgPool) -> Result<Vec<Candidate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, metadata, \"updatedAt\" FROM chatbots WHERE \"isActive\" = true \
         ORDER BY \"createdAt\", id",
    )
    .fetch_all(pool)
    .await
}

/// What `insert` stores.
#[derive(Debug, Clone)]
pub struct NewChatbot<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub nodes: &'a [Value],
    pub edges: &'a [Value],
    pub metadata: Option<&'a Value>,
    pub is_active: bool,
}

/// Inserts a chatbot (status `active` when active, else `draft`); returns its id.
#[tracing::instrument(skip_all, fields(name = new.name))]
pub async fn insert(pool: &PgPool, new: &NewChatbot<'_>) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO chatbots (name, description, nodes, edges, metadata, \"isActive\", status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7::chatbots_status_enum) RETURNING id",
    )
    .bind(new.name)
    .bind(new.description)
    .bind(Value::Array(new.nodes.to_vec()))
    .bind(Value::Array(new.edges.to_vec()))
    .bind(new.metadata)
    .bind(new.is_active)
    .bind(if new.is_active { "active" } else { "draft" })
    .fetch_one(pool)
    .await
}

/// Makes every chatbot inactive (`isActive = false`, status `draft` where it was
/// `active`), so that the next one activated answers alone; the count changed.
pub async fn deactivate_all(pool: &PgPool) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "UPDATE chatbots SET \"isActive\" = false, \
                status = CASE WHEN status = 'active' THEN 'draft'::chatbots_status_enum \
                              ELSE status END, \
                \"updatedAt\" = now() \
         WHERE \"isActive\"",
    )
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}

/// Makes the chatbot `id` active (`isActive`, status `active`) or not (status
/// `draft` where it was `active`); whether it exists.
pub async fn set_active(pool: &PgPool, id: Uuid, active: bool) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "UPDATE chatbots SET \"isActive\" = $2, \
                status = CASE WHEN $2 THEN 'active'::chatbots_status_enum \
                              WHEN status = 'active' THEN 'draft'::chatbots_status_enum \
                              ELSE status END, \
                \"updatedAt\" = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(active)
    .execute(pool)
    .await
    .map(|r| r.rows_affected() == 1)
}
