//! The `wabot` command line: parse, load the configuration, dispatch.

mod campaign;
mod chatbot;
mod conversation;
mod customer;
mod datasource;
mod dev;
mod flows;
mod fmt;
mod migrate;
mod replay;
mod send;
mod serve;
mod simulate;
mod status;
mod templates;
mod token;
mod try_it;
mod webhook;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// wabot runs WhatsApp Builder chatbots on the WhatsApp Cloud API.
///
/// Meta posts webhooks to `wabot serve`; wabot verifies and stores every message in
/// PostgreSQL, walks the chatbot's node graph, and sends the replies back through
/// Meta's Graph API. Configuration comes from built-in defaults, an optional TOML
/// file and `WABOT_*` environment variables (see README.md).
#[derive(Debug, Parser)]
#[command(name = "wabot", version, about, long_about)]
pub struct Cli {
    /// A TOML configuration file; `wabot.toml` in the working directory is read when
    /// present and this is not given. Environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat with a chatbot in the terminal through the whole daemon, without Meta:
    /// `wabot serve` on a database of its own (`wabot_try`), a fake Graph API, and
    /// each line you type posted as Meta's signed webhook. The sample chatbot unless
    /// a file is given; input may be piped.
    Try(try_it::TryArgs),
    /// Run the daemon: webhooks, the Flows endpoint, the turn worker and the sender.
    ///
    /// Creates the database when it does not exist and applies pending migrations
    /// first (unless --no-migrate). Stops gracefully on SIGTERM or Ctrl-C.
    Serve(serve::ServeArgs),
    /// Manage the database schema (the embedded migrations).
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Check, store and draw chatbot documents.
    #[command(subcommand)]
    Chatbot(chatbot::ChatbotCommand),
    /// Chat with a chatbot file in the terminal through the real executor (stdin
    /// line by line, so it is scriptable); rest_api calls are made for real.
    Simulate(simulate::SimulateArgs),
    /// WhatsApp Flows endpoint tools (key generation).
    #[command(subcommand)]
    Flows(flows::FlowsCommand),
    /// Data sources: `test ID` requests one and prints its items.
    #[command(subcommand)]
    Datasource(datasource::DataSourceCommand),
    /// Data source connections: `test ID [--input JSON]` resolves one and prints its items.
    #[command(subcommand)]
    Connection(datasource::ConnectionCommand),
    /// Feed stored webhooks through ingest again (idempotent), or with `--dry-run
    /// --chatbot FILE` through the engine alone to compare a chatbot's answers with
    /// the ones that were sent.
    Replay(replay::ReplayArgs),
    /// One screen from the database: active chatbots, credentials (masked), queues,
    /// held sends, leases by process, the last hour's errors. `--json` for scripts.
    Status(status::StatusArgs),
    /// Conversations: `show PHONE|ID` prints one's transcript (messages, statuses,
    /// turns, variables, errors); `pause` keeps the bot silent there while an agent
    /// answers, `resume` gives it back (the customer's next message starts afresh).
    #[command(subcommand)]
    Conversation(conversation::Command),
    /// Customers: `opt-out PHONE` stops the messages the business starts (timers)
    /// going to them, `opt-in PHONE` lets them go again.
    #[command(subcommand)]
    Customer(customer::Command),
    /// The operator API's bearer tokens: `create --name N --scope read|send|manage`
    /// (printed once), `list`, `revoke`.
    #[command(subcommand)]
    Token(token::Command),
    /// Where events go: `add URL --events ...` (prints the signing secret), `list`,
    /// `remove`, `deliveries`, `resend`.
    #[command(subcommand)]
    Webhook(webhook::Command),
    /// Send a template to a customer (a conversation the business starts), through
    /// the outbox of a running `wabot serve`; `--chatbot` places them in a chatbot
    /// so their reply continues there.
    Send(send::SendArgs),
    /// Campaigns: a template to a CSV list of customers, paced and durable
    /// (`start`, `status`, `list`, `pause`, `resume`, `cancel`).
    #[command(subcommand)]
    Campaign(campaign::Command),
    /// Message templates: `sync` reads them from Meta, `list` prints them.
    #[command(subcommand)]
    Templates(templates::Command),
    /// Tools for wiring wabot into your own tests: `fake-graph`, a fake Graph API.
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

/// Parses the command line and runs it; the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wabot: {e}");
            return ExitCode::from(2);
        }
    };
    let mut log = config.log.clone();
    if matches!(cli.command, Command::Try(_)) {
        // The chat owns the terminal: only warnings and errors of the daemon inside
        // it are worth a line there (RUST_LOG still overrides).
        log.filter = "warn".to_owned();
    }
    crate::telemetry::init(&log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wabot: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(config, args).await,
            Command::Migrate(cmd) => migrate::run(config, cmd).await,
            Command::Chatbot(cmd) => chatbot::run(config, cmd).await,
            Command::Simulate(args) => simulate::run(config, args).await,
            Command::Flows(cmd) => flows::run(&config, cmd),
            Command::Datasource(cmd) => datasource::run_source(config, cmd).await,
            Command::Connection(cmd) => datasource::run_connection(config, cmd).await,
            Command::Replay(args) => replay::run(config, args).await,
            Command::Status(args) => status::run(config, args).await,
            Command::Conversation(cmd) => conversation::run(config, cmd).await,
            Command::Customer(cmd) => customer::run(config, cmd).await,
            Command::Try(args) => try_it::run(config, args).await,
            Command::Templates(cmd) => templates::run(config, cmd).await,
            Command::Send(args) => send::run(config, args).await,
            Command::Campaign(cmd) => campaign::run(config, cmd).await,
            Command::Dev(cmd) => dev::run(config, cmd).await,
            Command::Token(cmd) => token::run(config, cmd).await,
            Command::Webhook(cmd) => webhook::run(config, cmd).await,
        }
    });
    // A blocking task still running (a DNS lookup that hangs) must not hold up the
    // exit of a process that has finished its work.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            // Said once, to the person who ran the command; a daemon's failure is
            // also in its log lines before this (systemd keeps stderr).
            eprintln!("wabot: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, `: ` between them, leaving out a cause that
/// only repeats what is already said (sqlx's database error, for one, is its own
/// source).
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn a_cause_that_repeats_its_error_is_said_once() {
        #[derive(Debug)]
        struct Inner;
        impl std::fmt::Display for Inner {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("relation \"chatbots\" does not exist")
            }
        }
        impl std::error::Error for Inner {}
        #[derive(Debug)]
        struct Outer(Inner);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "error returned from database: {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Outer(Inner)).context("cannot import");
        assert_eq!(
            error_chain(&e),
            "cannot import: error returned from database: relation \"chatbots\" does not exist"
        );
    }
}
