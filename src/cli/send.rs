//! `wabot send PHONE --template NAME`: a conversation the business starts. The
//! template is checked against the synced catalogue and queued in the outbox; a
//! running `wabot serve` sends it. With `--chatbot` the customer's reply continues
//! in that chatbot (at `--node`, by default its start).

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use uuid::Uuid;

use crate::config::Config;
use crate::credentials::CredentialStore;
use crate::store;
use crate::whatsapp::templates::TemplateMessage;
use crate::worker::proactive::{self, Placement, TemplateSend};

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The customer: their phone number (with or without `+`) or BSUID.
    #[arg(value_name = "PHONE")]
    pub recipient: String,
    /// The template's name (`wabot templates list`).
    #[arg(long, value_name = "NAME")]
    pub template: String,
    /// The template's language (`en_US`); needed when it has several.
    #[arg(long, value_name = "LANG")]
    pub language: Option<String>,
    /// A parameter: a body one by name or number (`first_name=Ayşe`, `1=Ayşe`),
    /// `header.N=...`, `header=LINK` (a media header), `button.N=...` (a quick-reply
    /// payload, a URL suffix). Repeat for each.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Place the customer in this chatbot: their reply continues there.
    #[arg(long, value_name = "CHATBOT_ID")]
    pub chatbot: Option<Uuid>,
    /// The node of --chatbot their reply goes to (a question waits for it).
    #[arg(long, value_name = "NODE_ID", requires = "chatbot")]
    pub node: Option<String>,
    /// A repeated command with the same key sends nothing more.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// `KEY=VALUE`, the key non-empty.
pub fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

pub async fn run(config: Config, args: SendArgs) -> anyhow::Result<ExitCode> {
    let pool = store::connect_existing_as_wabot(&config)
        .await
        .context("cannot connect to the database (DATABASE_URL)")?;
    let credentials = CredentialStore::new(pool.clone(), config.whatsapp.clone());
    let parameters: BTreeMap<String, String> = args.params.into_iter().collect();
    let send = TemplateSend {
        recipient: args.recipient,
        template: TemplateMessage {
            name: args.template,
            language: args.language.unwrap_or_default(),
            parameters,
        },
        placement: args.chatbot.map(|chatbot_id| Placement {
            chatbot_id,
            node: args.node,
        }),
        idempotency_key: args.idempotency_key,
    };
    let sent = proactive::send_template(&pool, &config, &credentials, &send).await?;
    if sent.repeated {
        println!(
            "already sent with this idempotency key: message {} in conversation {} (nothing new \
             sent)",
            sent.message_id, sent.conversation_id
        );
    } else {
        println!(
            "queued template {} to +{}: message {} in conversation {}{}",
            send.template.name,
            proactive::recipient(&send.recipient)?,
            sent.message_id,
            sent.conversation_id,
            match &send.placement {
                Some(p) => format!(
                    "; their reply continues in chatbot {}{}",
                    p.chatbot_id,
                    p.node
                        .as_ref()
                        .map(|n| format!(" at node {n}"))
                        .unwrap_or_default()
                ),
                None => String::new(),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
