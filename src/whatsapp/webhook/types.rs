//! The typed bodies of inbound messages and the parts of statuses, as PROTOCOL.md
//! lists them. Every field is optional and read leniently (see `lenient`): a field
//! Meta leaves out or fills with a placeholder must not cost the rest of the message.

use serde::Deserialize;
use serde_json::Value;

use super::lenient;

/// The typed body of a message, by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageKind {
    Text(Text),
    Image(Media),
    Video(Media),
    Audio(Media),
    Document(Media),
    Sticker(Media),
    Location(Location),
    Contacts(Vec<ContactCard>),
    Order(Order),
    Interactive(Interactive),
    /// A template's quick-reply button.
    Button(Button),
    Reaction(Reaction),
    System(System),
    /// Meta could not deliver the content (`errors` says why, e.g. 131051).
    Unsupported(Unsupported),
    /// A type wabot does not know yet (`edit`, `revoke`, ...), or a known type whose
    /// body is missing or not the documented shape: `Message::raw` keeps it all.
    Unknown {
        type_name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Text {
    #[serde(default, deserialize_with = "lenient::string")]
    pub body: Option<String>,
}

/// Image, video, audio, document and sticker bodies.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Media {
    /// The media id, for the Graph API's media endpoint.
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub mime_type: Option<String>,
    /// Opaque: base64 or hex depending on the sender.
    #[serde(default, deserialize_with = "lenient::string")]
    pub sha256: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub caption: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub filename: Option<String>,
    /// Audio recorded in WhatsApp rather than attached.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub voice: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub animated: Option<bool>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Location {
    #[serde(default, deserialize_with = "lenient::f64")]
    pub latitude: Option<f64>,
    #[serde(default, deserialize_with = "lenient::f64")]
    pub longitude: Option<f64>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub address: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub url: Option<String>,
}

/// A contact card the customer shared.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ContactCard {
    #[serde(default)]
    pub name: Option<ContactName>,
    #[serde(default)]
    pub phones: Vec<ContactPhone>,
    #[serde(default)]
    pub emails: Vec<ContactEmail>,
    #[serde(default)]
    pub addresses: Vec<Value>,
    #[serde(default)]
    pub urls: Vec<Value>,
    #[serde(default)]
    pub org: Option<Value>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub birthday: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ContactName {
    #[serde(default, deserialize_with = "lenient::string")]
    pub formatted_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub first_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub last_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ContactPhone {
    #[serde(default, deserialize_with = "lenient::string")]
    pub phone: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub wa_id: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ContactEmail {
    #[serde(default, deserialize_with = "lenient::string")]
    pub email: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    pub kind: Option<String>,
}

/// A cart the customer sent from a catalog.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Order {
    #[serde(default, deserialize_with = "lenient::string")]
    pub catalog_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub text: Option<String>,
    #[serde(default)]
    pub product_items: Vec<ProductItem>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ProductItem {
    #[serde(default, deserialize_with = "lenient::string")]
    pub product_retailer_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::i64")]
    pub quantity: Option<i64>,
    #[serde(default, deserialize_with = "lenient::f64")]
    pub item_price: Option<f64>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub currency: Option<String>,
}

/// The customer's answer to an interactive message.
#[derive(Debug, Clone, PartialEq)]
pub enum Interactive {
    ButtonReply(ButtonReply),
    ListReply(ListReply),
    /// A completed WhatsApp Flow.
    NfmReply(NfmReply),
    /// An interactive type wabot does not know, or a known one without its reply
    /// object: kept verbatim.
    Other {
        type_name: String,
        raw: Value,
    },
    /// `type: interactive` without an `interactive` object at all.
    Missing,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ButtonReply {
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ListReply {
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct NfmReply {
    /// `flow` for WhatsApp Flows.
    #[serde(default, deserialize_with = "lenient::string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub body: Option<String>,
    /// A JSON document in a string, carrying the `flow_token` and the answers.
    #[serde(default, deserialize_with = "lenient::string")]
    pub response_json: Option<String>,
}

impl NfmReply {
    /// `response_json` parsed, when it is a JSON object.
    pub fn response(&self) -> Option<serde_json::Map<String, Value>> {
        let text = self.response_json.as_deref()?;
        match serde_json::from_str(text).ok()? {
            Value::Object(map) => Some(map),
            _ => None,
        }
    }

    pub fn flow_token(&self) -> Option<String> {
        self.response()?
            .get("flow_token")
            .and_then(lenient::as_string)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Button {
    #[serde(default, deserialize_with = "lenient::string")]
    pub payload: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Reaction {
    /// The wamid reacted to. Meta's Postman collection spells the key `messsage_id`.
    #[serde(default, alias = "messsage_id", deserialize_with = "lenient::string")]
    pub message_id: Option<String>,
    /// Absent or empty when the customer removed their reaction.
    #[serde(default, deserialize_with = "lenient::string")]
    pub emoji: Option<String>,
}

impl Reaction {
    pub fn removed(&self) -> bool {
        self.emoji.as_deref().map_or(true, str::is_empty)
    }
}

/// A system notice, such as the customer changing their number.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct System {
    #[serde(default, deserialize_with = "lenient::string")]
    pub body: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub wa_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub new_wa_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Unsupported {
    /// The type Meta could not deliver, such as `edit`.
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    pub kind: Option<String>,
}

/// `context`: what the message replies to or where it was forwarded from.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Context {
    #[serde(default, deserialize_with = "lenient::string")]
    pub from: Option<String>,
    /// The wamid replied to.
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub forwarded: Option<bool>,
    #[serde(default, deserialize_with = "lenient::bool")]
    pub frequently_forwarded: Option<bool>,
    #[serde(default)]
    pub referred_product: Option<ReferredProduct>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ReferredProduct {
    #[serde(default, deserialize_with = "lenient::string")]
    pub catalog_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub product_retailer_id: Option<String>,
}

/// A click-to-WhatsApp ad or post the customer came from.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Referral {
    #[serde(default, deserialize_with = "lenient::string")]
    pub source_url: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub source_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub source_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub headline: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub body: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub media_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub ctwa_clid: Option<String>,
}

/// An error Meta attaches to a message, a status or the whole value.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ApiError {
    #[serde(default, deserialize_with = "lenient::i64")]
    pub code: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub message: Option<String>,
    #[serde(default)]
    pub error_data: Option<ErrorData>,
    /// Older payloads put the details here instead of in `error_data`.
    #[serde(default, deserialize_with = "lenient::string")]
    pub details: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub href: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ErrorData {
    #[serde(default, deserialize_with = "lenient::string")]
    pub details: Option<String>,
}

impl ApiError {
    pub fn details(&self) -> Option<&str> {
        self.error_data
            .as_ref()
            .and_then(|d| d.details.as_deref())
            .or(self.details.as_deref())
    }
}

/// The billing conversation a status belongs to.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct StatusConversation {
    #[serde(default, deserialize_with = "lenient::string")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient::i64")]
    pub expiration_timestamp: Option<i64>,
    #[serde(default)]
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Origin {
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct Pricing {
    #[serde(default, deserialize_with = "lenient::bool")]
    pub billable: Option<bool>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub pricing_model: Option<String>,
    #[serde(default, deserialize_with = "lenient::string")]
    pub category: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "lenient::string")]
    pub kind: Option<String>,
}
