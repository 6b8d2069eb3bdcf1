//! `wabot_chatbot_versions`: every distinct graph of a chatbot that a context ran
//! on, by content hash. A context names its version in `variables.__wabot.version`
//! (`engine::Context::pin`). The turn commit writes a version the first time a
//! context is pinned to it ([`insert_batch`], inside the commit's transaction); the
//! turn stage reads the versions it has not compiled yet ([`load_many`], one read
//! for a batch's misses); maintenance deletes the versions nothing needs
//! ([`purge`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// One version: a chatbot's graph as it was when a context started on it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct VersionRow {
    pub chatbot_id: Uuid,
    pub hash: String,
    pub name: String,
    pub nodes: Value,
    pub edges: Value,
    pub metadata: Option<Value>,
}

/// The SQL of a live context's version: what `engine::Context::version` reads.
const CONTEXT_VERSION: &str = "(x.variables #>> '{__wabot,version}')";

/// Writes versions that may not be stored yet, inside the caller's transaction; a
/// version already stored is left as it is (its content is its name).
pub async fn insert_batch(
    conn: &mut PgConnection,
    versions: &[&VersionRow],
) -> Result<(), sqlx::Error> {
    let mut versions = versions.to_vec();
    versions.sort_by(|a, b| (a.chatbot_id, &a.hash).cmp(&(b.chatbot_id, &b.hash)));
    versions.dedup_by(|a, b| a.chatbot_id == b.chatbot_id && a.hash == b.hash);
    if versions.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = versions.iter().map(|v| v.chatbot_id).collect();
    let hashes: Vec<&str> = versions.iter().map(|v| v.hash.as_str()).collect();
    let names: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
    let nodes: Vec<&Value> = versions.iter().map(|v| &v.nodes).collect();
    let edges: Vec<&Value> = versions.iter().map(|v| &v.edges).collect();
    let metadata: Vec<Option<&Value>> = versions.iter().map(|v| v.metadata.as_ref()).collect();
    // A chatbot deleted since the turn read it has no row to refer to: its contexts
    // are gone with it, so its version is not written (rather than failing the
    // whole batch on the foreign key).
    sqlx::query(
        "INSERT INTO wabot_chatbot_versions (chatbot_id, hash, name, nodes, edges, metadata) \
         SELECT u.id, u.hash, u.name, u.nodes, u.edges, u.metadata \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::jsonb[]) \
             AS u(id, hash, name, nodes, edges, metadata) \
         WHERE EXISTS (SELECT 1 FROM chatbots c WHERE c.id = u.id) \
         ON CONFLICT (chatbot_id, hash) DO NOTHING",
    )
    .bind(&ids)
    .bind(&hashes)
    .bind(&names)
    .bind(&nodes)
    .bind(&edges)
    .bind(&metadata)
    .execute(conn)
    .await?;
    Ok(())
}

/// The stored versions among `(chatbot id, hash)` pairs, one read.
pub async fn load_many(
    pool: &PgPool,
    keys: &[(Uuid, String)],
) -> Result<Vec<VersionRow>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let hashes: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    sqlx::query_as(
        "SELECT v.chatbot_id, v.hash, v.name, v.nodes, v.edges, v.metadata \
         FROM wabot_chatbot_versions v \
         JOIN unnest($1::uuid[], $2::text[]) AS u(id, hash) \
           ON v.chatbot_id = u.id AND v.hash = u.hash",
    )
    .bind(&ids)
    .bind(&hashes)
    .fetch_all(pool)
    .await
}

/// One version of a chatbot as `wabot chatbot versions` lists it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct VersionSummary {
    pub hash: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// Nodes in the graph.
    pub nodes: i64,
    /// Live (active) contexts pinned to it.
    pub live: i64,
}

/// The chatbot's versions, newest first, with the live contexts on each.
pub async fn list(pool: &PgPool, chatbot_id: Uuid) -> Result<Vec<VersionSummary>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT v.hash, v.name, v.created_at, \
                CASE WHEN jsonb_typeof(v.nodes) = 'array' \
                     THEN jsonb_array_length(v.nodes) ELSE 0 END::bigint AS nodes, \
                coalesce(l.live, 0) AS live \
         FROM wabot_chatbot_versions v \
         LEFT JOIN ( \
             SELECT {CONTEXT_VERSION} AS hash, count(*) AS live FROM conversation_contexts x \
             WHERE x.\"chatbotId\" = $1 AND x.\"isActive\" GROUP BY 1) l ON l.hash = v.hash \
         WHERE v.chatbot_id = $1 \
         ORDER BY v.created_at DESC, v.hash"
    ))
    .bind(chatbot_id)
    .fetch_all(pool)
    .await
}

/// A chatbot's graph as its row holds it now.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CurrentGraph {
    pub id: Uuid,
    pub nodes: Value,
    pub edges: Value,
    pub metadata: Option<Value>,
}

/// The chatbots that have a version no live context needs, with their graphs as
/// they are now (the caller hashes them: the current graph's version is kept).
/// Chatbots edited within `settled` are left for a later round: a turn that read the
/// graph before the edit may still be about to pin a new context to it.
pub async fn purgeable(pool: &PgPool, settled: Duration) -> Result<Vec<CurrentGraph>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT c.id, c.nodes, c.edges, c.metadata FROM chatbots c \
         WHERE c.\"updatedAt\" < now() - make_interval(secs => $1) \
           AND EXISTS ( \
               SELECT 1 FROM wabot_chatbot_versions v \
               WHERE v.chatbot_id = c.id AND NOT EXISTS ( \
                   SELECT 1 FROM conversation_contexts x \
                   WHERE x.\"chatbotId\" = v.chatbot_id AND x.\"isActive\" \
                     AND {CONTEXT_VERSION} = v.hash)) \
         ORDER BY c.id"
    ))
    .bind(settled.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Deletes the versions of `chatbots` that no live context needs, but the current
/// one of each (`current`, one per chatbot, in the same order); a chatbot edited
/// within `settled` (since the caller read it) is left alone. One statement.
pub async fn purge(
    pool: &PgPool,
    chatbots: &[Uuid],
    current: &[String],
    settled: Duration,
) -> Result<u64, sqlx::Error> {
    if chatbots.is_empty() {
        return Ok(0);
    }
    sqlx::query(&format!(
        "DELETE FROM wabot_chatbot_versions v \
         USING unnest($1::uuid[], $2::text[]) AS k(id, current), chatbots c \
         WHERE v.chatbot_id = k.id AND v.hash <> k.current AND c.id = k.id \
           AND c.\"updatedAt\" < now() - make_interval(secs => $3) \
           AND NOT EXISTS ( \
               SELECT 1 FROM conversation_contexts x \
               WHERE x.\"chatbotId\" = v.chatbot_id AND x.\"isActive\" \
                 AND {CONTEXT_VERSION} = v.hash)"
    ))
    .bind(chatbots)
    .bind(current)
    .bind(settled.as_secs_f64())
    .execute(pool)
    .await
    .map(|r| r.rows_affected())
}
