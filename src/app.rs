//! The application context: what every stage of the pipeline and every handler
//! shares. Startup builds it once and owns it; the stages get an `Arc` of it.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::credentials::CredentialStore;
use crate::datasource::DataSourceClient;
use crate::whatsapp::flows_crypto::FlowsKey;
use crate::whatsapp::graph::GraphClient;

pub struct AppContext {
    pub config: Arc<Config>,
    pub pool: PgPool,
    pub credentials: CredentialStore,
    /// The one Graph API client (sends, read receipts, typing indicator).
    pub graph: GraphClient,
    /// The Flows endpoint's private key; `None` when WABOT_FLOWS_PRIVATE_KEY is unset.
    pub flows_key: Option<Arc<FlowsKey>>,
    /// The guarded HTTP client of data sources (Flows endpoint, executor).
    pub datasources: DataSourceClient,
    /// This process's name in lease tokens (`holder:<claim>`): unique per start.
    pub holder: String,
    /// The event types some endpoint takes, kept in memory so that a batch writes
    /// events only when someone wants them (`store::events`).
    pub events: crate::store::events::Subscriptions,
    /// Where downloaded media goes (`WABOT_MEDIA_DIR` or `WABOT_MEDIA_S3_*`).
    pub media: Arc<dyn crate::media::MediaStore>,
    /// Background stages that wait for work rather than poll for it: woken when
    /// this process queues some (another process's work, and retries that come
    /// due, are found by their slow poll).
    pub wake: Wake,
}

/// Wakes a background stage when this process queued work for it.
#[derive(Default)]
pub struct Wake {
    /// Media downloads were queued (ingest).
    pub media: tokio::sync::Notify,
    /// A campaign was started or resumed (the operator API).
    pub campaigns: tokio::sync::Notify,
}

impl AppContext {
    pub fn new(
        config: Arc<Config>,
        pool: PgPool,
        graph: GraphClient,
        flows_key: Option<Arc<FlowsKey>>,
        datasources: DataSourceClient,
        media: Arc<dyn crate::media::MediaStore>,
    ) -> AppContext {
        AppContext {
            credentials: CredentialStore::new(pool.clone(), config.whatsapp.clone()),
            holder: format!(
                "p{}-{}",
                std::process::id(),
                &Uuid::new_v4().simple().to_string()[..12]
            ),
            config,
            pool,
            graph,
            flows_key,
            datasources,
            events: Default::default(),
            media,
            wake: Wake::default(),
        }
    }

    /// How often a background stage that is woken when this process queues work
    /// looks for work it was not woken for (another process's, retries come due):
    /// the poll interval, but at least a second, so that an idle stage costs a
    /// statement a second, not one per poll interval.
    pub fn idle_poll(&self) -> Duration {
        Duration::from_millis(self.config.worker.poll_interval_ms.max(1000))
    }

    /// How long a lease lasts without being kept (`WABOT_LEASE_SECS`).
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.config.worker.lease_secs.max(1))
    }
}
