//! Campaigns as `wabot campaign ...` and `/v1/campaigns` run them: the checks
//! before one is stored (template approved, placement compiles, every recipient
//! readable and its parameters complete, else nothing is stored), its status, and
//! the operator's pause, resume and cancel. The campaign stage
//! (`worker/campaigns.rs`) sends it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::credentials::CredentialStore;
use crate::store;
use crate::store::campaigns::{NewCampaign, NewRecipient};
use crate::store::templates::TemplateRow;
use crate::whatsapp::templates::Parameters;
use crate::worker::proactive::{self, Placement, Placer, SendError};

/// The default pace, messages per second.
pub const DEFAULT_RATE: f64 = 20.0;

/// A campaign to start (its recipients come separately: a CSV file, or a list).
#[derive(Debug, Clone)]
pub struct Start {
    pub template: String,
    pub language: Option<String>,
    pub placement: Option<Placement>,
    pub rate: f64,
}

/// One recipient of a list (`POST /v1/campaigns`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// A phone number (with or without `+`) or a BSUID.
    pub to: String,
    /// The template's parameters by key, as `wabot templates list` names them.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

/// Why a campaign was not started or changed.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    /// A field is wrong: (field, why).
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    /// Recipients that cannot be sent, each named (by line or position).
    #[error("{} problem(s) in the recipients; nothing was stored: {}", .0.len(), .0.join("; "))]
    Recipients(Vec<String>),
    #[error("no campaign {0}")]
    NotFound(i64),
    #[error("campaign {id} is {state}: it cannot be {action}")]
    State {
        id: i64,
        state: String,
        action: &'static str,
    },
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("cannot store the campaign")]
    Database(#[from] sqlx::Error),
}

/// A start checked: the template and what its sends fill.
pub struct Checked {
    start: Start,
    template: TemplateRow,
    pub params: Parameters,
}

/// Checks the pace, the template (in the catalogue and approved) and the placement.
pub async fn check(pool: &PgPool, config: &Config, start: Start) -> Result<Checked, CampaignError> {
    if !(start.rate.is_finite() && start.rate > 0.0) {
        return Err(CampaignError::Invalid(
            "rate",
            format!(
                "{} is not a positive number of messages per second",
                start.rate
            ),
        ));
    }
    let template = store::templates::find(pool, &start.template, start.language.as_deref())
        .await?
        .map_err(|e| CampaignError::Invalid("template", e))?;
    if template.status != "APPROVED" {
        return Err(CampaignError::Invalid(
            "template",
            format!(
                "template {} ({}) is {}, not APPROVED",
                template.name, template.language, template.status
            ),
        ));
    }
    let params: Parameters =
        serde_json::from_value(template.parameters.clone()).unwrap_or_default();
    if let Some(placement) = &start.placement {
        Placer::new(pool, config, placement).await?;
    }
    Ok(Checked {
        start,
        template,
        params,
    })
}

/// A recipient and their parameters, checked against the template; `Err` names
/// what is wrong.
fn recipient(
    who: &str,
    given: BTreeMap<String, String>,
    params: &Parameters,
) -> Result<NewRecipient, String> {
    let recipient = proactive::recipient(who).map_err(|e| e.to_string())?;
    let found = params.check(&given);
    if !found.is_empty() {
        return Err(format!("(+{recipient}): {}", found.join("; ")));
    }
    let params: serde_json::Map<String, Value> = given
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Ok(NewRecipient {
        n: 0,
        recipient,
        params: Value::Object(params),
    })
}

/// The recipients of a CSV file and every problem found (line numbers are the
/// file's, the header being line 1). The first column is the recipient, the
/// others the template's parameters by column name; an empty cell is not given.
pub fn recipients_from_csv(
    file: impl std::io::Read,
    params: &Parameters,
) -> anyhow::Result<(Vec<NewRecipient>, Vec<String>)> {
    use anyhow::Context as _;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(file);
    let headers: Vec<String> = reader
        .headers()
        .context("the first line must name the columns")?
        .iter()
        .map(str::to_owned)
        .collect();
    if headers.is_empty() {
        anyhow::bail!("the first line must name the columns (recipient, then parameters)");
    }
    let mut recipients = Vec::new();
    let mut problems = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let given: BTreeMap<String, String> = headers
            .iter()
            .skip(1)
            .zip(record.iter().skip(1))
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.to_owned()))
            .collect();
        match recipient(record.get(0).unwrap_or_default(), given, params) {
            Ok(mut r) => {
                r.n = line as i32;
                recipients.push(r);
            }
            Err(e) if e.starts_with('(') => problems.push(format!("line {line} {e}")),
            Err(e) => problems.push(format!("line {line}: {e}")),
        }
    }
    Ok((recipients, problems))
}

/// The recipients of a list, every problem named by its position (from 0).
pub fn recipients_from_list(
    list: &[Recipient],
    params: &Parameters,
) -> (Vec<NewRecipient>, Vec<String>) {
    let mut recipients = Vec::new();
    let mut problems = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let given = r
            .parameters
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match recipient(&r.to, given, params) {
            Ok(mut new) => {
                new.n = i as i32 + 1;
                recipients.push(new);
            }
            Err(e) if e.starts_with('(') => problems.push(format!("recipients[{i}] {e}")),
            Err(e) => problems.push(format!("recipients[{i}]: {e}")),
        }
    }
    (recipients, problems)
}

/// A campaign stored and running.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Started {
    pub id: i64,
    /// Recipients kept (one listed twice is sent once).
    pub recipients: u64,
    /// Recipients listed more than once.
    pub repeated: u64,
    pub template: String,
    pub language: String,
    pub rate: f64,
}

/// Stores the campaign, running, when every recipient is fine; nothing otherwise.
pub async fn create(
    pool: &PgPool,
    credentials: &CredentialStore,
    checked: Checked,
    recipients: Vec<NewRecipient>,
    problems: Vec<String>,
) -> Result<Started, CampaignError> {
    if !problems.is_empty() {
        return Err(CampaignError::Recipients(problems));
    }
    if recipients.is_empty() {
        return Err(CampaignError::Invalid(
            "recipients",
            "lists no recipient".to_owned(),
        ));
    }
    let business = credentials
        .current()
        .await
        .map_err(SendError::Credentials)?
        .phone_number_id
        .clone()
        .filter(|n| !n.trim().is_empty())
        .ok_or(SendError::NoBusinessNumber)?;
    let Checked {
        start, template, ..
    } = checked;
    let new = NewCampaign {
        template_name: template.name.clone(),
        language: template.language.clone(),
        chatbot_id: start.placement.as_ref().map(|p| p.chatbot_id),
        node_id: start.placement.and_then(|p| p.node),
        business_phone_number_id: business,
        rate: start.rate,
    };
    let (id, kept) = store::campaigns::create(pool, &new, &recipients).await?;
    Ok(Started {
        id,
        recipients: kept,
        repeated: recipients.len() as u64 - kept,
        template: template.name,
        language: template.language,
        rate: start.rate,
    })
}

/// A campaign's state and figures (`wabot campaign status --json`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub id: i64,
    /// `running`, `paused`, `finished` or `cancelled`.
    pub state: String,
    pub pause_reason: Option<String>,
    pub template: String,
    pub language: String,
    pub chatbot_id: Option<Uuid>,
    pub node: Option<String>,
    /// The pace asked for, messages per second.
    pub rate: f64,
    /// The pace now (slower while Meta throttles).
    pub current_rate: f64,
    pub total: i64,
    pub pending: i64,
    pub queued: i64,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
    /// Opted out: not sent to.
    pub skipped: i64,
    pub replied: i64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn status(pool: &PgPool, id: i64) -> Result<Status, CampaignError> {
    let c = store::campaigns::load(pool, id)
        .await?
        .ok_or(CampaignError::NotFound(id))?;
    let n = store::campaigns::counts(pool, id).await?;
    Ok(Status {
        id: c.id,
        state: c.state,
        pause_reason: c.pause_reason,
        template: c.template_name,
        language: c.language,
        chatbot_id: c.chatbot_id,
        node: c.node_id,
        rate: c.rate,
        current_rate: c.current_rate,
        total: n.total,
        pending: n.pending,
        queued: n.queued,
        sent: n.sent,
        delivered: n.delivered,
        read: n.read,
        failed: n.failed,
        skipped: n.skipped,
        replied: n.replied,
        created_at: c.created_at,
        finished_at: c.finished_at,
    })
}

/// One line of `wabot campaign list`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub id: i64,
    pub state: String,
    pub pause_reason: Option<String>,
    pub template: String,
    pub language: String,
    pub total: i32,
    pub rate: f64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Every campaign, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<Summary>, sqlx::Error> {
    Ok(store::campaigns::list(pool)
        .await?
        .into_iter()
        .map(|c| Summary {
            id: c.id,
            state: c.state,
            pause_reason: c.pause_reason,
            template: c.template_name,
            language: c.language,
            total: c.total,
            rate: c.rate,
            created_at: c.created_at,
            finished_at: c.finished_at,
        })
        .collect())
}

/// What an operator does to a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop queueing sends (the ones queued still go).
    Pause,
    /// Queue sends again after a pause (the operator's, or Meta's messaging limit).
    Resume,
    /// End it: no more sends are queued.
    Cancel,
}

impl Control {
    /// The word for what was done: `paused`, `resumed`, `cancelled`.
    pub fn done(self) -> &'static str {
        match self {
            Control::Pause => "paused",
            Control::Resume => "resumed",
            Control::Cancel => "cancelled",
        }
    }
}

/// Pauses, resumes or cancels campaign `id`; refused when its state does not allow it.
pub async fn control(pool: &PgPool, id: i64, what: Control) -> Result<(), CampaignError> {
    let (from, to): (&[&str], &str) = match what {
        Control::Pause => (&["running"], "paused"),
        Control::Resume => (&["paused"], "running"),
        Control::Cancel => (&["running", "paused"], "cancelled"),
    };
    let reason = (to == "paused").then_some("paused by an operator");
    match store::campaigns::set_state(pool, id, from, to, reason).await? {
        None => Err(CampaignError::NotFound(id)),
        Some(old) if from.contains(&old.as_str()) => Ok(()),
        Some(state) => Err(CampaignError::State {
            id,
            state,
            action: what.done(),
        }),
    }
}
