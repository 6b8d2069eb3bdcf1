//! `wabot customer opt-out PHONE` / `wabot customer opt-in PHONE`: an operator opts
//! a customer out of the messages the business starts (a timer's message; later
//! templates and campaigns), or in again. Replies to the customer's own messages go
//! either way. Opt-outs are kept per business number (`wabot_opt_outs`).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::conversation::{display_customer, Target};
use crate::config::Config;
use crate::service::customers::{self, Change};
use crate::store;
use crate::store::events::Subscribed;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Opt a customer out: no message the business starts goes to them (replies to
    /// their own messages still do), as if they had written STOP.
    OptOut(CustomerArgs),
    /// Opt a customer in again: messages the business starts go to them again.
    OptIn(CustomerArgs),
}

#[derive(Debug, Args)]
pub struct CustomerArgs {
    /// The customer's phone number (their WhatsApp id, with or without `+`), or the
    /// BSUID of a customer whose conversation began without one.
    #[arg(value_name = "PHONE|BSUID")]
    pub phone: String,
    /// The business number (its phone_number_id); by default every business number
    /// the customer has a conversation with, else the configured one.
    #[arg(long, value_name = "PHONE_NUMBER_ID")]
    pub business: Option<String>,
}

pub async fn run(config: Config, cmd: Command) -> anyhow::Result<ExitCode> {
    let args = match &cmd {
        Command::OptOut(args) | Command::OptIn(args) => args,
    };
    let phone = match Target::parse(&args.phone)? {
        // A customer known only by username: their conversations are keyed by it.
        Target::Phone(phone) | Target::Bsuid(phone) => phone,
        Target::Id(_) => anyhow::bail!("`{}` is not a phone number", args.phone.trim()),
    };
    let pool = store::connect_existing(&config)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    let lines = match cmd {
        Command::OptOut(args) => {
            let changes = customers::opt_out(
                &pool,
                &config,
                &phone,
                args.business.as_deref(),
                Subscribed::ALL,
            )
            .await?;
            changes.iter().map(opted_out_line).collect()
        }
        Command::OptIn(args) => {
            let changes = customers::opt_in(
                &pool,
                &config,
                &phone,
                args.business.as_deref(),
                Subscribed::ALL,
            )
            .await?;
            if changes.is_empty() {
                let who = display_customer(&phone);
                vec![format!(
                    "not opted out: {who} gets what the business starts already; nothing changed"
                )]
            } else {
                changes.iter().map(opted_in_line).collect()
            }
        }
    };
    for line in lines {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

fn opted_out_line(c: &Change) -> String {
    let who = display_customer(&c.customer);
    let business = &c.business_phone_number_id;
    match &c.opt_out {
        None => format!(
            "opted out: {who} gets no message business number {business} starts (replies \
             to their own messages still go) until `wabot customer opt-in`"
        ),
        Some(o) => format!(
            "already opted out: {who} of business number {business} since {} UTC ({}); \
             nothing changed",
            o.opted_out_at.format("%Y-%m-%d %H:%M:%S"),
            match (o.source.as_str(), &o.word) {
                ("keyword", Some(word)) => format!("the customer wrote \"{word}\""),
                ("operator", _) => "by an operator".to_owned(),
                (source, _) => source.to_owned(),
            }
        ),
    }
}

fn opted_in_line(c: &Change) -> String {
    let who = display_customer(&c.customer);
    let business = &c.business_phone_number_id;
    if c.changed {
        format!("opted in: {who} gets messages business number {business} starts again")
    } else {
        format!("not opted out: {who} of business number {business}; nothing changed")
    }
}
