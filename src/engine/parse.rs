//! Reading each node's kind from its `data`, with every problem reported.

use std::collections::HashSet;

use regex::Regex;
use serde_json::Value;

use super::doc::{pairs, Fields};
use super::limits::{
    cut, BUTTONS, BUTTON_ID, CAPTION, CTA_DISPLAY_TEXT, FOOTER_TEXT, HEADER_TEXT, INTERACTIVE_BODY,
    ROWS, ROW_ID,
};
use super::node::{
    Auth, Condition, ConditionNode, ContentType, CtaSpec, DynamicSource, FlowNode, KindRule,
    MediaSpec, MessageNode, NodeKind, Operator, QuestionNode, QuestionType, RestApiNode, Rule,
    TemplateSpec, Validation, DEFAULT_MAX_RETRIES,
};
use super::outgoing::{Choice, FlowAction, ListSection, MediaType};
use super::validate::Problem;

/// The default `apiTimeout` (ms).
pub const DEFAULT_API_TIMEOUT_MS: u64 = 30_000;

/// Reads a node's kind from its type name and `data`; every problem found is pushed.
pub(crate) fn parse_kind(
    type_name: &str,
    data: Fields<'_>,
    problems: &mut Vec<Problem>,
) -> Option<NodeKind> {
    Some(match type_name {
        "start" => NodeKind::Start,
        "message" => NodeKind::Message(message(data, problems)),
        "question" => NodeKind::Question(Box::new(question(data, problems))),
        "condition" => NodeKind::Condition(condition(data, problems)),
        "rest_api" => NodeKind::RestApi(Box::new(rest_api(data, problems))),
        "whatsapp_flow" => NodeKind::Flow(Box::new(flow(data, problems))),
        "google_calendar" => NodeKind::Calendar,
        other => {
            problems.push(Problem::UnknownNodeType(other.to_owned()));
            return None;
        }
    })
}

/// Where a question keeps the items of its `dynamicConnectionId` when it names no
/// `dynamicListSource` / `dynamicButtonsSource` of its own.
pub const CONNECTION_ROWS: &str = "connection_rows";

fn required(data: Fields<'_>, key: &'static str, problems: &mut Vec<Problem>) -> Option<String> {
    let value = data.string(key);
    if value.is_none() {
        problems.push(Problem::MissingField(key));
    }
    value
}

/// A message node: text, or wabot's `media` / `ctaUrl` (then `content` may be empty).
fn message(data: Fields<'_>, problems: &mut Vec<Problem>) -> MessageNode {
    let media = data
        .get("media")
        .and_then(|m| media(m, problems))
        .map(Box::new);
    let cta = data
        .get("ctaUrl")
        .and_then(|c| cta_url(c, problems))
        .map(Box::new);
    if media.is_some() && cta.is_some() {
        problems.push(Problem::InvalidField {
            field: "ctaUrl",
            reason: "a message node sends `media` or `ctaUrl`, not both".to_owned(),
        });
    }
    let template = data
        .get("template")
        .and_then(|t| template(t, problems))
        .map(Box::new);
    if template.is_some() && (media.is_some() || cta.is_some()) {
        problems.push(Problem::InvalidField {
            field: "template",
            reason: "a message node sends a `template`, `media` or `ctaUrl`, one of them"
                .to_owned(),
        });
    }
    // A `media`, `ctaUrl` or `template` with its own errors still frees `content`:
    // one mistake, one error.
    let rich = data.get("media").is_some()
        || data.get("ctaUrl").is_some()
        || data.get("template").is_some();
    let content = match (&media, &cta) {
        (None, None) if !rich => required(data, "content", problems),
        (_, Some(c)) if c.text.is_none() => {
            let content = data.string("content");
            if content.is_none() {
                problems.push(Problem::MissingField("ctaUrl.text"));
            }
            content
        }
        _ => data.string("content"),
    };
    MessageNode {
        content: content.unwrap_or_default(),
        media,
        cta,
        template,
    }
}

/// wabot: `data.template: {name, language, parameters}`; parameter values are
/// text (numbers are taken as written).
fn template(value: &serde_json::Value, problems: &mut Vec<Problem>) -> Option<TemplateSpec> {
    let invalid = |reason: &str| Problem::InvalidField {
        field: "template",
        reason: reason.to_owned(),
    };
    let Some(object) = value.as_object() else {
        problems.push(invalid("must be an object: {name, language, parameters}"));
        return None;
    };
    let t = Fields(object);
    let name = t
        .string("name")
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    let language = t
        .string("language")
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty());
    let (Some(name), Some(language)) = (name, language) else {
        problems.push(invalid("needs a `name` and a `language` (`en_US`)"));
        return None;
    };
    let mut parameters = Vec::new();
    match object.get("parameters") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Object(map)) => {
            for (k, v) in map {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => {
                        problems.push(invalid(&format!("parameter `{k}` must be text")));
                        continue;
                    }
                };
                parameters.push((k.clone(), text));
            }
        }
        Some(_) => problems.push(invalid("`parameters` must be an object of KEY: text")),
    }
    Some(TemplateSpec {
        name,
        language,
        parameters,
    })
}

/// Whether a text is literally longer than `max` characters (interpolated texts
/// are cut when sent; only what is wrong as written is reported).
fn too_long(text: &Option<String>, max: usize) -> bool {
    text.as_ref()
        .is_some_and(|t| !t.contains("{{") && t.chars().count() > max)
}

/// A link as written: an http(s) URL, or a template that becomes one when sent
/// (checked with each `{{variable}}` standing for a word; one that begins with a
/// variable is only known when sent). When sent, a link with a variable that is not
/// set is refused (`exec::render_link`).
fn check_link(field: &'static str, link: &str, problems: &mut Vec<Problem>) {
    let link = link.trim();
    if link.starts_with("{{") {
        return;
    }
    let ok = match url::Url::parse(&fill_placeholders(link)) {
        Ok(u) => matches!(u.scheme(), "http" | "https") && u.host().is_some(),
        Err(_) => false,
    };
    if !ok {
        problems.push(Problem::InvalidField {
            field,
            reason: format!("`{link}` is not an http(s) URL"),
        });
    }
}

/// `link` with each complete `{{...}}` replaced by a word.
fn fill_placeholders(link: &str) -> String {
    let mut out = String::with_capacity(link.len());
    let mut rest = link;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push('x');
        rest = &rest[open + 2 + close + 2..];
    }
    out.push_str(rest);
    out
}

fn media(value: &serde_json::Value, problems: &mut Vec<Problem>) -> Option<MediaSpec> {
    let Some(object) = value.as_object() else {
        problems.push(Problem::InvalidField {
            field: "media",
            reason: "must be an object: {type, link | id, caption, filename}".to_owned(),
        });
        return None;
    };
    let m = Fields(object);
    let kind = match m.string("type") {
        None => {
            problems.push(Problem::MissingField("media.type"));
            return None;
        }
        Some(t) => match MediaType::parse(&t) {
            Some(kind) => kind,
            None => {
                problems.push(Problem::InvalidField {
                    field: "media.type",
                    reason: format!("`{t}` is not image, video, audio, document or sticker"),
                });
                return None;
            }
        },
    };
    let (link, id) = (m.string("link"), m.string("id"));
    match (&link, &id) {
        (Some(_), Some(_)) => problems.push(Problem::InvalidField {
            field: "media",
            reason: "give `link` or `id`, not both".to_owned(),
        }),
        (None, None) => problems.push(Problem::InvalidField {
            field: "media",
            reason: "needs `link` (a public http(s) URL) or `id` (a media id uploaded to Meta)"
                .to_owned(),
        }),
        (Some(link), None) => check_link("media.link", link, problems),
        (None, Some(_)) => {}
    }
    let caption = m.string("caption");
    if caption.is_some() && !kind.takes_caption() {
        problems.push(Problem::InvalidField {
            field: "media.caption",
            reason: format!("WhatsApp takes no caption with {}", kind.as_str()),
        });
    }
    if too_long(&caption, CAPTION) {
        problems.push(Problem::InvalidField {
            field: "media.caption",
            reason: format!("longer than {CAPTION} characters"),
        });
    }
    let filename = m.string("filename");
    if filename.is_some() && kind != MediaType::Document {
        problems.push(Problem::InvalidField {
            field: "media.filename",
            reason: format!("only a document has a file name, not {}", kind.as_str()),
        });
    }
    Some(MediaSpec {
        kind,
        link,
        id,
        caption,
        filename,
    })
}

fn cta_url(value: &serde_json::Value, problems: &mut Vec<Problem>) -> Option<CtaSpec> {
    let Some(object) = value.as_object() else {
        problems.push(Problem::InvalidField {
            field: "ctaUrl",
            reason: "must be an object: {text, buttonText, url, header, footer}".to_owned(),
        });
        return None;
    };
    let c = Fields(object);
    let button = c.string("buttonText");
    match &button {
        None => problems.push(Problem::MissingField("ctaUrl.buttonText")),
        b if too_long(b, CTA_DISPLAY_TEXT) => problems.push(Problem::InvalidField {
            field: "ctaUrl.buttonText",
            reason: format!("longer than {CTA_DISPLAY_TEXT} characters"),
        }),
        _ => {}
    }
    let url = c.string("url");
    match &url {
        None => problems.push(Problem::MissingField("ctaUrl.url")),
        Some(url) => check_link("ctaUrl.url", url, problems),
    }
    let text = c.string("text");
    let header = c.string("header");
    let footer = c.string("footer");
    for (field, value, max) in [
        ("ctaUrl.text", &text, INTERACTIVE_BODY),
        ("ctaUrl.header", &header, HEADER_TEXT),
        ("ctaUrl.footer", &footer, FOOTER_TEXT),
    ] {
        if too_long(value, max) {
            problems.push(Problem::InvalidField {
                field,
                reason: format!("longer than {max} characters"),
            });
        }
    }
    Some(CtaSpec {
        text,
        button: button?,
        url: url?,
        header,
        footer,
    })
}

fn question(data: Fields<'_>, problems: &mut Vec<Problem>) -> QuestionNode {
    let question_type = match data.string("questionType").as_deref().map(str::trim) {
        Some("text") => QuestionType::Text,
        Some("buttons") | Some("button") => QuestionType::Buttons,
        Some("list") => QuestionType::List,
        Some("location") => QuestionType::Location,
        Some(other) => {
            problems.push(Problem::InvalidField {
                field: "questionType",
                reason: format!("`{other}` is not text, buttons, list or location"),
            });
            QuestionType::Text
        }
        None if data.array("buttons").is_some_and(|b| !b.is_empty()) => QuestionType::Buttons,
        None if data.array("listSections").is_some_and(|s| !s.is_empty()) => QuestionType::List,
        None => QuestionType::Text,
    };
    let source_key = match question_type {
        QuestionType::List => "dynamicListSource",
        _ => "dynamicButtonsSource",
    };
    let choices = question_type.has_choices();
    let connection = choices
        .then(|| data.string("dynamicConnectionId"))
        .flatten()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    let dynamic = choices
        .then(|| {
            data.string(source_key)
                .or_else(|| connection.as_ref().map(|_| CONNECTION_ROWS.to_owned()))
        })
        .flatten()
        .map(|source| DynamicSource {
            source: source
                .trim()
                .trim_start_matches("{{")
                .trim_end_matches("}}")
                .trim()
                .to_owned(),
            label_field: data.string("dynamicLabelField"),
            desc_field: data.string("dynamicDescField"),
        });
    let buttons = if question_type == QuestionType::Buttons && dynamic.is_none() {
        buttons(data, problems)
    } else {
        Vec::new()
    };
    let sections = if question_type == QuestionType::List && dynamic.is_none() {
        sections(data, problems)
    } else {
        Vec::new()
    };
    QuestionNode {
        question_type,
        content: required(data, "content", problems).unwrap_or_default(),
        header: data.string("headerText"),
        footer: data.string("footerText"),
        buttons,
        list_button: data
            .string("listButtonText")
            .unwrap_or_else(|| "Seçin".to_owned()),
        sections,
        dynamic,
        connection,
        legacy_variable: data.string("variable").map(|v| v.trim().to_owned()),
        validation: validation(data, question_type, problems),
        invalid_choice_message: choices
            .then(|| data.string("invalidChoiceMessage"))
            .flatten(),
        timeout_secs: data.u64("timeoutSeconds").filter(|s| *s > 0),
        timeout_message: data.string("timeoutMessage"),
        template: question_template(data, question_type, problems),
    }
}

/// A question's `data.template`: buttons questions only.
fn question_template(
    data: Fields<'_>,
    question_type: QuestionType,
    problems: &mut Vec<Problem>,
) -> Option<Box<TemplateSpec>> {
    let value = data.get("template")?;
    if question_type != QuestionType::Buttons {
        problems.push(Problem::InvalidField {
            field: "template",
            reason: "only a buttons question is asked with a template (its quick replies)"
                .to_owned(),
        });
        return None;
    }
    template(value, problems).map(Box::new)
}

fn buttons(data: Fields<'_>, problems: &mut Vec<Problem>) -> Vec<Choice> {
    let raw = data.array("buttons").map(Vec::as_slice).unwrap_or_default();
    if raw.is_empty() {
        problems.push(Problem::MissingField("buttons"));
    }
    if raw.len() > BUTTONS {
        problems.push(Problem::TooManyButtons(raw.len()));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (index, button) in raw.iter().enumerate() {
        // The oldest editor saved buttons as bare titles with positional ids.
        let (id, title) = match button {
            Value::String(title) => (format!("btn-{index}"), title.clone()),
            other => {
                let f = other.as_object().map(Fields);
                let title = f.and_then(|f| f.string("title")).unwrap_or_default();
                let id = f
                    .and_then(|f| f.string("id"))
                    .unwrap_or_else(|| format!("btn-{index}"));
                (id, title)
            }
        };
        if title.trim().is_empty() {
            problems.push(Problem::InvalidField {
                field: "buttons",
                reason: format!("button `{id}` has no title"),
            });
        }
        if !seen.insert(id.clone()) {
            problems.push(Problem::DuplicateChoiceId(id.clone()));
        }
        out.push(Choice {
            id: cut(&id, BUTTON_ID),
            title,
            description: None,
        });
    }
    out
}

fn sections(data: Fields<'_>, problems: &mut Vec<Problem>) -> Vec<ListSection> {
    let raw = data
        .array("listSections")
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut out = Vec::new();
    for section in raw {
        let f = section.as_object().map(Fields);
        let rows = f
            .and_then(|f| f.array("rows"))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut section_rows = Vec::new();
        for row in rows {
            total += 1;
            let rf = row.as_object().map(Fields);
            let title = rf.and_then(|f| f.string("title")).unwrap_or_default();
            let Some(id) = rf.and_then(|f| f.string("id")) else {
                problems.push(Problem::InvalidField {
                    field: "listSections",
                    reason: format!("row `{title}` has no id"),
                });
                continue;
            };
            if title.trim().is_empty() {
                problems.push(Problem::InvalidField {
                    field: "listSections",
                    reason: format!("row `{id}` has no title"),
                });
            }
            if !seen.insert(id.clone()) {
                problems.push(Problem::DuplicateChoiceId(id.clone()));
            }
            section_rows.push(Choice {
                id: cut(&id, ROW_ID),
                title,
                description: rf.and_then(|f| f.string("description")),
            });
        }
        out.push(ListSection {
            title: f.and_then(|f| f.string("title")).unwrap_or_default(),
            rows: section_rows,
        });
    }
    if total == 0 {
        problems.push(Problem::MissingField("listSections"));
    }
    if total > ROWS {
        problems.push(Problem::TooManyListRows(total));
    }
    out
}

fn validation(
    data: Fields<'_>,
    question_type: QuestionType,
    problems: &mut Vec<Problem>,
) -> Option<Validation> {
    let v = Fields(data.object("validation")?);
    let name = v.string("type").map(|t| t.to_ascii_lowercase());
    let reported = problems.len();
    let rule = match name.as_deref() {
        None | Some("text") | Some("any") => Rule::Any,
        Some("email") => Rule::Email,
        Some("number") => Rule::Number,
        Some("phone") => Rule::Phone,
        Some("regex") => match v.string("pattern").map(|p| Regex::new(&p)) {
            Some(Ok(re)) => Rule::Regex(re),
            Some(Err(e)) => {
                problems.push(Problem::InvalidField {
                    field: "validation.pattern",
                    reason: e.to_string(),
                });
                Rule::Any
            }
            None => {
                problems.push(Problem::MissingField("validation.pattern"));
                Rule::Any
            }
        },
        Some(other) => match KindRule::parse(other) {
            Some(kind) => Rule::Kind(kind),
            None => {
                problems.push(Problem::InvalidField {
                    field: "validation.type",
                    reason: format!(
                        "`{other}` is not email, number, phone, regex, text, image, video, \
                         audio, document, media or location"
                    ),
                });
                Rule::Any
            }
        },
    };
    // A kind where it means nothing would silently change what the question does.
    let name = name.unwrap_or_default();
    let meaningless = match (&rule, question_type) {
        (Rule::Kind(_), t) if t.has_choices() => Some(format!(
            "`{name}` asks for a kind of message; a buttons or list question takes its \
             choices, and other kinds follow `default` like typed text"
        )),
        (Rule::Kind(KindRule::Location), QuestionType::Location) => None,
        _ if question_type == QuestionType::Location
            && !name.is_empty()
            && problems.len() == reported =>
        {
            Some(format!(
                "`{name}`: a location question takes a location; give `location` or no \
                 `validation.type`"
            ))
        }
        _ => None,
    };
    if let Some(reason) = meaningless {
        problems.push(Problem::InvalidField {
            field: "validation.type",
            reason,
        });
    }
    Some(Validation {
        rule,
        min_length: v.u64("minLength").map(|n| n as usize),
        max_length: v.u64("maxLength").map(|n| n as usize),
        min: v.f64("min"),
        max: v.f64("max"),
        error_message: v.string("errorMessage"),
        max_retries: v
            .u64("maxRetries")
            .map_or(DEFAULT_MAX_RETRIES, |n| n.min(100) as u32),
    })
}

fn condition(data: Fields<'_>, problems: &mut Vec<Problem>) -> ConditionNode {
    let mut conditions = Vec::new();
    let group = data.object("conditionGroup").map(Fields);
    let rows = group
        .and_then(|g| g.array("conditions"))
        .filter(|c| !c.is_empty());
    if let Some(rows) = rows {
        for row in rows {
            let f = row.as_object().map(Fields);
            let variable = f.and_then(|f| f.string("variable"));
            let op = f.and_then(|f| f.string("operator"));
            match parse_condition(variable, op, f.and_then(|f| f.string("value"))) {
                Ok(c) => conditions.push(c),
                Err(p) => problems.push(p),
            }
        }
        let any = group
            .and_then(|g| g.string("logicalOperator"))
            .is_some_and(|op| op.eq_ignore_ascii_case("or"));
        return ConditionNode { conditions, any };
    }
    match parse_condition(
        data.string("conditionVar"),
        data.string("conditionOp"),
        data.string("conditionVal"),
    ) {
        Ok(c) => conditions.push(c),
        Err(p) => problems.push(p),
    }
    ConditionNode {
        conditions,
        any: false,
    }
}

fn parse_condition(
    variable: Option<String>,
    op: Option<String>,
    value: Option<String>,
) -> Result<Condition, Problem> {
    let variable = variable.ok_or(Problem::MissingField("conditionVar"))?;
    let op_text = op.ok_or(Problem::MissingField("conditionOp"))?;
    let op = Operator::parse(&op_text).ok_or_else(|| Problem::InvalidField {
        field: "conditionOp",
        reason: format!("`{op_text}` is not a known operator"),
    })?;
    Ok(Condition {
        variable: variable
            .trim()
            .trim_start_matches("{{")
            .trim_end_matches("}}")
            .trim()
            .to_owned(),
        op,
        value: value.unwrap_or_default(),
    })
}

fn rest_api(data: Fields<'_>, problems: &mut Vec<Problem>) -> RestApiNode {
    let method_text = data
        .string("apiMethod")
        .unwrap_or_else(|| "GET".to_owned())
        .trim()
        .to_ascii_uppercase();
    let method = match method_text.as_str() {
        "GET" => http::Method::GET,
        "POST" => http::Method::POST,
        "PUT" => http::Method::PUT,
        "PATCH" => http::Method::PATCH,
        "DELETE" => http::Method::DELETE,
        "HEAD" => http::Method::HEAD,
        other => {
            problems.push(Problem::InvalidField {
                field: "apiMethod",
                reason: format!("`{other}` is not GET, POST, PUT, PATCH, DELETE or HEAD"),
            });
            http::Method::GET
        }
    };
    let content_type = match data
        .string("apiContentType")
        .map(|c| c.to_ascii_lowercase())
        .as_deref()
    {
        Some(c) if c.contains("form-urlencoded") || c == "form" => ContentType::Form,
        Some(c) if c.contains("multipart") || c == "form-data" => ContentType::Multipart,
        _ => ContentType::Json,
    };
    let s = |k| data.string(k).unwrap_or_default();
    let auth = match data
        .string("apiAuthType")
        .map(|a| a.to_ascii_lowercase())
        .as_deref()
    {
        Some("bearer") => Auth::Bearer(s("apiAuthToken")),
        Some("basic") => Auth::Basic {
            username: s("apiAuthUsername"),
            password: s("apiAuthPassword"),
        },
        Some("api_key") | Some("apikey") => Auth::ApiKey {
            name: data
                .string("apiAuthKeyName")
                .unwrap_or_else(|| "X-API-Key".to_owned()),
            value: s("apiAuthKeyValue"),
            in_query: data
                .string("apiAuthKeyLocation")
                .is_some_and(|l| l.eq_ignore_ascii_case("query")),
        },
        _ => Auth::None,
    };
    let body = match data.get("apiBody") {
        Some(Value::String(b)) if !b.trim().is_empty() => Some(b.clone()),
        Some(v @ (Value::Object(_) | Value::Array(_))) => Some(v.to_string()),
        _ => None,
    };
    let url = required(data, "apiUrl", problems).unwrap_or_default();
    RestApiNode {
        url: url.trim().to_owned(),
        method,
        headers: pairs(data.get("apiHeaders")),
        body,
        content_type,
        query: pairs(data.get("apiQueryParams")),
        response_path: data.string("apiResponsePath"),
        filter_field: data.string("apiFilterField"),
        filter_value: data.string("apiFilterValue"),
        timeout_ms: data
            .u64("apiTimeout")
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_API_TIMEOUT_MS),
        auth,
        output_variable: data
            .string("apiOutputVariable")
            .map(|v| v.trim().to_owned()),
        error_variable: data.string("apiErrorVariable").map(|v| v.trim().to_owned()),
    }
}

fn flow(data: Fields<'_>, problems: &mut Vec<Problem>) -> FlowNode {
    let mode = data.string("flowMode").map(|m| m.to_ascii_lowercase());
    let action = match mode.as_deref() {
        Some("data_exchange") => FlowAction::DataExchange,
        _ => FlowAction::Navigate,
    };
    FlowNode {
        mode_set: matches!(mode.as_deref(), Some("data_exchange" | "navigate")),
        flow_id: required(data, "whatsappFlowId", problems).unwrap_or_default(),
        cta: cut(
            &data.string("flowCta").unwrap_or_else(|| "Start".to_owned()),
            20,
        ),
        body: data
            .string("flowBodyText")
            .or_else(|| data.string("content"))
            .unwrap_or_else(|| "Please complete this form".to_owned()),
        header: data
            .string("flowHeaderText")
            .or_else(|| data.string("headerText")),
        footer: data
            .string("flowFooterText")
            .or_else(|| data.string("footerText")),
        action,
        initial_screen: data.string("flowInitialScreen"),
        initial_data: data
            .get("flowInitialData")
            .filter(|d| d.as_object().is_some_and(|o| !o.is_empty()))
            .cloned(),
        output_variable: data
            .string("flowOutputVariable")
            .map(|v| v.trim().to_owned()),
        timeout_secs: data.u64("timeoutSeconds").filter(|s| *s > 0),
        data_source_id: data.string("dataSourceId"),
        data_source_endpoint: data.string("dataSourceEndpoint"),
        data_source_data_key: data.string("dataSourceDataKey"),
    }
}
