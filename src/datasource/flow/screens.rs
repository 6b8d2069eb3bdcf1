//! What a WhatsApp Flow's screens get from data sources.
//!
//! WhatsApp Builder stores a Flow's data wiring in `whatsapp_flows.metadata`:
//! `dataSourceConfig[]` (`componentName, connectionId?, dataSourceId?, endpoint?,
//! dataKey?, transformTo?, dependsOn?, filterParam?`) and `integrationConfigs[]`
//! (`componentName, screenId?, integrationType, params{dataSourceId, endpoint,
//! method, queryParams, dataKey}, transformTo, dependsOn?`). Each entry fills one
//! data field (`componentName`) of one screen: the screen named by `screenId`, else
//! the screen whose `data` declares that field.

use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::datasource::model::{self, Connection, Method, ParamMapping, TransformConfig};
use crate::datasource::{load_chain, load_source, DataSourceClient, DataSourceError, Item};
use crate::store::flows::FlowRow;
use crate::whatsapp::flows;

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
        let flow_json = &flow.flow_json;
        flows::screen_ids(flow_json)
            .into_iter()
            .find(|id| flows::declared_data(flow_json, id).is_some_and(|d| d.contains_key(&name)))
            .map(str::to_owned)
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
            let mut connection = load_chain(pool, *id).await?.remove(0);
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
