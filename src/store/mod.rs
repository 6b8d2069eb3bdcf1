//! All of wabot's SQL, and nothing else.
//!
//! Queries are free async functions taking a `&PgPool` or a `&mut PgConnection`
//! (when they must run inside a caller's transaction). Queries are checked at run
//! time (`sqlx::query`, not `query!`) and every one of them is covered by the
//! integration tests in `tests/it`, which run against a real PostgreSQL; this keeps
//! builds free of a database and of a committed `.sqlx/` cache.
//!
//! This module is the one seam where a second storage backend could plug in.

pub mod api;
pub mod campaigns;
pub mod chatbots;
pub mod contexts;
pub mod datasources;
pub mod events;
pub mod flows;
pub mod ingest;
pub mod media;
pub mod monitor;
pub mod ops;
pub mod outbox;
pub mod people;
pub mod planner;
pub mod quiescence;
pub mod replay;
pub mod retention;
pub mod statuses;
pub mod templates;
pub mod tokens;
pub mod turns;
pub mod versions;
pub mod whatsapp_config;

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migrate, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::Config;

/// A lease token unique to one claim: `holder:<uuid>`. Releases and the lease
/// keeper find a process's leases by the `holder:` prefix.
pub fn claim_token(holder: &str) -> String {
    format!("{holder}:{}", uuid::Uuid::new_v4().simple())
}

/// [`claim_token`] in SQL, for claims that lease rows as they pick them; the holder
/// is the statement's `$1`.
pub(crate) const CLAIM_TOKEN_SQL: &str = "$1 || ':' || replace(gen_random_uuid()::text, '-', '')";

/// Locks conversation rows until the transaction ends, in id order, so that every
/// transaction that takes several (ingest batches, turn commits, send records) takes
/// them in one order. Ingest and the turn commit meet here: a message stored while a
/// turn of its conversation commits either sees that turn done or is seen by it.
pub(crate) async fn lock_conversations(
    conn: &mut sqlx::PgConnection,
    ids: &[uuid::Uuid],
) -> Result<(), sqlx::Error> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    sqlx::query("SELECT 1 FROM conversations WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(&ids)
        .execute(conn)
        .await
        .map(|_| ())
}

/// A work table with leases.
#[derive(Debug, Clone, Copy)]
pub enum Queue {
    Turns,
    Sends,
    /// `wabot_media_jobs`, the media downloads.
    Media,
}

/// Extends every lease in `tokens` that is still held in `queue`; returns how many it
/// extended. Rows a commit is finishing right now are skipped, never waited for, so
/// the lease keeper and a commit never wait on each other in a cycle.
pub async fn keep_leases(
    pool: &PgPool,
    queue: Queue,
    tokens: &[String],
    lease: Duration,
) -> Result<u64, sqlx::Error> {
    if tokens.is_empty() {
        return Ok(0);
    }
    let sql = match queue {
        Queue::Turns => {
            "UPDATE turn_jobs SET locked_until = now() + make_interval(secs => $2) \
             WHERE id IN (SELECT id FROM turn_jobs WHERE locked_by = ANY($1) \
                          AND done_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED)"
        }
        Queue::Sends => {
            "UPDATE send_jobs SET locked_until = now() + make_interval(secs => $2) \
             WHERE id IN (SELECT id FROM send_jobs WHERE locked_by = ANY($1) \
                          AND done_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED)"
        }
        Queue::Media => {
            "UPDATE wabot_media_jobs SET locked_until = now() + make_interval(secs => $2) \
             WHERE id IN (SELECT id FROM wabot_media_jobs WHERE locked_by = ANY($1) \
                          AND done_at IS NULL ORDER BY id FOR UPDATE SKIP LOCKED)"
        }
    };
    let done = sqlx::query(sql)
        .bind(tokens)
        .bind(lease.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Gives back every job of `queue` that `holder` still holds (shutdown): due again
/// at once for whoever runs next. A turn or a download does not count the attempt
/// it was handed back in; a send never counted one (it counts calls to Meta).
pub async fn release_all(pool: &PgPool, queue: Queue, holder: &str) -> Result<u64, sqlx::Error> {
    let sql = match queue {
        Queue::Turns => {
            "UPDATE turn_jobs SET locked_by = NULL, locked_until = NULL, \
                    attempts = greatest(attempts - 1, 0) \
             WHERE locked_by LIKE $1 || ':%' AND done_at IS NULL"
        }
        Queue::Sends => {
            "UPDATE send_jobs SET locked_by = NULL, locked_until = NULL \
             WHERE locked_by LIKE $1 || ':%' AND done_at IS NULL"
        }
        Queue::Media => {
            "UPDATE wabot_media_jobs SET locked_by = NULL, locked_until = NULL, \
                    attempts = greatest(attempts - 1, 0) \
             WHERE locked_by LIKE $1 || ':%' AND done_at IS NULL"
        }
    };
    let done = sqlx::query(sql).bind(holder).execute(pool).await?;
    Ok(done.rows_affected())
}

/// The migrations under `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Opens the pool for `config.database_url`, creating the database first when it does
/// not exist yet.
pub async fn connect(config: &Config) -> Result<PgPool, sqlx::Error> {
    create_database_if_missing(&config.database_url).await?;
    let options = connect_options(&config.database_url)?;
    PgPoolOptions::new()
        .max_connections(config.database.max_connections)
        // A dead connection shows as an error on use (a webhook then answers 503 and
        // Meta retries); pinging on every checkout would cost a round trip each.
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_millis(config.database.acquire_timeout_ms))
        .connect_with(options)
        .await
}

/// How every connection of a wabot process is made. It says `application_name =
/// 'wabot'`: the `wabot_agent_message` trigger tells an agent's message (written by
/// WhatsApp Builder's inbox) from wabot's own replies by it, so a pool that runs
/// wabot's pipeline must be made with these options.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(PgConnectOptions::from_str(url)?
        .application_name("wabot")
        // The pipeline's statements take arrays of a batch: a plan made for one
        // batch's values is no better than a generic one, and planning these
        // statements on every execution costs more than running them at low load.
        //
        // No JIT: it pays off for long analytic queries, never for these. No plan of
        // the pipeline comes near `jit_above_cost` today (docs/perf-e2e.md, issue 21),
        // but estimates on tables that are never analyzed (servers without
        // autovacuum) only grow, and one compilation costs tens of milliseconds.
        .options([("plan_cache_mode", "force_generic_plan"), ("jit", "off")])
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1)))
}

/// Opens a pool without creating anything, for commands that must not change the
/// server (`wabot migrate status`).
pub async fn connect_existing(config: &Config) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(config.database.acquire_timeout_ms))
        .connect(&config.database_url)
        .await
}

/// Opens a small pool on an existing database with wabot's connection options, for
/// commands that write wabot's own messages (`wabot send`, `wabot campaign`): a
/// message written without them would read as an agent's (see [`connect_options`]).
pub async fn connect_existing_as_wabot(config: &Config) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(config.database.acquire_timeout_ms))
        .connect_with(connect_options(&config.database_url)?)
        .await
}

/// Creates the database named in `url` when it is missing, connecting to the
/// server's `postgres` maintenance database to do so.
pub async fn create_database_if_missing(url: &str) -> Result<(), sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        // CREATE DATABASE takes no bind parameters: quote the identifier instead.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e),
        }
    }
    admin.close().await?;
    Ok(())
}

/// Drops the database named in `url` when it exists, closing its other sessions
/// first (`wabot try` starts afresh this way). Refuses the maintenance database.
pub async fn drop_database(url: &str) -> Result<(), sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    if name == "postgres" {
        return Err(sqlx::Error::Configuration(
            "refusing to drop the maintenance database `postgres`".into(),
        ));
    }
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    sqlx::query(&format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    Ok(())
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Reverts the most recently applied migration; returns its description, or `None`
/// when nothing is applied.
pub async fn revert_last(pool: &PgPool) -> Result<Option<String>, sqlx::migrate::MigrateError> {
    let applied = applied_versions(pool).await?;
    let Some(last) = applied.iter().max().copied() else {
        return Ok(None);
    };
    let target = applied
        .iter()
        .filter(|v| **v < last)
        .max()
        .copied()
        .unwrap_or(0);
    MIGRATOR.undo(pool, target).await?;
    let description = MIGRATOR
        .iter()
        .find(|m| m.version == last)
        .map(|m| m.description.to_string())
        .unwrap_or_else(|| last.to_string());
    Ok(Some(description))
}

/// Reverts every applied migration.
pub async fn revert_all(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.undo(pool, 0).await
}

/// One embedded migration and whether it is applied.
#[derive(Debug, Clone)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    pub applied: bool,
}

/// The embedded migrations in order, each with whether the database has it.
pub async fn migration_status(
    pool: &PgPool,
) -> Result<Vec<MigrationStatus>, sqlx::migrate::MigrateError> {
    let applied = applied_versions(pool).await?;
    Ok(MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| MigrationStatus {
            version: m.version,
            description: m.description.to_string(),
            applied: applied.contains(&m.version),
        })
        .collect())
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, sqlx::migrate::MigrateError> {
    let mut conn = pool.acquire().await?;
    conn.ensure_migrations_table().await?;
    Ok(conn
        .list_applied_migrations()
        .await?
        .into_iter()
        .map(|m| m.version)
        .collect())
}

/// Whether the database answers, for `/readyz`.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}
