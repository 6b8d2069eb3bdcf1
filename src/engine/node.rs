//! The node kinds of a compiled chatbot (see NODES.md for the fields); `parse`
//! reads them from the documents.

use regex::Regex;
use serde_json::Value;

use super::event::AnswerKind;
use super::outgoing::{Choice, FlowAction, ListSection, MediaType};

/// What a node does.
#[derive(Debug, Clone)]
pub enum NodeKind {
    Start,
    Message(MessageNode),
    Question(Box<QuestionNode>),
    Condition(ConditionNode),
    RestApi(Box<RestApiNode>),
    Flow(Box<FlowNode>),
    /// `google_calendar`: compiled, but at run time it records an error output.
    Calendar,
}

impl NodeKind {
    /// The type name as WhatsApp Builder writes it.
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::Start => "start",
            NodeKind::Message(_) => "message",
            NodeKind::Question(_) => "question",
            NodeKind::Condition(_) => "condition",
            NodeKind::RestApi(_) => "rest_api",
            NodeKind::Flow(_) => "whatsapp_flow",
            NodeKind::Calendar => "google_calendar",
        }
    }

    /// The prefix of the editor's output variable (`question_2`), for kinds with
    /// outputs.
    pub fn variable_prefix(&self) -> Option<&'static str> {
        match self {
            NodeKind::Question(_) => Some("question"),
            NodeKind::RestApi(_) => Some("rest_api"),
            NodeKind::Flow(_) => Some("flow"),
            NodeKind::Calendar => Some("calendar"),
            _ => None,
        }
    }

    /// The handles this node can leave by, besides `default`; `None` when any
    /// handle is possible (dynamic choices).
    pub fn handles(&self) -> Option<Vec<String>> {
        let fixed = |names: &[&str]| Some(names.iter().map(|s| s.to_string()).collect());
        match self {
            NodeKind::Start | NodeKind::Message(_) => Some(Vec::new()),
            NodeKind::Condition(_) => fixed(&["true", "false"]),
            NodeKind::RestApi(_) => fixed(&["success", "error"]),
            NodeKind::Calendar => fixed(&["error"]),
            NodeKind::Flow(f) => {
                let mut handles = vec!["error".to_owned()];
                if f.timeout_secs.is_some() {
                    handles.push("timeout".to_owned());
                }
                Some(handles)
            }
            NodeKind::Question(q) => {
                if q.dynamic.is_some() {
                    return None;
                }
                let mut handles: Vec<String> = match q.question_type {
                    QuestionType::Text | QuestionType::Location => Vec::new(),
                    QuestionType::Buttons => q.buttons.iter().map(|b| b.id.clone()).collect(),
                    QuestionType::List => q
                        .sections
                        .iter()
                        .flat_map(|s| s.rows.iter().map(|r| r.id.clone()))
                        .collect(),
                };
                // Every question leaves by `exhausted` after too many answers it
                // cannot take: not its choices, not a location, failing validation,
                // or messages wabot cannot read (at a text question too).
                handles.push("exhausted".to_owned());
                if q.timeout_secs.is_some() {
                    handles.push("timeout".to_owned());
                }
                Some(handles)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct MessageNode {
    /// The text; with `media` it is sent before the media (when not empty), with
    /// `cta` it is the body unless the CTA has its own.
    pub content: String,
    /// wabot: `data.media` (boxed: most messages are text).
    pub media: Option<Box<MediaSpec>>,
    /// wabot: `data.ctaUrl`.
    pub cta: Option<Box<CtaSpec>>,
    /// wabot: `data.template`: an approved template sent instead of the text.
    pub template: Option<Box<TemplateSpec>>,
}

/// wabot: a message template (`data.template: {name, language, parameters}`) a
/// message node, or a buttons question, sends; each parameter is interpolated when
/// sent. Its keys are those of `wabot send --param` (see whatsapp::templates).
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateSpec {
    pub name: String,
    pub language: String,
    pub parameters: Vec<(String, String)>,
}

/// wabot: media a message node sends; every text is interpolated when sent.
#[derive(Debug, Clone)]
pub struct MediaSpec {
    pub kind: MediaType,
    pub link: Option<String>,
    pub id: Option<String>,
    pub caption: Option<String>,
    pub filename: Option<String>,
}

/// wabot: a CTA URL button message; every text is interpolated when sent.
#[derive(Debug, Clone)]
pub struct CtaSpec {
    /// The body; the node's `content` when absent.
    pub text: Option<String>,
    pub button: String,
    pub url: String,
    pub header: Option<String>,
    pub footer: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuestionType {
    Text,
    Buttons,
    List,
    /// wabot: asks for the customer's location (a location request message); the
    /// answer is a location.
    Location,
}

impl QuestionType {
    /// Buttons or list: a question that offers choices.
    pub fn has_choices(self) -> bool {
        matches!(self, QuestionType::Buttons | QuestionType::List)
    }
}

#[derive(Debug, Clone)]
pub struct QuestionNode {
    pub question_type: QuestionType,
    pub content: String,
    pub header: Option<String>,
    pub footer: Option<String>,
    /// Static buttons as written; titles are cut to Meta's limit after
    /// interpolation, when sent.
    pub buttons: Vec<Choice>,
    pub list_button: String,
    /// Static list sections as written (cut when sent).
    pub sections: Vec<ListSection>,
    pub dynamic: Option<DynamicSource>,
    /// wabot: a data source connection (`dynamicConnectionId`) whose items become the
    /// dynamic choices, fetched each time the question is asked.
    pub connection: Option<String>,
    /// The older documents' explicit `variable`.
    pub legacy_variable: Option<String>,
    pub validation: Option<Validation>,
    /// wabot: on a buttons or list question without a `default` edge, the text sent
    /// before the question is asked again when the answer is not one of its choices
    /// (`invalidChoiceMessage`).
    pub invalid_choice_message: Option<String>,
    /// wabot: how long the question waits before following `timeout`.
    pub timeout_secs: Option<u64>,
    pub timeout_message: Option<String>,
    /// wabot: on a buttons question, `data.template`: the question is asked with a
    /// template whose quick-reply buttons answer it (their payloads are the
    /// buttons' ids unless the template's `button.N` says otherwise).
    pub template: Option<Box<TemplateSpec>>,
}

/// Choices taken from an array variable at run time.
#[derive(Debug, Clone)]
pub struct DynamicSource {
    /// The variable path of the array (`rest_api_1.data`).
    pub source: String,
    pub label_field: Option<String>,
    pub desc_field: Option<String>,
}

/// Answers a question asks again for before it leaves by `exhausted`, unless its
/// `validation.maxRetries` says otherwise.
pub const DEFAULT_MAX_RETRIES: u32 = 2;

/// wabot: the checks a typed answer must pass.
#[derive(Debug, Clone)]
pub struct Validation {
    pub rule: Rule,
    pub min_length: Option<usize>,
    pub max_length: Option<usize>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub error_message: Option<String>,
    /// Invalid answers re-prompted before `exhausted` is followed.
    pub max_retries: u32,
}

#[derive(Debug, Clone)]
pub enum Rule {
    Any,
    Email,
    Number,
    Phone,
    Regex(Regex),
    /// wabot: the answer must be a message of one of these kinds (`image`,
    /// `document`, `media`, `location`, ...), not text.
    Kind(KindRule),
}

/// The kinds of message a `validation.type` of wabot's asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindRule {
    Image,
    Video,
    Audio,
    Document,
    /// Any of image, video, audio, document or sticker.
    Media,
    Location,
}

impl KindRule {
    pub fn parse(name: &str) -> Option<KindRule> {
        Some(match name {
            "image" => KindRule::Image,
            "video" => KindRule::Video,
            "audio" => KindRule::Audio,
            "document" => KindRule::Document,
            "media" => KindRule::Media,
            "location" => KindRule::Location,
            _ => return None,
        })
    }

    pub fn accepts(self, kind: AnswerKind) -> bool {
        match self {
            KindRule::Image => kind == AnswerKind::Image,
            KindRule::Video => kind == AnswerKind::Video,
            KindRule::Audio => kind == AnswerKind::Audio,
            KindRule::Document => kind == AnswerKind::Document,
            KindRule::Media => kind.is_media(),
            KindRule::Location => kind == AnswerKind::Location,
        }
    }

    /// The retry prompt when the node has no `errorMessage`.
    pub fn prompt(self) -> &'static str {
        match self {
            KindRule::Image => "Please send a photo.",
            KindRule::Video => "Please send a video.",
            KindRule::Audio => "Please send an audio or voice message.",
            KindRule::Document => "Please send a document.",
            KindRule::Media => "Please send a photo, video, audio or document.",
            KindRule::Location => "Please share a location.",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConditionNode {
    pub conditions: Vec<Condition>,
    pub any: bool,
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub variable: String,
    pub op: Operator,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Ne,
    Contains,
    NotContains,
    Gt,
    Lt,
    Ge,
    Le,
    IsEmpty,
    IsNotEmpty,
}

impl QuestionNode {
    /// How many answers it cannot take the question asks again for before it
    /// leaves by `exhausted`: `validation.maxRetries`, else the default.
    pub fn max_retries(&self) -> u32 {
        self.validation
            .as_ref()
            .map_or(DEFAULT_MAX_RETRIES, |v| v.max_retries)
    }

    /// Whether `id` is one of the choices the question offers. Dynamic choices are
    /// known only when asked, so any id counts as one of them.
    pub fn offers(&self, id: &str) -> bool {
        if self.dynamic.is_some() {
            return true;
        }
        match self.question_type {
            QuestionType::Text | QuestionType::Location => false,
            QuestionType::Buttons => self.buttons.iter().any(|b| b.id == id),
            QuestionType::List => self
                .sections
                .iter()
                .any(|s| s.rows.iter().any(|r| r.id == id)),
        }
    }
}

impl Operator {
    pub fn parse(op: &str) -> Option<Operator> {
        Some(match op.trim().to_ascii_lowercase().as_str() {
            "==" | "=" | "eq" | "equals" => Operator::Eq,
            "!=" | "neq" | "ne" | "not_equals" => Operator::Ne,
            "contains" => Operator::Contains,
            "not_contains" => Operator::NotContains,
            ">" | "gt" | "greater" => Operator::Gt,
            "<" | "lt" | "less" => Operator::Lt,
            ">=" | "gte" | "greater_or_equal" => Operator::Ge,
            "<=" | "lte" | "less_or_equal" => Operator::Le,
            "is_empty" => Operator::IsEmpty,
            "is_not_empty" => Operator::IsNotEmpty,
            _ => return None,
        })
    }
}

/// Debug shows no header value, query value, body or credential: chatbots put API
/// keys in all of them.
#[derive(Clone)]
pub struct RestApiNode {
    pub url: String,
    pub method: http::Method,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub content_type: ContentType,
    pub query: Vec<(String, String)>,
    pub response_path: Option<String>,
    pub filter_field: Option<String>,
    pub filter_value: Option<String>,
    pub timeout_ms: u64,
    pub auth: Auth,
    pub output_variable: Option<String>,
    pub error_variable: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    Json,
    Form,
    Multipart,
}

/// Debug names the kind only; every value here is a credential.
#[derive(Clone)]
pub enum Auth {
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
    ApiKey {
        name: String,
        value: String,
        in_query: bool,
    },
}

impl std::fmt::Debug for RestApiNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |pairs: &[(String, String)]| -> Vec<String> {
            pairs.iter().map(|(name, _)| name.clone()).collect()
        };
        f.debug_struct("RestApiNode")
            .field("url", &crate::text::redact_url(&self.url))
            .field("method", &self.method)
            .field("headers", &names(&self.headers))
            .field(
                "body",
                &self.body.as_ref().map(|b| format!("<{} bytes>", b.len())),
            )
            .field("content_type", &self.content_type)
            .field("query", &names(&self.query))
            .field("response_path", &self.response_path)
            .field("timeout_ms", &self.timeout_ms)
            .field("auth", &self.auth)
            .field("output_variable", &self.output_variable)
            .field("error_variable", &self.error_variable)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Auth::Basic { .. } => f.write_str("Basic(<redacted>)"),
            Auth::ApiKey { name, in_query, .. } => f
                .debug_struct("ApiKey")
                .field("name", name)
                .field("value", &"<redacted>")
                .field("in_query", in_query)
                .finish(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct FlowNode {
    pub flow_id: String,
    pub cta: String,
    pub body: String,
    pub header: Option<String>,
    pub footer: Option<String>,
    pub action: FlowAction,
    /// Whether `flowMode` chose the action; when not, the caller may pick
    /// `data_exchange` for a Flow that has an endpoint.
    pub mode_set: bool,
    pub initial_screen: Option<String>,
    pub initial_data: Option<Value>,
    pub output_variable: Option<String>,
    pub timeout_secs: Option<u64>,
    /// The data source that feeds the Flow's screens (`dataSourceId`, with the
    /// endpoint and the key of the array); the Flows endpoint reads these through
    /// the node named in the flow token.
    pub data_source_id: Option<String>,
    pub data_source_endpoint: Option<String>,
    pub data_source_data_key: Option<String>,
}
