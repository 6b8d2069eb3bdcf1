//! What a turn asks to send, in WhatsApp's terms but not in Meta's wire format:
//! `whatsapp::outbound` renders these into Graph API request bodies. Meta's limits
//! (3 buttons, 20-character button titles, 10 list rows, ...) are already applied
//! by the engine when it builds them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One message a turn sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outgoing {
    Text {
        body: String,
    },
    /// Reply buttons (at most 3).
    Buttons {
        header: Option<String>,
        body: String,
        footer: Option<String>,
        buttons: Vec<Choice>,
    },
    /// A list message (at most 10 rows in all).
    List {
        header: Option<String>,
        body: String,
        footer: Option<String>,
        /// The label of the button that opens the list.
        button: String,
        sections: Vec<ListSection>,
    },
    /// An interactive Flow message.
    Flow {
        header: Option<String>,
        body: String,
        footer: Option<String>,
        /// Meta's flow id (`whatsappFlowId` of the node).
        flow_id: String,
        flow_cta: String,
        /// Maps the Flow's replies and endpoint requests back to the context:
        /// `<conversation_context id>:<node id>`.
        flow_token: String,
        flow_action: FlowAction,
        /// The first screen and its data, when known.
        screen: Option<String>,
        data: Option<Value>,
    },
}

/// A reply button or a list row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListSection {
    pub title: String,
    pub rows: Vec<Choice>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowAction {
    Navigate,
    DataExchange,
}
