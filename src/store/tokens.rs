//! The operator API's bearer tokens (`wabot_api_tokens`): only their SHA-256 is
//! stored; a request's token is found by its hash.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// A token as listed (never the token itself).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TokenRow {
    pub id: Uuid,
    pub name: String,
    pub scopes: Vec<String>,
    /// The token's first characters.
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, name, scopes, hint, created_at, revoked_at";

/// Stores a new token's hash; `Ok(None)` when a live token has that name already.
pub async fn create(
    pool: &PgPool,
    name: &str,
    scopes: &[&str],
    hash: &[u8],
    hint: &str,
) -> Result<Option<TokenRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO wabot_api_tokens (id, name, scopes, token_hash, hint) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) WHERE revoked_at IS NULL DO NOTHING \
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(name)
    .bind(scopes)
    .bind(hash)
    .bind(hint)
    .fetch_optional(pool)
    .await
}

/// The live token with this hash, and the stored hash (for the caller's
/// constant-time comparison).
pub async fn by_hash(
    pool: &PgPool,
    hash: &[u8],
) -> Result<Option<(TokenRow, Vec<u8>)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Found {
        #[sqlx(flatten)]
        row: TokenRow,
        token_hash: Vec<u8>,
    }
    let found: Option<Found> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, token_hash FROM wabot_api_tokens \
         WHERE token_hash = $1 AND revoked_at IS NULL"
    ))
    .bind(hash)
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|f| (f.row, f.token_hash)))
}

/// Every token, live ones first, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<TokenRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM wabot_api_tokens \
         ORDER BY revoked_at IS NOT NULL, created_at DESC"
    ))
    .fetch_all(pool)
    .await
}

/// Revokes the live token named `name` (or with this id); the row revoked.
pub async fn revoke(pool: &PgPool, name_or_id: &str) -> Result<Option<TokenRow>, sqlx::Error> {
    let id = Uuid::parse_str(name_or_id).ok();
    sqlx::query_as(&format!(
        "UPDATE wabot_api_tokens SET revoked_at = now() \
         WHERE revoked_at IS NULL AND (name = $1 OR id = $2) RETURNING {COLUMNS}"
    ))
    .bind(name_or_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}
