//! `wabot webhook add|list|remove|deliveries|resend`: the endpoints events go to
//! (Standard Webhooks: each endpoint's secret verifies its deliveries).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use uuid::Uuid;

use super::fmt::{Align, Table};
use crate::config::Config;
use crate::service::webhooks;
use crate::store;
use crate::store::events::EventKind;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register an endpoint and print its signing secret (`whsec_…`).
    Add {
        #[arg(value_name = "URL")]
        url: String,
        /// Events it takes (repeat or comma-separate; `*` for all): message.received,
        /// message.failed, conversation.completed, conversation.handover_requested,
        /// conversation.paused, conversation.resumed, customer.opted_out,
        /// customer.opted_in.
        #[arg(long, required = true, value_delimiter = ',')]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List endpoints with their pending and failed events.
    List,
    /// Remove an endpoint (its undelivered events go with it).
    Remove {
        #[arg(value_name = "ID")]
        id: Uuid,
    },
    /// The latest deliveries, newest first.
    Deliveries {
        /// Only this endpoint's.
        #[arg(long)]
        endpoint: Option<Uuid>,
        /// Only `pending`, `delivered` or `failed` ones.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON document per line, with the payload.
        #[arg(long)]
        json: bool,
    },
    /// Queue deliveries again (`--failed`: every failed one, of `--endpoint` if given).
    Resend {
        #[arg(value_name = "DELIVERY_ID")]
        ids: Vec<i64>,
        #[arg(long)]
        failed: bool,
        #[arg(long)]
        endpoint: Option<Uuid>,
    },
}

pub async fn run(config: Config, cmd: Command) -> anyhow::Result<ExitCode> {
    let pool = store::connect_existing(&config)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    match cmd {
        Command::Add {
            url,
            events,
            description,
        } => {
            let (endpoint, secret) =
                webhooks::add(&pool, &config, &url, &events, description.as_deref()).await??;
            eprintln!(
                "endpoint {} takes {}; its signing secret (shown this once):",
                endpoint.id,
                endpoint.events.join(", ")
            );
            println!("{secret}");
        }
        Command::List => {
            let endpoints = webhooks::list(&pool).await?;
            if endpoints.is_empty() {
                let all: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                println!(
                    "no endpoints: `wabot webhook add URL --events {}` adds one",
                    all.join(",")
                );
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(
                "  ",
                &[
                    ("ID", Align::Left),
                    ("URL", Align::Left),
                    ("EVENTS", Align::Left),
                    ("PENDING", Align::Right),
                    ("FAILED", Align::Right),
                    ("LAST ERROR", Align::Left),
                ],
            );
            for e in endpoints {
                table.row(vec![
                    e.id.to_string(),
                    e.url,
                    e.events.join(","),
                    e.pending.to_string(),
                    e.failed.to_string(),
                    e.last_error.unwrap_or_default(),
                ]);
            }
            print!("{}", table.render());
        }
        Command::Remove { id } => {
            if webhooks::remove(&pool, id).await? {
                println!("removed endpoint {id}");
            } else {
                anyhow::bail!("no endpoint {id}");
            }
        }
        Command::Deliveries {
            endpoint,
            state,
            limit,
            json,
        } => {
            let rows = webhooks::deliveries(&pool, endpoint, state.as_deref(), limit).await?;
            if json {
                for r in &rows {
                    println!("{}", serde_json::to_string(r)?);
                }
                return Ok(ExitCode::SUCCESS);
            }
            let mut table = Table::new(
                "  ",
                &[
                    ("ID", Align::Right),
                    ("EVENT", Align::Left),
                    ("STATE", Align::Left),
                    ("ATTEMPTS", Align::Right),
                    ("CREATED", Align::Left),
                    ("ENDPOINT", Align::Left),
                    ("LAST ERROR", Align::Left),
                ],
            );
            for r in rows {
                table.row(vec![
                    r.id.to_string(),
                    r.kind,
                    r.state,
                    r.attempts.to_string(),
                    r.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    r.endpoint_id.to_string(),
                    r.last_error.unwrap_or_default(),
                ]);
            }
            print!("{}", table.render());
        }
        Command::Resend {
            ids,
            failed,
            endpoint,
        } => {
            anyhow::ensure!(
                failed || !ids.is_empty(),
                "name the deliveries to send again, or --failed for every failed one"
            );
            let queued = webhooks::resend(&pool, &ids, failed.then_some(endpoint)).await?;
            println!("queued again: {} deliveries", queued.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
