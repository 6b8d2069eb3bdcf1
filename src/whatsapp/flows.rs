//! Meta's WhatsApp Flows formats: the data_exchange endpoint's decrypted requests
//! (`ping`, `INIT`, `BACK`, `data_exchange`, error notifications), the answers Meta
//! expects, its status codes, and the navigation a Flow JSON declares (`screens`,
//! `routing_model`, `terminal`). The crypto around them is in `flows_crypto`; what
//! fills a screen is wabot's business (`datasource::flow`).

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The request could not be decrypted: the client refetches our public key.
pub const DECRYPTION_FAILED: u16 = 421;
/// The flow token is unknown or finished: the client shows `error_msg`.
pub const TOKEN_INVALID: u16 = 427;
/// The `X-Hub-Signature-256` check failed.
pub const SIGNATURE_FAILED: u16 = 432;

/// A decrypted endpoint request.
#[derive(Debug, Clone, Deserialize)]
pub struct FlowRequest {
    pub action: String,
    #[serde(default)]
    pub screen: Option<String>,
    #[serde(default)]
    pub data: Value,
    #[serde(default)]
    pub flow_token: Option<String>,
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Meta's health check.
    Ping,
    /// The client could not use our last answer (`error_notification`, or any
    /// request whose data carries an `error`).
    ErrorNotification,
    /// The Flow opens with `data_exchange`: the first screen and its data.
    Init,
    /// The user went back to a screen with `refresh_on_back`.
    Back,
    /// A screen was submitted.
    DataExchange,
}

impl FlowRequest {
    pub fn parse(plain: &[u8]) -> Result<FlowRequest, serde_json::Error> {
        serde_json::from_slice(plain)
    }

    pub fn kind(&self) -> Action {
        match self.action.as_str() {
            "ping" => Action::Ping,
            _ if self.action == "error_notification" || self.data.get("error").is_some() => {
                Action::ErrorNotification
            }
            "INIT" => Action::Init,
            "BACK" => Action::Back,
            _ => Action::DataExchange,
        }
    }

    /// An error notification's `(error, error_message)`, `-` where absent.
    pub fn client_error(&self) -> (&str, &str) {
        let field = |k: &str| self.data.get(k).and_then(Value::as_str).unwrap_or("-");
        (field("error"), field("error_message"))
    }

    /// The submitted data as an object (anything else counts as empty).
    pub fn submitted(&self) -> Value {
        match &self.data {
            Value::Object(map) => Value::Object(map.clone()),
            _ => json!({}),
        }
    }
}

/// The answer to `ping`.
pub fn ping_response() -> Value {
    json!({"data": {"status": "active"}})
}

/// The answer to an error notification.
pub fn acknowledged() -> Value {
    json!({"data": {"acknowledged": true}})
}

/// The body sent with [`TOKEN_INVALID`].
pub fn token_invalid_response() -> Value {
    json!({"error_msg": "This form is no longer available."})
}

/// Shows `screen` with `data`.
pub fn screen_response(screen: &str, data: Map<String, Value>) -> Value {
    json!({"screen": screen, "data": data})
}

/// Closes the Flow; `params` come back in the `nfm_reply` message. They carry the
/// flow token, so the reply finds its context.
pub fn completion_response(mut params: Map<String, Value>, flow_token: &str) -> Value {
    params.remove("next_screen");
    params.insert("flow_token".into(), Value::String(flow_token.to_owned()));
    json!({"screen": "SUCCESS", "data": {"extension_message_response": {"params": params}}})
}

/// The ids of the Flow JSON's `screens`, in order.
pub fn screen_ids(flow_json: &Value) -> Vec<&str> {
    flow_json
        .get("screens")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(|s| s.get("id").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// The screen `id` of the Flow JSON.
pub fn screen<'a>(flow_json: &'a Value, id: &str) -> Option<&'a Value> {
    flow_json
        .get("screens")?
        .as_array()?
        .iter()
        .find(|s| s.get("id").and_then(Value::as_str) == Some(id))
}

/// The fields a screen declares in its `data` schema.
pub fn declared_data<'a>(flow_json: &'a Value, id: &str) -> Option<&'a Map<String, Value>> {
    screen(flow_json, id)?.get("data")?.as_object()
}

/// The routing model's entry (a screen no other screen routes to), else the first
/// of `screens`.
pub fn entry_screen(flow_json: &Value) -> Option<String> {
    let ids = screen_ids(flow_json);
    if let Some(Value::Object(routes)) = flow_json.get("routing_model") {
        let targets: Vec<&str> = routes
            .values()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if let Some(entry) = ids
            .iter()
            .find(|id| routes.contains_key(**id) && !targets.contains(id))
        {
            return Some((*entry).to_owned());
        }
    }
    ids.first().map(|s| (*s).to_owned())
}

/// Where a data_exchange from a screen leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Screen(String),
    Complete,
}

/// The screen after `current`: `submitted.next_screen` when it names an allowed
/// successor, else the first successor in the routing model (else the next screen in
/// order). A terminal screen, or one with no successor, completes the Flow.
pub fn next_screen(flow_json: &Value, current: &str, submitted: &Value) -> Next {
    if screen(flow_json, current)
        .and_then(|s| s.get("terminal"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Next::Complete;
    }
    let successors: Vec<String> = match flow_json.get("routing_model").and_then(Value::as_object) {
        Some(routes) => routes
            .get(current)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        None => {
            let ids = screen_ids(flow_json);
            ids.iter()
                .position(|id| *id == current)
                .and_then(|i| ids.get(i + 1))
                .map(|id| vec![(*id).to_owned()])
                .unwrap_or_default()
        }
    };
    if let Some(wanted) = submitted.get("next_screen").and_then(Value::as_str) {
        if successors.iter().any(|s| s == wanted) {
            return Next::Screen(wanted.to_owned());
        }
    }
    match successors.into_iter().next() {
        Some(next) => Next::Screen(next),
        None => Next::Complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(action: &str, data: Value) -> FlowRequest {
        FlowRequest {
            action: action.into(),
            screen: None,
            data,
            flow_token: None,
        }
    }

    #[test]
    fn actions_are_told_apart() {
        assert_eq!(request("ping", json!({})).kind(), Action::Ping);
        assert_eq!(request("INIT", json!({})).kind(), Action::Init);
        assert_eq!(request("BACK", json!({})).kind(), Action::Back);
        assert_eq!(
            request("data_exchange", json!({"x": 1})).kind(),
            Action::DataExchange
        );
        let failed = request(
            "data_exchange",
            json!({"error": "bad", "error_message": "m"}),
        );
        assert_eq!(failed.kind(), Action::ErrorNotification);
        assert_eq!(failed.client_error(), ("bad", "m"));
        assert_eq!(
            request("error_notification", json!({})).client_error(),
            ("-", "-")
        );
    }

    #[test]
    fn the_routing_model_gives_the_entry_and_the_successors() {
        let flow = json!({
            "screens": [{"id": "B", "data": {"x": {}}}, {"id": "A"}, {"id": "C", "terminal": true}],
            "routing_model": {"A": ["B", "C"], "B": ["C"], "C": []}
        });
        assert_eq!(entry_screen(&flow).as_deref(), Some("A"));
        assert_eq!(
            next_screen(&flow, "A", &json!({})),
            Next::Screen("B".into())
        );
        assert_eq!(
            next_screen(&flow, "A", &json!({"next_screen": "C"})),
            Next::Screen("C".into())
        );
        assert_eq!(
            next_screen(&flow, "A", &json!({"next_screen": "Z"})),
            Next::Screen("B".into())
        );
        assert_eq!(next_screen(&flow, "C", &json!({})), Next::Complete);
        assert!(declared_data(&flow, "B").is_some_and(|d| d.contains_key("x")));
        let params = Map::from_iter([
            ("next_screen".to_owned(), json!("C")),
            ("a".to_owned(), json!(1)),
        ]);
        assert_eq!(
            completion_response(params, "t"),
            json!({"screen": "SUCCESS", "data": {"extension_message_response": {"params": {"a": 1, "flow_token": "t"}}}})
        );
    }
}
