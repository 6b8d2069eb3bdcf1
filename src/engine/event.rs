//! What starts a turn: a new conversation, a customer's message, a Flow's reply or
//! a wait that ran out.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
        /// A message that is neither text nor a choice (media, a location, contacts,
        /// or a kind the engine cannot read): what a question stores as its answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        answer: Option<Answer>,
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

/// What kind of message a structured answer came as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerKind {
    Image,
    Video,
    Audio,
    Document,
    Sticker,
    Location,
    Contacts,
    /// Anything the engine cannot take as an answer (an order, a message Meta could
    /// not deliver, a type newer than wabot): asked again or sent by `default`, with
    /// the reason recorded, never silently ignored.
    Unsupported,
}

impl AnswerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AnswerKind::Image => "image",
            AnswerKind::Video => "video",
            AnswerKind::Audio => "audio",
            AnswerKind::Document => "document",
            AnswerKind::Sticker => "sticker",
            AnswerKind::Location => "location",
            AnswerKind::Contacts => "contacts",
            AnswerKind::Unsupported => "unsupported",
        }
    }

    pub fn is_media(self) -> bool {
        matches!(
            self,
            AnswerKind::Image
                | AnswerKind::Video
                | AnswerKind::Audio
                | AnswerKind::Document
                | AnswerKind::Sticker
        )
    }
}

/// A structured answer: its kind and the value a question stores
/// (`question_N.response`), readable by path like any variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub kind: AnswerKind,
    pub value: Value,
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
    /// Image, video, document, audio or sticker.
    Media(MediaMessage),
    /// A shared location.
    Location {
        latitude: Option<f64>,
        longitude: Option<f64>,
        name: Option<String>,
        address: Option<String>,
    },
    /// Shared contact cards: Meta's `contacts` array.
    Contacts {
        contacts: Value,
    },
    /// Anything else (an order, an unsupported message, a type newer than wabot):
    /// Meta's `type`.
    Other {
        type_name: String,
    },
}

/// An inbound media message as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaMessage {
    /// One of the media kinds ([`AnswerKind::is_media`]).
    pub kind: AnswerKind,
    pub caption: Option<String>,
    pub mime_type: Option<String>,
    pub media_id: Option<String>,
    pub sha256: Option<String>,
    /// A document's file name.
    pub filename: Option<String>,
    /// An audio recorded in WhatsApp (a voice note).
    pub voice: Option<bool>,
    /// Where wabot stored the downloaded bytes (`content.media.stored`), once the
    /// download finished; usually not yet when the turn runs.
    pub stored: Option<Value>,
}

impl MediaMessage {
    /// `{type, caption, mime_type, media_id, sha256, location}` (+ `filename`,
    /// `voice` when Meta sent them).
    pub fn value(&self) -> Value {
        let mut value = json!({
            "type": self.kind.as_str(),
            "caption": self.caption,
            "mime_type": self.mime_type,
            "media_id": self.media_id,
            "sha256": self.sha256,
            "location": self.stored,
        });
        if let Some(filename) = &self.filename {
            value["filename"] = json!(filename);
        }
        if let Some(voice) = self.voice {
            value["voice"] = json!(voice);
        }
        value
    }
}

impl Inbound {
    /// The message with the stored location of its media, when there is one.
    pub fn with_stored(mut self, stored: Option<Value>) -> Inbound {
        if let Inbound::Media(m) = &mut self {
            m.stored = stored.filter(|s| !s.is_null());
        }
        self
    }

    pub fn into_event(self) -> Event {
        let message =
            |text: Option<String>, button_id: Option<String>, list_row_id| Event::InboundMessage {
                text,
                button_id,
                list_row_id,
                answer: None,
            };
        let structured =
            |text: Option<String>, kind: AnswerKind, value: Value| Event::InboundMessage {
                text,
                button_id: None,
                list_row_id: None,
                answer: Some(Answer { kind, value }),
            };
        match self {
            Inbound::Text { body } => message(Some(body), None, None),
            Inbound::ButtonReply { id, title } => message(Some(title), Some(id), None),
            Inbound::ListReply { id, title } => message(Some(title), None, Some(id)),
            Inbound::QuickReply { payload, text } => message(Some(text), Some(payload), None),
            Inbound::Media(m) => {
                let value = m.value();
                structured(m.caption, m.kind, value)
            }
            Inbound::Location {
                latitude,
                longitude,
                name,
                address,
            } => structured(
                None,
                AnswerKind::Location,
                json!({"latitude": latitude, "longitude": longitude, "name": name, "address": address}),
            ),
            Inbound::Contacts { contacts } => {
                let mut contacts = contacts;
                compact(&mut contacts);
                if contacts.is_null() {
                    contacts = Value::Array(Vec::new());
                }
                structured(None, AnswerKind::Contacts, contacts)
            }
            Inbound::Other { type_name } => {
                structured(None, AnswerKind::Unsupported, json!({ "type": type_name }))
            }
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

/// Drops nulls, empty strings and what is left empty by that, recursively: a
/// contact card has many optional fields and Meta's are mostly absent.
fn compact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.values_mut().for_each(compact);
            map.retain(|_, v| !v.is_null());
            if map.is_empty() {
                *value = Value::Null;
            }
        }
        Value::Array(items) => {
            items.iter_mut().for_each(compact);
            items.retain(|v| !v.is_null());
            if items.is_empty() {
                *value = Value::Null;
            }
        }
        Value::String(s) if s.trim().is_empty() => *value = Value::Null,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_are_compacted_and_media_carry_their_fields() {
        let event = Inbound::Contacts {
            contacts: json!([{"name": {"formatted_name": "Ali Veli", "prefix": "", "suffix": null},
                              "phones": [{"phone": "+90 555", "type": "CELL"}], "emails": [], "org": {}}]),
        }
        .into_event();
        let Event::InboundMessage {
            answer: Some(answer),
            text,
            ..
        } = event
        else {
            panic!("a structured answer");
        };
        assert_eq!(text, None);
        assert_eq!(answer.kind, AnswerKind::Contacts);
        assert_eq!(
            answer.value,
            json!([{"name": {"formatted_name": "Ali Veli"}, "phones": [{"phone": "+90 555", "type": "CELL"}]}])
        );

        let media = Inbound::Media(MediaMessage {
            kind: AnswerKind::Document,
            caption: Some("Fatura".into()),
            mime_type: Some("application/pdf".into()),
            media_id: Some("42".into()),
            sha256: Some("abc".into()),
            filename: Some("fatura.pdf".into()),
            voice: None,
            stored: None,
        })
        .with_stored(Some(json!({"store": "dir", "key": "ab/cd"})));
        let Event::InboundMessage {
            answer: Some(answer),
            text,
            ..
        } = media.into_event()
        else {
            panic!("a structured answer");
        };
        assert_eq!(text.as_deref(), Some("Fatura"));
        assert_eq!(
            answer.value,
            json!({"type": "document", "caption": "Fatura", "mime_type": "application/pdf",
                   "media_id": "42", "sha256": "abc", "filename": "fatura.pdf",
                   "location": {"store": "dir", "key": "ab/cd"}})
        );
    }
}
