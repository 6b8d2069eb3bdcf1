//! The template catalogue kept current: `sync` reads every template of the business
//! account from Meta into `wabot_templates` (`wabot templates sync`, and every
//! `WABOT_TEMPLATES_SYNC_SECS` in the daemon). Status changes between syncs arrive
//! as `message_template_status_update` webhooks, which ingest applies.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::credentials::CredentialStore;
use crate::store::templates::{self as store, TemplateRow};
use crate::whatsapp::graph::GraphClient;
use crate::whatsapp::templates::{self, Template};
use crate::worker::AppContext;

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// Templates Meta listed.
    pub listed: usize,
    /// Templates no longer listed, deleted from the catalogue.
    pub deleted: u64,
}

/// Reads every template of the business account (its id: the active
/// `whatsapp_config` row's `business_account_id`, else `WABOT_BUSINESS_ACCOUNT_ID`)
/// and replaces the catalogue with them.
pub async fn sync(
    pool: &PgPool,
    graph: &GraphClient,
    credentials: &CredentialStore,
) -> anyhow::Result<SyncReport> {
    let creds = credentials
        .current()
        .await
        .context("cannot read the WhatsApp credentials")?;
    let waba = creds
        .business_account_id
        .as_deref()
        .filter(|id| !id.trim().is_empty())
        .context(
            "no WhatsApp business account id: set WABOT_BUSINESS_ACCOUNT_ID (or \
             whatsapp_config.business_account_id)",
        )?;
    let listed = templates::list_all(graph, &creds, waba)
        .await
        .with_context(|| format!("cannot list the templates of business account {waba}"))?;
    let rows: Vec<TemplateRow> = listed.iter().map(row).collect();
    let (_, deleted) = store::replace_all(pool, &rows)
        .await
        .context("cannot store the template catalogue")?;
    Ok(SyncReport {
        listed: rows.len(),
        deleted,
    })
}

fn row(t: &Template) -> TemplateRow {
    let now = chrono::Utc::now();
    TemplateRow {
        name: t.name.clone(),
        language: t.language.clone(),
        meta_id: t.id.clone(),
        category: t.category.clone(),
        status: t.status.to_ascii_uppercase(),
        parameter_format: t.format().to_owned(),
        components: serde_json::Value::Array(t.components.clone()),
        parameters: serde_json::to_value(t.parameters()).unwrap_or_default(),
        reason: None,
        synced_at: now,
        updated_at: now,
    }
}

/// Syncs every `WABOT_TEMPLATES_SYNC_SECS` until `stop`, when a business account id
/// is configured; a failed sync is a warning and waits for the next one.
pub async fn run_periodic(ctx: Arc<AppContext>, stop: CancellationToken) {
    let every = ctx.config.worker.templates_sync_secs;
    if every == 0 {
        return;
    }
    loop {
        let has_waba = match ctx.credentials.current().await {
            Ok(c) => c
                .business_account_id
                .as_deref()
                .is_some_and(|id| !id.is_empty()),
            Err(_) => false,
        };
        if has_waba {
            match sync(&ctx.pool, &ctx.graph, &ctx.credentials).await {
                Ok(r) => {
                    tracing::info!(
                        templates = r.listed,
                        deleted = r.deleted,
                        "templates synced"
                    )
                }
                Err(e) => tracing::warn!(error.cause_chain = ?e, "template sync failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(every)) => {}
            _ = stop.cancelled() => return,
        }
    }
}
