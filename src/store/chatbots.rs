//! The `chatbots` table: load a chatbot, pick the one that answers a new
//! conversation, insert one (`wabot chatbot import`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::engine::compile::{matches_keyword, metadata_keywords};
use crate::engine::ChatbotDoc;

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

impl ChatbotRow {
    /// The document the engine compiles.
    pub fn to_doc(&self) -> ChatbotDoc {
        let mut doc = ChatbotDoc::from_columns(
            &self.name,
            self.nodes.clone(),
            self.edges.clone(),
            self.metadata.clone(),
        );
        doc.description = self.description.clone();
        doc.is_active = Some(self.is_active);
        doc
    }
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

/// The chatbot that answers a conversation without an active context.
///
/// As in WhatsApp Builder, the oldest chatbot with `isActive = true` answers. wabot
/// adds optional `metadata.triggerKeywords`: the oldest active chatbot whose keyword
/// the message starts with answers; a chatbot with keywords answers only to them, so
/// anything else goes to the oldest active chatbot without keywords.
#[tracing::instrument(skip(pool, text))]
pub async fn pick_for_message(
    pool: &PgPool,
    text: Option<&str>,
) -> Result<Option<ChatbotRow>, sqlx::Error> {
    let candidates: Vec<(Uuid, Option<Value>)> = sqlx::query_as(
        "SELECT id, metadata FROM chatbots WHERE \"isActive\" = true ORDER BY \"createdAt\", id",
    )
    .fetch_all(pool)
    .await?;
    let keywords: Vec<(Uuid, Vec<String>)> = candidates
        .into_iter()
        .map(|(id, metadata)| (id, metadata_keywords(metadata.as_ref(), "triggerKeywords")))
        .collect();
    let triggered = text.and_then(|text| {
        keywords
            .iter()
            .find(|(_, words)| matches_keyword(words, text))
            .map(|(id, _)| *id)
    });
    let chosen = triggered.or_else(|| {
        keywords
            .iter()
            .find(|(_, words)| words.is_empty())
            .map(|(id, _)| *id)
    });
    match chosen {
        Some(id) => load(pool, id).await,
        None => Ok(None),
    }
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

impl<'a> NewChatbot<'a> {
    pub fn from_doc(doc: &'a ChatbotDoc, is_active: bool) -> Self {
        NewChatbot {
            name: &doc.name,
            description: doc.description.as_deref(),
            nodes: &doc.nodes,
            edges: &doc.edges,
            metadata: doc.metadata.as_ref(),
            is_active,
        }
    }
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
