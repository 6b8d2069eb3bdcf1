//! What starts a turn: a new conversation, a customer's message, a Flow's reply or
//! a wait that ran out.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The input of one turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A fresh context (`Context::start`) runs from its start node.
    ConversationStarted,
    /// A message from the customer.
    InboundMessage {
        /// Typed text, a media caption, or the title of the chosen button or row.
        text: Option<String>,
        /// The id of a reply button (or a template quick-reply payload).
        button_id: Option<String>,
        /// The id of a list row.
        list_row_id: Option<String>,
    },
    /// A completed Flow (`nfm_reply`): its parsed `response_json`.
    FlowReply {
        /// The `flow_token` inside the response, when present; a reply to another
        /// node than the waiting one is ignored.
        flow_token: Option<String>,
        response: Value,
    },
    /// The wait deadline the last turn returned has passed.
    WaitTimedOut,
    /// The Flow message of the waiting node could not be sent (a permanent Graph
    /// API error): the node leaves by its `error` edge, else its default edge.
    FlowSendFailed { error: String },
}

/// A stored inbound message reduced to what the engine reads; the worker builds it
/// from the message row and turns it into an [`Event`].
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    Text {
        body: String,
    },
    /// `interactive.button_reply`.
    ButtonReply {
        id: String,
        title: String,
    },
    /// `interactive.list_reply`.
    ListReply {
        id: String,
        title: String,
    },
    /// `button`: a template's quick-reply button.
    QuickReply {
        payload: String,
        text: String,
    },
    /// `interactive.nfm_reply`: `response_json` as Meta sends it (a JSON string).
    FlowReply {
        response_json: String,
    },
    /// Image, video, document, audio or sticker, with its caption.
    Media {
        caption: Option<String>,
    },
    /// Anything else (location, contacts, reaction, ...).
    Other,
}

impl Inbound {
    pub fn into_event(self) -> Event {
        let message =
            |text: Option<String>, button_id: Option<String>, list_row_id| Event::InboundMessage {
                text,
                button_id,
                list_row_id,
            };
        match self {
            Inbound::Text { body } => message(Some(body), None, None),
            Inbound::ButtonReply { id, title } => message(Some(title), Some(id), None),
            Inbound::ListReply { id, title } => message(Some(title), None, Some(id)),
            Inbound::QuickReply { payload, text } => message(Some(text), Some(payload), None),
            Inbound::Media { caption } => message(caption, None, None),
            Inbound::Other => message(None, None, None),
            Inbound::FlowReply { response_json } => {
                // Meta sends the response as a JSON string; a malformed one is kept as
                // text so that nothing the customer submitted is lost.
                let response = serde_json::from_str::<Value>(&response_json)
                    .unwrap_or(Value::String(response_json));
                let flow_token = response
                    .get("flow_token")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                Event::FlowReply {
                    flow_token,
                    response,
                }
            }
        }
    }
}
