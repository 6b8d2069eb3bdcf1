//! The state of one conversation with one chatbot, mirroring the
//! `conversation_contexts` columns WhatsApp Builder uses. wabot's own bookkeeping
//! (retries, wait deadline, step count) lives inside `variables` under the reserved
//! key `__wabot`, so the table needs no new column.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::compile::CompiledChatbot;

/// The key under `variables` that holds [`EngineState`].
pub const STATE_KEY: &str = "__wabot";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextStatus {
    Running,
    WaitingInput,
    WaitingFlow,
    Completed,
    Expired,
    Stopped,
}

impl ContextStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContextStatus::Running => "running",
            ContextStatus::WaitingInput => "waiting_input",
            ContextStatus::WaitingFlow => "waiting_flow",
            ContextStatus::Completed => "completed",
            ContextStatus::Expired => "expired",
            ContextStatus::Stopped => "stopped",
        }
    }

    /// Reads the column; unknown text reads as `running` so a turn re-runs the node.
    pub fn parse(text: &str) -> ContextStatus {
        match text {
            "waiting_input" => ContextStatus::WaitingInput,
            "waiting_flow" => ContextStatus::WaitingFlow,
            "completed" => ContextStatus::Completed,
            "expired" => ContextStatus::Expired,
            "stopped" => ContextStatus::Stopped,
            _ => ContextStatus::Running,
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            ContextStatus::Completed | ContextStatus::Expired | ContextStatus::Stopped
        )
    }
}

/// Why a context ended (`completionReason`).
pub mod reason {
    pub const FLOW_COMPLETED: &str = "flow_completed";
    pub const API_ERROR: &str = "api_error";
    pub const FLOW_ERROR: &str = "flow_error";
    pub const STEP_LIMIT: &str = "step_limit_exceeded";
    pub const SEND_LIMIT: &str = "send_limit_exceeded";
    pub const VALIDATION_FAILED: &str = "validation_failed";
    /// A buttons or list question with no `default` and no `exhausted` edge was
    /// answered with something other than its choices more times than it asks again.
    pub const NO_PATH_FOR_TYPED_TEXT: &str = "no_path_for_typed_text";
    /// The customer sent a kind of message the engine cannot read (an order, a
    /// message Meta could not deliver, a type newer than wabot) more times than the
    /// question asks again.
    pub const UNSUPPORTED_MESSAGE: &str = "unsupported_message";
    pub const TIMEOUT: &str = "timeout";
    pub const EXPIRED: &str = "expired";
    pub const RESTARTED: &str = "restarted";
    pub const NODE_MISSING: &str = "node_missing";
    /// The customer asked for a person (a handover keyword or node): the
    /// conversation now waits for an agent.
    pub const HANDOVER: &str = "handover";
    /// A skip word at a choice question with no `default` edge: the customer
    /// stepped out, and no choice of theirs leads on.
    pub const SKIPPED: &str = "skipped";
    /// The customer opted out (an opt-out word) during the run.
    pub const OPTED_OUT: &str = "opted_out";
    /// An agent had the conversation; when it came back to the bot, the run from
    /// before was ended and a new one started.
    pub const AGENT_TOOK_OVER: &str = "agent_took_over";
    /// A message arrived while a Flow waited for its form: the customer was told to
    /// finish it or type a skip word (a node output's `error`, not an end).
    pub const FLOW_PENDING: &str = "flow_pending";
}

/// One row of `conversation_contexts`, as the engine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// The row's id; Flow tokens are `<id>:<node id>`.
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub chatbot_id: Uuid,
    pub current_node_id: String,
    pub variables: Map<String, Value>,
    pub node_history: Vec<String>,
    pub node_outputs: Map<String, Value>,
    pub is_active: bool,
    pub status: ContextStatus,
    pub completion_reason: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Who the chatbot talks to, for `customer_phone`, `customer_name`,
/// `customer_username` and `customer_id`.
#[derive(Debug, Clone, Default)]
pub struct Customer {
    /// The phone number; empty for a customer known only by username (BSUID).
    pub phone: String,
    pub name: Option<String>,
    /// The WhatsApp username, when the customer has one.
    pub username: Option<String>,
    /// The business-scoped user id (BSUID), when Meta sent one.
    pub id: Option<String>,
}

/// wabot's bookkeeping, kept in `variables.__wabot`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    /// Nodes executed over the context's life (the per-context loop guard).
    #[serde(default)]
    pub steps: u32,
    /// Invalid answers given to the question now waiting.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// When the current wait ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Whether the deadline is the node's own timeout (follow `timeout`) rather
    /// than the context's time to live (expire).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node_timeout: bool,
    /// The chatbot version ([`super::version::hash`]) the context runs on: set when
    /// it starts, kept until it ends. A context from before versions has none and
    /// is pinned to the chatbot's graph at its next turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Context {
    /// A new context at the chatbot's start node; run it with
    /// `Event::ConversationStarted`. `id` is the row id the caller will insert. The
    /// context is pinned to the chatbot's version, when it has one: its later turns
    /// run on that graph, whatever the editor does meanwhile.
    pub fn start(
        id: Uuid,
        conversation_id: Uuid,
        chatbot_id: Uuid,
        chatbot: &CompiledChatbot,
        customer: &Customer,
    ) -> Context {
        let mut variables = Map::new();
        variables.insert(
            "customer_phone".into(),
            Value::String(customer.phone.clone()),
        );
        variables.insert(
            "customer_name".into(),
            Value::String(customer.name.clone().unwrap_or_default()),
        );
        variables.insert(
            "customer_username".into(),
            Value::String(customer.username.clone().unwrap_or_default()),
        );
        variables.insert(
            "customer_id".into(),
            Value::String(customer.id.clone().unwrap_or_default()),
        );
        let mut context = Context {
            id,
            conversation_id,
            chatbot_id,
            current_node_id: chatbot.start_id().to_owned(),
            variables,
            node_history: Vec::new(),
            node_outputs: Map::new(),
            is_active: true,
            status: ContextStatus::Running,
            completion_reason: None,
            completed_at: None,
            expires_at: None,
        };
        if let Some(version) = chatbot.version() {
            context.pin(version);
        }
        context
    }

    /// The Flow token of a flow message sent from `node_id`.
    pub fn flow_token(&self, node_id: &str) -> String {
        format!("{}:{node_id}", self.id)
    }

    pub fn state(&self) -> EngineState {
        self.variables
            .get(STATE_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    pub fn set_state(&mut self, state: &EngineState) {
        if let Ok(v) = serde_json::to_value(state) {
            self.variables.insert(STATE_KEY.to_owned(), v);
        }
    }

    /// The chatbot version the context runs on, if it was pinned.
    pub fn version(&self) -> Option<String> {
        self.state().version
    }

    /// Pins the context to a chatbot version: every later turn runs on that graph.
    pub fn pin(&mut self, version: &str) {
        let mut state = self.state();
        state.version = Some(version.to_owned());
        self.set_state(&state);
    }

    /// Ends the context; `now` becomes `completedAt`.
    pub fn finish(&mut self, status: ContextStatus, reason: &str, now: DateTime<Utc>) {
        self.status = status;
        self.is_active = false;
        self.completion_reason = Some(reason.to_owned());
        self.completed_at = Some(now);
        self.expires_at = None;
        let mut state = self.state();
        state.deadline = None;
        state.node_timeout = false;
        self.set_state(&state);
    }
}

/// Splits a Flow token `<context id>:<node id>`.
pub fn parse_flow_token(token: &str) -> Option<(Uuid, &str)> {
    let (context, node) = token.split_once(':')?;
    Some((Uuid::parse_str(context).ok()?, node))
}
