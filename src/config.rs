//! wabot's one typed configuration.
//!
//! Layers, later ones win: built-in defaults, then an optional TOML file, then
//! environment variables. Every value is validated once at start-up; a bad value
//! fails with an error that names the key (`WABOT_LISTEN`, `worker.turn_concurrency`,
//! ...), so a typo in a unit file never turns into a silent default.
//!
//! Secrets (access token, app secret, verify token, the Flows key passphrase) are
//! `SecretString`s: their `Debug` prints `[REDACTED]`, so a config logged by accident
//! leaks nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;
use serde::Deserialize;

/// The whole configuration of a wabot process. Debug shows `database_url` without
/// its password (see the impl below).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `DATABASE_URL`: the PostgreSQL database wabot owns (created when missing).
    pub database_url: String,
    /// `WABOT_LISTEN`: the address the HTTP server binds.
    pub listen: SocketAddr,
    pub database: DatabaseConfig,
    pub whatsapp: WhatsAppConfig,
    pub server: ServerConfig,
    pub worker: WorkerConfig,
    pub pipeline: PipelineConfig,
    pub engine: EngineConfig,
    pub flows: FlowsConfig,
    pub datasource: DataSourceConfig,
    pub log: LogConfig,
    pub retention: RetentionConfig,
    pub session: SessionConfig,
    pub media: MediaConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &crate::text::redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("database", &self.database)
            .field("whatsapp", &self.whatsapp)
            .field("server", &self.server)
            .field("worker", &self.worker)
            .field("engine", &self.engine)
            .field("flows", &self.flows)
            .field("datasource", &self.datasource)
            .field("log", &self.log)
            .field("retention", &self.retention)
            .field("session", &self.session)
            .field("media", &self.media)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `WABOT_DB_MAX_CONNECTIONS`: the size of the connection pool.
    pub max_connections: u32,
    /// `WABOT_DB_ACQUIRE_TIMEOUT_MS`: how long a request waits for a connection before
    /// it gives up (a webhook then answers 503 so that Meta retries).
    pub acquire_timeout_ms: u64,
}

/// Meta's Graph API and the fallback credentials used while no active
/// `whatsapp_config` row exists.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhatsAppConfig {
    /// `WABOT_GRAPH_API_BASE`
    pub graph_api_base: String,
    /// `WABOT_GRAPH_API_VERSION`
    pub graph_api_version: String,
    /// `WABOT_GRAPH_TIMEOUT_MS`: total timeout of one Graph API call.
    pub graph_timeout_ms: u64,
    /// `WABOT_PHONE_NUMBER_ID`
    pub phone_number_id: Option<String>,
    /// `WABOT_BUSINESS_ACCOUNT_ID`
    pub business_account_id: Option<String>,
    /// `WABOT_ACCESS_TOKEN`
    pub access_token: Option<SecretString>,
    /// `WABOT_APP_SECRET`
    pub app_secret: Option<SecretString>,
    /// `WABOT_VERIFY_TOKEN`
    pub verify_token: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// `WABOT_SHUTDOWN_TIMEOUT_SECS`: how long a graceful shutdown may drain
    /// in-flight requests, turns and sends before the process exits anyway.
    pub shutdown_timeout_secs: u64,
    /// `WABOT_REQUEST_TIMEOUT_SECS`: the longest any one HTTP request may take.
    pub request_timeout_secs: u64,
    /// `WABOT_HEADER_TIMEOUT_SECS`: from accept to the first complete request head,
    /// and from a later head's first byte to its end; a silent or half-written
    /// connection is closed after it.
    pub header_timeout_secs: u64,
    /// `WABOT_IDLE_TIMEOUT_SECS`: a connection with no request in flight is closed
    /// after this long.
    pub idle_timeout_secs: u64,
    /// `WABOT_MAX_CONNECTIONS`: connections served at once; more get 503 and are
    /// closed at once.
    pub max_connections: usize,
    /// `WABOT_BODY_TIMEOUT_SECS`: from the request head to the end of its body;
    /// a body slower than that gets 408.
    pub body_timeout_secs: u64,
    /// `WABOT_METRICS_LISTEN`: serve `/metrics` on this address alone instead of on
    /// the main listener (which faces Meta and the internet).
    pub metrics_listen: Option<SocketAddr>,
    /// `WABOT_ADMIN_LISTEN`: serve the operator API (`/v1`) on this address; off
    /// when unset. Never on the main listener.
    pub admin_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// `WABOT_WORKER_ENABLED`: run the turn worker and sender in this process.
    pub enabled: bool,
    /// `WABOT_TURN_CONCURRENCY`: conversations whose turns run at once. It also
    /// bounds how many turns one read and one commit batch can hold, so the default
    /// is one full `WABOT_TURN_BATCH`: at 32, the closed loop of docs/perf-e2e.md
    /// paid twice PostgreSQL's CPU per turn; at 256 it shed half the statuses.
    pub turn_concurrency: usize,
    /// `WABOT_LEASE_SECS`: how long a claimed job stays ours without a heartbeat.
    pub lease_secs: u64,
    /// `WABOT_SEND_RATE`: messages per second per business number.
    pub send_rate_per_sec: u32,
    /// `WABOT_SEND_MAX_ATTEMPTS`: attempts of a retryable send before it fails.
    pub send_max_attempts: u32,
    /// `WABOT_SEND_RETRY_BASE_MS`: the first delay of a retried send; it doubles with
    /// every attempt (quadruples after Meta's pair rate limit, 131056), with jitter.
    pub send_retry_base_ms: u64,
    /// `WABOT_POLL_INTERVAL_MS`: how often idle workers look for work they were not
    /// notified of (jobs of other processes, expired leases, due timers).
    pub poll_interval_ms: u64,
    /// `WABOT_EVENTS_RETRY_SECS`: how long an event is retried before it is marked
    /// failed (re-sendable with `wabot webhook resend`).
    pub events_retry_secs: u64,
    /// `WABOT_EVENTS_RETRY_BASE_MS`: the first delay of a retried event; it doubles
    /// with every attempt, up to an hour.
    pub events_retry_base_ms: u64,
    /// `WABOT_EVENTS_TIMEOUT_MS`: the timeout of one delivery to an endpoint.
    pub events_timeout_ms: u64,
    /// `WABOT_TEMPLATES_SYNC_SECS`: how often the template catalogue is read from
    /// Meta again (0: only `wabot templates sync` and the status webhook).
    pub templates_sync_secs: u64,
}

/// The bounds of the pipeline's batches and in-memory queues.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// `WABOT_INGEST_QUEUE`: webhooks waiting for the ingest stage; past it they
    /// are answered 503 at once (Meta delivers them again).
    pub ingest_queue: usize,
    /// `WABOT_INGEST_BATCH`: the most webhooks stored in one transaction.
    pub ingest_batch: usize,
    /// `WABOT_INGEST_WRITERS`: ingest transactions in flight at once.
    pub ingest_writers: usize,
    /// `WABOT_TURN_QUEUE`: leased turn jobs waiting for the turn stage.
    pub turn_queue: usize,
    /// `WABOT_TURN_BATCH`: the most turns read, and committed, together.
    pub turn_batch: usize,
    /// `WABOT_SEND_QUEUE`: committed replies held in memory by the sender.
    pub send_queue: usize,
    /// `WABOT_SEND_BATCH`: the most send outcomes recorded in one transaction.
    pub send_batch: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// `WABOT_MAX_STEPS_PER_TURN`: nodes one turn may execute before the loop guard
    /// ends the context.
    pub max_steps_per_turn: u32,
    /// `WABOT_CONTEXT_TTL_SECS`: a context that waits longer than this expires.
    pub context_ttl_secs: u64,
    /// `WABOT_CHATBOT_CACHE_SIZE`: compiled chatbots kept in memory.
    pub chatbot_cache_size: usize,
    /// `WABOT_MAX_SENDS_PER_TURN`: messages one turn may send before the loop guard
    /// ends the context (a message cycle would otherwise flood the customer).
    pub max_sends_per_turn: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowsConfig {
    /// `WABOT_FLOWS_PRIVATE_KEY`: path of the PEM private key of the Flows endpoint.
    pub private_key: Option<PathBuf>,
    /// `WABOT_FLOWS_PRIVATE_KEY_PASSPHRASE`
    pub private_key_passphrase: Option<SecretString>,
    /// `WABOT_FLOWS_ENDPOINT_PATH`
    pub endpoint_path: String,
    /// `WABOT_FLOWS_DEADLINE_MS`: the time budget of one endpoint answer (Meta
    /// allows 1 s; data sources that take longer get an error message on screen).
    pub deadline_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSourceConfig {
    /// `WABOT_DATASOURCE_ALLOWED_NETWORKS`: private, loopback or link-local networks
    /// data sources and rest_api nodes may reach anyway (comma separated CIDRs).
    pub allowed_networks: Vec<IpNet>,
    /// `WABOT_DATASOURCE_DEFAULT_TIMEOUT_MS`
    pub default_timeout_ms: u64,
    /// `WABOT_DATASOURCE_MAX_TIMEOUT_MS`: the ceiling of any configured timeout.
    pub max_timeout_ms: u64,
    /// `WABOT_DATASOURCE_MAX_RESPONSE_BYTES`
    pub max_response_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable when stderr is a terminal, JSON lines otherwise.
    Auto,
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `WABOT_LOG_FORMAT`: auto | pretty | json.
    pub format: LogFormat,
    /// `WABOT_LOG_FILTER`: the default filter; `RUST_LOG` overrides it.
    pub filter: String,
}

/// How long the raw records (`webhook_events`, `webhook_unreadable`,
/// `wabot_turn_log`) are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// `WABOT_RETENTION_DAYS`: raw records older than this are purged by the
    /// maintenance task, in small batches; 0 keeps them for ever. The default, 7,
    /// is Meta's own redelivery horizon.
    pub days: u32,
}

/// The session rules' settings (src/session/): opt-out words and texts, and how
/// long an agent's silence gives the conversation back to the bot.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// `WABOT_OPT_OUT_WORDS` (comma separated): a customer's message that is exactly
    /// one of these, after trimming and case folding, opts them out.
    pub opt_out_words: Vec<String>,
    /// `WABOT_OPT_IN_WORDS`: the same, to opt back in (only an opted-out customer's).
    pub opt_in_words: Vec<String>,
    /// `WABOT_OPT_OUT_MESSAGE`: the confirmation sent on opt-out.
    pub opt_out_message: String,
    /// `WABOT_OPT_IN_MESSAGE`: the confirmation sent on opt-in.
    pub opt_in_message: String,
    /// `WABOT_HANDOVER_IDLE_SECS`: an agent silent this long gives the conversation
    /// back to the bot (and a request for a person nobody took expires).
    pub handover_idle_secs: u64,
    /// `WABOT_MARK_READ`: when a turn starts for a customer's message, mark it read
    /// and show the typing indicator (one Graph call, never retried).
    pub mark_read: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            opt_out_words: ["stop", "unsubscribe", "stopall", "opt out", "opt-out"]
                .map(str::to_owned)
                .to_vec(),
            opt_in_words: ["start", "subscribe", "unstop", "opt in", "opt-in"]
                .map(str::to_owned)
                .to_vec(),
            opt_out_message: "You will no longer receive messages from us. Reply START to \
                              subscribe again."
                .to_owned(),
            opt_in_message: "You are subscribed again. Reply STOP to stop.".to_owned(),
            handover_idle_secs: 30 * 60,
            mark_read: true,
        }
    }
}

/// The longest retention accepted (a century): an age past it is a typo.
pub const RETENTION_MAX_DAYS: u32 = 36_500;

/// Inbound media downloads and where the bytes go.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// `WABOT_MEDIA_DIR`: the directory media is stored in when no S3 bucket is
    /// set (created when the first file is written).
    pub dir: PathBuf,
    pub s3: MediaS3Config,
    /// `WABOT_MEDIA_CONCURRENCY`: downloads running at once in this process.
    pub concurrency: usize,
    /// `WABOT_MEDIA_MAX_ATTEMPTS`: attempts of a download before it is given up.
    pub max_attempts: u32,
    /// `WABOT_MEDIA_RETRY_BASE_MS`: the first delay of a retried download; it
    /// doubles with every attempt (at most 15 minutes), with jitter.
    pub retry_base_ms: u64,
    /// `WABOT_MEDIA_TIMEOUT_SECS`: the longest one download may take, from the
    /// media id to the last byte stored.
    pub timeout_secs: u64,
    /// `WABOT_MEDIA_RETENTION_DAYS`: stored media older than this is deleted with
    /// its job (0 keeps it for ever); unset follows `WABOT_RETENTION_DAYS`.
    pub retention_days: Option<u32>,
}

/// S3-compatible object storage for media: used when `bucket` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaS3Config {
    /// `WABOT_MEDIA_S3_BUCKET`
    pub bucket: Option<String>,
    /// `WABOT_MEDIA_S3_ENDPOINT`: for S3-compatible services (MinIO, R2, ...);
    /// unset is AWS.
    pub endpoint: Option<String>,
    /// `WABOT_MEDIA_S3_REGION`
    pub region: Option<String>,
    /// `WABOT_MEDIA_S3_ACCESS_KEY_ID`
    pub access_key_id: Option<SecretString>,
    /// `WABOT_MEDIA_S3_SECRET_ACCESS_KEY`
    pub secret_access_key: Option<SecretString>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            dir: PathBuf::from("wabot-media"),
            s3: MediaS3Config::default(),
            concurrency: 4,
            max_attempts: 12,
            retry_base_ms: 2_000,
            timeout_secs: 300,
            retention_days: None,
        }
    }
}

impl Config {
    /// How long stored media is kept, in days (0: for ever).
    pub fn media_retention_days(&self) -> u32 {
        self.media.retention_days.unwrap_or(self.retention.days)
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { days: 7 }
    }
}

/// A configuration value that is not acceptable, with the key that holds it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "postgres://postgres@127.0.0.1:5432/wabot".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: DatabaseConfig::default(),
            whatsapp: WhatsAppConfig::default(),
            server: ServerConfig::default(),
            worker: WorkerConfig::default(),
            pipeline: PipelineConfig::default(),
            engine: EngineConfig::default(),
            flows: FlowsConfig::default(),
            datasource: DataSourceConfig::default(),
            log: LogConfig::default(),
            retention: RetentionConfig::default(),
            session: SessionConfig::default(),
            media: MediaConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            max_connections: 20,
            acquire_timeout_ms: 3_000,
        }
    }
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        WhatsAppConfig {
            graph_api_base: "https://graph.facebook.com".to_owned(),
            graph_api_version: "v24.0".to_owned(),
            graph_timeout_ms: 10_000,
            phone_number_id: None,
            business_account_id: None,
            access_token: None,
            app_secret: None,
            verify_token: None,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shutdown_timeout_secs: 20,
            request_timeout_secs: 30,
            header_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 1024,
            body_timeout_secs: 15,
            metrics_listen: None,
            admin_listen: None,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            enabled: true,
            turn_concurrency: 128,
            lease_secs: 30,
            send_rate_per_sec: 80,
            send_max_attempts: 12,
            send_retry_base_ms: 1_000,
            poll_interval_ms: 500,
            events_retry_secs: 86_400,
            events_retry_base_ms: 5_000,
            events_timeout_ms: 10_000,
            templates_sync_secs: 3600,
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            ingest_queue: 2048,
            ingest_batch: 256,
            ingest_writers: 2,
            turn_queue: 4096,
            turn_batch: 128,
            send_queue: 8192,
            send_batch: 256,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_steps_per_turn: 100,
            context_ttl_secs: 24 * 60 * 60,
            chatbot_cache_size: 256,
            max_sends_per_turn: 10,
        }
    }
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            private_key: None,
            private_key_passphrase: None,
            endpoint_path: "/flows/endpoint".to_owned(),
            deadline_ms: 900,
        }
    }
}

impl Default for DataSourceConfig {
    fn default() -> Self {
        DataSourceConfig {
            allowed_networks: Vec::new(),
            default_timeout_ms: 10_000,
            max_timeout_ms: 30_000,
            max_response_bytes: 5 * 1024 * 1024,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Auto,
            filter: "info,sqlx=warn,hyper=warn".to_owned(),
        }
    }
}

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "wabot.toml";

impl Config {
    /// Loads the configuration the way `wabot` does: defaults, then `file` (or
    /// `wabot.toml` when present), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Config::load_from(file, &env)
    }

    /// Like [`Config::load`] with an explicit environment, so tests need not touch
    /// the process's own.
    pub fn load_from(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => Config::from_file(path)?,
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Config::from_file(Path::new(DEFAULT_CONFIG_FILE))?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let get = |key: &str| env.get(key).filter(|v| !v.is_empty());
        if let Some(v) = get("DATABASE_URL") {
            self.database_url = v.clone();
        }
        set_parsed(env, "WABOT_LISTEN", &mut self.listen)?;
        set_parsed(
            env,
            "WABOT_DB_MAX_CONNECTIONS",
            &mut self.database.max_connections,
        )?;
        set_parsed(
            env,
            "WABOT_DB_ACQUIRE_TIMEOUT_MS",
            &mut self.database.acquire_timeout_ms,
        )?;

        let wa = &mut self.whatsapp;
        if let Some(v) = get("WABOT_GRAPH_API_BASE") {
            wa.graph_api_base = v.clone();
        }
        if let Some(v) = get("WABOT_GRAPH_API_VERSION") {
            wa.graph_api_version = v.clone();
        }
        set_parsed(env, "WABOT_GRAPH_TIMEOUT_MS", &mut wa.graph_timeout_ms)?;
        if let Some(v) = get("WABOT_PHONE_NUMBER_ID") {
            wa.phone_number_id = Some(v.clone());
        }
        if let Some(v) = get("WABOT_BUSINESS_ACCOUNT_ID") {
            wa.business_account_id = Some(v.clone());
        }
        if let Some(v) = get("WABOT_ACCESS_TOKEN") {
            wa.access_token = Some(SecretString::from(v.clone()));
        }
        if let Some(v) = get("WABOT_APP_SECRET") {
            wa.app_secret = Some(SecretString::from(v.clone()));
        }
        if let Some(v) = get("WABOT_VERIFY_TOKEN") {
            wa.verify_token = Some(SecretString::from(v.clone()));
        }

        set_parsed(
            env,
            "WABOT_SHUTDOWN_TIMEOUT_SECS",
            &mut self.server.shutdown_timeout_secs,
        )?;
        set_parsed(
            env,
            "WABOT_REQUEST_TIMEOUT_SECS",
            &mut self.server.request_timeout_secs,
        )?;
        let s = &mut self.server;
        set_parsed(env, "WABOT_HEADER_TIMEOUT_SECS", &mut s.header_timeout_secs)?;
        set_parsed(env, "WABOT_IDLE_TIMEOUT_SECS", &mut s.idle_timeout_secs)?;
        set_parsed(env, "WABOT_MAX_CONNECTIONS", &mut s.max_connections)?;
        set_parsed(env, "WABOT_BODY_TIMEOUT_SECS", &mut s.body_timeout_secs)?;
        if env
            .get("WABOT_METRICS_LISTEN")
            .is_some_and(|v| !v.is_empty())
        {
            let mut addr = SocketAddr::from(([127, 0, 0, 1], 0));
            set_parsed(env, "WABOT_METRICS_LISTEN", &mut addr)?;
            s.metrics_listen = Some(addr);
        }
        if env.get("WABOT_ADMIN_LISTEN").is_some_and(|v| !v.is_empty()) {
            let mut addr = SocketAddr::from(([127, 0, 0, 1], 0));
            set_parsed(env, "WABOT_ADMIN_LISTEN", &mut addr)?;
            s.admin_listen = Some(addr);
        }

        let w = &mut self.worker;
        set_parsed(env, "WABOT_WORKER_ENABLED", &mut w.enabled)?;
        set_parsed(env, "WABOT_TURN_CONCURRENCY", &mut w.turn_concurrency)?;
        set_parsed(env, "WABOT_LEASE_SECS", &mut w.lease_secs)?;
        set_parsed(env, "WABOT_SEND_RATE", &mut w.send_rate_per_sec)?;
        set_parsed(env, "WABOT_SEND_MAX_ATTEMPTS", &mut w.send_max_attempts)?;
        set_parsed(env, "WABOT_SEND_RETRY_BASE_MS", &mut w.send_retry_base_ms)?;
        set_parsed(env, "WABOT_POLL_INTERVAL_MS", &mut w.poll_interval_ms)?;
        set_parsed(env, "WABOT_EVENTS_RETRY_SECS", &mut w.events_retry_secs)?;
        set_parsed(
            env,
            "WABOT_EVENTS_RETRY_BASE_MS",
            &mut w.events_retry_base_ms,
        )?;
        set_parsed(env, "WABOT_EVENTS_TIMEOUT_MS", &mut w.events_timeout_ms)?;
        set_parsed(env, "WABOT_TEMPLATES_SYNC_SECS", &mut w.templates_sync_secs)?;

        let p = &mut self.pipeline;
        set_parsed(env, "WABOT_INGEST_QUEUE", &mut p.ingest_queue)?;
        set_parsed(env, "WABOT_INGEST_BATCH", &mut p.ingest_batch)?;
        set_parsed(env, "WABOT_INGEST_WRITERS", &mut p.ingest_writers)?;
        set_parsed(env, "WABOT_TURN_QUEUE", &mut p.turn_queue)?;
        set_parsed(env, "WABOT_TURN_BATCH", &mut p.turn_batch)?;
        set_parsed(env, "WABOT_SEND_QUEUE", &mut p.send_queue)?;
        set_parsed(env, "WABOT_SEND_BATCH", &mut p.send_batch)?;

        let e = &mut self.engine;
        set_parsed(env, "WABOT_MAX_STEPS_PER_TURN", &mut e.max_steps_per_turn)?;
        set_parsed(env, "WABOT_CONTEXT_TTL_SECS", &mut e.context_ttl_secs)?;
        set_parsed(env, "WABOT_CHATBOT_CACHE_SIZE", &mut e.chatbot_cache_size)?;
        set_parsed(env, "WABOT_MAX_SENDS_PER_TURN", &mut e.max_sends_per_turn)?;

        let f = &mut self.flows;
        if let Some(v) = get("WABOT_FLOWS_PRIVATE_KEY") {
            f.private_key = Some(PathBuf::from(v));
        }
        if let Some(v) = get("WABOT_FLOWS_PRIVATE_KEY_PASSPHRASE") {
            f.private_key_passphrase = Some(SecretString::from(v.clone()));
        }
        if let Some(v) = get("WABOT_FLOWS_ENDPOINT_PATH") {
            f.endpoint_path = v.clone();
        }
        set_parsed(env, "WABOT_FLOWS_DEADLINE_MS", &mut f.deadline_ms)?;

        let d = &mut self.datasource;
        if let Some(v) = get("WABOT_DATASOURCE_ALLOWED_NETWORKS") {
            d.allowed_networks = parse_networks("WABOT_DATASOURCE_ALLOWED_NETWORKS", v)?;
        }
        set_parsed(
            env,
            "WABOT_DATASOURCE_DEFAULT_TIMEOUT_MS",
            &mut d.default_timeout_ms,
        )?;
        set_parsed(
            env,
            "WABOT_DATASOURCE_MAX_TIMEOUT_MS",
            &mut d.max_timeout_ms,
        )?;
        set_parsed(
            env,
            "WABOT_DATASOURCE_MAX_RESPONSE_BYTES",
            &mut d.max_response_bytes,
        )?;

        if let Some(v) = get("WABOT_LOG_FORMAT") {
            self.log.format = match v.as_str() {
                "auto" => LogFormat::Auto,
                "pretty" => LogFormat::Pretty,
                "json" => LogFormat::Json,
                other => {
                    return Err(ConfigError::invalid(
                        "WABOT_LOG_FORMAT",
                        format!("`{other}` is not one of auto, pretty, json"),
                    ))
                }
            };
        }
        if let Some(v) = get("WABOT_LOG_FILTER") {
            self.log.filter = v.clone();
        }
        set_parsed(env, "WABOT_RETENTION_DAYS", &mut self.retention.days)?;
        let words = |v: &String| -> Vec<String> {
            v.split(',')
                .map(|w| w.trim().to_owned())
                .filter(|w| !w.is_empty())
                .collect()
        };
        if let Some(v) = get("WABOT_OPT_OUT_WORDS") {
            self.session.opt_out_words = words(v);
        }
        if let Some(v) = get("WABOT_OPT_IN_WORDS") {
            self.session.opt_in_words = words(v);
        }
        if let Some(v) = get("WABOT_OPT_OUT_MESSAGE") {
            self.session.opt_out_message = v.clone();
        }
        if let Some(v) = get("WABOT_OPT_IN_MESSAGE") {
            self.session.opt_in_message = v.clone();
        }
        set_parsed(
            env,
            "WABOT_HANDOVER_IDLE_SECS",
            &mut self.session.handover_idle_secs,
        )?;
        set_parsed(env, "WABOT_MARK_READ", &mut self.session.mark_read)?;

        let m = &mut self.media;
        if let Some(v) = get("WABOT_MEDIA_DIR") {
            m.dir = PathBuf::from(v);
        }
        set_parsed(env, "WABOT_MEDIA_CONCURRENCY", &mut m.concurrency)?;
        set_parsed(env, "WABOT_MEDIA_MAX_ATTEMPTS", &mut m.max_attempts)?;
        set_parsed(env, "WABOT_MEDIA_RETRY_BASE_MS", &mut m.retry_base_ms)?;
        set_parsed(env, "WABOT_MEDIA_TIMEOUT_SECS", &mut m.timeout_secs)?;
        if get("WABOT_MEDIA_RETENTION_DAYS").is_some() {
            let mut days = 0;
            set_parsed(env, "WABOT_MEDIA_RETENTION_DAYS", &mut days)?;
            m.retention_days = Some(days);
        }
        let s3 = &mut m.s3;
        for (key, slot) in [
            ("WABOT_MEDIA_S3_BUCKET", &mut s3.bucket),
            ("WABOT_MEDIA_S3_ENDPOINT", &mut s3.endpoint),
            ("WABOT_MEDIA_S3_REGION", &mut s3.region),
        ] {
            if let Some(v) = get(key) {
                *slot = Some(v.clone());
            }
        }
        if let Some(v) = get("WABOT_MEDIA_S3_ACCESS_KEY_ID") {
            s3.access_key_id = Some(SecretString::from(v.clone()));
        }
        if let Some(v) = get("WABOT_MEDIA_S3_SECRET_ACCESS_KEY") {
            s3.secret_access_key = Some(SecretString::from(v.clone()));
        }
        Ok(())
    }

    /// Checks what types alone cannot: ranges, URL shapes, paths.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match url::Url::parse(&self.database_url) {
            Ok(u) if matches!(u.scheme(), "postgres" | "postgresql") => {}
            _ => {
                return Err(ConfigError::invalid(
                    "DATABASE_URL",
                    "must be a postgres:// URL",
                ))
            }
        }
        match url::Url::parse(&self.whatsapp.graph_api_base) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(ConfigError::invalid(
                    "WABOT_GRAPH_API_BASE",
                    "must be an http(s) URL such as https://graph.facebook.com",
                ))
            }
        }
        let version = &self.whatsapp.graph_api_version;
        if !is_api_version(version) {
            return Err(ConfigError::invalid(
                "WABOT_GRAPH_API_VERSION",
                format!("`{version}` is not a Graph API version such as v24.0"),
            ));
        }
        positive("WABOT_DB_MAX_CONNECTIONS", self.database.max_connections)?;
        let p = &self.pipeline;
        for (key, value) in [
            ("WABOT_INGEST_QUEUE", p.ingest_queue),
            ("WABOT_INGEST_BATCH", p.ingest_batch),
            ("WABOT_INGEST_WRITERS", p.ingest_writers),
            ("WABOT_TURN_QUEUE", p.turn_queue),
            ("WABOT_TURN_BATCH", p.turn_batch),
            ("WABOT_SEND_QUEUE", p.send_queue),
            ("WABOT_SEND_BATCH", p.send_batch),
        ] {
            positive(key, value as u64)?;
        }
        positive(
            "WABOT_DB_ACQUIRE_TIMEOUT_MS",
            self.database.acquire_timeout_ms,
        )?;
        positive("WABOT_GRAPH_TIMEOUT_MS", self.whatsapp.graph_timeout_ms)?;
        positive(
            "WABOT_TURN_CONCURRENCY",
            self.worker.turn_concurrency as u64,
        )?;
        positive("WABOT_LEASE_SECS", self.worker.lease_secs)?;
        positive("WABOT_SEND_RATE", self.worker.send_rate_per_sec)?;
        positive("WABOT_SEND_MAX_ATTEMPTS", self.worker.send_max_attempts)?;
        positive("WABOT_SEND_RETRY_BASE_MS", self.worker.send_retry_base_ms)?;
        positive("WABOT_POLL_INTERVAL_MS", self.worker.poll_interval_ms)?;
        positive(
            "WABOT_EVENTS_RETRY_BASE_MS",
            self.worker.events_retry_base_ms,
        )?;
        positive("WABOT_EVENTS_TIMEOUT_MS", self.worker.events_timeout_ms)?;
        if self
            .server
            .admin_listen
            .is_some_and(|a| a == self.listen && a.port() != 0)
        {
            return Err(ConfigError::invalid(
                "WABOT_ADMIN_LISTEN",
                "must differ from WABOT_LISTEN: the operator API never shares Meta's listener"
                    .to_owned(),
            ));
        }
        positive("WABOT_MAX_STEPS_PER_TURN", self.engine.max_steps_per_turn)?;
        positive("WABOT_CONTEXT_TTL_SECS", self.engine.context_ttl_secs)?;
        positive("WABOT_HANDOVER_IDLE_SECS", self.session.handover_idle_secs)?;
        positive("WABOT_MAX_SENDS_PER_TURN", self.engine.max_sends_per_turn)?;
        positive("WABOT_FLOWS_DEADLINE_MS", self.flows.deadline_ms)?;
        positive("WABOT_HEADER_TIMEOUT_SECS", self.server.header_timeout_secs)?;
        positive("WABOT_IDLE_TIMEOUT_SECS", self.server.idle_timeout_secs)?;
        positive("WABOT_MAX_CONNECTIONS", self.server.max_connections as u64)?;
        positive("WABOT_BODY_TIMEOUT_SECS", self.server.body_timeout_secs)?;
        positive(
            "WABOT_DATASOURCE_DEFAULT_TIMEOUT_MS",
            self.datasource.default_timeout_ms,
        )?;
        positive(
            "WABOT_DATASOURCE_MAX_RESPONSE_BYTES",
            self.datasource.max_response_bytes as u64,
        )?;
        if self.datasource.max_timeout_ms < self.datasource.default_timeout_ms {
            return Err(ConfigError::invalid(
                "WABOT_DATASOURCE_MAX_TIMEOUT_MS",
                "must not be below WABOT_DATASOURCE_DEFAULT_TIMEOUT_MS",
            ));
        }
        if !self.flows.endpoint_path.starts_with('/') || self.flows.endpoint_path == "/webhook" {
            return Err(ConfigError::invalid(
                "WABOT_FLOWS_ENDPOINT_PATH",
                "must be an absolute path other than /webhook",
            ));
        }
        positive("WABOT_MEDIA_CONCURRENCY", self.media.concurrency as u64)?;
        positive("WABOT_MEDIA_MAX_ATTEMPTS", self.media.max_attempts)?;
        positive("WABOT_MEDIA_RETRY_BASE_MS", self.media.retry_base_ms)?;
        positive("WABOT_MEDIA_TIMEOUT_SECS", self.media.timeout_secs)?;
        if self.media.retention_days.unwrap_or(0) > RETENTION_MAX_DAYS {
            return Err(ConfigError::invalid(
                "WABOT_MEDIA_RETENTION_DAYS",
                format!("must be at most {RETENTION_MAX_DAYS} (0 keeps media for ever)"),
            ));
        }
        if let Some(endpoint) = &self.media.s3.endpoint {
            if !matches!(url::Url::parse(endpoint), Ok(u) if matches!(u.scheme(), "http" | "https"))
            {
                return Err(ConfigError::invalid(
                    "WABOT_MEDIA_S3_ENDPOINT",
                    "must be an http(s) URL such as https://s3.eu-central-1.amazonaws.com",
                ));
            }
        }
        if self.retention.days > RETENTION_MAX_DAYS {
            return Err(ConfigError::invalid(
                "WABOT_RETENTION_DAYS",
                format!("must be at most {RETENTION_MAX_DAYS} (0 keeps raw records for ever)"),
            ));
        }
        Ok(())
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.server.shutdown_timeout_secs)
    }
}

fn positive<T: Into<u64>>(key: &str, value: T) -> Result<(), ConfigError> {
    if value.into() == 0 {
        return Err(ConfigError::invalid(key, "must be greater than 0"));
    }
    Ok(())
}

/// Overwrites `slot` with the parsed value of `key`, when the variable is set.
/// Whether `version` names a Graph API version: `v` and dot-separated numbers
/// (`v24.0`).
pub fn is_api_version(version: &str) -> bool {
    version.strip_prefix('v').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .split('.')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn set_parsed<T>(env: &HashMap<String, String>, key: &str, slot: &mut T) -> Result<(), ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let Some(raw) = env.get(key).filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    *slot = raw
        .trim()
        .parse()
        .map_err(|e| ConfigError::invalid(key, format!("`{raw}` is not valid: {e}")))?;
    Ok(())
}

fn parse_networks(key: &str, raw: &str) -> Result<Vec<IpNet>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            // A bare address is a network of one.
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| ConfigError::invalid(key, format!("`{s}` is not an address or CIDR")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::load_from(None, &env(&[])).unwrap();
        assert_eq!(c.database_url, "postgres://postgres@127.0.0.1:5432/wabot");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.whatsapp.graph_api_base, "https://graph.facebook.com");
        assert_eq!(c.whatsapp.graph_api_version, "v24.0");
    }

    #[test]
    fn environment_overrides_and_bad_values_name_the_key() {
        let c = Config::load_from(
            None,
            &env(&[
                ("WABOT_LISTEN", "0.0.0.0:9000"),
                ("WABOT_DATASOURCE_ALLOWED_NETWORKS", "127.0.0.0/8, ::1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.datasource.allowed_networks.len(), 2);

        let err = Config::load_from(None, &env(&[("WABOT_LISTEN", "nope")])).unwrap_err();
        assert!(err.to_string().contains("WABOT_LISTEN"), "{err}");
        let err = Config::load_from(None, &env(&[("WABOT_GRAPH_API_VERSION", "24")])).unwrap_err();
        assert!(err.to_string().contains("WABOT_GRAPH_API_VERSION"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let c =
            Config::load_from(None, &env(&[("WABOT_ACCESS_TOKEN", "EAAG-very-secret")])).unwrap();
        assert!(!format!("{c:?}").contains("EAAG-very-secret"));
    }

    #[test]
    fn toml_file_is_layered_under_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wabot.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\n[worker]\nturn_concurrency = 4\n",
        )
        .unwrap();
        let c = Config::load_from(Some(&path), &env(&[])).unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.worker.turn_concurrency, 4);
        let c =
            Config::load_from(Some(&path), &env(&[("WABOT_LISTEN", "127.0.0.1:7001")])).unwrap();
        assert_eq!(c.listen.port(), 7001);

        std::fs::write(&path, "[worker]\nturn_concurency = 4\n").unwrap();
        let err = Config::load_from(Some(&path), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("turn_concurency"), "{err}");
    }

    #[test]
    fn listener_limits_come_from_the_environment_and_zero_is_refused() {
        let c = Config::load_from(None, &env(&[])).unwrap();
        assert_eq!(c.server.header_timeout_secs, 10);
        assert_eq!(c.server.max_connections, 1024);
        let c = Config::load_from(
            None,
            &env(&[
                ("WABOT_HEADER_TIMEOUT_SECS", "3"),
                ("WABOT_IDLE_TIMEOUT_SECS", "4"),
                ("WABOT_MAX_CONNECTIONS", "5"),
                ("WABOT_BODY_TIMEOUT_SECS", "6"),
                ("WABOT_REQUEST_TIMEOUT_SECS", "7"),
            ]),
        )
        .unwrap();
        let s = &c.server;
        assert_eq!(
            (
                s.header_timeout_secs,
                s.idle_timeout_secs,
                s.max_connections
            ),
            (3, 4, 5)
        );
        assert_eq!((s.body_timeout_secs, s.request_timeout_secs), (6, 7));
        let err = Config::load_from(None, &env(&[("WABOT_MAX_CONNECTIONS", "0")])).unwrap_err();
        assert!(err.to_string().contains("WABOT_MAX_CONNECTIONS"), "{err}");
    }

    #[test]
    fn media_settings_come_from_the_environment_and_secrets_do_not_print() {
        let c = Config::load_from(None, &env(&[("WABOT_RETENTION_DAYS", "3")])).unwrap();
        assert_eq!(c.media.dir, PathBuf::from("wabot-media"));
        assert_eq!(c.media_retention_days(), 3);
        let c = Config::load_from(
            None,
            &env(&[
                ("WABOT_MEDIA_DIR", "/var/lib/wabot/media"),
                ("WABOT_MEDIA_RETENTION_DAYS", "30"),
                ("WABOT_MEDIA_S3_BUCKET", "media"),
                ("WABOT_MEDIA_S3_ENDPOINT", "http://127.0.0.1:9000"),
                ("WABOT_MEDIA_S3_SECRET_ACCESS_KEY", "s3-very-secret"),
            ]),
        )
        .unwrap();
        assert_eq!(c.media.dir, PathBuf::from("/var/lib/wabot/media"));
        assert_eq!(c.media_retention_days(), 30);
        assert_eq!(c.media.s3.bucket.as_deref(), Some("media"));
        assert!(!format!("{c:?}").contains("s3-very-secret"));
        for (key, bad) in [
            ("WABOT_MEDIA_CONCURRENCY", "0"),
            ("WABOT_MEDIA_RETENTION_DAYS", "x"),
            ("WABOT_MEDIA_S3_ENDPOINT", "minio:9000"),
        ] {
            let err = Config::load_from(None, &env(&[(key, bad)])).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn retention_days_default_to_seven_and_are_checked() {
        let c = Config::load_from(None, &env(&[])).unwrap();
        assert_eq!(c.retention.days, 7);
        let c = Config::load_from(None, &env(&[("WABOT_RETENTION_DAYS", "0")])).unwrap();
        assert_eq!(c.retention.days, 0);
        for bad in ["-1", "seven", "99999"] {
            let err = Config::load_from(None, &env(&[("WABOT_RETENTION_DAYS", bad)])).unwrap_err();
            assert!(err.to_string().contains("WABOT_RETENTION_DAYS"), "{err}");
        }
    }
}
