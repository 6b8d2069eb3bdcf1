//! `wabot try`: the real pipeline answering in a terminal, without Meta.
//!
//! It runs what `wabot serve` runs (ingest, turns, sender, on a database of its own)
//! with a fake Graph API in the same process (`dev::fake_graph`). Each line typed
//! becomes the webhook Meta would post for it, signed with the app secret and stamped
//! now (so the customer's 24-hour window is open); each message the bot sends reaches
//! the fake, is drawn in the terminal, and gets Meta's `sent`, `delivered` and `read`
//! status webhooks back. After each line it waits until the pipeline has nothing due
//! (every turn run, every reply handed over) before reading the next, so a piped
//! script reads like the conversation it is.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use secrecy::SecretString;
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::fmt::count;
use crate::config::Config;
use crate::dev::chat::{Chat, Customer, Typed, HELP};
use crate::dev::fake_graph::{self, FakeGraph, StatusOptions};
use crate::engine::{compile, ChatbotDoc};
use crate::startup::{shutdown_on_signals, Application, StartOptions};
use crate::store;
use crate::store::chatbots::NewChatbot;
use crate::whatsapp::signature;

/// The sample chatbot, built in so that `wabot try` works from any directory.
const SAMPLE: &str = include_str!("../../fixtures/chatbots/support-menu.json");
const PHONE_NUMBER_ID: &str = "100000000000001";
const DISPLAY_NUMBER: &str = "15550783881";
/// How long one line may keep the pipeline busy before the chat moves on.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// How long the end waits for the fake's last status webhooks.
const STATUS_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct TryArgs {
    /// The chatbot to talk to (a `{name, nodes, edges}` document or WhatsApp
    /// Builder's export); the built-in sample, fixtures/chatbots/support-menu.json,
    /// when not given.
    #[arg(value_name = "CHATBOT_FILE")]
    pub chatbot: Option<PathBuf>,
    /// The database to run on, on DATABASE_URL's server. It is dropped and created
    /// afresh unless --keep; afterwards `wabot status` and `wabot conversation show`
    /// read it (with DATABASE_URL naming it).
    #[arg(long, default_value = "wabot_try", value_name = "NAME")]
    pub database: String,
    /// Keep what earlier runs left in the database (conversations, contexts); the
    /// chatbot given is still the one that answers.
    #[arg(long)]
    pub keep: bool,
    /// The customer's phone number (their `wa_id`).
    #[arg(long, default_value = "15550001234", value_name = "PHONE")]
    pub phone: String,
    /// The customer's WhatsApp profile name.
    #[arg(long, default_value = "You", value_name = "NAME")]
    pub name: String,
    /// Meta's `delivered` and `read` statuses come this long after `sent`, each.
    #[arg(long, default_value_t = 300, value_name = "MS")]
    pub status_delay_ms: u64,
}

pub async fn run(config: Config, args: TryArgs) -> anyhow::Result<ExitCode> {
    let (doc, source) = match &args.chatbot {
        Some(file) => (super::chatbot::read_doc(file)?, file.display().to_string()),
        None => {
            let value = serde_json::from_str(SAMPLE).context("the built-in sample")?;
            (
                ChatbotDoc::from_json(&value).context("the built-in sample")?,
                "the built-in sample".to_owned(),
            )
        }
    };
    let warnings = match compile(&doc) {
        Ok((_, warnings)) => warnings,
        Err(errors) => {
            for e in &errors {
                eprintln!("{source}: error: {e}");
            }
            anyhow::bail!(
                "{source} has {}; `wabot chatbot validate` explains them",
                count(errors.len(), "error")
            );
        }
    };
    for w in &warnings {
        eprintln!("{source}: warning: {w}");
    }

    let database_url = database_url(&config.database_url, &args.database)?;
    if !args.keep {
        store::drop_database(&database_url).await.with_context(|| {
            format!("cannot drop the database {} to start afresh", args.database)
        })?;
    }

    let run = format!("{:x}", crate::dev::unix_now());
    let app_secret = format!("try-secret-{}", uuid::Uuid::new_v4().simple());
    let (fake, graph_url) = fake_graph::start(
        ([127, 0, 0, 1], 0).into(),
        fake_graph::Options {
            run: run.clone(),
            app_secret: app_secret.clone(),
            phone_number_id: PHONE_NUMBER_ID.to_owned(),
            statuses: StatusOptions {
                enabled: true,
                delay: Duration::from_millis(args.status_delay_ms),
                redeliver: true,
            },
        },
    )
    .await
    .context("cannot start the fake Graph API")?;

    let shown_url = without_password(&database_url);
    let mut config = config;
    config.database_url = database_url;
    config.listen = ([127, 0, 0, 1], 0).into();
    config.server.metrics_listen = None;
    config.worker.enabled = true;
    let wa = &mut config.whatsapp;
    wa.graph_api_base = graph_url.clone();
    wa.phone_number_id = Some(PHONE_NUMBER_ID.to_owned());
    wa.business_account_id = Some("100000000000002".to_owned());
    wa.access_token = Some(SecretString::from("try-access-token"));
    wa.app_secret = Some(SecretString::from(app_secret.clone()));
    wa.verify_token = Some(SecretString::from("try-verify-token"));

    let app = Application::build(config, StartOptions { migrate: true }).await?;
    let pool = app.state().pool.clone();
    store::chatbots::deactivate_all(&pool).await?;
    let chatbot = store::chatbots::insert(&pool, &NewChatbot::from_doc(&doc, true)).await?;
    let webhook = format!("http://{}/webhook", app.local_addr());
    fake.set_webhook_url(webhook.clone());
    let shutdown = shutdown_on_signals();
    let server = tokio::spawn(app.run(shutdown.clone()));

    println!(
        "wabot try: chatting with \"{}\" ({source}) as {} (+{})",
        doc.name, args.name, args.phone
    );
    println!(
        "  wabot on {webhook}, the fake Graph API on {graph_url}, database {}",
        args.database
    );
    println!("  a number or a button's title picks it; /help for more; Ctrl-D ends");
    println!();

    let chat = Chat::new(
        Customer {
            phone: args.phone.clone(),
            name: args.name.clone(),
            phone_number_id: PHONE_NUMBER_ID.to_owned(),
            display_phone_number: DISPLAY_NUMBER.to_owned(),
        },
        &run,
    );
    let session = Session {
        chat,
        fake: fake.clone(),
        pool,
        webhook,
        app_secret,
        client: reqwest::Client::new(),
        echo: !std::io::stdin().is_terminal(),
    };
    let outcome = session.talk(&shutdown).await;
    // Let Meta's last statuses (delivered, read) reach wabot before it stops, so the
    // database shows the conversation as the customer's phone does.
    let statuses_deadline = tokio::time::Instant::now() + STATUS_WAIT;
    while fake.statuses.pending.load(Ordering::Relaxed) > 0
        && tokio::time::Instant::now() < statuses_deadline
        && !shutdown.is_cancelled()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    shutdown.cancel();
    let stopped = server.await;
    fake.stop();
    outcome?;
    match stopped {
        Ok(result) => result?,
        Err(e) => anyhow::bail!("the daemon's task failed: {e}"),
    }
    println!();
    println!(
        "The conversation is in the database {0}. To look at it:\n  \
         DATABASE_URL={1} wabot conversation show {2}\n  \
         (chatbot {chatbot}; `wabot status` shows the rest)",
        args.database, shown_url, args.phone
    );
    Ok(ExitCode::SUCCESS)
}

/// The chat loop's parts.
struct Session {
    chat: Chat,
    fake: std::sync::Arc<FakeGraph>,
    pool: sqlx::PgPool,
    webhook: String,
    app_secret: String,
    client: reqwest::Client,
    /// Print what was typed (input that is not a terminal echoes nothing itself).
    echo: bool,
}

impl Session {
    async fn talk(mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut feed = self.fake.subscribe();
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        loop {
            // Everything the last line set going is answered before the next is read;
            // later messages (a question's timeout) are printed as they come.
            self.wait_until_answered(&mut feed).await?;
            let line = tokio::select! {
                line = lines.next_line() => line.context("cannot read the terminal")?,
                reply = feed.recv() => {
                    self.show(reply);
                    continue;
                }
                _ = shutdown.cancelled() => None,
            };
            let Some(line) = line else {
                return Ok(());
            };
            match self.chat.typed(&line) {
                Typed::Send { webhook, said } => {
                    if self.echo {
                        println!("you: {said}");
                    }
                    self.post(webhook).await?;
                }
                Typed::Help => println!("{HELP}"),
                Typed::Quit => return Ok(()),
                Typed::Nothing(Some(why)) => println!("  ({why})"),
                Typed::Nothing(None) => {}
            }
        }
    }

    /// Posts one webhook as Meta would: signed, JSON.
    async fn post(&self, body: Vec<u8>) -> anyhow::Result<()> {
        let header = signature::sign(self.app_secret.as_bytes(), &body);
        let response = self
            .client
            .post(&self.webhook)
            .header(signature::HEADER, header)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("cannot post the webhook to {}", self.webhook))?;
        if !response.status().is_success() {
            println!(
                "  (wabot answered {}: Meta would deliver it again)",
                response.status()
            );
        }
        Ok(())
    }

    /// Prints replies until no turn or send is due, or the wait's bound passes.
    async fn wait_until_answered(
        &mut self,
        feed: &mut tokio::sync::broadcast::Receiver<fake_graph::Reply>,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        loop {
            let busy = store::quiescence::due_jobs(&self.pool).await?;
            // The fake publishes a reply before answering the sender, and a send job
            // is finished only after that answer: with nothing due, every reply is in
            // the feed already.
            while let Ok(reply) = feed.try_recv() {
                self.show(Ok(reply));
            }
            if busy == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                println!(
                    "  (the bot is still busy after {}s; go on typing)",
                    ANSWER_WAIT.as_secs()
                );
                return Ok(());
            }
            tokio::select! {
                reply = feed.recv() => self.show(reply),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }

    fn show(&mut self, reply: Result<fake_graph::Reply, RecvError>) {
        match reply {
            Ok(reply) => {
                for line in self.chat.bot_said(&reply) {
                    println!("{line}");
                }
            }
            Err(RecvError::Lagged(n)) => {
                println!("  ({} not shown)", count(n, "message"))
            }
            Err(RecvError::Closed) => {}
        }
    }
}

/// A URL to print: its password, if any, masked.
fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// DATABASE_URL with its database name replaced by `name`.
fn database_url(base: &str, name: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(base).context("DATABASE_URL is not a URL")?;
    if name.is_empty() || name == "postgres" {
        anyhow::bail!("--database must name a database of its own (not `postgres`)");
    }
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}
