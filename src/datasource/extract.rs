//! From a JSON response to `{id, title, description}` items, and from the input to
//! the parameters of a request. Pure functions: no I/O.

use serde_json::{Map, Value};

use super::model::{Connection, ParamMapping, SourceType, TransformConfig};
use super::{DataSourceError, Item};

/// The values of each mapped parameter, in configuration order. A JSONPath that
/// selects several nodes yields several values (a repeated query parameter).
pub fn mapped_params(
    connection: &Connection,
    input: &Value,
) -> Result<Vec<(String, Vec<Value>)>, DataSourceError> {
    connection
        .param_mapping
        .iter()
        .map(|m| Ok((m.name.clone(), mapped_values(connection, m, input)?)))
        .collect()
}

fn mapped_values(
    connection: &Connection,
    mapping: &ParamMapping,
    input: &Value,
) -> Result<Vec<Value>, DataSourceError> {
    let Some(path) = &mapping.path else {
        return Ok(vec![Value::String(mapping.source.clone())]);
    };
    let found: Vec<Value> = path
        .query(input)
        .all()
        .into_iter()
        .filter(|v| !v.is_null())
        .cloned()
        .collect();
    if found.is_empty() {
        return Err(DataSourceError::MissingInput {
            connection: connection.name.clone(),
            param: mapping.name.clone(),
            path: mapping.source.clone(),
        });
    }
    Ok(found)
}

/// A JSON value as query-string text: strings as they are, other scalars as JSON.
pub fn query_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Follows a dotted path (`data.items`, `data.0.rows`) from `root`.
pub fn dotted<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(root, |node, key| match node {
            Value::Object(map) => map.get(key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

/// The item array of a response: at `data_key` when configured (from the root, or
/// inside the Strapi/GraphQL `data` envelope), else where the type puts it.
pub fn item_array<'a>(
    kind: SourceType,
    data_key: Option<&str>,
    response: &'a Value,
) -> Result<&'a [Value], DataSourceError> {
    let envelope = response.get("data");
    let found = match (data_key, kind) {
        (Some(key), SourceType::RestApi) => dotted(response, key),
        (Some(key), _) => dotted(response, key).or_else(|| envelope.and_then(|d| dotted(d, key))),
        (None, SourceType::RestApi) => Some(response),
        (None, SourceType::Strapi) => envelope,
        (None, SourceType::Graphql) => envelope.map(|d| match d {
            // `{data: {brands: [...]}}`: one root field is the usual GraphQL answer.
            Value::Object(map) if map.len() == 1 => map.values().next().unwrap_or(d),
            other => other,
        }),
    };
    match found {
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(DataSourceError::DataKey {
            key: data_key.unwrap_or("").to_owned(),
            found: json_kind(other),
        }),
        None => Err(DataSourceError::DataKey {
            key: data_key.unwrap_or("").to_owned(),
            found: "nothing",
        }),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// GraphQL reports failures in `errors` with HTTP 200; without `data` that is an error.
pub fn graphql_errors(response: &Value) -> Option<String> {
    let errors = response.get("errors")?.as_array()?;
    if errors.is_empty() || response.get("data").is_some_and(|d| !d.is_null()) {
        return None;
    }
    let messages: Vec<&str> = errors
        .iter()
        .filter_map(|e| e.get("message").and_then(Value::as_str))
        .collect();
    Some(if messages.is_empty() {
        "unspecified error".to_owned()
    } else {
        messages.join("; ")
    })
}

/// Items as `{id, title, description}`. Strapi v4 items keep their fields under
/// `attributes`; they are lifted first. Items without an id or a title are left out
/// (a Flow dropdown cannot show them).
pub fn transform(kind: SourceType, items: &[Value], transform: &TransformConfig) -> Vec<Item> {
    items
        .iter()
        .filter_map(|raw| {
            let lifted;
            let item = match (kind, raw.get("attributes")) {
                (SourceType::Strapi, Some(Value::Object(attrs))) => {
                    let mut flat: Map<String, Value> = attrs.clone();
                    if let Some(id) = raw.get("id") {
                        flat.entry("id").or_insert_with(|| id.clone());
                    }
                    lifted = Value::Object(flat);
                    &lifted
                }
                _ => raw,
            };
            let id = dotted(item, &transform.id_field).and_then(scalar_text)?;
            let title = match &transform.title_field {
                Some(field) => dotted(item, field).and_then(scalar_text),
                None => ["title", "name"]
                    .iter()
                    .find_map(|f| item.get(*f).and_then(scalar_text)),
            }?;
            let description = transform
                .description_field
                .as_deref()
                .and_then(|f| dotted(item, f))
                .and_then(scalar_text);
            Some(Item {
                id,
                title,
                description,
            })
        })
        .collect()
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strapi_v4_attributes_are_lifted_and_fields_follow_dotted_paths() {
        let response = json!({"data": [
            {"id": 1, "attributes": {"name": "Bosch", "meta": {"country": "DE"}}},
            {"id": 2, "attributes": {"name": "Makita"}},
            {"id": 3, "attributes": {}}
        ], "meta": {}});
        let items = item_array(SourceType::Strapi, None, &response).unwrap();
        let config = TransformConfig {
            id_field: "id".into(),
            title_field: Some("name".into()),
            description_field: Some("meta.country".into()),
        };
        let out = transform(SourceType::Strapi, items, &config);
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            Item {
                id: "1".into(),
                title: "Bosch".into(),
                description: Some("DE".into())
            }
        );
        assert_eq!(out[1].description, None);
    }

    #[test]
    fn a_data_key_that_leads_to_no_array_is_a_clear_error() {
        let response = json!({"result": {"rows": {"a": 1}}});
        let err = item_array(SourceType::RestApi, Some("result.rows"), &response).unwrap_err();
        assert!(err.to_string().contains("result.rows"), "{err}");
        assert!(err.to_string().contains("an object"), "{err}");
    }
}
