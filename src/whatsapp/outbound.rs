//! Renders the engine's `Outgoing` messages into Graph API request bodies.
//!
//! The engine already applies Meta's limits, but a body Meta refuses fails the message
//! for good (131009), so the limits are enforced here again, defensively: texts are
//! cut at a character boundary (never inside a multi-byte UTF-8 sequence: Turkish
//! text is full of them), and lists of buttons and rows are cut to Meta's maximum.

use serde_json::{json, Map, Value};

use crate::engine::{Choice, FlowAction, ListSection, MediaType, Outgoing};

use crate::engine::limits;
/// Cuts text to at most `max` characters, at a character boundary.
pub use crate::text::truncate_chars as truncate;

/// The send body's field Meta echoes in the message's status webhooks (at most 512
/// characters).
pub const CALLBACK_DATA: &str = "biz_opaque_callback_data";

/// wabot's callback data for its outbound message `message_id`.
pub fn callback_data(message_id: uuid::Uuid) -> String {
    format!("wabot:{message_id}")
}

/// The outbound message a status's callback data names, when wabot wrote it.
pub fn message_of_callback(data: &str) -> Option<uuid::Uuid> {
    data.strip_prefix("wabot:")?.parse().ok()
}

/// The complete Graph API body that sends `msg` to `to`: a phone number goes in
/// `to`; a BSUID (a customer known only by username) in `recipient`, Meta's field
/// for it.
pub fn graph_body(to: &str, msg: &Outgoing) -> Value {
    let field = if super::webhook::is_bsuid(to) {
        "recipient"
    } else {
        "to"
    };
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        field: to,
    });
    match msg {
        // WhatsApp Builder sends text without link previews; so does wabot.
        Outgoing::Text { body: text } => {
            body["type"] = json!("text");
            body["text"] = json!({
                "preview_url": false,
                "body": truncate(text, limits::TEXT_BODY),
            });
        }
        Outgoing::Media { media, .. } => {
            body["type"] = json!(media.as_str());
            body[media.as_str()] = media_object(msg);
        }
        // A chatbot's template: Meta's components depend on the template (which
        // parameter is a header's, a button's, named or positional), so its
        // parameters wait under `UNRESOLVED_PARAMETERS` for the sender, which
        // finishes the body from the synced catalogue (whatsapp::templates).
        Outgoing::Template {
            name,
            language,
            parameters,
        } => {
            body["type"] = json!("template");
            body["template"] = json!({"name": name, "language": {"code": language}});
            body[super::templates::UNRESOLVED_PARAMETERS] = json!(parameters);
        }
        other => {
            body["type"] = json!("interactive");
            body["interactive"] = interactive(other);
        }
    }
    body
}

/// The `<type>` object of a media message (`Value::Null` for other messages):
/// `link` or `id`, with a caption (images, videos, documents) and a file name
/// (documents) when there are.
pub fn media_object(msg: &Outgoing) -> Value {
    let Outgoing::Media {
        media,
        link,
        id,
        caption,
        filename,
    } = msg
    else {
        return Value::Null;
    };
    let mut object = Map::new();
    // Meta takes one of the two; a link wins, as the engine never sets both.
    match (link, id) {
        (Some(link), _) => object.insert("link".to_owned(), json!(link)),
        (None, Some(id)) => object.insert("id".to_owned(), json!(id)),
        (None, None) => None,
    };
    if let Some(caption) = caption.as_deref().filter(|c| !c.is_empty()) {
        if media.takes_caption() {
            object.insert(
                "caption".to_owned(),
                json!(truncate(caption, limits::CAPTION)),
            );
        }
    }
    if let Some(filename) = filename.as_deref().filter(|f| !f.is_empty()) {
        if *media == MediaType::Document {
            object.insert("filename".to_owned(), json!(filename));
        }
    }
    Value::Object(object)
}

/// The `interactive` object of an interactive message (`Value::Null` for text).
pub fn interactive(msg: &Outgoing) -> Value {
    match msg {
        Outgoing::Text { .. } | Outgoing::Media { .. } | Outgoing::Template { .. } => Value::Null,
        Outgoing::Buttons {
            header,
            body,
            footer,
            buttons,
        } => {
            let buttons: Vec<Value> = buttons
                .iter()
                .take(limits::BUTTONS)
                .map(|b| {
                    json!({
                        "type": "reply",
                        "reply": {
                            "id": truncate(&b.id, limits::BUTTON_ID),
                            "title": truncate(&b.title, limits::BUTTON_TITLE),
                        },
                    })
                })
                .collect();
            let mut object = frame("button", header, body, limits::INTERACTIVE_BODY, footer);
            object.insert("action".to_owned(), json!({ "buttons": buttons }));
            Value::Object(object)
        }
        Outgoing::List {
            header,
            body,
            footer,
            button,
            sections,
        } => {
            let mut object = frame("list", header, body, limits::LIST_BODY, footer);
            object.insert(
                "action".to_owned(),
                json!({
                    "button": truncate(button, limits::LIST_BUTTON),
                    "sections": list_sections(sections),
                }),
            );
            Value::Object(object)
        }
        Outgoing::Flow {
            header,
            body,
            footer,
            flow_id,
            flow_cta,
            flow_token,
            flow_action,
            screen,
            data,
        } => {
            let mut parameters = json!({
                "flow_message_version": "3",
                "flow_token": flow_token,
                "flow_id": flow_id,
                "flow_cta": truncate(flow_cta, limits::FLOW_CTA),
                "flow_action": match flow_action {
                    FlowAction::Navigate => "navigate",
                    FlowAction::DataExchange => "data_exchange",
                },
            });
            // Meta takes `flow_action_payload` only with `navigate` (a data_exchange
            // Flow asks the endpoint for its first screen). Without a screen Meta
            // opens the Flow's first screen; a payload with an empty `data` is
            // refused, so `data` goes only when it says something.
            if let (FlowAction::Navigate, Some(screen)) = (flow_action, screen) {
                let mut payload = json!({ "screen": screen });
                if let Some(data) = data.as_ref().filter(|d| !is_empty(d)) {
                    payload["data"] = data.clone();
                }
                parameters["flow_action_payload"] = payload;
            }
            let mut object = frame("flow", header, body, limits::INTERACTIVE_BODY, footer);
            object.insert(
                "action".to_owned(),
                json!({ "name": "flow", "parameters": parameters }),
            );
            Value::Object(object)
        }
        Outgoing::CtaUrl {
            header,
            body,
            footer,
            button,
            url,
        } => {
            let mut object = frame("cta_url", header, body, limits::INTERACTIVE_BODY, footer);
            object.insert(
                "action".to_owned(),
                json!({ "name": "cta_url", "parameters": {
                    "display_text": truncate(button, limits::CTA_DISPLAY_TEXT),
                    "url": url,
                }}),
            );
            Value::Object(object)
        }
        Outgoing::LocationRequest { body } => {
            let mut object = frame(
                "location_request_message",
                &None,
                body,
                limits::INTERACTIVE_BODY,
                &None,
            );
            object.insert("action".to_owned(), json!({ "name": "send_location" }));
            Value::Object(object)
        }
    }
}

/// The parts every interactive type shares: `type`, `header`, `body`, `footer`.
fn frame(
    kind: &str,
    header: &Option<String>,
    body: &str,
    body_max: usize,
    footer: &Option<String>,
) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("type".to_owned(), json!(kind));
    if let Some(header) = header.as_deref().filter(|h| !h.is_empty()) {
        object.insert(
            "header".to_owned(),
            json!({ "type": "text", "text": truncate(header, limits::HEADER_TEXT) }),
        );
    }
    object.insert(
        "body".to_owned(),
        json!({ "text": truncate(body, body_max) }),
    );
    if let Some(footer) = footer.as_deref().filter(|f| !f.is_empty()) {
        object.insert(
            "footer".to_owned(),
            json!({ "text": truncate(footer, limits::FOOTER_TEXT) }),
        );
    }
    object
}

/// Sections with at most 10 rows in all; a section left without rows is dropped,
/// since Meta refuses empty sections.
fn list_sections(sections: &[ListSection]) -> Vec<Value> {
    let mut budget = limits::ROWS;
    let mut out = Vec::new();
    for section in sections.iter().take(limits::SECTIONS) {
        let rows: Vec<Value> = section.rows.iter().take(budget).map(row).collect();
        budget -= rows.len();
        if rows.is_empty() {
            continue;
        }
        out.push(json!({
            "title": truncate(&section.title, limits::SECTION_TITLE),
            "rows": rows,
        }));
    }
    out
}

fn row(choice: &Choice) -> Value {
    let mut row = json!({
        "id": truncate(&choice.id, limits::ROW_ID),
        "title": truncate(&choice.title, limits::ROW_TITLE),
    });
    if let Some(description) = choice.description.as_deref().filter(|d| !d.is_empty()) {
        row["description"] = json!(truncate(description, limits::ROW_DESCRIPTION));
    }
    row
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file under `fixtures/graph`.
    fn fixture(name: &str) -> Value {
        let path = format!("{}/fixtures/graph/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture readable"))
            .expect("fixture parses")
    }

    /// One of Meta's own examples, when the reference material is beside the checkout.
    fn meta_sample(name: &str) -> Option<Value> {
        let path = format!(
            "{}/../shared/whatsapp/samples/meta-docs/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).ok()?;
        Some(serde_json::from_str(&text).expect("sample parses"))
    }

    fn choice(id: &str, title: &str, description: Option<&str>) -> Choice {
        Choice {
            id: id.to_owned(),
            title: title.to_owned(),
            description: description.map(str::to_owned),
        }
    }

    #[test]
    fn a_bsuid_is_addressed_by_recipient_and_a_phone_number_by_to() {
        let msg = Outgoing::Text { body: "Hi".into() };
        let body = graph_body("US.13491208655302741918", &msg);
        assert_eq!(body["recipient"], "US.13491208655302741918");
        assert!(body.get("to").is_none(), "{body}");
        let body = graph_body("905551112233", &msg);
        assert_eq!(body["to"], "905551112233");
        assert!(body.get("recipient").is_none(), "{body}");
    }

    #[test]
    fn truncation_never_splits_a_character() {
        let turkish = "Güzel bir gün, çiçekler açıyor ve şarkılar söylüyoruz";
        let cut = truncate(turkish, 20);
        assert_eq!(cut.chars().count(), 20);
        assert_eq!(cut, "Güzel bir gün, çiçek");
        assert_eq!(truncate("ığüşöç", 3), "ığü");
        assert_eq!(truncate("kısa", 20), "kısa");
        assert_eq!(truncate("", 5), "");
    }

    #[test]
    fn a_list_renders_as_the_fixture_says() {
        let msg = Outgoing::List {
            header: Some("Delivery".into()),
            body: "How should we bring your order?".into(),
            footer: Some("Corner Bakery".into()),
            button: "Delivery options".into(),
            sections: vec![
                ListSection {
                    title: "Today".into(),
                    rows: vec![
                        choice("courier", "Courier", Some("Within two hours")),
                        choice("pickup", "Pick up in the shop", Some("")),
                    ],
                },
                ListSection {
                    title: "Later".into(),
                    rows: vec![choice("post", "Post", Some("Two to four days"))],
                },
            ],
        };
        assert_eq!(
            graph_body("+905320000001", &msg),
            fixture("send_list_request.json")
        );
    }

    #[test]
    fn a_list_renders_like_metas_own_example() {
        let Some(expected) = meta_sample("api_send_interactive_list_request.json") else {
            return;
        };
        let msg = Outgoing::List {
            header: Some("Choose Shipping Option".into()),
            body: "Which shipping option do you prefer?".into(),
            footer: Some("Lucky Shrub: Your gateway to succulents™".into()),
            button: "Shipping Options".into(),
            sections: vec![
                ListSection {
                    title: "I want it ASAP!".into(),
                    rows: vec![
                        choice(
                            "priority_express",
                            "Priority Mail Express",
                            Some("Next Day to 2 Days"),
                        ),
                        choice("priority_mail", "Priority Mail", Some("1–3 Days")),
                    ],
                },
                ListSection {
                    title: "I can wait a bit".into(),
                    rows: vec![
                        choice(
                            "usps_ground_advantage",
                            "USPS Ground Advantage",
                            Some("2–5 Days"),
                        ),
                        choice("media_mail", "Media Mail", Some("2–8 Days")),
                    ],
                },
            ],
        };
        assert_eq!(graph_body("+16505551234", &msg), expected);
    }

    #[test]
    fn buttons_are_cut_to_three_with_short_titles() {
        let msg = Outgoing::Buttons {
            header: None,
            body: "Seçiniz".into(),
            footer: None,
            buttons: vec![
                choice("a", "Birinci seçenek çok uzun başlık", None),
                choice("b", "İkinci", None),
                choice("c", "Üçüncü", None),
                choice("d", "Dördüncü", None),
            ],
        };
        let body = graph_body("905551112233", &msg);
        assert_eq!(body["type"], "interactive");
        assert!(body["interactive"].get("header").is_none());
        let buttons = body["interactive"]["action"]["buttons"].as_array().unwrap();
        assert_eq!(buttons.len(), 3);
        assert_eq!(buttons[0]["type"], "reply");
        assert_eq!(buttons[0]["reply"]["title"], "Birinci seçenek çok ");
        assert_eq!(buttons[2]["reply"]["id"], "c");
    }

    #[test]
    fn a_list_keeps_ten_rows_in_all_and_drops_empty_sections() {
        let rows = |prefix: &str, n: usize| -> Vec<Choice> {
            (0..n)
                .map(|i| {
                    choice(
                        &format!("{prefix}{i}"),
                        &format!("{prefix} {i}"),
                        Some(&"ç".repeat(100)),
                    )
                })
                .collect()
        };
        let msg = Outgoing::List {
            header: None,
            body: "b".repeat(5000),
            footer: None,
            button: "Seçenekleri göster lütfen".into(),
            sections: vec![
                ListSection {
                    title: "Bir".into(),
                    rows: rows("a", 7),
                },
                ListSection {
                    title: "İki".into(),
                    rows: rows("b", 7),
                },
                ListSection {
                    title: "Üç".into(),
                    rows: rows("c", 2),
                },
            ],
        };
        let body = graph_body("1", &msg);
        let interactive = &body["interactive"];
        assert_eq!(interactive["body"]["text"].as_str().unwrap().len(), 4096);
        assert_eq!(interactive["action"]["button"], "Seçenekleri göster l");
        let sections = interactive["action"]["sections"].as_array().unwrap();
        assert_eq!(sections.len(), 2);
        let total: usize = sections
            .iter()
            .map(|s| s["rows"].as_array().unwrap().len())
            .sum();
        assert_eq!(total, 10);
        let description = sections[0]["rows"][0]["description"].as_str().unwrap();
        assert_eq!(description.chars().count(), 72);
    }

    #[test]
    fn a_flow_renders_as_the_fixture_says() {
        let msg = Outgoing::Flow {
            header: Some("Book a table".into()),
            body: "Pick a day and a time".into(),
            footer: Some("Takes a minute".into()),
            flow_id: "1000000000000010".into(),
            flow_cta: "Book".into(),
            flow_token: "00000000-0000-4000-8000-000000000001:booking_form".into(),
            flow_action: FlowAction::Navigate,
            screen: Some("PICK_DAY".into()),
            data: Some(json!({"party_size": 4, "venue": "Harbour Grill"})),
        };
        assert_eq!(
            graph_body("905320000001", &msg),
            fixture("send_flow_request.json")
        );
    }

    #[test]
    fn a_flow_renders_like_metas_own_example() {
        let Some(mut expected) = meta_sample("api_flow_send_all_params_request.json") else {
            return;
        };
        // Meta's page shows `data` as a JSON string; the API takes an object.
        let data = json!({"product_name": "name", "product_description": "description", "product_price": 100});
        expected["interactive"]["action"]["parameters"]["flow_action_payload"]["data"] =
            data.clone();
        let msg = Outgoing::Flow {
            header: Some("Flow message header".into()),
            body: "Flow message body".into(),
            footer: Some("Flow message footer".into()),
            flow_id: "123456".into(),
            flow_cta: "Book!".into(),
            flow_token: "AQAAAAACS5FpgQ_cAAAAAD0QI3s.".into(),
            flow_action: FlowAction::Navigate,
            screen: Some("<SCREEN_NAME>".into()),
            data: Some(data),
        };
        assert_eq!(graph_body("whatsapp-id", &msg), expected);
    }

    #[test]
    fn only_a_navigate_flow_with_a_screen_has_a_payload_and_empty_data_is_left_out() {
        let flow = |action: FlowAction, screen: Option<&str>, data: Option<Value>| Outgoing::Flow {
            header: None,
            body: "Formu doldurun".into(),
            footer: None,
            flow_id: "42".into(),
            flow_cta: "Başla".into(),
            flow_token: "ctx:node".into(),
            flow_action: action,
            screen: screen.map(str::to_owned),
            data,
        };
        let params =
            |msg: &Outgoing| graph_body("1", msg)["interactive"]["action"]["parameters"].clone();
        let p = params(&flow(FlowAction::Navigate, None, Some(json!({"a": 1}))));
        assert!(p.get("flow_action_payload").is_none());
        assert_eq!(p["flow_action"], "navigate");
        assert_eq!(p["flow_message_version"], "3");
        let p = params(&flow(FlowAction::Navigate, Some("START"), Some(json!({}))));
        assert_eq!(p["flow_action_payload"], json!({"screen": "START"}));
        // Meta: omit the payload unless the action is navigate.
        let p = params(&flow(
            FlowAction::DataExchange,
            Some("START"),
            Some(json!({"a": 1})),
        ));
        assert!(p.get("flow_action_payload").is_none());
        assert_eq!(p["flow_action"], "data_exchange");
    }

    fn media(
        media: MediaType,
        link: Option<&str>,
        id: Option<&str>,
        caption: Option<&str>,
        filename: Option<&str>,
    ) -> Outgoing {
        Outgoing::Media {
            media,
            link: link.map(str::to_owned),
            id: id.map(str::to_owned),
            caption: caption.map(str::to_owned),
            filename: filename.map(str::to_owned),
        }
    }

    #[test]
    fn media_render_in_metas_shapes_by_link_or_id() {
        let body = graph_body(
            "905551112233",
            &media(
                MediaType::Image,
                Some("https://cdn.example/a.jpg"),
                None,
                Some("Şube"),
                None,
            ),
        );
        assert_eq!(
            body,
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                   "to": "905551112233", "type": "image",
                   "image": {"link": "https://cdn.example/a.jpg", "caption": "Şube"}})
        );
        let body = graph_body(
            "1",
            &media(
                MediaType::Document,
                None,
                Some("778"),
                Some(&"ç".repeat(2000)),
                Some("fatura.pdf"),
            ),
        );
        assert_eq!(body["type"], "document");
        assert_eq!(body["document"]["id"], "778");
        assert_eq!(body["document"]["filename"], "fatura.pdf");
        assert_eq!(
            body["document"]["caption"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            limits::CAPTION
        );
        // Meta refuses a caption on audio and stickers and a file name on anything
        // but a document: they never reach the body.
        let body = graph_body(
            "1",
            &media(MediaType::Audio, None, Some("9"), Some("x"), Some("a.ogg")),
        );
        assert_eq!(body["audio"], json!({"id": "9"}));
        let body = graph_body(
            "1",
            &media(
                MediaType::Sticker,
                Some("https://s.example/s.webp"),
                None,
                Some("x"),
                None,
            ),
        );
        assert_eq!(body["sticker"], json!({"link": "https://s.example/s.webp"}));
    }

    /// Meta's Postman examples, copied to `fixtures/graph` (request bodies only);
    /// compared with the originals too when the reference material is beside the
    /// checkout.
    #[test]
    fn media_render_like_metas_own_examples() {
        for (fixture_name, sample_name, msg) in [
            (
                "send_image_by_url_request.json",
                "send_image_message_by_url.json",
                media(
                    MediaType::Image,
                    Some("http(s)://image-url"),
                    None,
                    None,
                    None,
                ),
            ),
            (
                "send_document_by_id_request.json",
                "send_document_message_by_id.json",
                media(
                    MediaType::Document,
                    None,
                    Some("<DOCUMENT_OBJECT_ID>"),
                    Some("<DOCUMENT_CAPTION_TO_SEND>"),
                    Some("<DOCUMENT_FILENAME>"),
                ),
            ),
        ] {
            let body = graph_body("{{Recipient-Phone-Number}}", &msg);
            assert_eq!(body, fixture(fixture_name), "{fixture_name}");
            let path = format!(
                "{}/../shared/whatsapp/samples/meta-postman/send/{sample_name}",
                env!("CARGO_MANIFEST_DIR")
            );
            if let Ok(text) = std::fs::read_to_string(path) {
                let sample: Value = serde_json::from_str(&text).expect("sample parses");
                assert_eq!(body, sample["request_body"], "{sample_name}");
            }
        }
    }

    #[test]
    fn a_cta_url_and_a_location_request_render_in_metas_shapes() {
        let body = graph_body(
            "1",
            &Outgoing::CtaUrl {
                header: Some("Claim opened".into()),
                body: "Follow your claim online.".into(),
                footer: None,
                button: "Track my claim right now".into(),
                url: "https://claims.example/track?id=9".into(),
            },
        );
        assert_eq!(body["type"], "interactive");
        assert_eq!(
            body["interactive"],
            json!({"type": "cta_url",
                   "header": {"type": "text", "text": "Claim opened"},
                   "body": {"text": "Follow your claim online."},
                   "action": {"name": "cta_url", "parameters": {
                       "display_text": "Track my claim right", "url": "https://claims.example/track?id=9"}}})
        );
        let body = graph_body(
            "1",
            &Outgoing::LocationRequest {
                body: "Where are you?".into(),
            },
        );
        assert_eq!(
            body["interactive"],
            json!({"type": "location_request_message", "body": {"text": "Where are you?"},
                   "action": {"name": "send_location"}})
        );
    }

    #[test]
    fn text_is_sent_without_preview_and_cut_at_4096_characters() {
        let body = graph_body(
            "905551112233",
            &Outgoing::Text {
                body: "ş".repeat(5000),
            },
        );
        assert_eq!(body["type"], "text");
        assert_eq!(body["text"]["preview_url"], false);
        assert_eq!(body["text"]["body"].as_str().unwrap().chars().count(), 4096);
        assert_eq!(body["to"], "905551112233");
        assert_eq!(body["messaging_product"], "whatsapp");
    }
}
