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

/// Why a template cannot be sent.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// Not in the catalogue (or ambiguous without a language).
    #[error("{0}")]
    NotFound(String),
    #[error("template `{name}` ({language}) is {status}, not APPROVED{}", .reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    NotApproved {
        name: String,
        language: String,
        status: String,
        reason: Option<String>,
    },
    #[error("template `{name}` ({language}): {}", .problems.join("; "))]
    Parameters {
        name: String,
        language: String,
        problems: Vec<String>,
    },
    #[error("cannot read the template catalogue")]
    Database(#[from] sqlx::Error),
}

/// The Graph API body sending `message` to `to`, checked against the catalogue: the
/// template exists in that language (or in one language only, when none is named),
/// is approved, and the parameters are exactly the ones it takes. The message's
/// language is set to the one found; quick-reply payloads it lacks are taken from
/// `payloads` (the buttons of the question a customer is placed at).
pub async fn prepare(
    pool: &PgPool,
    to: &str,
    message: &mut templates::TemplateMessage,
    callback: Option<&str>,
    payloads: &[(String, String)],
) -> Result<serde_json::Value, TemplateError> {
    let language = Some(message.language.as_str()).filter(|l| !l.is_empty());
    let row = store::find(pool, &message.name, language)
        .await?
        .map_err(TemplateError::NotFound)?;
    if row.status != "APPROVED" {
        return Err(TemplateError::NotApproved {
            name: row.name,
            language: row.language,
            status: row.status,
            reason: row.reason,
        });
    }
    let params: templates::Parameters =
        serde_json::from_value(row.parameters.clone()).unwrap_or_default();
    params.fill_payloads(&mut message.parameters, payloads);
    let problems = params.check(&message.parameters);
    if !problems.is_empty() {
        return Err(TemplateError::Parameters {
            name: row.name,
            language: row.language,
            problems,
        });
    }
    message.language = row.language.clone();
    Ok(templates::send_body(
        to,
        message,
        &params,
        &row.parameter_format,
        callback,
    ))
}

/// The chatbot's `metadata.windowClosedTemplate` (`{name, language, parameters}`,
/// parameters interpolated from the conversation's variables) as the body to send in
/// place of a message due after the 24-hour window closed: `Ok(None)` when the
/// chatbot has none, `Err` (why, for the failed message) when it cannot be sent.
pub async fn window_closed_body(
    pool: &PgPool,
    job: &crate::store::outbox::SendJob,
) -> Result<Result<Option<serde_json::Value>, String>, sqlx::Error> {
    let Some((fallback, variables)) =
        store::window_closed_template(pool, job.conversation_id).await?
    else {
        return Ok(Ok(None));
    };
    let mut message: templates::TemplateMessage = match serde_json::from_value(fallback) {
        Ok(m) => m,
        Err(e) => {
            return Ok(Err(format!(
                "the chatbot's windowClosedTemplate is not {{name, language, parameters}}: {e}"
            )))
        }
    };
    let vars = variables.as_object().cloned().unwrap_or_default();
    for value in message.parameters.values_mut() {
        *value = crate::engine::vars::render(value, &vars);
    }
    let callback = crate::whatsapp::outbound::callback_data(job.message_id);
    match prepare(pool, &job.recipient, &mut message, Some(&callback), &[]).await {
        Ok(body) => Ok(Ok(Some(body))),
        Err(TemplateError::Database(e)) => Err(e),
        Err(e) => Ok(Err(format!("the windowClosedTemplate cannot be sent: {e}"))),
    }
}

/// A chatbot's template send (`outbound::graph_body` left its parameters by key)
/// made into Meta's body from the catalogue: `Err` says why it cannot be sent (not
/// synced, not approved, parameters that do not fit).
pub async fn resolve_body(
    pool: &PgPool,
    job: &crate::store::outbox::SendJob,
) -> Result<Result<serde_json::Value, String>, sqlx::Error> {
    let body = &job.body;
    let mut message = templates::TemplateMessage {
        name: body["template"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        language: body["template"]["language"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        parameters: serde_json::from_value(body[templates::UNRESOLVED_PARAMETERS].clone())
            .unwrap_or_default(),
    };
    let callback = body[crate::whatsapp::outbound::CALLBACK_DATA]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| crate::whatsapp::outbound::callback_data(job.message_id));
    match prepare(pool, &job.recipient, &mut message, Some(&callback), &[]).await {
        Ok(body) => Ok(Ok(body)),
        Err(TemplateError::Database(e)) => Err(e),
        Err(e) => Ok(Err(e.to_string())),
    }
}
