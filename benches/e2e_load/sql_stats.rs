//! `--sql-stats`: what the database work of a turn is made of.
//!
//! sqlx emits one tracing event per statement (target `sqlx::query`, with the SQL
//! and its client-side elapsed time); a layer installed for the run counts them by
//! statement. After the run, PostgreSQL's own counters for the database (commits,
//! sequential scans per table) show what no client can see.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlx::PgConnection;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Count and summed elapsed seconds per statement.
#[derive(Clone, Default)]
pub struct SqlStats(Arc<Mutex<HashMap<String, (u64, f64)>>>);

impl SqlStats {
    /// Installs the counting layer as the global subscriber.
    pub fn install() -> SqlStats {
        let stats = SqlStats::default();
        let filter = Targets::new().with_target("sqlx::query", tracing::Level::TRACE);
        let _ = tracing_subscriber::registry()
            .with(Counter(stats.clone()).with_filter(filter))
            .try_init();
        stats
    }

    /// Forgets what was counted so far (the setup's statements).
    pub fn reset(&self) {
        if let Ok(mut map) = self.0.lock() {
            map.clear();
        }
    }

    /// Prints statements per turn and the mean client-side time of each kind.
    pub fn print(&self, turns: usize) {
        let Ok(map) = self.0.lock() else { return };
        let mut rows: Vec<(&String, &(u64, f64))> = map.iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        let total: u64 = map.values().map(|v| v.0).sum();
        let secs: f64 = map.values().map(|v| v.1).sum();
        let turns = turns.max(1) as f64;
        println!(
            "  sql: {total} statements = {:.1} per turn, {:.2} ms of client-side statement time per turn",
            total as f64 / turns,
            1e3 * secs / turns
        );
        for (sql, (count, secs)) in rows.iter().take(25) {
            println!(
                "    {:6.2}/turn  mean {:7.3} ms  {sql}",
                *count as f64 / turns,
                1e3 * secs / (*count).max(1) as f64
            );
        }
    }
}

struct Counter(SqlStats);

#[derive(Default)]
struct Fields {
    summary: String,
    statement: String,
    elapsed: f64,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.to_owned(),
            _ => {}
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed = value;
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> Layer<S> for Counter {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        // The whole statement when sqlx gave it, else its four-word summary; either
        // way cut to a width that tells statements apart.
        let sql = if fields.statement.trim().is_empty() {
            fields.summary
        } else {
            fields.statement
        };
        let key: String = sql
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(90)
            .collect();
        if let Ok(mut map) = self.0 .0.lock() {
            let entry = map.entry(key).or_default();
            entry.0 += 1;
            entry.1 += fields.elapsed;
        }
    }
}

/// PostgreSQL's counters of the database, read after the daemon's connections have
/// closed (a backend flushes its statistics when it exits).
pub async fn print_database_stats(conn: &mut PgConnection, turns: usize) -> sqlx::Result<()> {
    let turns = turns.max(1) as f64;
    let (commits, rollbacks, hits, reads): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT xact_commit, xact_rollback, blks_hit, blks_read \
         FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut *conn)
    .await?;
    println!(
        "  postgres: {:.1} commits per turn ({commits} in all, {rollbacks} rollbacks), \
         {:.0} buffer hits and {reads} reads per turn",
        commits as f64 / turns,
        hits as f64 / turns,
    );
    let tables: Vec<(String, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, seq_scan, seq_tup_read, coalesce(idx_scan, 0), n_live_tup, \
                n_dead_tup, n_tup_upd + n_tup_ins + n_tup_del \
         FROM pg_stat_user_tables WHERE seq_scan + coalesce(idx_scan, 0) > 0 \
         ORDER BY seq_tup_read DESC, relname",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (name, seq, seq_read, idx, live, dead, writes) in tables {
        println!(
            "    {name:24} seq scans {seq:6} ({seq_read:8} rows read), index scans {idx:7}, \
             rows {live:6} live {dead:6} dead, {:.1} writes/turn",
            writes as f64 / turns
        );
    }
    Ok(())
}
