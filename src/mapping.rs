//! The store's plain rows and the engine's values, each turned into the other.
//!
//! `store` knows nothing of the engine and the engine nothing of the store (each
//! stays a leaf the other can be tested without); this module is where the two
//! meet, for every caller: the turn stage, the CLI, replay and the tests.

use chrono::Utc;
use serde_json::{Map, Value};

use crate::engine::context::{Context, ContextStatus};
use crate::engine::ChatbotDoc;
use crate::store::chatbots::{ChatbotRow, NewChatbot};
use crate::store::contexts::ContextRow;

impl ChatbotRow {
    /// The document the engine compiles.
    pub fn to_doc(&self) -> ChatbotDoc {
        let mut doc = ChatbotDoc::from_columns(
            &self.name,
            self.nodes.clone(),
            self.edges.clone(),
            self.metadata.clone(),
        );
        doc.description = self.description.clone();
        doc.is_active = Some(self.is_active);
        doc
    }
}

impl<'a> NewChatbot<'a> {
    /// The row that stores `doc`.
    pub fn from_doc(doc: &'a ChatbotDoc, is_active: bool) -> Self {
        NewChatbot {
            name: &doc.name,
            description: doc.description.as_deref(),
            nodes: &doc.nodes,
            edges: &doc.edges,
            metadata: doc.metadata.as_ref(),
            is_active,
        }
    }
}

/// The row a context is saved as.
pub fn context_to_row(context: &Context) -> ContextRow {
    ContextRow {
        id: context.id,
        conversation_id: context.conversation_id,
        chatbot_id: context.chatbot_id,
        current_node_id: context.current_node_id.clone(),
        variables: Value::Object(context.variables.clone()),
        node_history: Value::Array(
            context
                .node_history
                .iter()
                .map(|id| Value::String(id.clone()))
                .collect(),
        ),
        node_outputs: Value::Object(context.node_outputs.clone()),
        is_active: context.is_active,
        status: context.status.as_str().to_owned(),
        expires_at: context.expires_at,
        completed_at: context.completed_at,
        completion_reason: context.completion_reason.clone(),
        // Not written: the database sets it on every save.
        updated_at: Utc::now(),
    }
}

/// The context a row holds.
pub fn context_from_row(row: &ContextRow) -> Context {
    let object = |v: &Value| match v {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    Context {
        id: row.id,
        conversation_id: row.conversation_id,
        chatbot_id: row.chatbot_id,
        current_node_id: row.current_node_id.clone(),
        variables: object(&row.variables),
        node_history: match &row.node_history {
            Value::Array(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        },
        node_outputs: object(&row.node_outputs),
        is_active: row.is_active,
        status: ContextStatus::parse(&row.status),
        completion_reason: row.completion_reason.clone(),
        completed_at: row.completed_at,
        expires_at: row.expires_at,
    }
}
