//! `wabot templates sync` reads the business account's message templates from Meta
//! into `wabot_templates`; `wabot templates list` prints the catalogue.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::credentials::CredentialStore;
use crate::store;
use crate::whatsapp::graph::GraphClient;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read every template of the business account (WABOT_BUSINESS_ACCOUNT_ID or the
    /// active whatsapp_config row) from Meta, following the paging cursors.
    Sync,
    /// Print the synced templates: name, language, status, category and the
    /// parameters a send fills (`--param KEY=VALUE`).
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// One JSON object per template instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: Config, cmd: Command) -> anyhow::Result<ExitCode> {
    let pool = store::connect_existing(&config)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    match cmd {
        Command::Sync => {
            let graph =
                GraphClient::new(&config.whatsapp).context("cannot build the Graph API client")?;
            let credentials = CredentialStore::new(pool.clone(), config.whatsapp.clone());
            let report = crate::worker::templates::sync(&pool, &graph, &credentials).await?;
            println!(
                "synced {} template(s); {} no longer listed by Meta removed",
                report.listed, report.deleted
            );
        }
        Command::List(args) => {
            let rows = crate::service::templates::list(&pool)
                .await
                .context("cannot read the templates (is the database migrated?)")?;
            if rows.is_empty() && !args.json {
                println!("no templates: run `wabot templates sync`");
            }
            for t in rows {
                if args.json {
                    println!("{}", serde_json::to_value(&t)?);
                    continue;
                }
                let reason = t.reason.map(|r| format!(" ({r})")).unwrap_or_default();
                println!(
                    "{:<32} {:<8} {:<10} {:<14} params: {}",
                    t.name,
                    t.language,
                    format!("{}{reason}", t.status),
                    t.category.unwrap_or_default(),
                    if t.parameters.is_empty() {
                        "none".to_owned()
                    } else {
                        t.parameters.join(" ")
                    }
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
