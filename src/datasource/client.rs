//! The HTTP side of data sources: one guarded `reqwest::Client`, requests built from
//! a data source and a connection, answers read with a size cap.

use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, AUTHORIZATION};
use http::HeaderValue;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::extract::{self, query_text};
use super::model::{Auth, Connection, DataSource, Method, SourceType};
use super::{DataSourceError, Item};
use crate::config::DataSourceConfig;
use crate::egress::{self, CrossHostRedirect, Guard, Redirects};

/// The HTTP client of data sources, cheap to clone.
#[derive(Clone)]
pub struct DataSourceClient {
    http: reqwest::Client,
    guard: Arc<Guard>,
    default_timeout: Duration,
    max_timeout: Duration,
    max_response_bytes: usize,
}

impl std::fmt::Debug for DataSourceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataSourceClient").finish_non_exhaustive()
    }
}

impl DataSourceClient {
    pub fn new(config: &DataSourceConfig) -> DataSourceClient {
        let guard = Arc::new(Guard::new(config.allowed_networks.clone()));
        let http = egress::client_builder(guard.clone(), Redirects::SameHost)
            .connect_timeout(Duration::from_millis(config.max_timeout_ms))
            .build()
            // Building fails only when the TLS backend cannot initialise, which is a
            // broken installation rather than anything a request could cause.
            .expect("the rustls HTTP client builds");
        DataSourceClient {
            http,
            guard,
            default_timeout: Duration::from_millis(config.default_timeout_ms),
            max_timeout: Duration::from_millis(config.max_timeout_ms),
            max_response_bytes: config.max_response_bytes,
        }
    }

    /// The timeout of one request to `source`: its own, else the default, never above
    /// the ceiling.
    pub fn timeout_for(&self, source: &DataSource) -> Duration {
        source
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.default_timeout)
            .min(self.max_timeout)
    }

    /// Requests `connection` of `source` with `input` as the JSONPath document of its
    /// param_mapping, and returns the items.
    pub async fn items(
        &self,
        source: &DataSource,
        connection: &Connection,
        input: &Value,
    ) -> Result<Vec<Item>, DataSourceError> {
        let response = self.fetch(source, connection, input).await?;
        if source.kind == SourceType::Graphql {
            if let Some(message) = extract::graphql_errors(&response) {
                return Err(DataSourceError::Graphql(message));
            }
        }
        let items = extract::item_array(source.kind, connection.data_key.as_deref(), &response)?;
        let out = extract::transform(source.kind, items, &connection.transform);
        if out.len() < items.len() {
            tracing::debug!(
                connection = %connection.name,
                skipped = items.len() - out.len(),
                "items without an id or a title were left out"
            );
        }
        Ok(out)
    }

    /// Sends the request of `connection` and returns the JSON answer.
    #[tracing::instrument(skip_all, fields(source = %source.name, connection = %connection.name))]
    pub async fn fetch(
        &self,
        source: &DataSource,
        connection: &Connection,
        input: &Value,
    ) -> Result<Value, DataSourceError> {
        let started = std::time::Instant::now();
        let result = self.request(source, connection, input).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(DataSourceError::Status(_)) => "http_error",
            Err(DataSourceError::Timeout(_)) => "timeout",
            Err(DataSourceError::Blocked(_) | DataSourceError::Redirect(_)) => "refused",
            Err(
                DataSourceError::NotFound(_)
                | DataSourceError::Inactive(_)
                | DataSourceError::Invalid(_),
            ) => "invalid",
            Err(_) => "error",
        };
        crate::metrics::http_call("datasource", outcome, started.elapsed());
        result
    }

    async fn request(
        &self,
        source: &DataSource,
        connection: &Connection,
        input: &Value,
    ) -> Result<Value, DataSourceError> {
        if !source.is_active {
            return Err(DataSourceError::Inactive(format!(
                "data source `{}`",
                source.name
            )));
        }
        if !connection.is_active {
            return Err(DataSourceError::Inactive(format!(
                "connection `{}`",
                connection.name
            )));
        }
        // Both Debug impls leave out tokens, header values and parameter values.
        tracing::debug!(?source, ?connection, "data source request");
        let params = extract::mapped_params(connection, input)?;
        let url = join_url(&source.base_url, &connection.endpoint);
        let url = reqwest::Url::parse(&url)
            .map_err(|e| DataSourceError::Invalid(format!("URL `{url}`: {e}")))?;
        // Names go through the guarded resolver; IP literals never reach a resolver.
        self.guard
            .check_url(&url)
            .map_err(DataSourceError::Blocked)?;

        let timeout = self.timeout_for(source);
        let mut request = match (source.kind, connection.method) {
            (SourceType::Graphql, _) => self.http.post(url),
            (_, Method::Get) => self.http.get(url),
            (_, Method::Post) => self.http.post(url),
            (_, Method::Put) => self.http.put(url),
            (_, Method::Patch) => self.http.patch(url),
            (_, Method::Delete) => self.http.delete(url),
        }
        .timeout(timeout)
        .header(ACCEPT, "application/json");
        for (name, value) in &source.headers {
            request = request.header(name, value);
        }
        request = match &source.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.header(
                AUTHORIZATION,
                secret_header("Bearer ", token.expose_secret())?,
            ),
            Auth::Basic(token) => request.header(
                AUTHORIZATION,
                secret_header("Basic ", token.expose_secret())?,
            ),
            Auth::ApiKey { header, token } => {
                request.header(header, secret_header("", token.expose_secret())?)
            }
        };

        let mut query: Vec<(String, String)> = Vec::new();
        for (name, value) in &connection.default_params {
            match value {
                Value::Array(values) => {
                    query.extend(values.iter().map(|v| (name.clone(), query_text(v))))
                }
                Value::Null => {}
                other => query.push((name.clone(), query_text(other))),
            }
        }
        if source.kind == SourceType::Graphql {
            request = request.json(&graphql_body(source, connection, params));
        } else {
            for (name, values) in params {
                query.extend(values.iter().map(|v| (name.clone(), query_text(v))));
            }
            if let (Some(body), Method::Post | Method::Put | Method::Patch) =
                (&connection.default_body, connection.method)
            {
                request = request.json(body);
            }
        }
        if !query.is_empty() {
            request = request.query(&query);
        }

        let response = request.send().await.map_err(|e| classify(e, timeout))?;
        let status = response.status();
        if !status.is_success() {
            return Err(DataSourceError::Status(status.as_u16()));
        }
        let body = self.read_capped(response, timeout).await?;
        serde_json::from_slice(&body).map_err(|_| DataSourceError::NotJson)
    }

    async fn read_capped(
        &self,
        mut response: reqwest::Response,
        timeout: Duration,
    ) -> Result<Vec<u8>, DataSourceError> {
        let cap = self.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|len| len as usize > cap)
        {
            return Err(DataSourceError::TooLarge(cap));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(e, timeout))? {
            if body.len() + chunk.len() > cap {
                return Err(DataSourceError::TooLarge(cap));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// `base_url` + `endpoint` as a path under it (`https://x/api` + `/brands` →
/// `https://x/api/brands`), keeping a query string the base may carry.
fn join_url(base: &url::Url, endpoint: &str) -> String {
    let mut base = base.clone();
    let base_query = base.query().map(str::to_owned);
    base.set_query(None);
    let head = base.as_str().trim_end_matches('/');
    let tail = endpoint.trim_start_matches('/');
    let mut url = if tail.is_empty() {
        head.to_owned()
    } else {
        format!("{head}/{tail}")
    };
    if let Some(q) = base_query {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&q);
    }
    url
}

fn secret_header(prefix: &str, token: &str) -> Result<HeaderValue, DataSourceError> {
    let mut value = HeaderValue::from_str(&format!("{prefix}{token}")).map_err(|_| {
        DataSourceError::Invalid("auth_token contains characters a header cannot carry".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// `{query, variables, operationName?}`: the query from the connection's
/// default_body, else the data source's config; variables from both, then the mapped
/// parameters, which keep their JSON types.
fn graphql_body(
    source: &DataSource,
    connection: &Connection,
    params: Vec<(String, Vec<Value>)>,
) -> Value {
    let body = connection.default_body.as_ref().and_then(Value::as_object);
    let pick = |key: &str| {
        body.and_then(|b| b.get(key))
            .or_else(|| source.config.get(key))
            .cloned()
    };
    let mut variables = Map::new();
    for layer in [
        source.config.get("variables"),
        body.and_then(|b| b.get("variables")),
    ] {
        if let Some(Value::Object(vars)) = layer {
            variables.extend(vars.clone());
        }
    }
    for (name, mut values) in params {
        let value = if values.len() == 1 {
            values.remove(0)
        } else {
            Value::Array(values)
        };
        variables.insert(name, value);
    }
    let mut out = Map::new();
    out.insert(
        "query".into(),
        pick("query").unwrap_or(Value::String(String::new())),
    );
    out.insert("variables".into(), Value::Object(variables));
    if let Some(name) = pick("operationName") {
        out.insert("operationName".into(), name);
    }
    Value::Object(out)
}

/// Maps a reqwest failure to what happened, without the URL (it may carry a key in
/// its query or userinfo).
fn classify(error: reqwest::Error, timeout: Duration) -> DataSourceError {
    if error.is_timeout() {
        return DataSourceError::Timeout(timeout.as_millis() as u64);
    }
    if let Some(blocked) = egress::blocked_cause(&error) {
        return DataSourceError::Blocked(blocked);
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(redirect) = e.downcast_ref::<CrossHostRedirect>() {
            return DataSourceError::Redirect(redirect.clone());
        }
        source = e.source();
    }
    DataSourceError::Http(egress::error_text(error))
}
