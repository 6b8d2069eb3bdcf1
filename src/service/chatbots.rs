//! Chatbot documents, whoever brings them (`wabot chatbot`, `/v1/chatbots`):
//! the validation report, import, activation, and the versions conversations ran
//! on.

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::engine::{compile, ChatbotDoc};
use crate::service::NotFound;
use crate::store;
use crate::store::chatbots::NewChatbot;

/// What `wabot chatbot validate` reports for one document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// It compiles (warnings allowed).
    pub ok: bool,
    pub name: Option<String>,
    pub nodes: Option<usize>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Reads a chatbot document (bare `{name, nodes, edges}` or WhatsApp Builder's
/// export).
pub fn parse(value: &Value) -> anyhow::Result<ChatbotDoc> {
    ChatbotDoc::from_json(value).context("not a chatbot")
}

/// Compiles a document and reports every error and warning.
pub fn validate(value: &Value) -> Report {
    let doc = match parse(value) {
        Ok(doc) => doc,
        Err(e) => {
            return Report {
                ok: false,
                name: None,
                nodes: None,
                errors: vec![format!("{e:#}")],
                warnings: Vec::new(),
            }
        }
    };
    match compile(&doc) {
        Ok((bot, warnings)) => Report {
            ok: true,
            name: Some(bot.name().to_owned()),
            nodes: Some(bot.node_count()),
            errors: Vec::new(),
            warnings: warnings.iter().map(ToString::to_string).collect(),
        },
        Err(errors) => Report {
            ok: false,
            name: Some(doc.name.clone()),
            nodes: None,
            errors: errors.iter().map(ToString::to_string).collect(),
            warnings: Vec::new(),
        },
    }
}

/// Stores a document that compiles; its id, or the report that refused it.
pub async fn import(
    pool: &PgPool,
    doc: &ChatbotDoc,
    activate: bool,
) -> anyhow::Result<Result<Uuid, Vec<String>>> {
    if let Err(errors) = compile(doc) {
        return Ok(Err(errors.iter().map(ToString::to_string).collect()));
    }
    let id = store::chatbots::insert(pool, &NewChatbot::from_doc(doc, activate))
        .await
        .context("cannot store the chatbot")?;
    Ok(Ok(id))
}

/// Activates or deactivates a stored chatbot.
pub async fn set_active(pool: &PgPool, id: Uuid, active: bool) -> anyhow::Result<()> {
    if !store::chatbots::set_active(pool, id, active)
        .await
        .context("cannot change the chatbot")?
    {
        return Err(NotFound(format!("no chatbot {id}")).into());
    }
    Ok(())
}

/// A chatbot's versions that conversations ran on, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Versions {
    pub chatbot_id: Uuid,
    pub name: String,
    /// The content hash of the chatbot's graph as stored now.
    pub current: String,
    #[schema(value_type = Vec<Object>)]
    pub versions: Vec<store::versions::VersionSummary>,
}

pub async fn versions(pool: &PgPool, id: Uuid) -> anyhow::Result<Versions> {
    let Some(row) = store::chatbots::load(pool, id)
        .await
        .context("cannot read the chatbot")?
    else {
        return Err(NotFound(format!("no chatbot {id}")).into());
    };
    let versions = store::versions::list(pool, id)
        .await
        .context("cannot read the chatbot's versions")?;
    Ok(Versions {
        chatbot_id: row.id,
        current: crate::engine::version::hash(&row.nodes, &row.edges, row.metadata.as_ref()),
        name: row.name,
        versions,
    })
}
