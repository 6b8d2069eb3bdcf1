//! `wabot token create|list|revoke`: the operator API's bearer tokens. A token is
//! printed once, at its creation; the database keeps only its SHA-256.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::fmt::{Align, Table};
use crate::config::Config;
use crate::service::tokens::{self, Scope};
use crate::store;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make a token and print it (once: it cannot be shown again).
    Create {
        /// What the token is for (unique among live tokens).
        #[arg(long)]
        name: String,
        /// What it may do: `read` (conversations, transcripts, status, deliveries),
        /// `send` (messages), `manage` (pause/resume, opt-out/in, chatbots, replay,
        /// event endpoints; includes read). Repeat or comma-separate.
        #[arg(long = "scope", required = true, value_delimiter = ',', value_parser = parse_scope)]
        scopes: Vec<Scope>,
    },
    /// List tokens (names, scopes, the first characters; never the token).
    List,
    /// Revoke a token by name or id: requests with it get 401 from now on.
    Revoke {
        #[arg(value_name = "NAME|ID")]
        token: String,
    },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    Scope::parse(s).ok_or_else(|| format!("`{s}` is not a scope: read, send or manage"))
}

pub async fn run(config: Config, cmd: Command) -> anyhow::Result<ExitCode> {
    let pool = store::connect_existing(&config)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    match cmd {
        Command::Create { name, scopes } => {
            let (token, row) = tokens::create(&pool, &name, &scopes).await?;
            eprintln!(
                "token `{}` ({}) made; it is shown this once, keep it now:",
                row.name,
                row.scopes.join(", ")
            );
            println!("{token}");
        }
        Command::List => {
            let rows = store::tokens::list(&pool).await.context(
                "cannot read the tokens (is the database migrated? `wabot migrate run`)",
            )?;
            if rows.is_empty() {
                println!("no tokens: `wabot token create --name NAME --scope read` makes one");
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(
                "  ",
                &[
                    ("NAME", Align::Left),
                    ("SCOPES", Align::Left),
                    ("TOKEN", Align::Left),
                    ("CREATED", Align::Left),
                    ("REVOKED", Align::Left),
                    ("ID", Align::Left),
                ],
            );
            for r in rows {
                table.row(vec![
                    r.name,
                    r.scopes.join(","),
                    format!("{}…", r.hint),
                    r.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                    r.revoked_at
                        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                        .unwrap_or_else(|| "-".into()),
                    r.id.to_string(),
                ]);
            }
            print!("{}", table.render());
        }
        Command::Revoke { token } => {
            match store::tokens::revoke(&pool, &token)
                .await
                .context("cannot revoke the token")?
            {
                Some(row) => println!("revoked: `{}` ({}) gets 401 from now on", row.name, row.id),
                None => anyhow::bail!("no live token is named `{token}` or has that id"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
