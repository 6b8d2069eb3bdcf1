//! Validated data sources and connections, built from their database rows.
//!
//! Validation happens once, when a row becomes a [`DataSource`] or [`Connection`], so a
//! misconfigured row fails with a message that names the field instead of producing a
//! strange request later. The rules are the seed's: an auth type other than NONE needs
//! a token, API_KEY needs a header name, and `base_url` is an http(s) URL.

use std::str::FromStr;

use http::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use serde_json_path::JsonPath;
use url::Url;
use uuid::Uuid;

use super::DataSourceError;
use crate::store::datasources::{ConnectionRow, DataSourceRow};

/// How a data source shapes its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceType {
    RestApi,
    /// Strapi: items under `data`, v4 items with their fields under `attributes`.
    Strapi,
    /// GraphQL: a POST of `{query, variables}`, items under `data`.
    Graphql,
}

/// The credentials sent with every request of a data source.
pub enum Auth {
    None,
    /// `Authorization: Bearer <token>`
    Bearer(SecretString),
    /// `<header>: <token>`
    ApiKey {
        header: HeaderName,
        token: SecretString,
    },
    /// `Authorization: Basic <token>`, the token being base64 of `user:password`.
    Basic(SecretString),
}

/// A data source ready to be requested.
pub struct DataSource {
    pub id: Uuid,
    pub name: String,
    pub kind: SourceType,
    pub base_url: Url,
    pub auth: Auth,
    /// Extra headers, sent before the auth header (which wins on a clash).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Type-specific settings: GraphQL `query`, `variables`, `operationName`.
    pub config: Map<String, Value>,
    /// The configured timeout in milliseconds, before the ceiling applies.
    pub timeout_ms: Option<u64>,
    pub is_active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// Which fields of a response item become `{id, title, description}`; each is a
/// dotted path into the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformConfig {
    pub id_field: String,
    pub title_field: Option<String>,
    pub description_field: Option<String>,
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            id_field: "id".to_owned(),
            title_field: None,
            description_field: None,
        }
    }
}

/// One query parameter (or GraphQL variable) filled from the input: a JSONPath
/// (RFC 9535) when the configured value starts with `$`, else a constant.
#[derive(Debug, Clone)]
pub struct ParamMapping {
    pub name: String,
    pub source: String,
    pub path: Option<JsonPath>,
}

/// A connection: one endpoint of a data source and how to read its items. Debug
/// leaves out the default parameters' and body's values, which may be keys.
#[derive(Clone)]
pub struct Connection {
    pub id: Option<Uuid>,
    pub name: String,
    pub data_source_id: Uuid,
    pub endpoint: String,
    pub method: Method,
    pub default_params: Map<String, Value>,
    pub default_body: Option<Value>,
    pub data_key: Option<String>,
    pub transform: TransformConfig,
    pub depends_on: Option<Uuid>,
    pub param_mapping: Vec<ParamMapping>,
    pub is_active: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let params: Vec<&String> = self.default_params.keys().collect();
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("data_source_id", &self.data_source_id)
            .field("endpoint", &crate::text::redact_url(&self.endpoint))
            .field("method", &self.method)
            .field("default_params", &params)
            .field("data_key", &self.data_key)
            .field("depends_on", &self.depends_on)
            .field("is_active", &self.is_active)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for DataSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values and the token may be credentials: never print them.
        f.debug_struct("DataSource")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &crate::text::redact_url(self.base_url.as_str()))
            .finish_non_exhaustive()
    }
}

fn invalid(what: &str, message: impl std::fmt::Display) -> DataSourceError {
    DataSourceError::Invalid(format!("{what}: {message}"))
}

impl TryFrom<DataSourceRow> for DataSource {
    type Error = DataSourceError;

    fn try_from(row: DataSourceRow) -> Result<Self, Self::Error> {
        let label = format!("data source `{}` ({})", row.name, row.id);
        let kind = match row.kind.as_str() {
            "REST_API" => SourceType::RestApi,
            "STRAPI" => SourceType::Strapi,
            "GRAPHQL" => SourceType::Graphql,
            other => return Err(invalid(&label, format!("unknown type `{other}`"))),
        };
        let base_url = match Url::parse(row.base_url.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            _ => {
                return Err(invalid(
                    &label,
                    format!("base_url `{}` is not a valid http(s) URL", row.base_url),
                ))
            }
        };
        let token = row
            .auth_token
            .filter(|t| !t.expose_secret().trim().is_empty());
        let needs_token = |t: Option<SecretString>| {
            t.ok_or_else(|| {
                invalid(
                    &label,
                    format!("auth_type {} needs an auth_token", row.auth_type),
                )
            })
        };
        let auth = match row.auth_type.as_str() {
            "NONE" => Auth::None,
            "BEARER" => Auth::Bearer(needs_token(token)?),
            "BASIC" => Auth::Basic(needs_token(token)?),
            "API_KEY" => {
                let name = row
                    .auth_header_name
                    .as_deref()
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        invalid(&label, "auth_type API_KEY needs an auth_header_name")
                    })?;
                let header = HeaderName::from_str(name).map_err(|_| {
                    invalid(
                        &label,
                        format!("auth_header_name `{name}` is not a valid header name"),
                    )
                })?;
                Auth::ApiKey {
                    header,
                    token: needs_token(token)?,
                }
            }
            other => return Err(invalid(&label, format!("unknown auth_type `{other}`"))),
        };
        let mut headers = Vec::new();
        match row.headers {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (name, value) in map {
                    let header = HeaderName::from_str(&name).map_err(|_| {
                        invalid(&label, format!("header name `{name}` is not valid"))
                    })?;
                    let text = match value {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => {
                            return Err(invalid(
                                &label,
                                format!("header `{name}` must be a string"),
                            ))
                        }
                    };
                    let mut value = HeaderValue::from_str(&text).map_err(|_| {
                        invalid(&label, format!("header `{name}` has an invalid value"))
                    })?;
                    // Extra headers often carry keys too; keep them out of any debug output.
                    value.set_sensitive(true);
                    headers.push((header, value));
                }
            }
            Some(_) => return Err(invalid(&label, "headers must be a JSON object")),
        }
        let config = match row.config {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => return Err(invalid(&label, "config must be a JSON object")),
        };
        let timeout_ms = match row.timeout {
            None => None,
            Some(t) if t > 0 => Some(t as u64),
            Some(t) => return Err(invalid(&label, format!("timeout {t} ms must be positive"))),
        };
        Ok(DataSource {
            id: row.id,
            name: row.name,
            kind,
            base_url,
            auth,
            headers,
            config,
            timeout_ms,
            is_active: row.is_active,
        })
    }
}

impl TryFrom<ConnectionRow> for Connection {
    type Error = DataSourceError;

    fn try_from(row: ConnectionRow) -> Result<Self, Self::Error> {
        let label = format!("connection `{}` ({})", row.name, row.id);
        let method = match row.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            other => return Err(invalid(&label, format!("unknown method `{other}`"))),
        };
        let default_params = object_or_empty(&label, "default_params", row.default_params)?;
        let transform = match row.transform_config {
            None | Some(Value::Null) => TransformConfig::default(),
            Some(value) => transform_from_json(&label, &value)?,
        };
        let mapping = object_or_empty(&label, "param_mapping", row.param_mapping)?;
        let param_mapping = parse_mapping(&label, &mapping)?;
        Ok(Connection {
            id: Some(row.id),
            name: row.name,
            data_source_id: row.data_source_id,
            endpoint: checked_endpoint(&label, &row.endpoint)?,
            method,
            default_params,
            default_body: row.default_body.filter(|b| !b.is_null()),
            data_key: row.data_key.filter(|k| !k.trim().is_empty()),
            transform,
            depends_on: row.depends_on_connection_id,
            param_mapping,
            is_active: row.is_active,
        })
    }
}

/// Reads `{idField, titleField, descriptionField}` (the editor's names), accepting
/// snake_case too.
pub fn transform_from_json(label: &str, value: &Value) -> Result<TransformConfig, DataSourceError> {
    let Value::Object(map) = value else {
        return Err(invalid(label, "transform_config must be a JSON object"));
    };
    let field = |camel: &str, snake: &str| -> Result<Option<String>, DataSourceError> {
        match map.get(camel).or_else(|| map.get(snake)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(_) => Err(invalid(
                label,
                format!("transform_config.{camel} must be a string"),
            )),
        }
    };
    Ok(TransformConfig {
        id_field: field("idField", "id_field")?.unwrap_or_else(|| "id".to_owned()),
        title_field: field("titleField", "title_field")?,
        description_field: field("descriptionField", "description_field")?,
    })
}

/// Parses a `param_mapping` object: each value a JSONPath (`$...`) or a constant.
pub fn parse_mapping(
    label: &str,
    mapping: &Map<String, Value>,
) -> Result<Vec<ParamMapping>, DataSourceError> {
    mapping
        .iter()
        .map(|(name, value)| {
            let Value::String(source) = value else {
                return Err(invalid(
                    label,
                    format!("param_mapping `{name}` must be a string"),
                ));
            };
            let source = source.trim().to_owned();
            let path = if source.starts_with('$') {
                Some(JsonPath::parse(&source).map_err(|e| {
                    invalid(
                        label,
                        format!("param_mapping `{name}`: `{source}` is not JSONPath: {e}"),
                    )
                })?)
            } else {
                None
            };
            Ok(ParamMapping {
                name: name.clone(),
                source,
                path,
            })
        })
        .collect()
}

/// An endpoint is a path under `base_url`, never a URL of its own: a connection must
/// not be able to send the data source's credentials to another host.
pub fn checked_endpoint(label: &str, endpoint: &str) -> Result<String, DataSourceError> {
    let endpoint = endpoint.trim();
    if endpoint.contains("://") || endpoint.starts_with("//") {
        return Err(invalid(
            label,
            format!("endpoint `{endpoint}` must be a path under base_url, not a URL"),
        ));
    }
    Ok(endpoint.to_owned())
}

fn object_or_empty(
    label: &str,
    what: &str,
    value: Option<Value>,
) -> Result<Map<String, Value>, DataSourceError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(invalid(label, format!("{what} must be a JSON object"))),
    }
}
