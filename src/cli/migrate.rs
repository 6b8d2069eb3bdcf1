//! `wabot migrate run | revert | status`

use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;
use crate::store;

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Apply every pending migration (creates the database when missing).
    Run,
    /// Revert the most recently applied migration (--all: every one).
    Revert {
        /// Revert every applied migration, leaving an empty schema.
        #[arg(long)]
        all: bool,
    },
    /// List the migrations and whether each is applied.
    Status,
}

pub async fn run(config: Config, cmd: MigrateCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        MigrateCommand::Run => {
            let pool = store::connect(&config).await?;
            store::migrate(&pool).await?;
            println!("migrations applied");
        }
        MigrateCommand::Revert { all: true } => {
            let pool = store::connect_existing(&config).await?;
            store::revert_all(&pool).await?;
            println!("all migrations reverted");
        }
        MigrateCommand::Revert { all: false } => {
            let pool = store::connect_existing(&config).await?;
            match store::revert_last(&pool).await? {
                Some(description) => println!("reverted: {description}"),
                None => println!("nothing to revert"),
            }
        }
        MigrateCommand::Status => {
            let pool = store::connect_existing(&config).await?;
            for m in store::migration_status(&pool).await? {
                let mark = if m.applied { "applied" } else { "pending" };
                println!("{:<8} {} {}", mark, m.version, m.description);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
