//! Fake data sources (real axum servers on loopback that record what reached them)
//! and rows for the data_sources / data_source_connections tables.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// One request as the fake data source saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, Vec<String>>,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl Seen {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A running fake data source.
pub struct FakeSource {
    pub base_url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeSource {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn last(&self) -> Seen {
        self.requests()
            .last()
            .cloned()
            .expect("the data source was called")
    }
}

const BRANDS: &str = r#"[
    {"id": 1, "attributes": {"name": "Bosch", "slug": "bosch"}},
    {"id": 2, "attributes": {"name": "Makita", "slug": "makita"}}
]"#;

fn products(brand: &str) -> Vec<Value> {
    let all = [
        ("p1", "Drill", "bosch", 120),
        ("p2", "Saw", "bosch", 90),
        ("p3", "Grinder", "makita", 75),
    ];
    all.iter()
        .filter(|(_, _, b, _)| *b == brand)
        .map(|(id, name, _, price)| json!({"documentId": id, "name": name, "price": price}))
        .collect()
}

/// Answers by path:
/// - `/api/brands`: Strapi v4 brands; `/api/products`: Strapi v5 products filtered by
///   `filters[brand][slug][$eq]`;
/// - `/rest/items`: `{result: {rows: [...]}}`;
/// - `/graphql`: `{data: {products: [...]}}` for `variables.brand`, or errors;
/// - `/slow`: the same as `/rest/items` after 10 s;
/// - `/big`: a 64 KiB answer; `/redirect-away`: a 302 to another host.
async fn answer(State(seen): State<Arc<Mutex<Vec<Seen>>>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, 1 << 20).await.unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        query
            .entry(k.into_owned())
            .or_default()
            .push(v.into_owned());
    }
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let path = parts.uri.path().to_owned();
    seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers,
        body: body.clone(),
    });
    let first = |k: &str| {
        query
            .get(k)
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_default()
    };
    match path.as_str() {
        "/api/brands" => {
            let data: Value = serde_json::from_str(BRANDS).unwrap();
            axum::Json(json!({"data": data, "meta": {"pagination": {"total": 2}}})).into_response()
        }
        "/api/products" => {
            let brand = first("filters[brand][slug][$eq]");
            axum::Json(json!({"data": products(&brand), "meta": {}})).into_response()
        }
        "/rest/items" | "/slow" => {
            if path == "/slow" {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            axum::Json(json!({"result": {"rows": [
                {"code": "A1", "label": {"en": "Alpha"}, "info": "first"},
                {"code": "B2", "label": {"en": "Beta"}},
                {"label": {"en": "no code"}}
            ]}}))
            .into_response()
        }
        "/graphql" => {
            let brand = body["variables"]["brand"].as_str().unwrap_or("").to_owned();
            if brand.is_empty() {
                return axum::Json(
                    json!({"data": null, "errors": [{"message": "brand is required"}]}),
                )
                .into_response();
            }
            axum::Json(json!({"data": {"products": products(&brand)}})).into_response()
        }
        "/big" => axum::Json(json!({"blob": "x".repeat(64 * 1024)})).into_response(),
        "/redirect-away" => (
            axum::http::StatusCode::FOUND,
            [("location", "http://127.0.0.2:9/elsewhere")],
        )
            .into_response(),
        _ => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

/// Starts a fake data source on 127.0.0.1.
pub async fn spawn_source() -> FakeSource {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().fallback(answer).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeSource { base_url, seen }
}

/// A data_sources row to insert; `..Default::default()` fills the rest.
#[derive(Debug, Clone)]
pub struct NewSource {
    pub kind: &'static str,
    pub base_url: String,
    pub auth_type: &'static str,
    pub auth_token: Option<String>,
    pub auth_header_name: Option<String>,
    pub headers: Option<Value>,
    pub config: Option<Value>,
    pub timeout: Option<i32>,
}

impl Default for NewSource {
    fn default() -> Self {
        NewSource {
            kind: "REST_API",
            base_url: String::new(),
            auth_type: "NONE",
            auth_token: None,
            auth_header_name: None,
            headers: None,
            config: None,
            timeout: None,
        }
    }
}

pub async fn insert_source(pool: &PgPool, s: NewSource) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO data_sources (name, type, base_url, auth_type, auth_token, auth_header_name, headers, config, timeout) \
         VALUES ('test source', $1::data_sources_type_enum, $2, $3::data_sources_auth_type_enum, $4, $5, $6, $7, $8) RETURNING id",
    )
    .bind(s.kind)
    .bind(s.base_url)
    .bind(s.auth_type)
    .bind(s.auth_token)
    .bind(s.auth_header_name)
    .bind(s.headers)
    .bind(s.config)
    .bind(s.timeout)
    .fetch_one(pool)
    .await
    .expect("insert data source")
}

/// A data_source_connections row to insert.
#[derive(Debug, Clone, Default)]
pub struct NewConnection {
    pub name: &'static str,
    pub endpoint: &'static str,
    pub method: Option<&'static str>,
    pub default_params: Option<Value>,
    pub default_body: Option<Value>,
    pub data_key: Option<&'static str>,
    pub transform: Option<Value>,
    pub depends_on: Option<Uuid>,
    pub param_mapping: Option<Value>,
}

pub async fn insert_connection(pool: &PgPool, source: Uuid, c: NewConnection) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO data_source_connections (name, data_source_id, endpoint, method, default_params, \
             default_body, data_key, transform_config, depends_on_connection_id, param_mapping) \
         VALUES ($1, $2, $3, $4::data_source_connections_method_enum, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(if c.name.is_empty() { "test connection" } else { c.name })
    .bind(source)
    .bind(c.endpoint)
    .bind(c.method.unwrap_or("GET"))
    .bind(c.default_params)
    .bind(c.default_body)
    .bind(c.data_key)
    .bind(c.transform)
    .bind(c.depends_on)
    .bind(c.param_mapping)
    .fetch_one(pool)
    .await
    .expect("insert connection")
}

/// The guarded client as the daemon builds it, loopback allowed.
pub fn loopback_client() -> wabot::datasource::DataSourceClient {
    let config = wabot::config::DataSourceConfig {
        allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        ..Default::default()
    };
    wabot::datasource::DataSourceClient::new(&config)
}
