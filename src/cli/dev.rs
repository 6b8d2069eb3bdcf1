//! `wabot dev`: tools for people wiring wabot into their own tests.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::config::Config;
use crate::dev::fake_graph::{self, StatusOptions};
use crate::startup::shutdown_on_signals;

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// A fake of Meta's Graph API: it accepts every message wabot sends (a fresh
    /// wamid each), prints each as a JSON line on stdout, lists them at `GET
    /// /fake/messages`, and posts Meta's signed `sent`, `delivered` and `read` status
    /// webhooks back to --webhook. Point WABOT_GRAPH_API_BASE at it.
    FakeGraph {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:9090", value_name = "ADDR")]
        listen: SocketAddr,
        /// wabot's webhook URL, for the status webhooks; none are posted without it.
        #[arg(long, value_name = "URL")]
        webhook: Option<String>,
        /// The secret that signs the status webhooks: wabot's WABOT_APP_SECRET.
        #[arg(
            long,
            env = "WABOT_APP_SECRET",
            hide_env_values = true,
            value_name = "SECRET"
        )]
        app_secret: Option<String>,
        /// The business number the statuses come from: wabot's WABOT_PHONE_NUMBER_ID.
        #[arg(long, env = "WABOT_PHONE_NUMBER_ID", value_name = "ID")]
        phone_number_id: Option<String>,
        /// `delivered` and `read` come this long after `sent`, each.
        #[arg(long, default_value_t = 500, value_name = "MS")]
        status_delay_ms: u64,
    },
}

pub async fn run(_config: Config, cmd: DevCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DevCommand::FakeGraph {
            listen,
            webhook,
            app_secret,
            phone_number_id,
            status_delay_ms,
        } => {
            let statuses = webhook.is_some();
            if statuses && app_secret.is_none() {
                anyhow::bail!(
                    "--webhook needs --app-secret (or WABOT_APP_SECRET): wabot refuses unsigned webhooks"
                );
            }
            let (fake, url) = fake_graph::start(
                listen,
                fake_graph::Options {
                    run: format!("{:x}", crate::dev::unix_now()),
                    app_secret: app_secret.unwrap_or_default(),
                    phone_number_id: phone_number_id.unwrap_or_else(|| "100000000000001".into()),
                    statuses: StatusOptions {
                        enabled: statuses,
                        delay: Duration::from_millis(status_delay_ms),
                        redeliver: true,
                    },
                },
            )
            .await?;
            if let Some(webhook) = webhook {
                fake.set_webhook_url(webhook);
            }
            // Subscribed before the address is out: a message sent the moment it is
            // known must be printed too.
            let mut feed = fake.subscribe();
            eprintln!("fake Graph API on {url} (WABOT_GRAPH_API_BASE={url}); Ctrl-C stops it");
            let shutdown = shutdown_on_signals();
            loop {
                tokio::select! {
                    reply = feed.recv() => match reply {
                        Ok(reply) => println!(
                            "{}",
                            serde_json::json!({"to": reply.to, "wamid": reply.wamid, "body": reply.body})
                        ),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            eprintln!("{n} messages not printed (stdout too slow)")
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    _ = shutdown.cancelled() => break,
                }
            }
            fake.stop();
            Ok(ExitCode::SUCCESS)
        }
    }
}
