//! What `wabot status` shows and `GET /v1/status` returns: the active chatbots and
//! whether they compile, the WhatsApp credentials in use (secrets masked), queue
//! depths, held sends, customers waiting for an agent and conversations an agent
//! has or an operator paused, leases by process, failing event endpoints, and the
//! last hour's errors by kind.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::engine::compile;
use crate::engine::context::reason;
use crate::store;
use crate::store::ops::{ErrorGroup, LeaseGroup, ProcessRow, QueueDepth};
use crate::store::people::Waiting;

/// Most conversations waiting for an agent that the report lists.
pub const WAITING_LISTED: i64 = 20;

/// The window `errors` covers.
pub const ERROR_WINDOW_SECS: f64 = 3600.0;

/// Turn-log notes that need no operator: the session rules' benign skips (a timer whose
/// wait was answered, a skip word with nothing running, an agent in the conversation).
fn benign_notes() -> Vec<&'static str> {
    crate::session::Skip::ALL
        .iter()
        .filter(|s| s.is_benign())
        .map(|s| s.note())
        .collect()
}

/// Completion reasons that mean a chatbot run went wrong.
const BAD_ENDINGS: &[&str] = &[
    reason::API_ERROR,
    reason::FLOW_ERROR,
    reason::STEP_LIMIT,
    reason::SEND_LIMIT,
    reason::NODE_MISSING,
];

/// Everything `wabot status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub generated_at: DateTime<Utc>,
    pub chatbots: Vec<ChatbotStatus>,
    pub whatsapp: WhatsAppStatus,
    pub queues: Vec<QueueDepth>,
    pub sending: Sending,
    pub handover: HandoverStatus,
    pub processes: Vec<ProcessStatus>,
    /// Live leases, by holder and queue.
    pub leases: Vec<LeaseGroup>,
    pub errors: Errors,
    /// Event endpoints with events given up on, or whose latest attempt failed.
    pub failing_endpoints: Vec<crate::store::events::Endpoint>,
}

/// An active chatbot and whether its document compiles.
#[derive(Debug, Clone, Serialize)]
pub struct ChatbotStatus {
    pub id: Uuid,
    pub name: String,
    pub updated_at: DateTime<Utc>,
    pub compiles: bool,
    pub nodes: Option<usize>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub active_contexts: i64,
}

/// The credentials in use; secrets only as whether they are set.
#[derive(Debug, Clone, Serialize)]
pub struct WhatsAppStatus {
    /// `database` (the active `whatsapp_config` row) or `environment` (`WABOT_*`).
    pub source: &'static str,
    pub config_id: Option<Uuid>,
    pub config_rows: i64,
    pub phone_number_id: Option<String>,
    pub business_account_id: Option<String>,
    pub api_version: String,
    pub access_token: Masked,
    pub app_secret: Masked,
    pub verify_token: Masked,
}

/// A secret as the report shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Masked {
    pub set: bool,
    /// The last four characters, for the access token only and only when it is long
    /// enough (Meta's are hundreds of characters) that they give nothing away.
    pub last4: Option<String>,
}

impl Masked {
    fn of(secret: Option<&SecretString>, tail: bool) -> Masked {
        let value = secret.map(|s| s.expose_secret()).filter(|s| !s.is_empty());
        let last4 = value.filter(|v| tail && v.chars().count() >= 32).map(|v| {
            let chars: Vec<char> = v.chars().collect();
            chars[chars.len() - 4..].iter().collect()
        });
        Masked {
            set: value.is_some(),
            last4,
        }
    }

    pub fn show(&self) -> String {
        match (&self.set, &self.last4) {
            (false, _) => "NOT SET".to_owned(),
            (true, Some(tail)) => format!("set (…{tail})"),
            (true, None) => "set".to_owned(),
        }
    }
}

/// Whether sending is on hold, and what waits.
#[derive(Debug, Clone, Serialize)]
pub struct Sending {
    /// A live process refuses to send: its access token was rejected.
    pub on_hold: bool,
    /// A live process cannot reach the Graph API (its calls fail and are retried).
    pub failing: bool,
    pub holds: Vec<Hold>,
    /// Unfinished send jobs.
    pub queued: i64,
}

/// A live process that holds its sending, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Hold {
    pub holder: String,
    /// `token_rejected`, `graph_unreachable`, or `unknown` (a process of an older
    /// version, which did not say).
    pub kind: String,
    pub reason: String,
    pub since: Option<DateTime<Utc>>,
}

/// Conversations someone besides the bot has.
#[derive(Debug, Clone, Serialize)]
pub struct HandoverStatus {
    /// Customers who asked for a person and wait (state `requested`).
    pub waiting_count: i64,
    /// The longest-waiting of them first, at most [`WAITING_LISTED`].
    pub waiting: Vec<Waiting>,
    /// Conversations an agent has (state `agent`).
    pub with_agent: i64,
    /// Conversations an operator paused (state `paused`).
    pub paused: i64,
}

/// A process as it last reported, whether it is alive, and the leases the database
/// shows for it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    #[serde(flatten)]
    pub row: ProcessRow,
    pub alive: bool,
    pub leased_turns: i64,
    pub leased_sends: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Errors {
    pub window_secs: f64,
    pub groups: Vec<ErrorGroup>,
}

/// Seconds after which a process that has not reported counts as stopped: longer
/// than two leases, since its leases have run out by then.
fn stale_after_secs(config: &Config) -> f64 {
    (config.worker.lease_secs as f64 * 2.0).max(30.0)
}

/// Reads the report from the database.
pub async fn report(pool: &PgPool, config: &Config) -> anyhow::Result<StatusReport> {
    let chatbots = store::ops::active_chatbots(pool)
        .await?
        .into_iter()
        .map(|(row, active_contexts)| {
            let (compiles, nodes, errors, warnings) = match compile(&row.to_doc()) {
                Ok((bot, warnings)) => (
                    true,
                    Some(bot.node_count()),
                    Vec::new(),
                    warnings.iter().map(ToString::to_string).collect(),
                ),
                Err(errors) => (
                    false,
                    None,
                    errors.iter().map(ToString::to_string).collect(),
                    Vec::new(),
                ),
            };
            ChatbotStatus {
                id: row.id,
                name: row.name,
                updated_at: row.updated_at,
                compiles,
                nodes,
                errors,
                warnings,
                active_contexts,
            }
        })
        .collect();

    let (config_rows, _) = store::ops::whatsapp_config_counts(pool).await?;
    let fallback = &config.whatsapp;
    let whatsapp = match store::whatsapp_config::load_active(pool).await? {
        Some(row) => WhatsAppStatus {
            source: "database",
            config_id: Some(row.id),
            config_rows,
            phone_number_id: Some(row.phone_number_id),
            business_account_id: Some(row.business_account_id),
            api_version: if crate::config::is_api_version(row.api_version.trim()) {
                row.api_version.trim().to_owned()
            } else {
                fallback.graph_api_version.clone()
            },
            access_token: Masked::of(Some(&row.access_token), true),
            // A row without an app secret verifies with the fallback one.
            app_secret: Masked::of(
                row.app_secret.as_ref().or(fallback.app_secret.as_ref()),
                false,
            ),
            verify_token: Masked::of(Some(&row.webhook_verify_token), false),
        },
        None => WhatsAppStatus {
            source: "environment",
            config_id: None,
            config_rows,
            phone_number_id: fallback.phone_number_id.clone(),
            business_account_id: fallback.business_account_id.clone(),
            api_version: fallback.graph_api_version.clone(),
            access_token: Masked::of(fallback.access_token.as_ref(), true),
            app_secret: Masked::of(fallback.app_secret.as_ref(), false),
            verify_token: Masked::of(fallback.verify_token.as_ref(), false),
        },
    };

    let queues = store::ops::queue_depths(pool).await?;
    let leases = store::ops::leases(pool).await?;
    let stale = stale_after_secs(config);
    let processes: Vec<ProcessStatus> = store::ops::processes(pool)
        .await?
        .into_iter()
        .map(|row| {
            let leased = |queue: &str| {
                leases
                    .iter()
                    .filter(|l| l.holder == row.holder && l.queue == queue)
                    .map(|l| l.jobs)
                    .sum()
            };
            ProcessStatus {
                alive: row.stopped_at.is_none() && row.seen_secs_ago <= stale,
                leased_turns: leased("turn"),
                leased_sends: leased("send"),
                row,
            }
        })
        .collect();
    let holds: Vec<Hold> = processes
        .iter()
        .filter(|p| p.alive)
        .filter_map(|p| {
            p.row.send_hold.as_ref().map(|reason| Hold {
                holder: p.row.holder.clone(),
                kind: p
                    .row
                    .send_hold_kind
                    .clone()
                    .unwrap_or_else(|| "unknown".to_owned()),
                reason: reason.clone(),
                since: p.row.send_hold_since,
            })
        })
        .collect();
    let sending = Sending {
        on_hold: holds.iter().any(|h| h.kind != "graph_unreachable"),
        failing: holds.iter().any(|h| h.kind == "graph_unreachable"),
        holds,
        queued: queues
            .iter()
            .filter(|q| q.queue == "send")
            .map(|q| q.open)
            .sum(),
    };
    let counts = store::people::counts(pool).await?;
    let of = |state: &str| {
        counts
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n)
    };
    let handover = HandoverStatus {
        waiting_count: of("requested"),
        waiting: store::people::waiting(pool, &["requested"], WAITING_LISTED).await?,
        with_agent: of("agent"),
        paused: of("paused"),
    };
    let errors = Errors {
        window_secs: ERROR_WINDOW_SECS,
        groups: store::ops::recent_errors(pool, ERROR_WINDOW_SECS, &benign_notes(), BAD_ENDINGS)
            .await?,
    };
    let failing_endpoints = store::events::failing_endpoints(pool).await?;
    Ok(StatusReport {
        failing_endpoints,
        generated_at: Utc::now(),
        chatbots,
        whatsapp,
        queues,
        sending,
        handover,
        processes,
        leases,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_shows_as_set_and_only_a_long_tokens_tail() {
        let long = SecretString::from("EAAG".to_owned() + &"x".repeat(40) + "Zk9q");
        let masked = Masked::of(Some(&long), true);
        assert_eq!(masked.last4.as_deref(), Some("Zk9q"));
        assert_eq!(masked.show(), "set (…Zk9q)");
        let short = SecretString::from("short-token".to_owned());
        assert_eq!(Masked::of(Some(&short), true).last4, None);
        assert_eq!(Masked::of(Some(&long), false).show(), "set");
        assert_eq!(Masked::of(None, true).show(), "NOT SET");
        let empty = SecretString::from(String::new());
        assert!(!Masked::of(Some(&empty), true).set);
    }
}
