//! `wabot campaign start|status|pause|resume|cancel|list`: a template sent to a
//! list of customers by a running `wabot serve`, paced, durable across restarts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::credentials::CredentialStore;
use crate::service::campaigns::{self, CampaignError, Control, Start};
use crate::store;
use crate::worker::proactive::Placement;

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
            for c in campaigns::list(&pool).await? {
                println!(
                    "{:>6}  {:<10} {} ({})  {} recipient(s)  created {}{}",
                    c.id,
                    c.state,
                    c.template,
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
        Command::Pause(args) => change(&pool, args.id, Control::Pause).await,
        Command::Resume(args) => change(&pool, args.id, Control::Resume).await,
        Command::Cancel(args) => change(&pool, args.id, Control::Cancel).await,
    }
}

async fn change(pool: &PgPool, id: i64, what: Control) -> anyhow::Result<ExitCode> {
    campaigns::control(pool, id, what).await?;
    println!("campaign {id} {}", what.done());
    Ok(ExitCode::SUCCESS)
}

async fn status(pool: &PgPool, args: IdArgs) -> anyhow::Result<ExitCode> {
    let s = campaigns::status(pool, args.id).await?;
    if args.json {
        println!("{}", serde_json::to_value(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "campaign {}: {}{}",
        s.id,
        s.state,
        s.pause_reason
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    println!(
        "  template {} ({}), {:.1}/s (now {:.1}/s){}",
        s.template,
        s.language,
        s.rate,
        s.current_rate,
        s.chatbot_id
            .map(|id| format!(", replies continue in chatbot {id}"))
            .unwrap_or_default()
    );
    println!(
        "  recipients {}  pending {}  queued {}  sent {}  delivered {}  read {}  failed {}  \
         skipped (opted out) {}  replied {}",
        s.total, s.pending, s.queued, s.sent, s.delivered, s.read, s.failed, s.skipped, s.replied
    );
    Ok(ExitCode::SUCCESS)
}

/// The most problems listed when a file is refused.
const SHOWN: usize = 20;

async fn start(pool: &PgPool, config: &Config, args: StartArgs) -> anyhow::Result<ExitCode> {
    let checked = campaigns::check(
        pool,
        config,
        Start {
            template: args.template,
            language: args.language,
            placement: args.chatbot.map(|chatbot_id| Placement {
                chatbot_id,
                node: args.node,
            }),
            rate: args.rate,
        },
    )
    .await
    .map_err(|e| match e {
        CampaignError::Invalid("rate", why) => anyhow::anyhow!("--rate {why}"),
        e => anyhow::Error::new(e),
    })?;
    let file = std::fs::File::open(&args.recipients)
        .with_context(|| format!("cannot open {}", args.recipients.display()))?;
    let (recipients, problems) = campaigns::recipients_from_csv(file, &checked.params)
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
    let started = campaigns::create(pool, &credentials, checked, recipients, problems).await?;
    let id = started.id;
    println!(
        "campaign {id} started: {} recipient(s){}, template {} ({}), at most {}/s; \
         `wabot campaign status {id}` follows it (a running `wabot serve` sends it)",
        started.recipients,
        if started.repeated > 0 {
            format!(" ({} listed twice, sent once)", started.repeated)
        } else {
            String::new()
        },
        started.template,
        started.language,
        started.rate
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whatsapp::templates::Parameters;
    use serde_json::json;

    #[test]
    fn a_csv_is_read_and_every_problem_named_by_line() {
        let params = Parameters {
            body: vec!["first_name".into()],
            ..Parameters::default()
        };
        let csv = "phone,first_name\n+90 555 000 0001,Ayşe\nnot-a-phone,Can\n905550000003,\n905550000004,Ali,extra\n";
        let (ok, problems) = campaigns::recipients_from_csv(csv.as_bytes(), &params).unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].recipient, "905550000001");
        assert_eq!(ok[0].params, json!({"first_name": "Ayşe"}));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("line 3:"));
        assert!(problems[1].contains("`first_name` is missing"));
        assert!(problems[2].starts_with("line 5:"));
    }
}
