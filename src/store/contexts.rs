//! The `conversation_contexts` table: one active context per conversation (a
//! partial unique index enforces it), loaded before a turn and saved in the turn's
//! transaction.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::engine::{Context, ContextStatus};

const COLUMNS: &str = "id, \"conversationId\", \"chatbotId\", \"currentNodeId\", variables, \
                       \"nodeHistory\", \"nodeOutputs\", \"isActive\", status, \"expiresAt\", \
                       \"completedAt\", \"completionReason\"";

fn from_row(row: &PgRow) -> Result<Context, sqlx::Error> {
    let object = |v: Value| match v {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let history: Value = row.try_get("nodeHistory")?;
    let status: String = row.try_get("status")?;
    Ok(Context {
        id: row.try_get("id")?,
        conversation_id: row.try_get("conversationId")?,
        chatbot_id: row.try_get("chatbotId")?,
        current_node_id: row.try_get("currentNodeId")?,
        variables: object(row.try_get("variables")?),
        node_history: match history {
            Value::Array(items) => items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        },
        node_outputs: object(row.try_get("nodeOutputs")?),
        is_active: row.try_get("isActive")?,
        status: ContextStatus::parse(&status),
        completion_reason: row.try_get("completionReason")?,
        completed_at: row.try_get("completedAt")?,
        expires_at: row.try_get("expiresAt")?,
    })
}

/// The conversation's active context, if any.
#[tracing::instrument(skip(pool))]
pub async fn load_active(
    pool: &PgPool,
    conversation_id: Uuid,
) -> Result<Option<Context>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    load_active_with(&mut conn, conversation_id, false).await
}

/// The conversation's active context, locked until the caller's transaction ends.
#[tracing::instrument(skip(conn))]
pub async fn load_active_for_update(
    conn: &mut PgConnection,
    conversation_id: Uuid,
) -> Result<Option<Context>, sqlx::Error> {
    load_active_with(conn, conversation_id, true).await
}

async fn load_active_with(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    lock: bool,
) -> Result<Option<Context>, sqlx::Error> {
    let sql = if lock {
        format!("SELECT {COLUMNS} FROM conversation_contexts WHERE \"conversationId\" = $1 AND \"isActive\" FOR UPDATE")
    } else {
        format!("SELECT {COLUMNS} FROM conversation_contexts WHERE \"conversationId\" = $1 AND \"isActive\"")
    };
    let row = sqlx::query(&sql)
        .bind(conversation_id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// The context `id` whether active or not (Flow tokens name a context by id).
#[tracing::instrument(skip(pool))]
pub async fn load(pool: &PgPool, id: Uuid) -> Result<Option<Context>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM conversation_contexts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Inserts or updates the context row. Save an ended context before the one that
/// replaces it: a second active context of a conversation violates the unique index.
#[tracing::instrument(skip_all, fields(context = %context.id))]
pub async fn save(conn: &mut PgConnection, context: &Context) -> Result<(), sqlx::Error> {
    let history: Vec<Value> = context
        .node_history
        .iter()
        .map(|id| Value::String(id.clone()))
        .collect();
    sqlx::query(
        "INSERT INTO conversation_contexts \
            (id, \"conversationId\", \"chatbotId\", \"currentNodeId\", variables, \"nodeHistory\", \
             \"nodeOutputs\", \"isActive\", status, \"expiresAt\", \"completedAt\", \"completionReason\") \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT (id) DO UPDATE SET \
            \"currentNodeId\" = EXCLUDED.\"currentNodeId\", variables = EXCLUDED.variables, \
            \"nodeHistory\" = EXCLUDED.\"nodeHistory\", \"nodeOutputs\" = EXCLUDED.\"nodeOutputs\", \
            \"isActive\" = EXCLUDED.\"isActive\", status = EXCLUDED.status, \
            \"expiresAt\" = EXCLUDED.\"expiresAt\", \"completedAt\" = EXCLUDED.\"completedAt\", \
            \"completionReason\" = EXCLUDED.\"completionReason\", \"updatedAt\" = now()",
    )
    .bind(context.id)
    .bind(context.conversation_id)
    .bind(context.chatbot_id)
    .bind(&context.current_node_id)
    .bind(Value::Object(context.variables.clone()))
    .bind(Value::Array(history))
    .bind(Value::Object(context.node_outputs.clone()))
    .bind(context.is_active)
    .bind(context.status.as_str())
    .bind(context.expires_at)
    .bind(context.completed_at)
    .bind(context.completion_reason.as_deref())
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends every active context of the conversation (an operator's stop, or a new
/// chatbot taking over); returns how many there were.
#[tracing::instrument(skip(conn))]
pub async fn deactivate(
    conn: &mut PgConnection,
    conversation_id: Uuid,
    status: ContextStatus,
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
    .bind(status.as_str())
    .bind(reason)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}
