//! How the executor's flow message opens a Flow, from the whatsapp_flow node's
//! `data` (`flowMode`, `flowInitialScreen`, `flowInitialData`) and the flow row.

use serde_json::{Map, Value};

use super::screens::components;
use crate::store::flows::FlowRow;
use crate::whatsapp::flows::entry_screen;

/// How the executor's flow message opens the Flow: the engine's own type.
pub use crate::engine::FlowAction;

/// What the executor puts in a flow message's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowLaunch {
    pub flow_action: FlowAction,
    /// `flow_action_payload.screen`; set for `navigate` (Meta requires it there).
    pub screen: Option<String>,
    /// `flow_action_payload.data`; set for `navigate` when there is initial data.
    pub data: Option<Value>,
}

/// Whether the Flow is served by an endpoint: it has an endpoint URI, a data source,
/// data-source components, or a `data_api_version` in its JSON.
pub fn has_endpoint(flow: &FlowRow) -> bool {
    flow.endpoint_uri
        .as_deref()
        .is_some_and(|u| !u.trim().is_empty())
        || flow.data_source_id.is_some()
        || !components(flow).is_empty()
        || flow.flow_json.get("data_api_version").is_some()
}

/// For the executor: how to open `flow` from a whatsapp_flow node whose `data` is
/// `node_data`. `flowMode` (`navigate` | `data_exchange`) wins when set; otherwise a
/// Flow with an endpoint opens with `data_exchange` (the endpoint's INIT answer
/// brings the first screen and its data) and one without opens with `navigate` on
/// the initial screen with the node's `flowInitialData`.
pub fn flow_launch(flow: Option<&FlowRow>, node_data: &Value) -> FlowLaunch {
    let mode = node_data.get("flowMode").and_then(Value::as_str);
    let action = match mode {
        Some("navigate") => FlowAction::Navigate,
        Some("data_exchange") => FlowAction::DataExchange,
        _ if flow.is_some_and(has_endpoint) => FlowAction::DataExchange,
        _ => FlowAction::Navigate,
    };
    if action == FlowAction::DataExchange {
        return FlowLaunch {
            flow_action: action,
            screen: None,
            data: None,
        };
    }
    let empty = Value::Null;
    let flow_json = flow.map(|f| &f.flow_json).unwrap_or(&empty);
    let data = initial_data(node_data);
    FlowLaunch {
        flow_action: action,
        screen: initial_screen(flow_json, node_data),
        data: (!data.is_empty()).then_some(Value::Object(data)),
    }
}

/// The node's `flowInitialData` as an object (a JSON string holding one is accepted:
/// the editor stores it either way).
pub fn initial_data(node_data: &Value) -> Map<String, Value> {
    match node_data.get("flowInitialData") {
        Some(Value::Object(map)) => map.clone(),
        Some(Value::String(text)) => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        },
        _ => Map::new(),
    }
}

/// The first screen: the node's `flowInitialScreen`, else the Flow JSON's entry.
pub fn initial_screen(flow_json: &Value, node_data: &Value) -> Option<String> {
    if let Some(s) = node_data.get("flowInitialScreen").and_then(Value::as_str) {
        if !s.trim().is_empty() {
            return Some(s.to_owned());
        }
    }
    entry_screen(flow_json)
}
