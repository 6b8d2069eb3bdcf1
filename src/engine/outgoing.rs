//! What a turn asks to send, in WhatsApp's terms but not in Meta's wire format:
//! `whatsapp::outbound` renders these into Graph API request bodies. Meta's limits
//! (3 buttons, 20-character button titles, 10 list rows, ...) are already applied
//! by the engine when it builds them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A template as sent: its parameters rendered with `vars`.
pub fn template(
    spec: &super::node::TemplateSpec,
    vars: &serde_json::Map<String, Value>,
    defaults: &[(String, String)],
) -> Outgoing {
    let mut parameters: std::collections::BTreeMap<String, String> =
        defaults.iter().cloned().collect();
    for (k, v) in &spec.parameters {
        parameters.insert(k.clone(), super::vars::render(v, vars));
    }
    Outgoing::Template {
        name: spec.name.clone(),
        language: spec.language.clone(),
        parameters,
    }
}

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
    /// wabot: an image, video, audio, document or sticker, by public `link` or by
    /// Meta's media `id` (exactly one of them).
    Media {
        media: MediaType,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Not for audio or stickers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        /// Documents only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
    /// wabot: a message with one button that opens `url` (Meta's `cta_url`).
    CtaUrl {
        header: Option<String>,
        body: String,
        footer: Option<String>,
        /// The button's label.
        button: String,
        url: String,
    },
    /// wabot: asks the customer to share a location (Meta's
    /// `location_request_message`); the answer is a `location` message.
    LocationRequest {
        body: String,
    },
    /// wabot: an approved message template by name and language, its parameters
    /// (interpolated) by key, as `wabot send --param` names them. Meta's
    /// components are made from the synced catalogue when it is sent.
    Template {
        name: String,
        language: String,
        parameters: std::collections::BTreeMap<String, String>,
    },
}

impl Outgoing {
    /// The text a person reads first (a caption, or nothing, for media).
    pub fn text(&self) -> &str {
        match self {
            Outgoing::Text { body }
            | Outgoing::Buttons { body, .. }
            | Outgoing::List { body, .. }
            | Outgoing::Flow { body, .. }
            | Outgoing::CtaUrl { body, .. }
            | Outgoing::LocationRequest { body } => body,
            Outgoing::Media { caption, .. } => caption.as_deref().unwrap_or_default(),
            Outgoing::Template { name, .. } => name,
        }
    }
}

/// The kinds of media a message node can send (Meta's message `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaType {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
}

impl MediaType {
    pub fn parse(name: &str) -> Option<MediaType> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "image" => MediaType::Image,
            "video" => MediaType::Video,
            "audio" => MediaType::Audio,
            "document" => MediaType::Document,
            "sticker" => MediaType::Sticker,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Image => "image",
            MediaType::Video => "video",
            MediaType::Audio => "audio",
            MediaType::Document => "document",
            MediaType::Sticker => "sticker",
        }
    }

    /// Meta takes a caption with images, videos and documents only.
    pub fn takes_caption(self) -> bool {
        matches!(
            self,
            MediaType::Image | MediaType::Video | MediaType::Document
        )
    }
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
