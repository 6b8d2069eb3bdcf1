//! The business number's credentials: the active `whatsapp_config` row when there is
//! one, else the `WABOT_*` fallbacks from the configuration.
//!
//! Every webhook needs the app secret and every send needs the token, so the answer
//! is cached for a few seconds; a token rotated in the database is picked up within
//! that time without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::config::WhatsAppConfig;
use crate::store;

/// Where the credentials came from, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Database,
    Environment,
}

/// The credentials in force.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub source: Source,
    pub phone_number_id: Option<String>,
    pub business_account_id: Option<String>,
    pub access_token: Option<SecretString>,
    pub app_secret: Option<SecretString>,
    pub verify_token: Option<SecretString>,
    /// The Graph API version of the active `whatsapp_config` row (`api_version`);
    /// `None` uses `WABOT_GRAPH_API_VERSION`.
    pub api_version: Option<String>,
}

/// The last answer and when it was read.
type Cached = (Instant, Arc<Credentials>);

/// Resolves credentials, caching them for `ttl`.
#[derive(Clone)]
pub struct CredentialStore {
    pool: PgPool,
    fallback: WhatsAppConfig,
    ttl: Duration,
    cached: Arc<Mutex<Option<Cached>>>,
}

impl CredentialStore {
    pub fn new(pool: PgPool, fallback: WhatsAppConfig) -> Self {
        CredentialStore {
            pool,
            fallback,
            ttl: Duration::from_secs(5),
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// The credentials in force, from the cache when it is fresh.
    pub async fn current(&self) -> Result<Arc<Credentials>, sqlx::Error> {
        let mut cached = self.cached.lock().await;
        if let Some((at, creds)) = cached.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(creds.clone());
            }
        }
        let creds = Arc::new(self.load().await?);
        *cached = Some((Instant::now(), creds.clone()));
        Ok(creds)
    }

    /// Forgets the cached answer, so the next call reads the database.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn load(&self) -> Result<Credentials, sqlx::Error> {
        let fb = &self.fallback;
        Ok(
            match store::whatsapp_config::load_active(&self.pool).await? {
                Some(row) => Credentials {
                    source: Source::Database,
                    phone_number_id: Some(row.phone_number_id),
                    business_account_id: Some(row.business_account_id),
                    access_token: Some(row.access_token),
                    // A row without an app secret still verifies with the fallback one.
                    app_secret: row.app_secret.or_else(|| fb.app_secret.clone()),
                    verify_token: Some(row.webhook_verify_token),
                    api_version: checked_version(&row.api_version),
                },
                None => Credentials {
                    source: Source::Environment,
                    phone_number_id: fb.phone_number_id.clone(),
                    business_account_id: fb.business_account_id.clone(),
                    access_token: fb.access_token.clone(),
                    app_secret: fb.app_secret.clone(),
                    verify_token: fb.verify_token.clone(),
                    api_version: None,
                },
            },
        )
    }
}

/// The row's version when it is one (`v24.0`); else the configured one is used, with
/// a warning, rather than a URL Meta would refuse.
fn checked_version(version: &str) -> Option<String> {
    let version = version.trim();
    if crate::config::is_api_version(version) {
        return Some(version.to_owned());
    }
    tracing::warn!(
        api_version = version,
        "whatsapp_config.api_version is not a Graph API version; WABOT_GRAPH_API_VERSION is used"
    );
    None
}
