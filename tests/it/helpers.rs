//! The test harness: a fresh, migrated database per test and the real server on a
//! random port (zero-to-production's `spawn_app`).
//!
//! A test's scratch databases are dropped when it passes and kept when it fails
//! (their names are printed with the failure): see [`drop_when_the_test_passes`].
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha2::Sha256;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use wabot::config::Config;
use wabot::http::AppState;
use wabot::startup::Application;

pub const APP_SECRET: &str = "test-app-secret";
pub const VERIFY_TOKEN: &str = "test-verify-token";
pub const ACCESS_TOKEN: &str = "test-access-token";
/// The business number the test daemon serves: the one its sample webhooks are for.
pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const BUSINESS_ACCOUNT_ID: &str = "987654321";

/// The server's URL of the PostgreSQL the tests use (without a database name).
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A unique name for a scratch database: `<prefix>_<unix seconds>_<uuid>`. The
/// time lets a later run tell a leftover from a database in use.
pub fn scratch_database_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        chrono::Utc::now().timestamp(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Scratch databases of runs at least this old are leftovers.
const LEFTOVER_AFTER_SECS: i64 = 3600;

/// Whether a database this suite (or `wabot serve`'s tests) made is a leftover of
/// an earlier run: named with a creation time an hour or more ago, or in the old
/// form without one.
fn is_leftover(name: &str, now: i64) -> bool {
    let Some(rest) = ["wabot_test_", "wabot_serve_"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
    else {
        return false;
    };
    match rest.split_once('_') {
        Some((secs, _)) => secs
            .parse::<i64>()
            .is_ok_and(|t| t <= now - LEFTOVER_AFTER_SECS),
        // `<uuid>` alone: the names before the creation time was added.
        None => rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()),
    }
}

/// Drops the scratch databases earlier runs left (a failed test keeps its own to be
/// looked at; a killed run drops nothing), once per test process. A database
/// somebody is connected to is not dropped (no FORCE), so a run in progress
/// elsewhere keeps its databases.
async fn sweep_leftovers(admin: &mut PgConnection) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            let now = chrono::Utc::now().timestamp();
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT datname FROM pg_database \
                 WHERE datname LIKE 'wabot\\_test\\_%' OR datname LIKE 'wabot\\_serve\\_%'",
            )
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
            for name in names.iter().filter(|n| is_leftover(n, now)) {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                    .execute(&mut *admin)
                    .await;
            }
        })
        .await;
}

#[test]
fn leftovers_are_told_by_their_creation_time() {
    let now = 1_800_000_000;
    let old = format!("wabot_test_{}_{}", now - 7200, "a".repeat(32));
    let fresh = format!("wabot_test_{}_{}", now - 60, "b".repeat(32));
    assert!(is_leftover(&old, now));
    assert!(!is_leftover(&fresh, now));
    assert!(is_leftover(&format!("wabot_serve_{}", "c".repeat(32)), now));
    assert!(!is_leftover("wabot_e2e_0123", now));
    assert!(!is_leftover("wabot", now));
    assert!(!is_leftover("wabot_test_notatime_x", now));
}

/// Creates an empty database with a unique name; returns its URL.
pub async fn create_empty_database() -> String {
    let options = PgConnectOptions::from_str(&server_url()).expect("DATABASE_URL is a URL");
    let name = scratch_database_name("wabot_test");
    let mut admin = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .expect("PostgreSQL is reachable at DATABASE_URL");
    sweep_leftovers(&mut admin).await;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    drop_when_the_test_passes(&name);
    admin.close().await.ok();
    options.database(&name).to_url_lossy().to_string()
}

/// The scratch databases made on this thread, and whether a panic happened on it.
///
/// libtest runs each test on a thread of its own (the body of a `#[tokio::test]`
/// too, whatever the runtime's flavor) and joins that thread before it reports the
/// run, so the end of the thread is the end of the test: the thread-local's
/// destructor drops the databases then, after the test's runtime, pools and child
/// processes are gone. A test fails by panicking on its thread; the panic hook
/// marks the thread and prints the names, inside the failure's captured output.
struct ScratchDatabases {
    names: RefCell<Vec<String>>,
    /// How many of `names` were printed as kept.
    announced: Cell<usize>,
    panicked: Cell<bool>,
}

thread_local! {
    static SCRATCH: ScratchDatabases = const {
        ScratchDatabases {
            names: RefCell::new(Vec::new()),
            announced: Cell::new(0),
            panicked: Cell::new(false),
        }
    };
}

impl ScratchDatabases {
    /// Prints the names not printed yet.
    fn announce_kept(&self) {
        let Ok(names) = self.names.try_borrow() else {
            return;
        };
        for name in names.iter().skip(self.announced.get()) {
            eprintln!("test database kept for inspection: {name}");
        }
        self.announced.set(names.len());
    }
}

impl Drop for ScratchDatabases {
    fn drop(&mut self) {
        if self.panicked.get() || std::thread::panicking() {
            self.announce_kept();
            return;
        }
        let names = self.names.take();
        if !names.is_empty() {
            drop_databases(names);
        }
    }
}

/// Drops database `name` (made by this test, or to be made by the `wabot` it runs)
/// when the test passes; keeps it and prints its name when the test fails.
pub fn drop_when_the_test_passes(name: &str) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let _ = SCRATCH.try_with(|s| {
                s.panicked.set(true);
                s.announce_kept();
            });
        }));
    });
    SCRATCH.with(|s| s.names.borrow_mut().push(name.to_owned()));
}

/// Drops `names` WITH (FORCE), on a thread of its own with a runtime of its own:
/// called from a destructor, maybe on a thread whose runtime is gone or running.
/// Never panics; a failure is printed.
fn drop_databases(names: Vec<String>) {
    let url = server_url();
    let listed = names.join(", ");
    let dropping = std::thread::Builder::new()
        .name("drop-test-databases".to_owned())
        .spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let options = PgConnectOptions::from_str(&url).map_err(|e| e.to_string())?;
                let work = async {
                    let mut admin =
                        PgConnection::connect_with(&options.database("postgres")).await?;
                    for name in &names {
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut admin)
                            .await?;
                    }
                    admin.close().await
                };
                match tokio::time::timeout(std::time::Duration::from_secs(60), work).await {
                    Ok(done) => done.map_err(|e| e.to_string()),
                    Err(_) => Err("timed out after 60 s".to_owned()),
                }
            })
        });
    let outcome = match dropping {
        Ok(thread) => thread
            .join()
            .unwrap_or_else(|_| Err("the dropping thread panicked".to_owned())),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = outcome {
        eprintln!("could not drop test databases {listed}: {e}");
    }
}

/// A pool on a fresh database with every migration applied.
pub async fn fresh_pool() -> PgPool {
    let url = create_empty_database().await;
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(wabot::store::connect_options(&url).expect("a database URL"))
        .await
        .expect("connect to the test database");
    wabot::store::migrate(&pool)
        .await
        .expect("migrations apply");
    pool
}

/// The configuration tests start from: fallback credentials set, worker off.
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config {
        database_url: database_url.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    config.whatsapp.app_secret = Some(SecretString::from(APP_SECRET));
    config.whatsapp.verify_token = Some(SecretString::from(VERIFY_TOKEN));
    config.whatsapp.access_token = Some(SecretString::from(ACCESS_TOKEN));
    config.whatsapp.phone_number_id = Some(PHONE_NUMBER_ID.to_owned());
    config.whatsapp.business_account_id = Some(BUSINESS_ACCOUNT_ID.to_owned());
    // Nothing listens on the discard port: a test that sends must point this at
    // its fake Graph API.
    config.whatsapp.graph_api_base = "http://127.0.0.1:9".to_owned();
    config.worker.enabled = false;
    config.worker.poll_interval_ms = 50;
    // No template sync at startup: it would be a Graph API call tests do not expect
    // (tests/it/e2e/templates.rs turns it on where it is the subject).
    config.worker.templates_sync_secs = 0;
    config.server.shutdown_timeout_secs = 5;
    config.datasource.allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
    // Media a test downloads never lands in the checkout.
    config.media.dir = std::env::temp_dir().join("wabot-test-media");
    config
}

/// A running wabot server and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    pub pool: PgPool,
    pub config: Config,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub state: AppState,
    /// `http://127.0.0.1:PORT` of `/metrics` when `WABOT_METRICS_LISTEN` is set.
    pub metrics_address: Option<String>,
    /// `http://127.0.0.1:PORT` of the operator API when `WABOT_ADMIN_LISTEN` is set.
    pub admin_address: Option<String>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the server on a fresh database after `configure` adjusted the config.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with_media(configure, None).await
}

/// [`spawn_app_with`], storing downloaded media in `media` when given.
pub async fn spawn_app_with_media(
    configure: impl FnOnce(&mut Config),
    media: Option<std::sync::Arc<dyn wabot::media::MediaStore>>,
) -> TestApp {
    let url = create_empty_database().await;
    let mut config = test_config(&url);
    configure(&mut config);
    let pool = PgPoolOptions::new()
        .max_connections(config.database.max_connections)
        .acquire_timeout(std::time::Duration::from_millis(
            config.database.acquire_timeout_ms,
        ))
        .connect_with(wabot::store::connect_options(&config.database_url).expect("a database URL"))
        .await
        .expect("connect to the test database");
    wabot::store::migrate(&pool)
        .await
        .expect("migrations apply");
    spawn_on_pool_with(config, pool, media).await
}

/// Starts the server on an existing pool (a second process on the same database).
pub async fn spawn_on_pool(config: Config, pool: PgPool) -> TestApp {
    spawn_on_pool_with(config, pool, None).await
}

async fn spawn_on_pool_with(
    config: Config,
    pool: PgPool,
    media: Option<std::sync::Arc<dyn wabot::media::MediaStore>>,
) -> TestApp {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .expect("bind a loopback port");
    let app = Application::with_media_store(config.clone(), pool.clone(), listener, media)
        .expect("the application assembles");
    let address = format!("http://{}", app.local_addr());
    let metrics_address = app.metrics_addr().map(|a| format!("http://{a}"));
    let admin_address = app.admin_addr().map(|a| format!("http://{a}"));
    let state = app.state().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    TestApp {
        address,
        pool,
        config,
        client: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap(),
        shutdown,
        state,
        metrics_address,
        admin_address,
        server: Some(server),
    }
}

impl TestApp {
    /// POSTs `body` to /webhook signed with the test app secret.
    pub async fn post_webhook(&self, body: &[u8]) -> reqwest::Response {
        self.client
            .post(format!("{}/webhook", self.address))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(body, APP_SECRET))
            .body(body.to_vec())
            .send()
            .await
            .expect("the server answers")
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server exits cleanly");
        }
    }

    /// Ends the server at once, like a killed process: no draining.
    pub fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, body), as Meta signs.
pub fn sign(body: &[u8], secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A path under the shared material beside the checkout (`../shared`).
pub fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel)
}

/// `shared(rel)` when it exists; otherwise `None`, after saying on stderr that the
/// part of the test that needs it was skipped (a pass must not hide that).
pub fn shared_if_present(rel: &str) -> Option<PathBuf> {
    let path = shared(rel);
    if path.exists() {
        return Some(path);
    }
    eprintln!("skipped: ../shared/{rel} is not beside this checkout (the fixtures stand for it)");
    None
}
