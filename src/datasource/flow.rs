//! What a WhatsApp Flow's screens get from data sources.
//!
//! WhatsApp Builder stores a Flow's data wiring in `whatsapp_flows.metadata`:
//! `dataSourceConfig[]` (`componentName, connectionId?, dataSourceId?, endpoint?,
//! dataKey?, transformTo?, dependsOn?, filterParam?`) and `integrationConfigs[]`
//! (`componentName, screenId?, integrationType, params{dataSourceId, endpoint,
//! method, queryParams, dataKey}, transformTo, dependsOn?`). Each entry fills one
//! data field (`componentName`) of one screen: the screen named by `screenId`, else
//! the screen whose `data` declares that field. The screen order comes from the Flow
//! JSON's `routing_model` (else the order of `screens`).

use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::model::{self, Connection, Method, ParamMapping, TransformConfig};
use super::{load_source, DataSourceClient, DataSourceError, Item};
use crate::store::flows::FlowRow;

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

/// The first screen: the node's `flowInitialScreen`, else the routing model's entry
/// (a screen no other screen routes to), else the first of `screens`.
pub fn initial_screen(flow_json: &Value, node_data: &Value) -> Option<String> {
    if let Some(s) = node_data.get("flowInitialScreen").and_then(Value::as_str) {
        if !s.trim().is_empty() {
            return Some(s.to_owned());
        }
    }
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

fn screen_ids(flow_json: &Value) -> Vec<&str> {
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

fn screen<'a>(flow_json: &'a Value, id: &str) -> Option<&'a Value> {
    flow_json
        .get("screens")?
        .as_array()?
        .iter()
        .find(|s| s.get("id").and_then(Value::as_str) == Some(id))
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

/// One screen field filled from a data source.
#[derive(Debug, Clone)]
pub struct Component {
    pub name: String,
    /// The screen it belongs to, when known.
    pub screen: Option<String>,
    pub depends_on: Vec<String>,
    pub source: ComponentSource,
}

#[derive(Debug, Clone)]
pub enum ComponentSource {
    /// A `data_source_connections` row; the component's dataKey and transformTo
    /// apply when the connection has none.
    Connection {
        id: Uuid,
        data_key: Option<String>,
        transform: Option<TransformConfig>,
    },
    /// An endpoint of a data source described inline.
    Inline(Box<Connection>),
}

/// The components of `flow`; entries that cannot be used are logged and left out.
pub fn components(flow: &FlowRow) -> Vec<Component> {
    let Some(meta) = flow.metadata.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let lists = [
        ("dataSourceConfig", meta.get("dataSourceConfig")),
        ("integrationConfigs", meta.get("integrationConfigs")),
    ];
    for (list, entries) in lists {
        for entry in entries.and_then(Value::as_array).into_iter().flatten() {
            match component(flow, list, entry) {
                Ok(Some(c)) => out.push(c),
                Ok(None) => {}
                Err(e) => tracing::warn!(flow = %flow.name, error = %e, "flow component left out"),
            }
        }
    }
    out
}

fn component(
    flow: &FlowRow,
    list: &str,
    entry: &Value,
) -> Result<Option<Component>, DataSourceError> {
    let text = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let Some(name) = text(entry, "componentName") else {
        return Err(DataSourceError::Invalid(format!(
            "{list}: an entry has no componentName"
        )));
    };
    let label = format!("{list} `{name}`");
    let kind = text(entry, "integrationType");
    let params = entry.get("params").cloned().unwrap_or(Value::Null);
    if list == "integrationConfigs" && kind.as_deref() != Some("rest_api") {
        tracing::warn!(flow = %flow.name, component = %name, kind = kind.as_deref().unwrap_or("-"),
            "integration type not supported by wabot; the component stays empty");
        return Ok(None);
    }
    // integrationConfigs keep the request under `params`, dataSourceConfig at the top.
    let spec = if list == "integrationConfigs" {
        &params
    } else {
        entry
    };
    let depends_on: Vec<String> = match entry.get("dependsOn") {
        Some(Value::String(s)) if !s.trim().is_empty() => vec![s.trim().to_owned()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let transform = match entry.get("transformTo") {
        Some(v @ Value::Object(_)) => Some(model::transform_from_json(&label, v)?),
        _ => None,
    };
    let data_key = text(spec, "dataKey");
    let screen = text(entry, "screenId").or_else(|| {
        flow.flow_json
            .get("screens")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|s| s.get("data").and_then(|d| d.get(&name)).is_some())
            .and_then(|s| text(s, "id"))
    });

    if let Some(id) = text(spec, "connectionId").or_else(|| text(entry, "connectionId")) {
        let id = Uuid::parse_str(&id).map_err(|_| {
            DataSourceError::Invalid(format!("{label}: connectionId `{id}` is not a uuid"))
        })?;
        return Ok(Some(Component {
            name,
            screen,
            depends_on,
            source: ComponentSource::Connection {
                id,
                data_key,
                transform,
            },
        }));
    }

    let source_id = match text(spec, "dataSourceId") {
        Some(id) => Uuid::parse_str(&id).map_err(|_| {
            DataSourceError::Invalid(format!("{label}: dataSourceId `{id}` is not a uuid"))
        })?,
        None => flow.data_source_id.ok_or_else(|| {
            DataSourceError::Invalid(format!(
                "{label}: no connectionId, dataSourceId, nor a data source on the flow"
            ))
        })?,
    };
    let endpoint = model::checked_endpoint(&label, &text(spec, "endpoint").unwrap_or_default())?;
    let method = match text(spec, "method").as_deref() {
        Some("POST") => Method::Post,
        _ => Method::Get,
    };
    // `${field}` query values read the submitted data; `filterParam` filters on the
    // (first) field this component depends on, as WhatsApp Builder does.
    let mut default_params = Map::new();
    let mut mapping = Map::new();
    if let Some(Value::Object(query)) = spec.get("queryParams") {
        for (k, v) in query {
            match v
                .as_str()
                .and_then(|s| s.strip_prefix("${"))
                .and_then(|s| s.strip_suffix('}'))
            {
                Some(field) => {
                    mapping.insert(k.clone(), Value::String(format!("$['{}']", field.trim())));
                }
                None => {
                    default_params.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if let (Some(param), Some(field)) = (text(entry, "filterParam"), depends_on.first()) {
        mapping.insert(param, Value::String(format!("$['{field}']")));
    }
    if let Some(Value::Object(extra)) = entry.get("paramMapping") {
        mapping.extend(extra.clone());
    }
    let param_mapping: Vec<ParamMapping> = model::parse_mapping(&label, &mapping)?;
    let connection = Connection {
        id: None,
        name: name.clone(),
        data_source_id: source_id,
        endpoint,
        method,
        default_params,
        default_body: spec.get("bodyTemplate").cloned().filter(|b| !b.is_null()),
        data_key,
        transform: transform.unwrap_or_default(),
        depends_on: None,
        param_mapping,
        is_active: true,
    };
    Ok(Some(Component {
        name,
        screen,
        depends_on,
        source: ComponentSource::Inline(Box::new(connection)),
    }))
}

/// The components that fill `screen`: those placed on it, plus unplaced ones whose
/// dependencies are all in `gathered` (none at all: only on the initial screen).
pub fn components_for<'a>(
    all: &'a [Component],
    screen: &str,
    initial: bool,
    gathered: &Value,
) -> Vec<&'a Component> {
    all.iter()
        .filter(|c| match &c.screen {
            Some(s) => s == screen,
            None if c.depends_on.is_empty() => initial,
            None => c
                .depends_on
                .iter()
                .all(|f| gathered.get(f).is_some_and(|v| !v.is_null())),
        })
        .collect()
}

/// A screen's data from its components, and the message to show when some failed.
#[derive(Debug, Clone, Default)]
pub struct ScreenData {
    pub data: Map<String, Value>,
    pub error_message: Option<String>,
}

/// Resolves `components` concurrently with `input` as their JSONPath document, each
/// within `budget`. A component that fails or is too slow gets an empty list and the
/// screen an `error_message`; the cause goes to the log.
pub async fn resolve_screen(
    pool: &PgPool,
    client: &DataSourceClient,
    components: &[&Component],
    input: &Value,
    budget: Duration,
) -> ScreenData {
    let jobs = components.iter().map(|c| async move {
        let result = tokio::time::timeout(budget, resolve_component(pool, client, c, input)).await;
        (c, result)
    });
    let mut out = ScreenData::default();
    let mut failed = Vec::new();
    for (component, result) in futures::future::join_all(jobs).await {
        let items = match result {
            Ok(Ok(items)) => items,
            Ok(Err(e)) => {
                tracing::warn!(component = %component.name, error = %e, "flow component could not be resolved");
                failed.push(component.name.as_str());
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(component = %component.name, budget_ms = budget.as_millis() as u64, "flow component too slow for the deadline");
                failed.push(component.name.as_str());
                Vec::new()
            }
        };
        out.data.insert(
            component.name.clone(),
            serde_json::to_value(items).unwrap_or(Value::Array(Vec::new())),
        );
    }
    if !failed.is_empty() {
        out.error_message = Some(format!(
            "Some choices could not be loaded ({}). Please try again in a moment.",
            failed.join(", ")
        ));
    }
    out
}

async fn resolve_component(
    pool: &PgPool,
    client: &DataSourceClient,
    component: &Component,
    input: &Value,
) -> Result<Vec<Item>, DataSourceError> {
    let connection = match &component.source {
        ComponentSource::Inline(connection) => (**connection).clone(),
        ComponentSource::Connection {
            id,
            data_key,
            transform,
        } => {
            let mut connection = super::load_chain(pool, *id).await?.remove(0);
            if connection.data_key.is_none() {
                connection.data_key = data_key.clone();
            }
            if let (Some(t), None) = (transform, connection_has_transform(&connection)) {
                connection.transform = t.clone();
            }
            connection
        }
    };
    let source = load_source(pool, connection.data_source_id).await?;
    client.items(&source, &connection, input).await
}

/// `Some(())` when the connection's transform is more than the default.
fn connection_has_transform(connection: &Connection) -> Option<()> {
    (connection.transform != TransformConfig::default()).then_some(())
}
