//! Message templates in Meta's wire formats: the business account's template listing
//! (`GET /{WABA-ID}/message_templates`, paged by cursors), what each template's
//! components ask a send to fill, the send body (`type: template`), and the
//! `message_template_status_update` webhook value.
//!
//! A send names its parameters by key, the same keys `wabot send --param`, a
//! chatbot's `windowClosedTemplate` and a campaign's CSV columns use:
//! - a body parameter by its name (`first_name`) or, for positional templates, its
//!   number (`1`);
//! - a header text parameter as `header.NAME` (`header.1`); a media header
//!   (image, video, document) as `header`, its value the media's link;
//! - a button's parameter as `button.N` (N its index from 0): a quick-reply button's
//!   payload (what comes back when it is tapped; optional, Meta then sends the
//!   button's text), a URL button's suffix, a copy-code button's code.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One template as Meta lists it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Template {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    pub language: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub category: Option<String>,
    /// `POSITIONAL` (`{{1}}`) or `NAMED` (`{{first_name}}`); Meta omits it for
    /// positional templates.
    #[serde(default)]
    pub parameter_format: Option<String>,
    #[serde(default)]
    pub components: Vec<Value>,
}

impl Template {
    pub fn format(&self) -> &str {
        match self.parameter_format.as_deref() {
            Some(f) if f.eq_ignore_ascii_case("named") => "NAMED",
            _ => "POSITIONAL",
        }
    }

    /// What a send of this template must (and may) fill.
    pub fn parameters(&self) -> Parameters {
        Parameters::of(&self.components)
    }
}

/// One page of the listing: its templates and the cursor of the next page.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub templates: Vec<Template>,
    /// `paging.cursors.after`, when `paging.next` says there is a next page.
    pub after: Option<String>,
}

/// Reads one page of `GET /{WABA-ID}/message_templates`. A template Meta lists
/// without a name or language is left out (it cannot be sent).
pub fn parse_page(body: &Value) -> Result<Page, String> {
    let data = body
        .get("data")
        .and_then(Value::as_array)
        .ok_or("the answer has no `data` array")?;
    let templates = data
        .iter()
        .filter_map(|t| serde_json::from_value::<Template>(t.clone()).ok())
        .filter(|t| !t.name.is_empty() && !t.language.is_empty())
        .collect();
    let paging = &body["paging"];
    let after = paging["cursors"]["after"]
        .as_str()
        .filter(|_| paging.get("next").is_some_and(|n| !n.is_null()))
        .map(str::to_owned);
    Ok(Page { templates, after })
}

/// The query of one page; `after` is the previous page's cursor.
pub fn list_query(after: Option<&str>) -> Vec<(&'static str, String)> {
    let mut query = vec![
        (
            "fields",
            "id,name,language,status,category,parameter_format,components".to_owned(),
        ),
        ("limit", "100".to_owned()),
    ];
    if let Some(after) = after {
        query.push(("after", after.to_owned()));
    }
    query
}

/// The most pages one listing reads (100 templates each): a cursor that never ends
/// must not loop forever.
const MAX_PAGES: usize = 1000;

/// Every template of the business account `waba_id`, following the paging cursors.
pub async fn list_all(
    graph: &super::graph::GraphClient,
    credentials: &crate::credentials::Credentials,
    waba_id: &str,
) -> Result<Vec<Template>, ListError> {
    let path = format!("{waba_id}/message_templates");
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    for page_no in 1..=MAX_PAGES {
        let body = graph
            .get_json(credentials, &path, &list_query(after.as_deref()))
            .await
            .map_err(|e| ListError::Graph {
                page: page_no,
                source: e,
            })?;
        let page = parse_page(&body).map_err(|why| ListError::Page { page: page_no, why })?;
        all.extend(page.templates);
        match page.after {
            Some(next) if Some(&next) != after.as_ref() => after = Some(next),
            _ => return Ok(all),
        }
    }
    Err(ListError::TooManyPages(MAX_PAGES))
}

/// Why the listing could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("reading page {page} of the template listing")]
    Graph {
        page: usize,
        #[source]
        source: super::graph::GraphError,
    },
    #[error("page {page} of the template listing is not Meta's shape: {why}")]
    Page { page: usize, why: String },
    #[error("the template listing did not end after {0} pages")]
    TooManyPages(usize),
}

/// A button's parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ButtonParameter {
    pub index: usize,
    /// `quick_reply`, `url` or `copy_code`.
    pub sub_type: String,
    /// Whether a send must give it (a URL with a variable, a copy code).
    pub required: bool,
}

/// What a template's components ask of a send.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    /// `IMAGE`, `VIDEO`, `DOCUMENT` when the header is media (its link is `header`).
    pub header_media: Option<String>,
    /// The header text's parameter names, in order.
    pub header: Vec<String>,
    /// The body's parameter names, in order.
    pub body: Vec<String>,
    pub buttons: Vec<ButtonParameter>,
}

impl Parameters {
    pub fn of(components: &[Value]) -> Parameters {
        let mut p = Parameters::default();
        for c in components {
            let kind = c["type"].as_str().unwrap_or_default().to_ascii_uppercase();
            let text = c["text"].as_str().unwrap_or_default();
            match kind.as_str() {
                "HEADER" => match c["format"].as_str().map(str::to_ascii_uppercase).as_deref() {
                    Some(media @ ("IMAGE" | "VIDEO" | "DOCUMENT")) => {
                        p.header_media = Some(media.to_owned())
                    }
                    _ => p.header = variables(text),
                },
                "BODY" => p.body = variables(text),
                "BUTTONS" => {
                    let buttons = c["buttons"].as_array().cloned().unwrap_or_default();
                    for (index, b) in buttons.iter().enumerate() {
                        let kind = b["type"].as_str().unwrap_or_default().to_ascii_uppercase();
                        let (sub_type, required) = match kind.as_str() {
                            "QUICK_REPLY" => ("quick_reply", false),
                            "URL" => (
                                "url",
                                !variables(b["url"].as_str().unwrap_or_default()).is_empty(),
                            ),
                            "COPY_CODE" => ("copy_code", true),
                            _ => continue,
                        };
                        p.buttons.push(ButtonParameter {
                            index,
                            sub_type: sub_type.to_owned(),
                            required,
                        });
                    }
                }
                _ => {}
            }
        }
        p
    }

    /// Every key a send may give, and whether it must.
    pub fn keys(&self) -> Vec<(String, bool)> {
        let mut keys = Vec::new();
        if self.header_media.is_some() {
            keys.push(("header".to_owned(), true));
        }
        keys.extend(self.header.iter().map(|n| (format!("header.{n}"), true)));
        keys.extend(self.body.iter().map(|n| (n.clone(), true)));
        keys.extend(
            self.buttons
                .iter()
                .map(|b| (format!("button.{}", b.index), b.required)),
        );
        keys
    }

    /// Fills the quick-reply payloads `given` lacks from `payloads` (`button.N` →
    /// payload, a question's button ids), for the buttons this template has.
    pub fn fill_payloads(
        &self,
        given: &mut BTreeMap<String, String>,
        payloads: &[(String, String)],
    ) {
        for b in self.buttons.iter().filter(|b| b.sub_type == "quick_reply") {
            let key = format!("button.{}", b.index);
            if let Some((_, payload)) = payloads.iter().find(|(k, _)| *k == key) {
                given.entry(key).or_insert_with(|| payload.clone());
            }
        }
    }

    /// The problems of `given` against this template: missing and unknown keys.
    pub fn check(&self, given: &BTreeMap<String, String>) -> Vec<String> {
        let keys = self.keys();
        let mut problems: Vec<String> = keys
            .iter()
            .filter(|(k, required)| *required && !given.contains_key(k))
            .map(|(k, _)| format!("parameter `{k}` is missing"))
            .collect();
        for k in given.keys() {
            if !keys.iter().any(|(known, _)| known == k) {
                let known: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
                problems.push(format!(
                    "parameter `{k}` is not in the template (it takes: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
        problems
    }
}

/// The `{{…}}` variables of a component's text, in order of first appearance.
pub fn variables(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let name = after[..end].trim().to_owned();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
        rest = &after[end + 2..];
    }
    names
}

/// The key of a Graph API body whose template parameters are still by key (a
/// chatbot's template, see `outbound::graph_body`): never sent to Meta, the sender
/// replaces the body with [`send_body`]'s first.
pub const UNRESOLVED_PARAMETERS: &str = "wabot_template_parameters";

/// What to send: a template by name and language, with its parameters by key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TemplateMessage {
    pub name: String,
    pub language: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

/// The Graph API body sending `message` to `to`, in Meta's shape for a template
/// whose parameters are `params` and format `format` (`NAMED` adds each body and
/// header parameter's name). `callback` is `biz_opaque_callback_data`.
pub fn send_body(
    to: &str,
    message: &TemplateMessage,
    params: &Parameters,
    format: &str,
    callback: Option<&str>,
) -> Value {
    let named = format == "NAMED";
    let given = &message.parameters;
    let text = |name: &str, key: &str| {
        let mut p = json!({"type": "text", "text": given.get(key).cloned().unwrap_or_default()});
        if named {
            p["parameter_name"] = json!(name);
        }
        p
    };
    let mut components = Vec::new();
    if let Some(media) = &params.header_media {
        let kind = media.to_ascii_lowercase();
        let link = given.get("header").cloned().unwrap_or_default();
        components.push(json!({"type": "header", "parameters": [
            {"type": kind, kind.clone(): {"link": link}}]}));
    } else if !params.header.is_empty() {
        let values: Vec<Value> = params
            .header
            .iter()
            .map(|n| text(n, &format!("header.{n}")))
            .collect();
        components.push(json!({"type": "header", "parameters": values}));
    }
    if !params.body.is_empty() {
        let values: Vec<Value> = params.body.iter().map(|n| text(n, n)).collect();
        components.push(json!({"type": "body", "parameters": values}));
    }
    for b in &params.buttons {
        let Some(value) = given.get(&format!("button.{}", b.index)) else {
            continue;
        };
        let parameter = match b.sub_type.as_str() {
            "quick_reply" => json!({"type": "payload", "payload": value}),
            "copy_code" => json!({"type": "coupon_code", "coupon_code": value}),
            _ => json!({"type": "text", "text": value}),
        };
        components.push(json!({"type": "button", "sub_type": b.sub_type,
                               "index": b.index.to_string(), "parameters": [parameter]}));
    }
    let mut template = json!({"name": message.name, "language": {"code": message.language}});
    if !components.is_empty() {
        template["components"] = Value::Array(components);
    }
    // A BSUID goes in `recipient`, a phone number in `to` (as outbound::graph_body).
    let field = if super::webhook::is_bsuid(to) {
        "recipient"
    } else {
        "to"
    };
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        field: to,
        "type": "template",
        "template": template,
    });
    if let Some(callback) = callback {
        body[super::outbound::CALLBACK_DATA] = json!(callback);
    }
    body
}

/// A `message_template_status_update` webhook value: a template approved,
/// rejected, paused, disabled, ...
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    pub event: String,
    pub meta_id: Option<String>,
    pub name: Option<String>,
    pub language: Option<String>,
    pub reason: Option<String>,
}

/// Reads the value; `None` when it names no event.
pub fn status_update(value: &Value) -> Option<StatusUpdate> {
    let text = |k: &str| match &value[k] {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    Some(StatusUpdate {
        event: text("event")?.to_ascii_uppercase(),
        meta_id: text("message_template_id"),
        name: text("message_template_name"),
        language: text("message_template_language"),
        // Meta says "NONE" when there is no reason.
        reason: text("reason")
            .or_else(|| text("other_info"))
            .filter(|r| r != "NONE"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order_update() -> Template {
        serde_json::from_value(json!({
            "id": "77", "name": "order_update", "language": "en_US", "status": "APPROVED",
            "category": "UTILITY",
            "components": [
                {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
                {"type": "BODY", "text": "Hi {{1}}, order {{2}} ships {{1}}."},
                {"type": "BUTTONS", "buttons": [
                    {"type": "QUICK_REPLY", "text": "Track it"},
                    {"type": "URL", "text": "Open", "url": "https://x.test/o/{{1}}"},
                    {"type": "PHONE_NUMBER", "text": "Call", "phone_number": "+1555"}]}]}))
        .unwrap()
    }

    #[test]
    fn parameters_are_read_from_the_components() {
        let p = order_update().parameters();
        assert_eq!(p.header, ["1"]);
        assert_eq!(p.body, ["1", "2"]);
        assert_eq!(p.buttons.len(), 2);
        assert!(!p.buttons[0].required && p.buttons[1].required);
        let mut given = BTreeMap::new();
        given.insert("1".to_owned(), "Ayşe".to_owned());
        given.insert("nope".to_owned(), "x".to_owned());
        let problems = p.check(&given);
        assert!(problems.iter().any(|p| p.contains("`2` is missing")));
        assert!(problems.iter().any(|p| p.contains("`header.1` is missing")));
        assert!(problems.iter().any(|p| p.contains("`button.1` is missing")));
        assert!(problems.iter().any(|p| p.contains("`nope` is not")));
    }

    #[test]
    fn a_named_send_is_in_meta_s_shape() {
        let t: Template = serde_json::from_value(json!({
            "name": "hello", "language": "tr", "status": "APPROVED", "parameter_format": "NAMED",
            "components": [{"type": "HEADER", "format": "IMAGE"},
                           {"type": "BODY", "text": "Merhaba {{first_name}}"},
                           {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Evet"}]}]}))
        .unwrap();
        let message = TemplateMessage {
            name: "hello".into(),
            language: "tr".into(),
            parameters: [
                ("first_name", "Ayşe"),
                ("header", "https://x.test/a.png"),
                ("button.0", "yes"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        };
        let body = send_body(
            "905551112233",
            &message,
            &t.parameters(),
            t.format(),
            Some("cb"),
        );
        assert_eq!(
            body,
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                   "to": "905551112233", "type": "template", "biz_opaque_callback_data": "cb",
                   "template": {"name": "hello", "language": {"code": "tr"}, "components": [
                       {"type": "header", "parameters": [
                           {"type": "image", "image": {"link": "https://x.test/a.png"}}]},
                       {"type": "body", "parameters": [
                           {"type": "text", "text": "Ayşe", "parameter_name": "first_name"}]},
                       {"type": "button", "sub_type": "quick_reply", "index": "0",
                        "parameters": [{"type": "payload", "payload": "yes"}]}]}})
        );
    }

    #[test]
    fn a_page_names_its_next_cursor_only_when_there_is_a_next_page() {
        let page = parse_page(&json!({"data": [
            {"name": "a", "language": "en", "status": "APPROVED"}, {"name": "", "language": "en"}],
            "paging": {"cursors": {"before": "B", "after": "A"}, "next": "https://n"}}))
        .unwrap();
        assert_eq!(
            (page.templates.len(), page.after.as_deref()),
            (1, Some("A"))
        );
        let last = parse_page(&json!({"data": [], "paging": {"cursors": {"after": "A"}}})).unwrap();
        assert_eq!(last.after, None);
        assert!(parse_page(&json!({"error": {}})).is_err());
    }

    #[test]
    fn a_status_update_is_read() {
        let u = status_update(&json!({"event": "PAUSED", "message_template_id": 77,
            "message_template_name": "order_update", "message_template_language": "en_US",
            "reason": "NONE"}))
        .unwrap();
        assert_eq!(u.event, "PAUSED");
        assert_eq!(u.meta_id.as_deref(), Some("77"));
        assert_eq!(u.reason, None);
        assert!(status_update(&json!({})).is_none());
    }
}
