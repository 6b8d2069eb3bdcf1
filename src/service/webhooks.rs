//! Event endpoints, whoever registers them (`wabot webhook`, `/v1/webhooks`).

use anyhow::Context as _;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::egress::Guard;
use crate::store;
use crate::store::events::{Delivery, Endpoint, EventKind};

const MIGRATED: &str = "is the database migrated? `wabot migrate run`";

/// Why an endpoint cannot be added; each names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Invalid {
    #[error("url: {0}")]
    Url(String),
    #[error("events: {0}")]
    Events(String),
    #[error("description: longer than 500 characters")]
    Description,
}

/// The URL, checked: http or https, a host, and an address the egress guard lets
/// through (names are resolved and checked again at every delivery).
pub fn check_url(config: &Config, url: &str) -> Result<url::Url, Invalid> {
    let parsed = url::Url::parse(url.trim()).map_err(|e| Invalid::Url(format!("`{url}`: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Invalid::Url(format!("`{url}` is not http or https")));
    }
    if parsed.host_str().map_or(true, str::is_empty) {
        return Err(Invalid::Url(format!("`{url}` has no host")));
    }
    Guard::new(config.datasource.allowed_networks.clone())
        .check_url(&parsed)
        .map_err(|e| Invalid::Url(e.to_string()))?;
    Ok(parsed)
}

/// Event type names, checked; `*` is every event.
pub fn check_events(names: &[String]) -> Result<Vec<EventKind>, Invalid> {
    if names.is_empty() {
        return Err(Invalid::Events(
            "name at least one event (or `*` for all)".to_owned(),
        ));
    }
    let mut kinds = Vec::new();
    for name in names.iter().flat_map(|n| n.split(',')).map(str::trim) {
        if name == "*" {
            return Ok(EventKind::ALL.to_vec());
        }
        let kind = EventKind::parse(name).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            Invalid::Events(format!(
                "`{name}` is not an event; one of {}",
                known.join(", ")
            ))
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    Ok(kinds)
}

/// Registers an endpoint with a new secret; the endpoint and its secret.
pub async fn add(
    pool: &PgPool,
    config: &Config,
    url: &str,
    events: &[String],
    description: Option<&str>,
) -> anyhow::Result<Result<(Endpoint, String), Invalid>> {
    let url = match check_url(config, url) {
        Ok(url) => url,
        Err(e) => return Ok(Err(e)),
    };
    let kinds = match check_events(events) {
        Ok(kinds) => kinds,
        Err(e) => return Ok(Err(e)),
    };
    if description.is_some_and(|d| d.chars().count() > 500) {
        return Ok(Err(Invalid::Description));
    }
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let secret = crate::worker::events::new_secret();
    let endpoint = store::events::add_endpoint(pool, url.as_str(), &names, &secret, description)
        .await
        .with_context(|| format!("cannot store the endpoint ({MIGRATED})"))?;
    Ok(Ok((endpoint, secret)))
}

pub async fn list(pool: &PgPool) -> anyhow::Result<Vec<Endpoint>> {
    store::events::endpoints(pool)
        .await
        .with_context(|| format!("cannot read the endpoints ({MIGRATED})"))
}

/// Removes an endpoint and its undelivered events; whether it existed.
pub async fn remove(pool: &PgPool, id: Uuid) -> anyhow::Result<bool> {
    store::events::remove_endpoint(pool, id)
        .await
        .with_context(|| format!("cannot remove the endpoint ({MIGRATED})"))
}

/// The latest deliveries, newest first.
pub async fn deliveries(
    pool: &PgPool,
    endpoint: Option<Uuid>,
    state: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<Delivery>> {
    if let Some(state) = state {
        anyhow::ensure!(
            matches!(state, "pending" | "delivered" | "failed"),
            "state `{state}` is not pending, delivered or failed"
        );
    }
    store::events::deliveries(pool, endpoint, state, limit.clamp(1, 1000))
        .await
        .with_context(|| format!("cannot read the deliveries ({MIGRATED})"))
}

/// Queues deliveries again: the ones named, or every failed one (of an endpoint).
pub async fn resend(
    pool: &PgPool,
    ids: &[i64],
    failed_of: Option<Option<Uuid>>,
) -> anyhow::Result<Vec<i64>> {
    let queued = match failed_of {
        Some(endpoint) => store::events::resend_failed(pool, endpoint).await,
        None => store::events::resend(pool, ids).await,
    };
    queued.with_context(|| format!("cannot queue the deliveries again ({MIGRATED})"))
}
