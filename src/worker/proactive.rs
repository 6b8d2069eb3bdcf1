//! Conversations the business starts: a template sent to a customer, optionally
//! placing them in a chatbot so that their reply (a quick-reply button, or text)
//! continues there. `wabot send` and campaigns use it; so can an operator API.
//!
//! The send goes through the outbox like every other: a `messages` row and a send
//! job, business-initiated (the sender refuses it to an opted-out customer), sent in
//! the conversation's order with the usual retries. It is refused up front, with
//! the reason, when the template is not in the synced catalogue, not approved, or
//! its parameters do not fit; when the customer opted out; when the chatbot or the
//! node does not exist.

use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::Config;
use crate::credentials::CredentialStore;
use crate::engine::{self, node::NodeKind, ContextStatus, Customer};
use crate::store;
use crate::store::templates::{NewSend, SendOne};
use crate::whatsapp::templates::TemplateMessage;
use crate::worker::templates::TemplateError;

/// Where a customer is placed by a template send.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub chatbot_id: Uuid,
    /// The node their reply goes to: a question node waits for it (a quick-reply
    /// payload equal to one of its button ids, or its title typed, picks that
    /// button); any other node runs when they reply. By default the start node: the
    /// reply starts the chatbot whatever its trigger keywords.
    pub node: Option<String>,
}

/// A template to send to one customer.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSend {
    /// A phone number (digits, `+` and separators allowed) or a BSUID; see
    /// [`recipient`].
    pub recipient: String,
    pub template: TemplateMessage,
    pub placement: Option<Placement>,
    /// A repeated send with the same key sends nothing and answers the first one.
    pub idempotency_key: Option<String>,
}

/// Why a send was refused.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("recipient `{0}`: neither a phone number (digits, optionally with a leading +) nor a BSUID (`US.1349…`)")]
    Recipient(String),
    #[error("+{0} opted out of messages business number {1} starts (`wabot customer opt-in` lets them go again)")]
    OptedOut(String, String),
    #[error("no business number is configured (WABOT_PHONE_NUMBER_ID or whatsapp_config)")]
    NoBusinessNumber,
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("{0}")]
    Chatbot(String),
    #[error("cannot read the WhatsApp credentials")]
    Credentials(#[source] sqlx::Error),
    #[error("cannot store the send")]
    Database(#[from] sqlx::Error),
}

/// The customer's WhatsApp id from what an operator or a CSV wrote: a phone number's
/// digits. The one place recipients are read (BSUIDs plug in here).
pub fn recipient(written: &str) -> Result<String, SendError> {
    let written = written.trim();
    // A customer known only by username: their business-scoped user id.
    if crate::whatsapp::webhook::is_bsuid(written) {
        return Ok(written.to_owned());
    }
    let rest = written.strip_prefix('+').unwrap_or(written);
    let digits: String = rest
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    if digits.len() < 5 || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(SendError::Recipient(written.to_owned()));
    }
    Ok(digits)
}

/// Sends `send`'s template: checks it, stores the message and its send job (a
/// running `wabot serve` sends it within WABOT_POLL_INTERVAL_MS) and, with a
/// placement, the customer's new context, all in one transaction.
pub async fn send_template(
    pool: &PgPool,
    config: &Config,
    credentials: &CredentialStore,
    send: &TemplateSend,
) -> Result<SendOne, SendError> {
    let customer = recipient(&send.recipient)?;
    if let Some(key) = &send.idempotency_key {
        if let Some((message_id, conversation_id)) =
            store::templates::sent_with_key(pool, key).await?
        {
            return Ok(SendOne {
                conversation_id,
                message_id,
                repeated: true,
            });
        }
    }
    let business = credentials
        .current()
        .await
        .map_err(SendError::Credentials)?
        .phone_number_id
        .clone()
        .filter(|n| !n.trim().is_empty())
        .ok_or(SendError::NoBusinessNumber)?;
    let opted = store::people::opted_out_among(pool, &[(&business, &customer)]).await?;
    if !opted.is_empty() {
        return Err(SendError::OptedOut(customer, business));
    }
    let message_id = Uuid::new_v4();
    let mut template = send.template.clone();
    let callback = crate::whatsapp::outbound::callback_data(message_id);
    let placer = match &send.placement {
        Some(p) => Some(Placer::new(pool, config, p).await?),
        None => None,
    };
    let payloads = placer.as_ref().map(|p| p.payloads()).unwrap_or_default();
    let body = crate::worker::templates::prepare(
        pool,
        &customer,
        &mut template,
        Some(&callback),
        &payloads,
    )
    .await?;
    let context = placer.map(|p| (p.context(&customer), p.version.clone()));
    let new = NewSend {
        business,
        bsuid: crate::whatsapp::webhook::is_bsuid(&customer),
        customer,
        message_id,
        body,
    };
    Ok(store::templates::send_one(pool, &new, send.idempotency_key.as_deref(), context).await?)
}

/// The context that places `customer` at the placement's node, pinned to the
/// chatbot's current version (its conversation id is filled in when stored).
pub async fn placed_context(
    pool: &PgPool,
    config: &Config,
    placement: &Placement,
    customer: &str,
) -> Result<(store::contexts::ContextRow, store::versions::VersionRow), SendError> {
    let placer = Placer::new(pool, config, placement).await?;
    Ok((placer.context(customer), placer.version.clone()))
}

/// A placement checked once (the chatbot compiled, the node found), for the contexts
/// of many customers (a campaign's).
pub struct Placer {
    bot: engine::CompiledChatbot,
    pub version: store::versions::VersionRow,
    node_id: String,
    status: ContextStatus,
    ttl: chrono::Duration,
}

impl Placer {
    pub async fn new(
        pool: &PgPool,
        config: &Config,
        placement: &Placement,
    ) -> Result<Placer, SendError> {
        let id = placement.chatbot_id;
        let row = store::chatbots::load(pool, id)
            .await?
            .ok_or_else(|| SendError::Chatbot(format!("no chatbot {id}")))?;
        let hash = engine::version::hash(&row.nodes, &row.edges, row.metadata.as_ref());
        let bot = engine::compile(&row.to_doc())
            .map_err(|errors| {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                SendError::Chatbot(format!(
                    "chatbot {id} does not compile: {}",
                    errors.join("; ")
                ))
            })?
            .0
            .with_version(hash.clone());
        let node_id = placement
            .node
            .clone()
            .unwrap_or_else(|| bot.start_id().to_owned());
        let index = bot.find(&node_id).ok_or_else(|| {
            SendError::Chatbot(format!(
                "chatbot {id} (`{}`) has no node `{node_id}`",
                row.name
            ))
        })?;
        let status = match bot.node(index).kind {
            NodeKind::Question(_) => ContextStatus::WaitingInput,
            _ => ContextStatus::Running,
        };
        Ok(Placer {
            bot,
            version: store::versions::VersionRow {
                chatbot_id: id,
                hash,
                name: row.name.clone(),
                nodes: row.nodes,
                edges: row.edges,
                metadata: row.metadata,
            },
            node_id,
            status,
            ttl: chrono::Duration::seconds(config.engine.context_ttl_secs.max(1) as i64),
        })
    }

    /// The new context of `customer`: a question node waits for their reply, any
    /// other node runs when they reply.
    /// The quick-reply payloads that answer the node a customer is placed at: a
    /// buttons question's button ids, as `button.N`.
    pub fn payloads(&self) -> Vec<(String, String)> {
        let Some(index) = self.bot.find(&self.node_id) else {
            return Vec::new();
        };
        match &self.bot.node(index).kind {
            NodeKind::Question(q) => q
                .buttons
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("button.{i}"), b.id.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn context(&self, customer: &str) -> store::contexts::ContextRow {
        let who = Customer {
            phone: customer.to_owned(),
            ..Customer::default()
        };
        let id = self.version.chatbot_id;
        let mut context = engine::Context::start(Uuid::new_v4(), Uuid::nil(), id, &self.bot, &who);
        context.current_node_id = self.node_id.clone();
        context.status = self.status;
        // A reply after the context's time to live starts the chatbot afresh, as a
        // late reply to any question does.
        let deadline = Utc::now() + self.ttl;
        let mut state = context.state();
        state.deadline = Some(deadline);
        context.set_state(&state);
        context.expires_at = Some(deadline);
        crate::mapping::context_to_row(&context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_phone_numbers() {
        assert_eq!(recipient(" +90 555-111 (22) 33").unwrap(), "905551112233");
        assert!(recipient("abc").is_err());
        assert!(recipient("12").is_err());
        assert!(recipient("").is_err());
        assert_eq!(
            recipient(" US.13491208655302741918 ").unwrap(),
            "US.13491208655302741918"
        );
    }
}
