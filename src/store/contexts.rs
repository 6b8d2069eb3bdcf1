//! The `conversation_contexts` table: one active context per conversation (a
//! partial unique index enforces it), read and written as plain rows. The turn stage
//! reads a batch's contexts with its facts (`store::turns::load_batch`) and saves
//! them in its commit ([`save_all`]).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A `conversation_contexts` row, plain.
/// Read as columns (`FromRow`) or as the row's `to_jsonb` (`Deserialize`, same names).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextRow {
    pub id: Uuid,
    #[sqlx(rename = "conversationId")]
    pub conversation_id: Uuid,
    #[sqlx(rename = "chatbotId")]
    pub chatbot_id: Uuid,
    #[sqlx(rename = "currentNodeId")]
    pub current_node_id: String,
    pub variables: Value,
    #[sqlx(rename = "nodeHistory")]
    pub node_history: Value,
    #[sqlx(rename = "nodeOutputs")]
    pub node_outputs: Value,
    #[sqlx(rename = "isActive")]
    pub is_active: bool,
    pub status: String,
    #[sqlx(rename = "expiresAt")]
    pub expires_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "completedAt")]
    pub completed_at: Option<DateTime<Utc>>,
    #[sqlx(rename = "completionReason")]
    pub completion_reason: Option<String>,
    /// The row's version: a turn commits only if it is unchanged.
    #[sqlx(rename = "updatedAt")]
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, \"conversationId\", \"chatbotId\", \"currentNodeId\", variables, \
                       \"nodeHistory\", \"nodeOutputs\", \"isActive\", status, \"expiresAt\", \
                       \"completedAt\", \"completionReason\", \"updatedAt\"";

/// The conversation's active context, if any.
pub async fn load_active(
    pool: &PgPool,
    conversation_id: Uuid,
) -> Result<Option<ContextRow>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    load_active_with(&mut conn, conversation_id, false).await
}

/// The conversation's active context, locked until the caller's transaction ends.
pub async fn load_active_for_update(
    conn: &mut PgConnection,
    conversation_id: Uuid,
) -> Result<Option<ContextRow>, sqlx::Error> {
    load_active_with(conn, conversation_id, true).await
}

async fn load_active_with(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    lock: bool,
) -> Result<Option<ContextRow>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM conversation_contexts \
         WHERE \"conversationId\" = $1 AND \"isActive\"{lock}"
    ))
    .bind(conversation_id)
    .fetch_optional(conn)
    .await
}

/// The context `id` whether active or not (Flow tokens name a context by id).
pub async fn load(pool: &PgPool, id: Uuid) -> Result<Option<ContextRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM conversation_contexts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Inserts or updates one context row. Save an ended context before the one that
/// replaces it: a second active context of a conversation violates the unique index.
pub async fn save(conn: &mut PgConnection, row: &ContextRow) -> Result<(), sqlx::Error> {
    save_all(conn, std::iter::once(row)).await
}

/// Inserts or updates context rows, in order (an ended context before the one that
/// replaces it: a second active context of a conversation violates the unique index).
pub async fn save_all<'a>(
    conn: &mut PgConnection,
    rows: impl Iterator<Item = &'a ContextRow>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<&ContextRow> = rows.collect();
    if rows.is_empty() {
        return Ok(());
    }
    // Ended contexts first, then active ones: one statement, rows in that order.
    let mut ordered: Vec<&ContextRow> = rows.iter().copied().filter(|r| !r.is_active).collect();
    ordered.extend(rows.iter().copied().filter(|r| r.is_active));
    let col =
        |f: fn(&ContextRow) -> Value| -> Vec<Value> { ordered.iter().map(|r| f(r)).collect() };
    let ids: Vec<Uuid> = ordered.iter().map(|r| r.id).collect();
    let convs: Vec<Uuid> = ordered.iter().map(|r| r.conversation_id).collect();
    let bots: Vec<Uuid> = ordered.iter().map(|r| r.chatbot_id).collect();
    let nodes: Vec<&str> = ordered.iter().map(|r| r.current_node_id.as_str()).collect();
    let active: Vec<bool> = ordered.iter().map(|r| r.is_active).collect();
    let status: Vec<&str> = ordered.iter().map(|r| r.status.as_str()).collect();
    let expires: Vec<Option<DateTime<Utc>>> = ordered.iter().map(|r| r.expires_at).collect();
    let completed: Vec<Option<DateTime<Utc>>> = ordered.iter().map(|r| r.completed_at).collect();
    let reasons: Vec<Option<&str>> = ordered
        .iter()
        .map(|r| r.completion_reason.as_deref())
        .collect();
    sqlx::query(
        "INSERT INTO conversation_contexts \
            (id, \"conversationId\", \"chatbotId\", \"currentNodeId\", variables, \"nodeHistory\", \
             \"nodeOutputs\", \"isActive\", status, \"expiresAt\", \"completedAt\", \"completionReason\") \
         SELECT id, conv, bot, node, vars, hist, outs, active, \
                status, expires, completed, reason \
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::jsonb[], $6::jsonb[], \
                     $7::jsonb[], $8::bool[], $9::text[], $10::timestamptz[], $11::timestamptz[], \
                     $12::text[]) WITH ORDINALITY \
              AS u(id, conv, bot, node, vars, hist, outs, active, status, expires, completed, \
                   reason, n) \
         ORDER BY n \
         ON CONFLICT (id) DO UPDATE SET \
            \"currentNodeId\" = EXCLUDED.\"currentNodeId\", variables = EXCLUDED.variables, \
            \"nodeHistory\" = EXCLUDED.\"nodeHistory\", \"nodeOutputs\" = EXCLUDED.\"nodeOutputs\", \
            \"isActive\" = EXCLUDED.\"isActive\", status = EXCLUDED.status, \
            \"expiresAt\" = EXCLUDED.\"expiresAt\", \"completedAt\" = EXCLUDED.\"completedAt\", \
            \"completionReason\" = EXCLUDED.\"completionReason\", \"updatedAt\" = now()",
    )
    .bind(&ids)
    .bind(&convs)
    .bind(&bots)
    .bind(&nodes)
    .bind(col(|r| r.variables.clone()))
    .bind(col(|r| r.node_history.clone()))
    .bind(col(|r| r.node_outputs.clone()))
    .bind(&active)
    .bind(&status)
    .bind(&expires)
    .bind(&completed)
    .bind(&reasons)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Ends every active context of the conversation (an operator's stop, or a new
/// chatbot taking over) with `status`; returns how many there were.
pub async fn deactivate(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    status: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE conversation_contexts SET \"isActive\" = false, status = $2, \
                \"completionReason\" = $3, \"completedAt\" = $4, \"expiresAt\" = NULL, \
                \"updatedAt\" = now() \
         WHERE \"conversationId\" = $1 AND \"isActive\"",
    )
    .bind(conversation_id)
    .bind(status)
    .bind(reason)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
