//! An operator's free-form message to a customer (`POST /v1/messages`): queued in
//! the send queue every reply takes (`store::outbox`), so it is ordered with the
//! conversation's other sends, retried like them, and refused by the sender to a
//! customer who opted out meanwhile. Allowed only inside the 24-hour window the
//! customer's last message opened (Meta refuses free-form messages outside it).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::engine::Outgoing;
use crate::store;
use crate::store::api::Taken;

/// Meta's limit on a text message's body.
pub const TEXT_MAX_CHARS: usize = 4096;
/// How long after the customer's last message free-form messages may go.
const WINDOW_HOURS: i64 = 24;

/// A text to send.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendText {
    /// The customer's phone number (wa_id, with or without `+`) or BSUID.
    pub to: String,
    /// The message, 1 to 4096 characters.
    pub text: String,
    /// The business number (phone_number_id) to send from; by default the one the
    /// customer wrote to last.
    #[serde(default)]
    pub business_phone_number_id: Option<String>,
}

/// The answer to a send (stored with its idempotency key).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Queued {
    pub message_id: Uuid,
    pub conversation_id: Uuid,
    /// `queued`: the sender sends it next in the conversation's order; its status
    /// then shows in the transcript.
    pub status: String,
}

/// Why a send was not queued.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// A field is wrong: (field, why).
    #[error("{0}: {1}")]
    Invalid(&'static str, String),
    #[error("no conversation with {0}: a free-form message goes only to a customer who wrote")]
    NoConversation(String),
    #[error("the 24-hour window is closed: {0} last wrote {1}; outside it only a template may go")]
    WindowClosed(String, String),
    #[error("{0} opted out of business number {1}: no message the business starts goes to them")]
    OptedOut(String, String),
    #[error("Idempotency-Key `{0}` was used with a different request")]
    KeyReused(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What came of a send: the answer, and whether it is a stored one (a repeat).
pub struct Sent {
    pub queued: Queued,
    pub repeated: bool,
}

/// Checks the request, then in one transaction: takes the idempotency key (a
/// repeat gets the stored answer and sends nothing), finds and locks the
/// conversation, checks the window and the opt-out, queues the message and stores
/// the answer with the key.
pub async fn send_text(
    pool: &PgPool,
    request: &SendText,
    idempotency: Option<(Uuid, &str)>,
) -> Result<Sent, Refused> {
    use crate::service::conversations::Target;
    let to = match Target::parse(&request.to) {
        Ok(Target::Phone(p) | Target::Bsuid(p)) => p,
        _ => {
            return Err(Refused::Invalid(
                "to",
                format!("`{}` is not a phone number or a BSUID", request.to),
            ))
        }
    };
    let chars = request.text.chars().count();
    if request.text.trim().is_empty() || chars > TEXT_MAX_CHARS {
        return Err(Refused::Invalid(
            "text",
            format!("must be 1 to {TEXT_MAX_CHARS} characters (it has {chars})"),
        ));
    }
    let business = request
        .business_phone_number_id
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty());
    if business.is_some_and(|b| b.len() > 20 || !b.chars().all(|c| c.is_ascii_digit())) {
        return Err(Refused::Invalid(
            "business_phone_number_id",
            "must be a phone_number_id (digits)".to_owned(),
        ));
    }
    let hash = Sha256::digest(serde_json::to_vec(request).unwrap_or_default()).to_vec();

    // The customer as their conversations are keyed: a BSUID names the customer
    // whose conversation is keyed by their number, and the other way round.
    let to = store::ops::customer_key(pool, &to).await?.unwrap_or(to);

    let mut tx = pool.begin().await?;
    if let Some((token, key)) = idempotency {
        if let Taken::Answered {
            request_hash,
            response,
            ..
        } = store::api::take(&mut tx, token, key, &hash).await?
        {
            tx.rollback().await?;
            if request_hash != hash {
                return Err(Refused::KeyReused(key.to_owned()));
            }
            let queued: Queued = serde_json::from_value(response)
                .map_err(|e| Refused::Database(sqlx::Error::Decode(Box::new(e))))?;
            return Ok(Sent {
                queued,
                repeated: true,
            });
        }
    }
    let Some(target) = store::api::send_target(&mut tx, &to, business).await? else {
        return Err(Refused::NoConversation(to));
    };
    let open = target
        .last_customer_message_at
        .is_some_and(|at| target.now - at < chrono::Duration::hours(WINDOW_HOURS));
    if !open {
        let when = target
            .last_customer_message_at
            .map(|at| format!("at {}", at.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_else(|| "never".to_owned());
        return Err(Refused::WindowClosed(to, when));
    }
    if target.opted_out {
        return Err(Refused::OptedOut(to, target.business_phone_number_id));
    }
    let mut row = crate::worker::turns::outbound_row(
        target.conversation_id,
        target.business_user_id,
        &to,
        &Outgoing::Text {
            body: request.text.clone(),
        },
    );
    // The business starts it: the sender refuses it if the customer opts out
    // before it goes.
    row.business_initiated = true;
    store::outbox::enqueue(&mut tx, &row).await?;
    let queued = Queued {
        message_id: row.message_id,
        conversation_id: target.conversation_id,
        status: "queued".to_owned(),
    };
    if let Some((token, key)) = idempotency {
        let response = serde_json::to_value(&queued).unwrap_or(Value::Null);
        store::api::answer(&mut tx, token, key, 202, &response).await?;
    }
    tx.commit().await?;
    Ok(Sent {
        queued,
        repeated: false,
    })
}

/// A template to send (`POST /v1/messages` with `template`): a conversation the
/// business starts, allowed outside the 24-hour window.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendTemplate {
    /// The customer's phone number (with or without `+`) or BSUID.
    pub to: String,
    pub template: TemplateBody,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// The template's name (`GET /v1/templates`).
    pub name: String,
    /// Its language (`en_US`); needed when it has several.
    #[serde(default)]
    pub language: Option<String>,
    /// The parameters by key, as `GET /v1/templates` names them (`first_name`,
    /// `1`, `header.1`, `header`, `button.0`).
    #[serde(default)]
    pub parameters: std::collections::BTreeMap<String, String>,
    /// Place the customer in a chatbot: their reply continues there.
    #[serde(default)]
    pub placement: Option<PlacementBody>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementBody {
    pub chatbot_id: Uuid,
    /// The node their reply goes to; by default the chatbot's start.
    #[serde(default)]
    pub node: Option<String>,
}

/// Sends a template through `worker::proactive::send_template` (what `wabot send`
/// does). The idempotency key is the token's: scoped by the token, it is the
/// send's own key, claimed in the send's transaction (so a retry sends once), and
/// the answer is kept with the request's hash like a text's (so the key used with
/// another request is refused).
pub async fn send_template(
    pool: &PgPool,
    config: &crate::config::Config,
    credentials: &crate::credentials::CredentialStore,
    request: &SendTemplate,
    idempotency: Option<(Uuid, &str)>,
) -> Result<Sent, TemplateRefused> {
    use crate::worker::proactive::{self, Placement, TemplateSend};
    let hash = Sha256::digest(serde_json::to_vec(request).unwrap_or_default()).to_vec();
    if let Some((token, key)) = idempotency {
        let mut tx = pool.begin().await?;
        let taken = store::api::take(&mut tx, token, key, &hash).await?;
        tx.rollback().await?;
        if let Taken::Answered {
            request_hash,
            response,
            ..
        } = taken
        {
            if request_hash != hash {
                return Err(Refused::KeyReused(key.to_owned()).into());
            }
            let queued: Queued = serde_json::from_value(response)
                .map_err(|e| Refused::Database(sqlx::Error::Decode(Box::new(e))))?;
            return Ok(Sent {
                queued,
                repeated: true,
            });
        }
    }
    let t = &request.template;
    let send = TemplateSend {
        recipient: request.to.clone(),
        template: crate::whatsapp::templates::TemplateMessage {
            name: t.name.clone(),
            language: t.language.clone().unwrap_or_default(),
            parameters: t.parameters.clone(),
        },
        placement: t.placement.as_ref().map(|p| Placement {
            chatbot_id: p.chatbot_id,
            node: p.node.clone(),
        }),
        idempotency_key: idempotency.map(|(token, key)| format!("api:{token}:{key}")),
    };
    let sent = proactive::send_template(pool, config, credentials, &send).await?;
    let queued = Queued {
        message_id: sent.message_id,
        conversation_id: sent.conversation_id,
        status: "queued".to_owned(),
    };
    if let Some((token, key)) = idempotency {
        let mut tx = pool.begin().await?;
        if let Taken::New = store::api::take(&mut tx, token, key, &hash).await? {
            let response = serde_json::to_value(&queued).unwrap_or(Value::Null);
            store::api::answer(&mut tx, token, key, 202, &response).await?;
        }
        tx.commit().await?;
    }
    Ok(Sent {
        queued,
        repeated: sent.repeated,
    })
}

/// Why a template send was refused: the checks of a text's, or of `wabot send`.
#[derive(Debug, thiserror::Error)]
pub enum TemplateRefused {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Send(#[from] crate::worker::proactive::SendError),
}

impl From<sqlx::Error> for TemplateRefused {
    fn from(e: sqlx::Error) -> Self {
        TemplateRefused::Refused(Refused::Database(e))
    }
}
