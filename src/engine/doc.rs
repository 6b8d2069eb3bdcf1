//! The chatbot document as WhatsApp Builder stores and exports it: a name, the
//! ReactFlow `nodes` and `edges` arrays and optional `metadata`.
//!
//! Nodes and edges stay raw JSON here; `compile` reads them leniently so that one
//! malformed node yields one validation error instead of a failed parse.

use serde_json::{Map, Value};

/// A chatbot as stored in `chatbots` (name, nodes, edges, metadata).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatbotDoc {
    pub name: String,
    pub description: Option<String>,
    pub nodes: Vec<Value>,
    pub edges: Vec<Value>,
    pub metadata: Option<Value>,
    /// `isActive` when the document carries it (exports and seed files do).
    pub is_active: Option<bool>,
}

/// Why a JSON value is not a chatbot document at all.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DocError {
    #[error("a chatbot document is a JSON object")]
    NotAnObject,
    #[error("`{0}` must be an array")]
    NotAnArray(&'static str),
    #[error("`nodes` is missing")]
    MissingNodes,
}

impl ChatbotDoc {
    /// Reads a bare `{name, nodes, edges, ...}` document or WhatsApp Builder's export
    /// (`{version, exportedAt, chatbot: {...}}`).
    pub fn from_json(value: &Value) -> Result<ChatbotDoc, DocError> {
        let object = value.as_object().ok_or(DocError::NotAnObject)?;
        let object = match object.get("chatbot").and_then(Value::as_object) {
            Some(inner) if !object.contains_key("nodes") => inner,
            _ => object,
        };
        let nodes = match object.get("nodes") {
            None => return Err(DocError::MissingNodes),
            Some(Value::Array(nodes)) => nodes.clone(),
            Some(_) => return Err(DocError::NotAnArray("nodes")),
        };
        let edges = match object.get("edges") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(edges)) => edges.clone(),
            Some(_) => return Err(DocError::NotAnArray("edges")),
        };
        Ok(ChatbotDoc {
            name: object
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("Untitled chatbot")
                .to_owned(),
            description: object
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            nodes,
            edges,
            metadata: object.get("metadata").filter(|m| !m.is_null()).cloned(),
            is_active: object.get("isActive").and_then(Value::as_bool),
        })
    }

    /// Builds a document from the `chatbots` row's columns.
    pub fn from_columns(name: &str, nodes: Value, edges: Value, metadata: Option<Value>) -> Self {
        let into_vec = |v: Value| match v {
            Value::Array(items) => items,
            _ => Vec::new(),
        };
        ChatbotDoc {
            name: name.to_owned(),
            description: None,
            nodes: into_vec(nodes),
            edges: into_vec(edges),
            metadata: metadata.filter(|m| !m.is_null()),
            is_active: None,
        }
    }
}

/// Lenient typed reads of a node's `data` object. Editors save numbers as strings and
/// strings as numbers now and then; both are accepted where the meaning is clear.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A non-empty string (numbers and booleans are written as JSON text).
    pub fn string(&self, key: &str) -> Option<String> {
        let text = match self.get(key)? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return None,
        };
        (!text.trim().is_empty()).then_some(text)
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        match self.get(key)? {
            Value::Number(n) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn f64(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn array(&self, key: &str) -> Option<&'a Vec<Value>> {
        self.get(key)?.as_array()
    }

    pub fn object(&self, key: &str) -> Option<&'a Map<String, Value>> {
        self.get(key)?.as_object()
    }
}

/// Key/value pairs given either as an object (`{"k": "v"}`) or as the editor's
/// array of rows (`[{"key": "k", "value": "v"}]`); rows without a key are dropped.
pub(crate) fn pairs(value: Option<&Value>) -> Vec<(String, String)> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match value {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        Some(Value::Array(rows)) => rows
            .iter()
            .filter_map(|row| {
                let key = row.get("key").and_then(Value::as_str)?.trim();
                if key.is_empty() || row.get("enabled") == Some(&Value::Bool(false)) {
                    return None;
                }
                Some((
                    key.to_owned(),
                    row.get("value").map(text).unwrap_or_default(),
                ))
            })
            .collect(),
        // A JSON object saved as a string by an older editor.
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(parsed @ Value::Object(_)) => pairs(Some(&parsed)),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}
