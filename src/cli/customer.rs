//! `wabot customer opt-out PHONE` / `wabot customer opt-in PHONE`: an operator opts
//! a customer out of the messages the business starts (a timer's message; later
//! templates and campaigns), or in again. Replies to the customer's own messages go
//! either way. Opt-outs are kept per business number (`wabot_opt_outs`).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use sqlx::PgPool;

use super::conversation::{display_customer as shown, Target};
use crate::config::Config;
use crate::store;

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
    // Opt-outs are kept by the conversation's key: a BSUID names the customer whose
    // conversation is keyed by their number, and the other way round.
    let phone = store::ops::customer_key(&pool, &phone)
        .await
        .context("cannot read the customer's conversations (is the database migrated? `wabot migrate run`)")?
        .unwrap_or(phone);
    let migrated = "is the database migrated? `wabot migrate run`";
    let lines = match cmd {
        Command::OptOut(args) => {
            let businesses = business_numbers(&pool, &config, &phone, args.business, true)
                .await
                .with_context(|| {
                    format!("cannot read the customer's conversations ({migrated})")
                })?;
            opt_out(&pool, &phone, &businesses)
                .await
                .with_context(|| format!("cannot opt the customer out ({migrated})"))?
        }
        Command::OptIn(args) => {
            let businesses = business_numbers(&pool, &config, &phone, args.business, false)
                .await
                .with_context(|| format!("cannot read the customer's opt-outs ({migrated})"))?;
            opt_in(&pool, &phone, &businesses)
                .await
                .with_context(|| format!("cannot opt the customer in ({migrated})"))?
        }
    };
    for line in lines {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The business numbers the command applies to: the one given; else, to opt out,
/// those the customer has conversations with, else the configured number; to opt
/// in, those the customer is opted out of.
async fn business_numbers(
    pool: &PgPool,
    config: &Config,
    phone: &str,
    given: Option<String>,
    out: bool,
) -> anyhow::Result<Vec<String>> {
    let who = shown(phone);
    if let Some(given) = given.map(|b| b.trim().to_owned()) {
        if given.is_empty() || given.len() > 20 || !given.chars().all(|c| c.is_ascii_digit()) {
            anyhow::bail!("--business `{given}` is not a phone_number_id (digits)");
        }
        return Ok(vec![given]);
    }
    if !out {
        return Ok(store::people::opt_outs(pool, phone)
            .await?
            .into_iter()
            .map(|o| o.business_phone_number_id)
            .collect());
    }
    let known = store::people::business_numbers_of(pool, phone).await?;
    if !known.is_empty() {
        return Ok(known);
    }
    let configured = match store::whatsapp_config::load_active(pool).await? {
        Some(row) => Some(row.phone_number_id),
        None => config.whatsapp.phone_number_id.clone(),
    };
    match configured.filter(|n| !n.trim().is_empty()) {
        Some(number) => Ok(vec![number]),
        None => anyhow::bail!(
            "{who} has no conversation and no business number is configured: name one with \
             --business PHONE_NUMBER_ID"
        ),
    }
}

async fn opt_out(pool: &PgPool, phone: &str, businesses: &[String]) -> anyhow::Result<Vec<String>> {
    let who = shown(phone);
    let mut lines = Vec::new();
    for business in businesses {
        let line = match store::people::opt_out(pool, business, phone).await? {
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
        };
        lines.push(line);
    }
    Ok(lines)
}

async fn opt_in(pool: &PgPool, phone: &str, businesses: &[String]) -> anyhow::Result<Vec<String>> {
    let who = shown(phone);
    if businesses.is_empty() {
        return Ok(vec![format!(
            "not opted out: {who} gets what the business starts already; nothing changed"
        )]);
    }
    let mut lines = Vec::new();
    for business in businesses {
        let line = match store::people::opt_in(pool, business, phone).await? {
            Some(_) => {
                format!("opted in: {who} gets messages business number {business} starts again")
            }
            None => {
                format!("not opted out: {who} of business number {business}; nothing changed")
            }
        };
        lines.push(line);
    }
    Ok(lines)
}
