//! An inbound message (or an echo of the business's own, which has the same shape) as
//! WhatsApp Builder stores it: the `messages.type` value, the
//! `content` JSONB with WhatsApp Builder's keys (`text`/`body`, `buttonId`,
//! `listTitle`, `whatsappMessageId`, `contextMessageId`, ...) plus Meta's whole
//! message under `raw`, and the conversation's `lastMessage` preview.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::text::truncate_chars;

use crate::whatsapp::webhook::{ApiError, Interactive, Media, Message, MessageKind};

/// `conversations."lastMessage"` is a varchar(1000).
const PREVIEW_MAX_CHARS: usize = 1000;

/// What one inbound message becomes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredContent {
    pub db_type: &'static str,
    pub content: Value,
    pub preview: String,
}

/// Builds the row content of `message`, whose wamid is `wamid`. `reacted_row` is the
/// row id of the message a reaction refers to, when wabot has it.
pub fn build(message: &Message, wamid: &str, reacted_row: Option<Uuid>) -> StoredContent {
    let mut content = Map::new();
    let preview = match &message.kind {
        MessageKind::Text(text) => {
            let body = text.body.clone().unwrap_or_default();
            // WhatsApp Builder's design stores `text`; its webhook parser `body`.
            content.insert("text".into(), json!(body));
            content.insert("body".into(), json!(body));
            body
        }
        MessageKind::Image(m) => {
            media(&mut content, m);
            m.caption.clone().unwrap_or_else(|| "📷 Image".into())
        }
        MessageKind::Video(m) => {
            media(&mut content, m);
            m.caption.clone().unwrap_or_else(|| "🎥 Video".into())
        }
        MessageKind::Document(m) => {
            media(&mut content, m);
            m.filename.clone().unwrap_or_else(|| "📄 Document".into())
        }
        MessageKind::Audio(m) => {
            media(&mut content, m);
            content.insert("voice".into(), json!(m.voice.unwrap_or(false)));
            if m.voice == Some(true) {
                "🎤 Voice message".into()
            } else {
                "🔊 Audio".into()
            }
        }
        MessageKind::Sticker(m) => {
            media(&mut content, m);
            content.insert("animated".into(), json!(m.animated.unwrap_or(false)));
            "🎨 Sticker".into()
        }
        MessageKind::Location(l) => {
            content.insert("latitude".into(), json!(l.latitude));
            content.insert("longitude".into(), json!(l.longitude));
            content.insert("name".into(), json!(l.name));
            content.insert("address".into(), json!(l.address));
            content.insert("url".into(), json!(l.url));
            format!("📍 {}", l.name.as_deref().unwrap_or("Location"))
        }
        MessageKind::Contacts(cards) => {
            content.insert(
                "contacts".into(),
                message.raw.get("contacts").cloned().unwrap_or(json!([])),
            );
            let name = cards
                .first()
                .and_then(|c| c.name.as_ref())
                .and_then(|n| n.formatted_name.clone());
            format!("👤 {}", name.unwrap_or_else(|| "Contact".into()))
        }
        MessageKind::Order(o) => {
            content.insert("catalogId".into(), json!(o.catalog_id));
            content.insert("text".into(), json!(o.text));
            content.insert(
                "productItems".into(),
                message
                    .raw
                    .pointer("/order/product_items")
                    .cloned()
                    .unwrap_or(json!([])),
            );
            "🛒 Order".into()
        }
        MessageKind::Interactive(i) => interactive(&mut content, i),
        MessageKind::Button(b) => {
            content.insert("text".into(), json!(b.text));
            content.insert("payload".into(), json!(b.payload));
            format!("Selected: {}", b.text.as_deref().unwrap_or(""))
        }
        MessageKind::Reaction(r) => {
            // `messageId` is the wamid reacted to (WhatsApp Builder's key);
            // `reactedMessageId` is that message's row, when wabot has it.
            content.insert("messageId".into(), json!(r.message_id));
            content.insert("reactedMessageId".into(), json!(reacted_row));
            content.insert("emoji".into(), json!(r.emoji.clone().unwrap_or_default()));
            content.insert("removed".into(), json!(r.removed()));
            match r.emoji.as_deref().filter(|e| !e.is_empty()) {
                Some(emoji) => format!("{emoji} Reaction"),
                None => "Reaction removed".into(),
            }
        }
        MessageKind::System(s) => {
            content.insert("body".into(), json!(s.body));
            content.insert("systemType".into(), json!(s.kind));
            content.insert("waId".into(), json!(s.wa_id));
            content.insert("newWaId".into(), json!(s.new_wa_id));
            s.body.clone().unwrap_or_else(|| "System message".into())
        }
        MessageKind::Unsupported(u) => {
            content.insert("unsupportedType".into(), json!(u.kind));
            "Unsupported message".into()
        }
        MessageKind::Unknown { type_name } => {
            content.insert("originalType".into(), json!(type_name));
            "Message".into()
        }
    };

    content.insert("whatsappMessageId".into(), json!(wamid));
    if let Some(id) = message.context.as_ref().and_then(|c| c.id.as_deref()) {
        content.insert("contextMessageId".into(), json!(id));
    }
    if !message.errors.is_empty() {
        content.insert("errors".into(), errors_json(&message.errors));
    }
    content.insert("raw".into(), message.raw.clone());

    StoredContent {
        db_type: message.kind.db_type(),
        content: Value::Object(content),
        preview: truncate_chars(&preview, PREVIEW_MAX_CHARS),
    }
}

/// Meta's errors in the shape WhatsApp Builder keeps a failed status's error:
/// `{code, title, message, details}`.
pub fn errors_json(errors: &[ApiError]) -> Value {
    Value::Array(errors.iter().map(error_json).collect())
}

pub fn error_json(e: &ApiError) -> Value {
    json!({
        "code": e.code,
        "title": e.title,
        "message": e.message,
        "details": e.details(),
    })
}

fn media(content: &mut Map<String, Value>, m: &Media) {
    content.insert("id".into(), json!(m.id));
    content.insert("url".into(), json!(m.url));
    content.insert("mimeType".into(), json!(m.mime_type));
    content.insert("sha256".into(), json!(m.sha256));
    if let Some(caption) = &m.caption {
        content.insert("caption".into(), json!(caption));
    }
    if let Some(filename) = &m.filename {
        content.insert("filename".into(), json!(filename));
    }
}

fn interactive(content: &mut Map<String, Value>, i: &Interactive) -> String {
    match i {
        Interactive::ButtonReply(b) => {
            content.insert("type".into(), json!("button_reply"));
            content.insert("buttonId".into(), json!(b.id));
            content.insert("buttonTitle".into(), json!(b.title));
            format!("Selected: {}", b.title.as_deref().unwrap_or(""))
        }
        Interactive::ListReply(l) => {
            content.insert("type".into(), json!("list_reply"));
            content.insert("listId".into(), json!(l.id));
            content.insert("listTitle".into(), json!(l.title));
            content.insert("listDescription".into(), json!(l.description));
            format!("Selected: {}", l.title.as_deref().unwrap_or(""))
        }
        Interactive::NfmReply(n) => {
            // WhatsApp Builder keeps the interactive object as Meta sent it; the
            // parsed answers and the flow token are added for the engine.
            content.insert("type".into(), json!("nfm_reply"));
            content.insert(
                "nfm_reply".into(),
                json!({"name": n.name, "body": n.body, "response_json": n.response_json}),
            );
            content.insert("flowResponse".into(), json!(n.response()));
            content.insert("flowToken".into(), json!(n.flow_token()));
            n.body.clone().unwrap_or_else(|| "Flow response".into())
        }
        Interactive::Other { type_name, raw } => {
            if let Value::Object(map) = raw {
                for (k, v) in map {
                    content.insert(k.clone(), v.clone());
                }
            }
            content.insert("type".into(), json!(type_name));
            "Interactive response".into()
        }
        Interactive::Missing => "Interactive response".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::whatsapp::webhook::Envelope;

    fn built(message: serde_json::Value, reacted: Option<Uuid>) -> StoredContent {
        let body = json!({"entry": [{"changes": [{"field": "messages", "value": {
            "metadata": {"phone_number_id": "1"}, "messages": [message]}}]}]});
        let envelope = Envelope::from_value(&body).unwrap();
        let value = envelope.messages_values().next().unwrap();
        build(&value.messages[0], "wamid.T", reacted)
    }

    #[test]
    fn a_flow_reply_keeps_meta_s_object_and_adds_the_parsed_answers() {
        let s = built(
            json!({"from": "1", "id": "wamid.T", "type": "interactive", "context": {"id": "wamid.FLOW"},
                   "interactive": {"type": "nfm_reply", "nfm_reply": {"name": "flow", "body": "Sent",
                       "response_json": "{\"flow_token\":\"tok\",\"size\":\"M\"}"}}}),
            None,
        );
        assert_eq!(s.db_type, "interactive");
        assert_eq!(s.content["type"], "nfm_reply");
        assert_eq!(s.content["nfm_reply"]["name"], "flow");
        assert_eq!(s.content["flowToken"], "tok");
        assert_eq!(s.content["flowResponse"]["size"], "M");
        assert_eq!(s.content["contextMessageId"], "wamid.FLOW");
        assert_eq!(s.content["whatsappMessageId"], "wamid.T");
        assert_eq!(s.content["raw"]["interactive"]["type"], "nfm_reply");
        assert_eq!(s.preview, "Sent");
    }

    #[test]
    fn a_removed_reaction_is_recorded_as_removed_with_the_reacted_row() {
        let row = Uuid::new_v4();
        let s = built(
            json!({"from": "1", "id": "wamid.T", "type": "reaction",
                   "reaction": {"message_id": "wamid.M", "emoji": ""}}),
            Some(row),
        );
        assert_eq!(s.content["removed"], true);
        assert_eq!(s.content["emoji"], "");
        assert_eq!(s.content["messageId"], "wamid.M");
        assert_eq!(s.content["reactedMessageId"], json!(row));
        assert_eq!(s.preview, "Reaction removed");
    }

    #[test]
    fn previews_fit_the_column_and_an_interactive_without_its_object_is_kept() {
        let long = "é".repeat(1500);
        let s = built(
            json!({"from": "1", "id": "w", "type": "text", "text": {"body": long}}),
            None,
        );
        assert_eq!(s.preview.chars().count(), 1000);
        assert_eq!(s.content["text"].as_str().unwrap().chars().count(), 1500);
        let s = built(json!({"from": "1", "id": "w", "type": "interactive"}), None);
        assert_eq!(
            (s.db_type, s.preview.as_str()),
            ("interactive", "Interactive response")
        );
        let s = built(
            json!({"from": "1", "id": "w", "type": "edit", "edit": {}}),
            None,
        );
        assert_eq!(
            (s.db_type, &s.content["originalType"]),
            ("unknown", &json!("edit"))
        );
    }
}
