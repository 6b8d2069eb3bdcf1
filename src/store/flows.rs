//! WhatsApp Flows: the `whatsapp_flows` rows, what a flow token points at, and the
//! per-token record of what the user submitted (`wabot_flow_sessions`).
//!
//! The flow token wabot sends is `<conversation_contexts.id>:<node id>`. It is live
//! while that context exists, is active, waits for the flow (`waiting_flow`) and has
//! not expired.

use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// A `whatsapp_flows` row, as far as the endpoint and the executor need it.
#[derive(Debug, Clone)]
pub struct FlowRow {
    pub id: Uuid,
    /// Meta's flow id.
    pub whatsapp_flow_id: Option<String>,
    pub name: String,
    pub flow_json: Value,
    pub endpoint_uri: Option<String>,
    pub metadata: Option<Value>,
    pub data_source_id: Option<Uuid>,
    pub is_active: bool,
}

/// What a live flow token points at.
#[derive(Debug, Clone)]
pub struct TokenTarget {
    pub context_id: Uuid,
    pub node_id: String,
    /// The whatsapp_flow node's `data` (flowInitialScreen, flowInitialData, ...).
    pub node_data: Value,
    /// The flow named by the node's `whatsappFlowId` (Meta's id or our uuid), when a
    /// row exists.
    pub flow: Option<FlowRow>,
}

/// The flow columns both queries select, kept as a literal so the SQL stays static.
macro_rules! flow_columns {
    () => {
        "f.id AS flow_id, f.whatsapp_flow_id, f.name AS flow_name, \
         f.\"flowJson\" AS flow_json, f.endpoint_uri, f.metadata, f.data_source_id, \
         f.is_active AS flow_active"
    };
}

fn flow_from(row: &PgRow) -> Result<Option<FlowRow>, sqlx::Error> {
    let Some(id) = row.try_get::<Option<Uuid>, _>("flow_id")? else {
        return Ok(None);
    };
    Ok(Some(FlowRow {
        id,
        whatsapp_flow_id: row.try_get("whatsapp_flow_id")?,
        name: row.try_get("flow_name")?,
        flow_json: row.try_get("flow_json")?,
        endpoint_uri: row.try_get("endpoint_uri")?,
        metadata: row.try_get("metadata")?,
        data_source_id: row.try_get("data_source_id")?,
        is_active: row.try_get("flow_active")?,
    }))
}

/// The live target of a flow token, or `None` when the token is unknown or dead.
/// One statement: the context, its chatbot's node (in the version the context is
/// pinned to, else the chatbot's graph) and the flow row.
#[tracing::instrument(skip(pool))]
pub async fn token_target(
    pool: &PgPool,
    context_id: Uuid,
    node_id: &str,
) -> Result<Option<TokenTarget>, sqlx::Error> {
    let sql = concat!(
        "SELECT c.id AS context_id, n.node -> 'data' AS node_data, ",
        flow_columns!(),
        " FROM conversation_contexts c \
         JOIN chatbots b ON b.id = c.\"chatbotId\" \
         LEFT JOIN wabot_chatbot_versions v ON v.chatbot_id = c.\"chatbotId\" \
              AND v.hash = c.variables #>> '{__wabot,version}' \
         CROSS JOIN LATERAL ( \
             SELECT e AS node FROM jsonb_array_elements(coalesce(v.nodes, b.nodes)) e \
             WHERE e ->> 'id' = $2 LIMIT 1) n \
         LEFT JOIN LATERAL ( \
             SELECT * FROM whatsapp_flows w \
             WHERE w.whatsapp_flow_id = n.node -> 'data' ->> 'whatsappFlowId' \
                OR w.id::text = n.node -> 'data' ->> 'whatsappFlowId' \
             ORDER BY (w.whatsapp_flow_id = n.node -> 'data' ->> 'whatsappFlowId') DESC NULLS LAST \
             LIMIT 1) f ON true \
         WHERE c.id = $1 AND c.\"isActive\" AND c.status = 'waiting_flow' \
           AND (c.\"expiresAt\" IS NULL OR c.\"expiresAt\" > now())"
    );
    let Some(row) = sqlx::query(sql)
        .bind(context_id)
        .bind(node_id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(TokenTarget {
        context_id: row.try_get("context_id")?,
        node_id: node_id.to_owned(),
        node_data: row
            .try_get::<Option<Value>, _>("node_data")?
            .unwrap_or(Value::Null),
        flow: flow_from(&row)?,
    }))
}

/// The flow whose Meta id or uuid is `id` (what a whatsapp_flow node's
/// `whatsappFlowId` holds).
#[tracing::instrument(skip(pool))]
pub async fn load_flow(pool: &PgPool, id: &str) -> Result<Option<FlowRow>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        flow_columns!(),
        " FROM whatsapp_flows f \
         WHERE f.whatsapp_flow_id = $1 OR f.id::text = $1 \
         ORDER BY (f.whatsapp_flow_id = $1) DESC NULLS LAST LIMIT 1"
    );
    let row = sqlx::query(sql).bind(id).fetch_optional(pool).await?;
    match row {
        Some(row) => flow_from(&row),
        None => Ok(None),
    }
}

/// Starts (or restarts) the record of a token with `data`.
#[tracing::instrument(skip(pool, data))]
pub async fn session_start(
    pool: &PgPool,
    flow_token: &str,
    context_id: Uuid,
    data: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO wabot_flow_sessions (flow_token, context_id, data) VALUES ($1, $2, $3) \
         ON CONFLICT (flow_token) DO UPDATE SET data = EXCLUDED.data, updated_at = now()",
    )
    .bind(flow_token)
    .bind(context_id)
    .bind(data)
    .execute(pool)
    .await?;
    Ok(())
}

/// Adds `data` (top-level keys win) to the record of a token and returns the whole.
#[tracing::instrument(skip(pool, data))]
pub async fn session_merge(
    pool: &PgPool,
    flow_token: &str,
    context_id: Uuid,
    data: &Value,
) -> Result<Value, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO wabot_flow_sessions (flow_token, context_id, data) VALUES ($1, $2, $3) \
         ON CONFLICT (flow_token) DO UPDATE \
             SET data = wabot_flow_sessions.data || EXCLUDED.data, updated_at = now() \
         RETURNING data",
    )
    .bind(flow_token)
    .bind(context_id)
    .bind(data)
    .fetch_one(pool)
    .await
}

/// Forgets the record of a token (the flow completed).
#[tracing::instrument(skip(pool))]
pub async fn session_end(pool: &PgPool, flow_token: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM wabot_flow_sessions WHERE flow_token = $1")
        .bind(flow_token)
        .execute(pool)
        .await?;
    Ok(())
}
