//! The webhook envelope Meta posts: `entry[] → changes[] → value`, with the
//! `messages` field's value typed down to every message type in PROTOCOL.md.
//!
//! Parsing never fails on a JSON object. Meta adds message types and `field`s without
//! notice, and its own examples carry placeholders where numbers belong, so every
//! level is read leniently: an unknown `field` keeps its value verbatim
//! ([`ChangeValue::Other`]), an unknown message type becomes
//! [`MessageKind::Unknown`], a type whose inner object does not have the documented
//! shape keeps its raw JSON, and every message keeps the whole of Meta's object in
//! [`Message::raw`]. Only a body that is not a JSON object is an error.
//!
//! On a number in coexistence (the WhatsApp Business app and the Cloud API on one
//! number), what the business types in the app comes back as an
//! `smb_message_echoes` change: the same value as `messages`, with
//! `message_echoes[]` whose items are messages from the business (`from`: its
//! display number) to the customer (`to`). Meta echoes only messages sent from the
//! app or a linked device, not those sent through the Cloud API.

use serde::Deserialize;
use serde_json::{Map, Value};

pub(crate) mod lenient;
pub mod statuses;
#[cfg(test)]
mod tests;
mod types;

pub use types::*;

/// A body that cannot be a webhook.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the body is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("the body is JSON but not an object")]
    NotAnObject,
}

/// The whole POST body.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// `whatsapp_business_account` for WhatsApp.
    pub object: Option<String>,
    pub entry: Vec<Entry>,
}

/// One business account's changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The WhatsApp Business Account id.
    pub id: Option<String>,
    pub changes: Vec<Change>,
}

/// One change: a `field` name and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub field: String,
    pub value: ChangeValue,
}

/// The value of a change: typed for `messages` and `smb_message_echoes`, verbatim
/// for every other field.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeValue {
    Messages(Box<MessagesValue>),
    Other(Value),
}

/// The value of a `messages` change: inbound messages, statuses of our outbound
/// messages, and errors about the business number; or of an `smb_message_echoes`
/// change: the business's own messages typed in the WhatsApp Business app.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessagesValue {
    pub messaging_product: Option<String>,
    pub metadata: Metadata,
    pub contacts: Vec<Contact>,
    pub messages: Vec<Message>,
    /// `message_echoes[]`: messages the business sent from the WhatsApp Business app
    /// (or a linked device) on a number in coexistence, each with `to` set.
    pub message_echoes: Vec<Message>,
    pub statuses: Vec<Status>,
    pub errors: Vec<ApiError>,
}

/// The business number the change is about.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Metadata {
    #[serde(default, deserialize_with = "lenient::string")]
    pub display_phone_number: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub phone_number_id: Option<String>,
}

/// A customer who wrote, with the profile name they chose. A customer who adopted a
/// username may come with a `user_id` (their BSUID) and no `wa_id`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Contact {
    #[serde(default, deserialize_with = "lenient::string")]
    pub wa_id: Option<String>,
    /// The business-scoped user id (`US.13491208655302741918`).
    #[serde(default, deserialize_with = "lenient::string")]
    pub user_id: Option<String>,
    /// The parent BSUID (`US.ENT.…`), where the business enabled them.
    #[serde(default, deserialize_with = "lenient::string")]
    pub parent_user_id: Option<String>,
    #[serde(default)]
    pub profile: Option<Profile>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Profile {
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
    /// The WhatsApp username, when the customer has one.
    #[serde(default, deserialize_with = "lenient::string")]
    pub username: Option<String>,
}

impl Envelope {
    /// Parses a raw body.
    pub fn parse(body: &[u8]) -> Result<Envelope, ParseError> {
        let value: Value = serde_json::from_slice(body)?;
        Envelope::from_value(&value)
    }

    /// Reads an already parsed body.
    pub fn from_value(value: &Value) -> Result<Envelope, ParseError> {
        let Value::Object(map) = value else {
            return Err(ParseError::NotAnObject);
        };
        Ok(Envelope {
            object: str_field(map, "object"),
            entry: array(map, "entry").filter_map(Entry::from_value).collect(),
        })
    }

    /// Every change's `field`, in order of appearance, without repeats.
    pub fn fields(&self) -> Vec<String> {
        let mut fields: Vec<String> = Vec::new();
        for change in self.entry.iter().flat_map(|e| &e.changes) {
            if !fields.contains(&change.field) {
                fields.push(change.field.clone());
            }
        }
        fields
    }

    /// The typed values of every `messages` and `smb_message_echoes` change, in
    /// order.
    pub fn messages_values(&self) -> impl Iterator<Item = &MessagesValue> {
        self.entry
            .iter()
            .flat_map(|e| &e.changes)
            .filter_map(|c| match &c.value {
                ChangeValue::Messages(v) => Some(v.as_ref()),
                ChangeValue::Other(_) => None,
            })
    }
}

impl Entry {
    fn from_value(value: &Value) -> Option<Entry> {
        let map = value.as_object()?;
        Some(Entry {
            id: str_field(map, "id"),
            changes: array(map, "changes")
                .filter_map(Change::from_value)
                .collect(),
        })
    }
}

impl Change {
    fn from_value(value: &Value) -> Option<Change> {
        let map = value.as_object()?;
        let field = str_field(map, "field").unwrap_or_default();
        let value = match (field.as_str(), map.get("value")) {
            ("messages" | "smb_message_echoes", Some(Value::Object(v))) => {
                ChangeValue::Messages(Box::new(MessagesValue::from_map(v)))
            }
            (_, raw) => ChangeValue::Other(raw.cloned().unwrap_or(Value::Null)),
        };
        Some(Change { field, value })
    }
}

impl MessagesValue {
    fn from_map(map: &Map<String, Value>) -> MessagesValue {
        MessagesValue {
            messaging_product: str_field(map, "messaging_product"),
            metadata: map
                .get("metadata")
                .and_then(|m| Metadata::deserialize(m).ok())
                .unwrap_or_default(),
            contacts: array(map, "contacts")
                .filter_map(|c| Contact::deserialize(c).ok())
                .collect(),
            messages: array(map, "messages")
                .filter_map(Message::from_value)
                .collect(),
            message_echoes: array(map, "message_echoes")
                .filter_map(Message::from_value)
                .collect(),
            statuses: array(map, "statuses")
                .filter_map(Status::from_value)
                .collect(),
            errors: api_errors(map),
        }
    }

    /// The profile name of the contact with this wa_id, if Meta sent one.
    pub fn profile_name(&self, wa_id: &str) -> Option<&str> {
        self.contacts
            .iter()
            .find(|c| c.wa_id.as_deref() == Some(wa_id))
            .and_then(|c| c.profile.as_ref())
            .and_then(|p| p.name.as_deref())
            .filter(|n| !n.trim().is_empty())
    }

    /// The contact a message is from: the one with its sender's wa_id or BSUID.
    /// Meta sends one contact per sender; a lone contact is taken when the message
    /// names its sender by neither (a message with no `from` and no
    /// `from_user_id`).
    pub fn contact_of(&self, message: &Message) -> Option<&Contact> {
        let same = |a: &Option<String>, b: &Option<String>| a.is_some() && a == b;
        self.contacts
            .iter()
            .find(|c| same(&c.wa_id, &message.from) || same(&c.user_id, &message.from_user_id))
            .or_else(|| match self.contacts.as_slice() {
                [only] if message.from.is_none() && message.from_user_id.is_none() => Some(only),
                _ => None,
            })
    }
}

impl Contact {
    /// The profile name, when it is not blank.
    pub fn name(&self) -> Option<&str> {
        self.profile
            .as_ref()
            .and_then(|p| p.name.as_deref())
            .filter(|n| !n.trim().is_empty())
    }

    /// The username, when it is not blank.
    pub fn username(&self) -> Option<&str> {
        self.profile
            .as_ref()
            .and_then(|p| p.username.as_deref())
            .filter(|n| !n.trim().is_empty())
    }
}

/// One inbound message (or the business's echoed one): the fields every type has,
/// the typed body, and Meta's whole object.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The sender's wa_id (an echo's: the business's display number). Absent for a
    /// customer who adopted a username and hides their number.
    pub from: Option<String>,
    /// The sender's business-scoped user id (BSUID), on every message since 2026.
    pub from_user_id: Option<String>,
    /// The sender's parent BSUID, where the business enabled them.
    pub from_parent_user_id: Option<String>,
    /// An echo's recipient: the customer's phone number, as the business addressed
    /// it (possibly with `+`); see [`Message::recipient_wa_id`]. Absent on inbound
    /// messages.
    pub to: Option<String>,
    /// An echo's recipient as a BSUID, when Meta names them so.
    pub to_user_id: Option<String>,
    /// The wamid.
    pub id: Option<String>,
    /// Unix seconds, when Meta's `timestamp` is a number (its examples sometimes
    /// carry placeholders instead).
    pub timestamp: Option<i64>,
    /// The `type` as Meta wrote it (`text`, `interactive`, `edit`, ...).
    pub type_name: String,
    pub context: Option<Context>,
    pub referral: Option<Referral>,
    pub errors: Vec<ApiError>,
    pub kind: MessageKind,
    /// Meta's message object, verbatim.
    pub raw: Value,
}

impl Message {
    /// Reads one message object (as kept in `content.raw`); `None` when it is not
    /// a JSON object.
    pub fn from_value(value: &Value) -> Option<Message> {
        let map = value.as_object()?;
        // Meta's examples omit `type` on some messages; the body's key says it then.
        let type_name = str_field(map, "type")
            .or_else(|| {
                KNOWN_TYPES
                    .iter()
                    .find(|t| map.contains_key(**t))
                    .map(|t| (*t).to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Some(Message {
            from: str_field(map, "from"),
            from_user_id: str_field(map, "from_user_id"),
            from_parent_user_id: str_field(map, "from_parent_user_id"),
            to: str_field(map, "to"),
            to_user_id: str_field(map, "to_user_id"),
            id: str_field(map, "id"),
            timestamp: map.get("timestamp").and_then(lenient::as_i64),
            kind: MessageKind::parse(&type_name, map),
            type_name,
            context: map
                .get("context")
                .and_then(|c| Context::deserialize(c).ok()),
            referral: map
                .get("referral")
                .and_then(|r| Referral::deserialize(r).ok()),
            errors: api_errors(map),
            raw: value.clone(),
        })
    }
}

impl Message {
    /// An echo's recipient as a wa_id: Meta gives the number the way the business
    /// addressed it (`+16505551234`), where wa_ids are bare digits, so a phone number
    /// written with `+`, spaces, dashes, dots or parentheses is reduced to its
    /// digits; anything else (a business-scoped user id) is kept as it is.
    pub fn recipient_wa_id(&self) -> Option<String> {
        let to = self.to.as_deref()?.trim();
        if to.is_empty() {
            return None;
        }
        Some(if is_phone_like(to) {
            to.chars().filter(char::is_ascii_digit).collect()
        } else {
            to.to_owned()
        })
    }

    /// An echo's recipient as a BSUID: `to_user_id`, or a `to` that is not a phone
    /// number.
    pub fn recipient_user_id(&self) -> Option<String> {
        let blank = |s: &&str| s.trim().is_empty();
        self.to_user_id
            .as_deref()
            .filter(|s| !blank(s))
            .or_else(|| {
                self.to
                    .as_deref()
                    .filter(|to| !blank(to) && !is_phone_like(to.trim()))
            })
            .map(|s| s.trim().to_owned())
    }
}

/// Whether `id` has the shape of a business-scoped user id: a two-letter country
/// code, a dot, then letters, digits and dots (`US.13491208655302741918`,
/// `US.ENT.11815799212886844830`). Phone numbers and wa_ids never do, so an address
/// can say by itself whether it goes in a send's `to` or its `recipient`.
pub fn is_bsuid(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() > 3
        && b.len() <= 64
        && b[0].is_ascii_uppercase()
        && b[1].is_ascii_uppercase()
        && b[2] == b'.'
        && b[3..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A phone number as people write it: digits with `+`, spaces, dashes, dots or
/// parentheses.
fn is_phone_like(to: &str) -> bool {
    to.bytes().any(|b| b.is_ascii_digit())
        && to
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b' ' | b'-' | b'.' | b'(' | b')'))
}

/// The message types with a typed body, by the key that holds it.
const KNOWN_TYPES: &[&str] = &[
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "order",
    "interactive",
    "button",
    "reaction",
    "system",
];

impl MessageKind {
    fn parse(type_name: &str, map: &Map<String, Value>) -> MessageKind {
        fn typed<'a, T: Deserialize<'a>>(map: &'a Map<String, Value>, key: &str) -> Option<T> {
            map.get(key).and_then(|v| T::deserialize(v).ok())
        }
        let kind = match type_name {
            "text" => typed(map, "text").map(MessageKind::Text),
            "image" => typed(map, "image").map(MessageKind::Image),
            "video" => typed(map, "video").map(MessageKind::Video),
            "audio" => typed(map, "audio").map(MessageKind::Audio),
            "document" => typed(map, "document").map(MessageKind::Document),
            "sticker" => typed(map, "sticker").map(MessageKind::Sticker),
            "location" => typed(map, "location").map(MessageKind::Location),
            "contacts" => typed(map, "contacts").map(MessageKind::Contacts),
            "order" => typed(map, "order").map(MessageKind::Order),
            // An interactive message can arrive without its inner object.
            "interactive" => Some(MessageKind::Interactive(Interactive::parse(
                map.get("interactive"),
            ))),
            "button" => typed(map, "button").map(MessageKind::Button),
            "reaction" => typed(map, "reaction").map(MessageKind::Reaction),
            "system" => typed(map, "system").map(MessageKind::System),
            "unsupported" => Some(MessageKind::Unsupported(
                typed(map, "unsupported").unwrap_or_default(),
            )),
            _ => None,
        };
        kind.unwrap_or_else(|| MessageKind::Unknown {
            type_name: type_name.to_owned(),
        })
    }

    /// The `messages_type_enum` value this kind is stored as.
    pub fn db_type(&self) -> &'static str {
        match self {
            MessageKind::Text(_) => "text",
            MessageKind::Image(_) => "image",
            MessageKind::Video(_) => "video",
            MessageKind::Audio(_) => "audio",
            MessageKind::Document(_) => "document",
            MessageKind::Sticker(_) => "sticker",
            MessageKind::Location(_) => "location",
            MessageKind::Contacts(_) => "contacts",
            MessageKind::Order(_) => "order",
            MessageKind::Interactive(_) => "interactive",
            MessageKind::Button(_) => "button",
            MessageKind::Reaction(_) => "reaction",
            MessageKind::System(_) => "system",
            MessageKind::Unsupported(_) => "unsupported",
            MessageKind::Unknown { .. } => "unknown",
        }
    }
}

impl Interactive {
    fn parse(value: Option<&Value>) -> Interactive {
        let Some(Value::Object(map)) = value else {
            return Interactive::Missing;
        };
        let type_name = str_field(map, "type").unwrap_or_default();
        let reply = |key: &str| map.get(key);
        let parsed = match type_name.as_str() {
            "button_reply" => reply("button_reply")
                .and_then(|v| ButtonReply::deserialize(v).ok())
                .map(Interactive::ButtonReply),
            "list_reply" => reply("list_reply")
                .and_then(|v| ListReply::deserialize(v).ok())
                .map(Interactive::ListReply),
            "nfm_reply" => reply("nfm_reply")
                .and_then(|v| NfmReply::deserialize(v).ok())
                .map(Interactive::NfmReply),
            _ => None,
        };
        parsed.unwrap_or_else(|| Interactive::Other {
            type_name,
            raw: Value::Object(map.clone()),
        })
    }
}

/// One status of one of our outbound messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The wamid of our message.
    pub id: Option<String>,
    pub status: StatusKind,
    /// `payment` for the transaction statuses of order-details messages; absent
    /// (or `message`) for delivery statuses.
    pub type_name: Option<String>,
    pub timestamp: Option<i64>,
    /// The customer's wa_id; absent for a customer known only by BSUID.
    pub recipient_id: Option<String>,
    /// The customer's BSUID.
    pub recipient_user_id: Option<String>,
    pub conversation: Option<StatusConversation>,
    pub pricing: Option<Pricing>,
    pub errors: Vec<ApiError>,
    /// Meta's status object, verbatim.
    pub raw: Value,
}

impl Status {
    /// Whether this reports the delivery of a message (rather than, say, a payment).
    pub fn is_delivery(&self) -> bool {
        self.type_name.as_deref().map_or(true, |t| t == "message")
    }

    fn from_value(value: &Value) -> Option<Status> {
        let map = value.as_object()?;
        Some(Status {
            id: str_field(map, "id"),
            status: StatusKind::parse(str_field(map, "status").as_deref().unwrap_or("")),
            type_name: str_field(map, "type"),
            timestamp: map.get("timestamp").and_then(lenient::as_i64),
            recipient_id: str_field(map, "recipient_id"),
            recipient_user_id: str_field(map, "recipient_user_id"),
            conversation: map
                .get("conversation")
                .and_then(|c| StatusConversation::deserialize(c).ok()),
            pricing: map
                .get("pricing")
                .and_then(|p| Pricing::deserialize(p).ok()),
            errors: api_errors(map),
            raw: value.clone(),
        })
    }
}

/// The delivery states Meta reports, in the order a message may move through them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusKind {
    Sent,
    Delivered,
    Read,
    /// A voice message was played (after `read`).
    Played,
    /// Terminal; the status carries `errors`.
    Failed,
    /// A status wabot does not know (`deleted`, `warning`, ...), kept as written.
    Other(String),
}

impl StatusKind {
    pub fn parse(s: &str) -> StatusKind {
        match s {
            "sent" => StatusKind::Sent,
            "delivered" => StatusKind::Delivered,
            "read" => StatusKind::Read,
            "played" => StatusKind::Played,
            "failed" => StatusKind::Failed,
            other => StatusKind::Other(other.to_owned()),
        }
    }

    /// The `messages_status_enum` value, for the statuses that have one.
    pub fn db_status(&self) -> Option<&'static str> {
        match self {
            StatusKind::Sent => Some("sent"),
            StatusKind::Delivered => Some("delivered"),
            StatusKind::Read => Some("read"),
            StatusKind::Played => Some("played"),
            StatusKind::Failed => Some("failed"),
            StatusKind::Other(_) => None,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            StatusKind::Other(s) => s,
            known => known.db_status().unwrap_or(""),
        }
    }
}

fn str_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(lenient::as_string)
}

fn array<'a>(map: &'a Map<String, Value>, key: &str) -> impl Iterator<Item = &'a Value> {
    map.get(key)
        .and_then(Value::as_array)
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
}

fn api_errors(map: &Map<String, Value>) -> Vec<ApiError> {
    array(map, "errors")
        .filter_map(|e| ApiError::deserialize(e).ok())
        .collect()
}
