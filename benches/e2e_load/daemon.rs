//! wabot as a separate process (`wabot serve`, configured only through its
//! environment, as in production), a fresh database for it, and the /proc readings
//! that attribute CPU and memory to it and to its PostgreSQL backends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio_util::sync::CancellationToken;

use super::scenario::{BUSINESS, SECRET};

/// A `wabot_<kind>_*` database created for one run, dropped by [`Database::drop`].
pub struct Database {
    pub name: String,
    pub url: String,
    admin: PgConnectOptions,
    pub server_version: String,
}

/// Runs the bench `name`, which checks invariants (`bench` says whether every one
/// held), on a `wabot_<kind>_*` database made for it and dropped after, whatever
/// happened. The exit code: 0 all held, 1 one did not (`<name>: FAILED`), 2 the run
/// could not be made (the reason on stderr).
pub async fn run_on_scratch_database(
    name: &str,
    kind: &str,
    bench: impl AsyncFnOnce(&Database) -> anyhow::Result<bool>,
) -> std::process::ExitCode {
    let db = match Database::create(kind).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("{name}: cannot create the database: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = bench(&db).await;
    let db_name = db.name.clone();
    if let Err(e) = db.drop().await {
        eprintln!("{name}: cannot drop {db_name}: {e:#}");
    }
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            println!("{name}: FAILED");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

impl Database {
    /// Creates a fresh database on the server `DATABASE_URL` names (default the local
    /// PostgreSQL).
    pub async fn create(kind: &str) -> anyhow::Result<Database> {
        let server = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let options = PgConnectOptions::from_str(&server)?.disable_statement_logging();
        let name = format!("wabot_{kind}_{}", uuid::Uuid::new_v4().simple());
        let admin = options.clone().database("postgres");
        let mut conn = PgConnection::connect_with(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        let server_version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        let url = options.database(&name).to_url_lossy().to_string();
        Ok(Database {
            name,
            url,
            admin,
            server_version,
        })
    }

    /// Drops it, unless `WABOT_E2E_KEEP_DB` is set (for a look with psql).
    pub async fn drop(self) -> anyhow::Result<()> {
        if std::env::var_os("WABOT_E2E_KEEP_DB").is_some() {
            println!("  kept database {} (WABOT_E2E_KEEP_DB)", self.name);
            return Ok(());
        }
        let mut conn = PgConnection::connect_with(&self.admin).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await?;
        conn.close().await?;
        Ok(())
    }
}

/// A free port on 127.0.0.1 (bound, then released for the daemon to bind).
pub fn free_local_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// `path` made absolute against the crate root (cargo runs benches from there, but
/// the daemon runs in a scratch directory so no stray `wabot.toml` is read).
pub fn resolve_bin(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        p
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(p)
    }
}

/// Fails when the binary is missing; warns when a source file is newer than it.
pub fn check_bin(bin: &Path) -> anyhow::Result<()> {
    let built = std::fs::metadata(bin)
        .and_then(|m| m.modified())
        .with_context(|| {
            format!(
                "no wabot binary at {} (build it: cargo build --release --bin wabot)",
                bin.display()
            )
        })?;
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    if newest_mtime(&src).is_some_and(|t| t > built) {
        eprintln!(
            "warning: {} is older than src/ (rebuild: cargo build --release --bin wabot)",
            bin.display()
        );
    }
    Ok(())
}

fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// mimalloc's options for the daemon, as systemd/wabot.service has them.
pub const MIMALLOC_ENV: [(&str, &str); 2] =
    [("MIMALLOC_ALLOW_THP", "0"), ("MIMALLOC_PURGE_DELAY", "0")];

/// How to start `wabot serve`: everything through its environment.
#[derive(Debug, Clone)]
pub struct DaemonEnv {
    pub bin: PathBuf,
    pub database_url: String,
    pub listen: SocketAddr,
    pub graph_url: String,
    /// More `WABOT_*` variables (worker knobs, log filter).
    pub extra: Vec<(String, String)>,
    /// The daemon's stdout and stderr go here (appended across restarts).
    pub log: PathBuf,
    /// A scratch working directory.
    pub dir: PathBuf,
}

impl DaemonEnv {
    fn command(&self, args: &[&str]) -> anyhow::Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args).current_dir(&self.dir);
        for (key, _) in std::env::vars() {
            if key.starts_with("WABOT_") || key == "RUST_LOG" {
                cmd.env_remove(key);
            }
        }
        cmd.env("DATABASE_URL", &self.database_url)
            .env("WABOT_LISTEN", self.listen.to_string())
            .env("WABOT_GRAPH_API_BASE", &self.graph_url)
            .env("WABOT_PHONE_NUMBER_ID", BUSINESS)
            .env("WABOT_ACCESS_TOKEN", "e2e-access-token")
            .env("WABOT_APP_SECRET", SECRET)
            .env("WABOT_VERIFY_TOKEN", "e2e-verify")
            .env("WABOT_WORKER_ENABLED", "true")
            .env("WABOT_SEND_RATE", "100000")
            .env("WABOT_LOG_FORMAT", "json");
        // The allocator as systemd/wabot.service sets it (docs/perf-campaigns.md,
        // "Memory"): no transparent huge pages, freed memory given back at once. Set
        // either in the bench's own environment to run with another value (e.g.
        // `MIMALLOC_ALLOW_THP=1 MIMALLOC_PURGE_DELAY=1000`, mimalloc's defaults).
        for (k, v) in MIMALLOC_ENV {
            if std::env::var_os(k).is_none() {
                cmd.env(k, v);
            }
        }
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        cmd.stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// Runs a one-shot subcommand (`migrate run`, `chatbot import FILE --activate`).
    pub async fn tool(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = self.command(args)?.status().await?;
        anyhow::ensure!(
            status.success(),
            "wabot {} failed ({status}); see {}",
            args.join(" "),
            self.log.display()
        );
        Ok(())
    }

    /// Migrates the database and installs `fixture` as the active chatbot, through
    /// the binary's own commands.
    pub async fn prepare(&self, fixture: &str) -> anyhow::Result<()> {
        self.tool(&["migrate", "run"]).await?;
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(fixture);
        let file = file.to_string_lossy().into_owned();
        self.tool(&["chatbot", "import", &file, "--activate"]).await
    }

    /// Starts `wabot serve` and waits (at most 60 s) until `/readyz` answers 200.
    pub async fn spawn(&self) -> anyhow::Result<Daemon> {
        let started = Instant::now();
        let mut child = self.command(&["serve"])?.spawn()?;
        let pid = child.id().context("the daemon has no pid")?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let ready = format!("http://{}/readyz", self.listen);
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "wabot serve exited at start-up ({status}); see {}",
                    self.log.display()
                );
            }
            if let Ok(r) = client.get(&ready).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill().await;
                anyhow::bail!(
                    "wabot serve not ready after 60 s; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Daemon {
            child,
            pid,
            ready_after: started.elapsed(),
        })
    }
}

/// A running `wabot serve`.
pub struct Daemon {
    child: tokio::process::Child,
    pub pid: u32,
    /// From spawn to the first 200 of `/readyz`.
    pub ready_after: Duration,
}

impl Daemon {
    /// utime + stime of the daemon (all its threads), in seconds.
    pub fn cpu(&self) -> f64 {
        process_cpu(&self.pid.to_string())
    }

    /// Peak resident set size (`VmHWM`).
    pub fn peak_rss(&self) -> Option<String> {
        proc_status(&self.pid.to_string(), "VmHWM")
    }

    /// Whether it exited by itself (a crash), and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, and reap it.
    pub async fn kill9(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM, then waits for the drain (at most `timeout`, then SIGKILL); the exit
    /// status when it stopped by itself.
    pub async fn terminate(
        mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(Some(status?)),
            Err(_) => {
                self.child.kill().await?;
                Ok(None)
            }
        }
    }
}

/// utime + stime of a process from its `/proc/<pid>/stat` text, in seconds (Linux
/// clock ticks are 1/100 s); also its start time, which tells reused pids apart, and
/// its parent.
fn cpu_and_start(stat: &str) -> (f64, u64, u64) {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return (0.0, 0, 0);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    ((num(11) + num(12)) as f64 / 100.0, num(19), num(1))
}

/// CPU seconds of process `pid` ("self" for this one).
pub fn process_cpu(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| cpu_and_start(&s).0)
        .unwrap_or(0.0)
}

/// A field of `/proc/<pid>/status` ("self" for this process).
pub fn proc_status(pid: &str, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    Some(line[key.len() + 1..].trim().to_owned())
}

/// CPU seconds PostgreSQL spent during a phase: the backends serving one database
/// (whose process title names it), and the shared background processes of the same
/// server (WAL writer, checkpointer, background writer, autovacuum: the children of
/// the backends' postmaster), which also work for every other database on it.
#[derive(Debug, Default, Clone, Copy)]
pub struct PgCpu {
    pub backends: f64,
    pub background: f64,
    /// Backends of the database seen during the phase.
    pub backend_count: usize,
}

/// Samples `/proc` every 100 ms over a phase, so backends that exit during it are
/// counted up to their last sample and backends that start during it from zero.
pub struct PgSampler {
    seen: Arc<Mutex<HashMap<(u32, u64), Sample>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    db: String,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    backend: bool,
    parent: u64,
    first: f64,
    last: f64,
}

const BACKGROUND: [&str; 4] = [
    "walwriter",
    "checkpointer",
    "background writer",
    "autovacuum",
];

fn sample_postgres(db: &str, seen: &mut HashMap<(u32, u64), Sample>, baseline: bool) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if !std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.trim() == "postgres") {
            continue;
        }
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        // "postgres: [<cluster>: ]<user> <database> <host>(<port>) <state>"
        let backend =
            cmdline.starts_with("postgres: ") && cmdline.split_whitespace().any(|t| t == db);
        if !backend && !BACKGROUND.iter().any(|b| cmdline.contains(b)) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        let (cpu, start, parent) = cpu_and_start(&stat);
        seen.entry((pid, start))
            .and_modify(|s| s.last = cpu)
            .or_insert(Sample {
                backend,
                parent,
                first: if baseline { cpu } else { 0.0 },
                last: cpu,
            });
    }
}

impl PgSampler {
    pub fn start(db: &str) -> PgSampler {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        if let Ok(mut map) = seen.lock() {
            sample_postgres(db, &mut map, true);
        }
        let stop = CancellationToken::new();
        let task = {
            let (seen, stop, db) = (seen.clone(), stop.clone(), db.to_owned());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.cancelled() => break,
                    }
                    if let Ok(mut map) = seen.lock() {
                        sample_postgres(&db, &mut map, false);
                    }
                }
            })
        };
        PgSampler {
            seen,
            stop,
            task,
            db: db.to_owned(),
        }
    }

    /// Takes a last sample and sums the phase.
    pub async fn finish(self) -> PgCpu {
        self.stop.cancel();
        let _ = self.task.await;
        let Ok(mut map) = self.seen.lock() else {
            return PgCpu::default();
        };
        sample_postgres(&self.db, &mut map, false);
        let postmaster = map.values().find(|s| s.backend).map(|s| s.parent);
        let mut cpu = PgCpu::default();
        for s in map.values() {
            let used = (s.last - s.first).max(0.0);
            if s.backend {
                cpu.backends += used;
                cpu.backend_count += 1;
            } else if Some(s.parent) == postmaster {
                cpu.background += used;
            }
        }
        cpu
    }
}
