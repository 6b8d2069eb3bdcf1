//! `wabot campaign start|status|pause|resume|cancel|list`: a template sent to a
//! list of customers by a running `wabot serve`, paced, durable across restarts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::credentials::CredentialStore;
use crate::store;
use crate::store::campaigns::{NewCampaign, NewRecipient};
use crate::whatsapp::templates::Parameters;
use crate::worker::proactive::{self, Placement, Placer};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a campaign from a CSV file and start it. The first column is the
    /// recipient (a phone number), the others the template's parameters by column
    /// name (`first_name`, `1`, `header.1`, `button.0`). Every line is checked
    /// before anything is stored; a recipient listed twice is sent once.
    Start(StartArgs),
    /// A campaign's state and figures: queued, sent, delivered, read, failed,
    /// skipped (opted out), replied.
    Status(IdArgs),
    /// Every campaign, newest first.
    List,
    /// Stop queueing sends (the ones queued still go).
    Pause(IdArgs),
    /// Queue sends again after a pause (yours, or Meta's messaging limit).
    Resume(IdArgs),
    /// End the campaign: no more sends are queued.
    Cancel(IdArgs),
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[arg(long, value_name = "NAME")]
    pub template: String,
    #[arg(long, value_name = "LANG")]
    pub language: Option<String>,
    #[arg(long, value_name = "FILE.csv")]
    pub recipients: PathBuf,
    /// Place each recipient in this chatbot: their reply continues there.
    #[arg(long, value_name = "CHATBOT_ID")]
    pub chatbot: Option<Uuid>,
    #[arg(long, value_name = "NODE_ID", requires = "chatbot")]
    pub node: Option<String>,
    /// Messages per second, at most.
    #[arg(long, value_name = "N", default_value_t = 20.0)]
    pub rate: f64,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[arg(value_name = "CAMPAIGN_ID")]
    pub id: i64,
    /// JSON instead of text (status).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: Config, cmd: Command) -> anyhow::Result<ExitCode> {
    let pool = store::connect_existing_as_wabot(&config)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    match cmd {
        Command::Start(args) => start(&pool, &config, args).await,
        Command::Status(args) => status(&pool, args).await,
        Command::List => {
            for c in store::campaigns::list(&pool).await? {
                println!(
                    "{:>6}  {:<10} {} ({})  {} recipient(s)  created {}{}",
                    c.id,
                    c.state,
                    c.template_name,
                    c.language,
                    c.total,
                    c.created_at.format("%Y-%m-%d %H:%M"),
                    c.pause_reason
                        .map(|r| format!("  paused: {r}"))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause(args) => change(&pool, args.id, &["running"], "paused", "paused").await,
        Command::Resume(args) => change(&pool, args.id, &["paused"], "running", "resumed").await,
        Command::Cancel(args) => {
            change(
                &pool,
                args.id,
                &["running", "paused"],
                "cancelled",
                "cancelled",
            )
            .await
        }
    }
}

async fn change(
    pool: &PgPool,
    id: i64,
    from: &[&str],
    to: &str,
    done: &str,
) -> anyhow::Result<ExitCode> {
    let reason = (to == "paused").then_some("paused by an operator");
    match store::campaigns::set_state(pool, id, from, to, reason).await? {
        None => anyhow::bail!("no campaign {id}"),
        Some(old) if from.contains(&old.as_str()) => {
            println!("campaign {id} {done}");
            Ok(ExitCode::SUCCESS)
        }
        Some(old) => anyhow::bail!("campaign {id} is {old}: it cannot be {done}"),
    }
}

async fn status(pool: &PgPool, args: IdArgs) -> anyhow::Result<ExitCode> {
    let c = store::campaigns::load(pool, args.id)
        .await?
        .with_context(|| format!("no campaign {}", args.id))?;
    let n = store::campaigns::counts(pool, args.id).await?;
    if args.json {
        let v = json!({"id": c.id, "state": c.state, "pauseReason": c.pause_reason,
            "template": c.template_name, "language": c.language, "rate": c.rate,
            "currentRate": c.current_rate, "total": n.total, "pending": n.pending,
            "queued": n.queued, "sent": n.sent, "delivered": n.delivered, "read": n.read,
            "failed": n.failed, "skipped": n.skipped, "replied": n.replied});
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "campaign {}: {}{}",
        c.id,
        c.state,
        c.pause_reason
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    println!(
        "  template {} ({}), {:.1}/s (now {:.1}/s){}",
        c.template_name,
        c.language,
        c.rate,
        c.current_rate,
        c.chatbot_id
            .map(|id| format!(", replies continue in chatbot {id}"))
            .unwrap_or_default()
    );
    println!(
        "  recipients {}  pending {}  queued {}  sent {}  delivered {}  read {}  failed {}  \
         skipped (opted out) {}  replied {}",
        n.total, n.pending, n.queued, n.sent, n.delivered, n.read, n.failed, n.skipped, n.replied
    );
    Ok(ExitCode::SUCCESS)
}

/// The most problems listed when a file is refused.
const SHOWN: usize = 20;

async fn start(pool: &PgPool, config: &Config, args: StartArgs) -> anyhow::Result<ExitCode> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        anyhow::bail!(
            "--rate {} is not a positive number of messages per second",
            args.rate
        );
    }
    let template = store::templates::find(pool, &args.template, args.language.as_deref())
        .await
        .context("cannot read the template catalogue (is the database migrated?)")?
        .map_err(anyhow::Error::msg)?;
    if template.status != "APPROVED" {
        anyhow::bail!(
            "template {} ({}) is {}, not APPROVED",
            template.name,
            template.language,
            template.status
        );
    }
    let params: Parameters =
        serde_json::from_value(template.parameters.clone()).unwrap_or_default();
    if let Some(chatbot_id) = args.chatbot {
        let placement = Placement {
            chatbot_id,
            node: args.node.clone(),
        };
        Placer::new(pool, config, &placement).await?;
    }
    let file = std::fs::File::open(&args.recipients)
        .with_context(|| format!("cannot open {}", args.recipients.display()))?;
    let (recipients, problems) = read_recipients(file, &params)
        .with_context(|| format!("cannot read {}", args.recipients.display()))?;
    if !problems.is_empty() {
        let mut text = format!(
            "{} has {} problem(s); nothing was stored:",
            args.recipients.display(),
            problems.len()
        );
        for p in problems.iter().take(SHOWN) {
            text.push_str(&format!("\n  {p}"));
        }
        if problems.len() > SHOWN {
            text.push_str(&format!("\n  … and {} more", problems.len() - SHOWN));
        }
        anyhow::bail!(text);
    }
    if recipients.is_empty() {
        anyhow::bail!("{} lists no recipient", args.recipients.display());
    }
    let credentials = CredentialStore::new(pool.clone(), config.whatsapp.clone());
    let business = credentials
        .current()
        .await?
        .phone_number_id
        .clone()
        .filter(|n| !n.trim().is_empty())
        .context("no business number is configured (WABOT_PHONE_NUMBER_ID or whatsapp_config)")?;
    let new = NewCampaign {
        template_name: template.name.clone(),
        language: template.language.clone(),
        chatbot_id: args.chatbot,
        node_id: args.node,
        business_phone_number_id: business,
        rate: args.rate,
    };
    let (id, kept) = store::campaigns::create(pool, &new, &recipients)
        .await
        .context("cannot store the campaign")?;
    let repeated = recipients.len() as u64 - kept;
    println!(
        "campaign {id} started: {kept} recipient(s){}, template {} ({}), at most {}/s; \
         `wabot campaign status {id}` follows it (a running `wabot serve` sends it)",
        if repeated > 0 {
            format!(" ({repeated} listed twice, sent once)")
        } else {
            String::new()
        },
        template.name,
        template.language,
        args.rate
    );
    Ok(ExitCode::SUCCESS)
}

/// The recipients of a CSV file and every problem found (line numbers are the
/// file's, the header being line 1).
pub fn read_recipients(
    file: impl std::io::Read,
    params: &Parameters,
) -> anyhow::Result<(Vec<NewRecipient>, Vec<String>)> {
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
        let who = record.get(0).unwrap_or_default();
        let recipient = match proactive::recipient(who) {
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
        let found = params.check(&given);
        if !found.is_empty() {
            problems.push(format!("line {line} (+{recipient}): {}", found.join("; ")));
            continue;
        }
        let params: serde_json::Map<String, Value> = given
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        recipients.push(NewRecipient {
            n: line as i32,
            recipient,
            params: Value::Object(params),
        });
    }
    Ok((recipients, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_is_read_and_every_problem_named_by_line() {
        let params = Parameters {
            body: vec!["first_name".into()],
            ..Parameters::default()
        };
        let csv = "phone,first_name\n+90 555 000 0001,Ayşe\nnot-a-phone,Can\n905550000003,\n905550000004,Ali,extra\n";
        let (ok, problems) = read_recipients(csv.as_bytes(), &params).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].recipient, "905550000001");
        assert_eq!(ok[0].params, json!({"first_name": "Ayşe"}));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("line 3:"));
        assert!(problems[1].contains("`first_name` is missing"));
        assert!(problems[2].starts_with("line 5:"));
    }
}
