//! `wabot serve`

use std::process::ExitCode;

use clap::Args;

use crate::config::Config;
use crate::startup::{shutdown_on_signals, Application, StartOptions};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Do not apply pending migrations at start-up.
    #[arg(long)]
    pub no_migrate: bool,
}

pub async fn run(config: Config, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_on_signals();
    let app = Application::build(
        config,
        StartOptions {
            migrate: !args.no_migrate,
        },
    )
    .await?;
    let addr = app.local_addr();
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "listening");
    // Tell systemd (Type=notify) that we are ready; a no-op outside systemd.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let stopping = shutdown.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    });
    app.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
