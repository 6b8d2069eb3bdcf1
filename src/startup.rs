//! Wiring: the pool, the migrations, the HTTP server and the background workers,
//! started on a listener the caller binds and stopped by a cancellation token.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::AppContext;
use crate::config::Config;
use crate::datasource::DataSourceClient;
use crate::http::{self, AppState};
use crate::store;
use crate::whatsapp::flows_crypto::FlowsKey;
use crate::worker::{cut_at, Pipeline};

/// How `build` prepares the database.
#[derive(Debug, Clone, Copy)]
pub struct StartOptions {
    /// Apply pending migrations before serving.
    pub migrate: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions { migrate: true }
    }
}

/// A built, not yet running, wabot server. Its pipeline runs from here on; dropping
/// the application (or the future of `run`) stops every stage at once, like a
/// killed process.
pub struct Application {
    listener: TcpListener,
    /// `WABOT_METRICS_LISTEN`, bound: `/metrics` alone.
    metrics_listener: Option<TcpListener>,
    /// `WABOT_ADMIN_LISTEN`, bound: the operator API alone.
    admin_listener: Option<TcpListener>,
    state: AppState,
    pipeline: Pipeline,
}

impl Application {
    /// Connects to the database (creating it when missing), migrates unless told not
    /// to, and binds `config.listen`.
    pub async fn build(config: Config, options: StartOptions) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {} (WABOT_LISTEN)", config.listen))?;
        let pool = store::connect(&config)
            .await
            .context("cannot connect to the database (DATABASE_URL)")?;
        if options.migrate {
            store::migrate(&pool)
                .await
                .context("cannot apply database migrations")?;
        }
        Application::with_parts(config, pool, listener)
    }

    /// Assembles an application from parts the caller prepared (tests bind port 0 and
    /// bring their own database). A configured Flows private key that cannot be
    /// loaded fails here, naming WABOT_FLOWS_PRIVATE_KEY.
    pub fn with_parts(
        config: Config,
        pool: PgPool,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        Application::with_media_store(config, pool, listener, None)
    }

    /// [`Application::with_parts`] with a media store of the caller's own (a program
    /// embedding wabot; tests with `object_store`'s in-memory store) instead of the
    /// one `WABOT_MEDIA_*` names, when given.
    pub fn with_media_store(
        config: Config,
        pool: PgPool,
        listener: TcpListener,
        media: Option<Arc<dyn crate::media::MediaStore>>,
    ) -> anyhow::Result<Application> {
        let flows_key = load_flows_key(&config)?;
        crate::metrics::install();
        let metrics_listener = config
            .server
            .metrics_listen
            .map(|addr| {
                let listener = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(TcpListener::from_std)
                    .with_context(|| format!("cannot listen on {addr} (WABOT_METRICS_LISTEN)"))?;
                anyhow::Ok(listener)
            })
            .transpose()?;
        let admin_listener = config
            .server
            .admin_listen
            .map(|addr| {
                let listener = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(TcpListener::from_std)
                    .with_context(|| format!("cannot listen on {addr} (WABOT_ADMIN_LISTEN)"))?;
                anyhow::Ok(listener)
            })
            .transpose()?;
        let config = Arc::new(config);
        let graph = crate::whatsapp::graph::GraphClient::new(&config.whatsapp)
            .context("cannot build the Graph API client")?;
        let datasources = DataSourceClient::new(&config.datasource);
        let media = match media {
            Some(media) => media,
            None => crate::media::open(&config.media).context("cannot open the media store")?,
        };
        let ctx = Arc::new(AppContext::new(
            config,
            pool,
            graph,
            flows_key,
            datasources,
            media,
        ));
        let (pipeline, ingest) = Pipeline::start(ctx.clone())?;
        Ok(Application {
            listener,
            metrics_listener,
            admin_listener,
            state: AppState { ctx, ingest },
            pipeline,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where `/metrics` is served when `WABOT_METRICS_LISTEN` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Where the operator API is served when `WABOT_ADMIN_LISTEN` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, drains in-flight
    /// requests and the pipeline for at most the configured shutdown timeout.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Application {
            listener,
            metrics_listener,
            admin_listener,
            state,
            pipeline,
        } = self;
        let drain = state.config.shutdown_timeout();
        let limits = http::server::ServerLimits::from_config(&state.config.server);
        if let Some(listener) = metrics_listener {
            let metrics = http::server::serve(
                listener,
                http::metrics::routes(),
                limits.clone(),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = metrics.await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            });
        }
        if let Some(listener) = admin_listener {
            // The API's bodies are bounded apart from the webhook's.
            let admin_limits = http::server::ServerLimits {
                max_body_bytes: http::admin::MAX_BODY_BYTES,
                ..limits.clone()
            };
            let admin = http::server::serve(
                listener,
                http::admin::router(state.ctx.clone()),
                admin_limits,
                shutdown.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = admin.await {
                    tracing::error!(error = %e, "the operator API listener failed");
                }
            });
        }
        let app = http::router(state);
        let server = http::server::serve(listener, app, limits, shutdown.clone());
        tokio::pin!(server);

        // One deadline bounds the whole drain: requests and background work drain
        // together (both watch the same token), so shutdown never takes longer than
        // the configured time.
        let deadline = tokio::select! {
            result = &mut server => {
                result.context("HTTP server failed")?;
                tokio::time::Instant::now() + drain
            }
            _ = shutdown.cancelled() => {
                tracing::info!(drain_secs = drain.as_secs(), "shutting down: draining");
                let now = tokio::time::Instant::now();
                let deadline = now + drain;
                // Requests get until the pipeline's cut, not the deadline: whatever
                // the stages hold must still be handed back in time. (The stages keep
                // working meanwhile; they are stopped only by `drain`.)
                match tokio::time::timeout_at(cut_at(now, deadline), &mut server).await {
                    Ok(result) => result.context("HTTP server failed")?,
                    Err(_) => tracing::warn!("in-flight requests did not finish within the drain time"),
                }
                deadline
            }
        };
        pipeline.drain(deadline).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Loads the Flows private key named by `WABOT_FLOWS_PRIVATE_KEY`, if any.
pub fn load_flows_key(config: &Config) -> anyhow::Result<Option<Arc<FlowsKey>>> {
    let Some(path) = config.flows.private_key.as_deref() else {
        return Ok(None);
    };
    let key =
        FlowsKey::load(path, config.flows.private_key_passphrase.as_ref()).with_context(|| {
            format!(
                "cannot load the Flows private key {} (WABOT_FLOWS_PRIVATE_KEY)",
                path.display()
            )
        })?;
    Ok(Some(Arc::new(key)))
}

/// A token cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("received Ctrl-C"),
            _ = term => tracing::info!("received SIGTERM"),
        }
        trigger.cancel();
    });
    token
}
