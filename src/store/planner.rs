//! The planner's statistics of the tables the pipeline grows.
//!
//! Every wabot connection keeps one generic plan per statement
//! (`plan_cache_mode = force_generic_plan`, [`crate::store::connect_options`]), made
//! with the statistics its tables had then. On a new database those tables are
//! empty, and a plan made for an empty `users` or `conversation_keys` reads them
//! whole: harmless at a hundred rows, a seq scan per lookup at a hundred thousand.
//! Autovacuum's analyze refreshes the statistics where it runs (a server may run
//! without it, and it looks once a minute); new statistics invalidate the plans that
//! use the table, on every connection. This does the same, cheaply: one catalogue
//! read, and `ANALYZE` only of the tables that changed by more than autovacuum's own
//! default threshold (50 rows + 10 %) since their last analyze, whoever made it.

use sqlx::PgPool;

/// The tables that grow with customers and their messages, which the pipeline's
/// statements look rows up in.
pub const GROWN: [&str; 14] = [
    "users",
    "wabot_customer_ids",
    "conversations",
    "conversation_keys",
    "conversation_participants",
    "conversation_contexts",
    "messages",
    "message_statuses",
    "turn_jobs",
    "send_jobs",
    "wabot_media_jobs",
    "wabot_handover",
    "wabot_opt_outs",
    "wabot_campaign_recipients",
];

/// The tables of [`GROWN`] whose statistics are stale: changed by more than 50 rows
/// + 10 % since they were last analyzed (autovacuum's default threshold).
pub async fn stale(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT s.relname::text FROM pg_stat_user_tables s \
         JOIN pg_class c ON c.oid = s.relid \
         WHERE s.schemaname = current_schema() AND s.relname = ANY($1) \
           AND s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0) \
         ORDER BY s.relname",
    )
    .bind(&GROWN[..])
    .fetch_all(pool)
    .await
}

/// Analyzes one table of [`GROWN`] (a name from elsewhere is refused: it is
/// spliced into the statement).
pub async fn analyze(pool: &PgPool, table: &str) -> Result<(), sqlx::Error> {
    let Some(table) = GROWN.iter().find(|t| **t == table) else {
        return Err(sqlx::Error::Protocol(format!(
            "{table} is not a table wabot keeps statistics of"
        )));
    };
    sqlx::query(&format!("ANALYZE {table}"))
        .execute(pool)
        .await
        .map(|_| ())
}
