//! No secret leaves wabot except to the peer it is for: a whole conversation whose
//! chatbot puts keys in a rest_api node's headers, query string, body and auth, and
//! reads a data source with a token, is run through the daemon (signed webhooks in,
//! the fake Graph API out) under a trace-level log captured in memory; then the log,
//! every stored row and everything sent to Meta are searched for each secret value.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::Request;
use axum::Router;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::datasource_support::{
    insert_connection, insert_source, spawn_source, NewConnection, NewSource,
};
use crate::e2e::{eventually, install_chatbot, list_reply, text, Engine};

const HEADER_SECRET: &str = "hdr-5ecret-a1b2";
const AUTH_QUERY_SECRET: &str = "qry-5ecret-c3d4";
const PARAM_QUERY_SECRET: &str = "prm-5ecret-e5f6";
const BODY_SECRET: &str = "bdy-5ecret-g7h8";
const URL_SECRET: &str = "url-5ecret-i9j0";
const BEARER_SECRET: &str = "brr-5ecret-k1l2";
const DATASOURCE_SECRET: &str = "dsr-5ecret-m3n4";

const SECRETS: [&str; 7] = [
    HEADER_SECRET,
    AUTH_QUERY_SECRET,
    PARAM_QUERY_SECRET,
    BODY_SECRET,
    URL_SECRET,
    BEARER_SECRET,
    DATASOURCE_SECRET,
];

/// The log lines written while the test runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

/// A REST API on loopback that keeps the raw requests it got (method, URI, headers,
/// body) and answers with a customer record that holds no secret.
async fn spawn_api() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let app =
        Router::new()
            .fallback(
                |State(seen): State<Arc<Mutex<Vec<String>>>>,
                 request: Request<axum::body::Body>| async move {
                    let (parts, body) = request.into_parts();
                    let body = axum::body::to_bytes(body, 1 << 20)
                        .await
                        .unwrap_or_default();
                    seen.lock().expect("seen").push(format!(
                        "{} {} {:?} {}",
                        parts.method,
                        parts.uri,
                        parts.headers,
                        String::from_utf8_lossy(&body)
                    ));
                    axum::Json(json!({"data": {"name": "Ada", "tier": "gold"}}))
                },
            )
            .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (base, seen)
}

fn chatbot(api: &str, connection: &str) -> Value {
    json!({
        "name": "Secrets", "isActive": true, "metadata": {},
        "nodes": [
            {"id": "start", "type": "start", "position": {"x": 0, "y": 0}, "data": {"type": "start"}},
            {"id": "lookup", "type": "rest_api", "position": {"x": 0, "y": 100}, "data": {
                "type": "rest_api", "apiUrl": format!("{api}/lookup"), "apiMethod": "POST",
                "apiHeaders": [{"key": "X-Header-Key", "value": HEADER_SECRET}],
                "apiQueryParams": [{"key": "sig", "value": PARAM_QUERY_SECRET}],
                "apiBody": format!("{{\"pin\": \"{BODY_SECRET}\", \"phone\": \"{{{{customer_phone}}}}\"}}"),
                "apiAuthType": "api_key", "apiAuthKeyName": "api_key",
                "apiAuthKeyValue": AUTH_QUERY_SECRET, "apiAuthKeyLocation": "query",
                "apiResponsePath": "data", "apiTimeout": 5000}},
            // Nothing listens on the discard port: this call fails, and its error is
            // logged and stored.
            {"id": "broken", "type": "rest_api", "position": {"x": 0, "y": 200}, "data": {
                "type": "rest_api", "apiUrl": format!("http://user:{URL_SECRET}@127.0.0.1:9/x?token={URL_SECRET}"),
                "apiMethod": "GET", "apiAuthType": "bearer", "apiAuthToken": BEARER_SECRET,
                "apiTimeout": 5000}},
            {"id": "pick", "type": "question", "position": {"x": 0, "y": 300}, "data": {
                "type": "question", "questionType": "list", "content": "Pick one, {{rest_api_1.data.name}}",
                "listButtonText": "Options", "dynamicConnectionId": connection}},
            {"id": "done", "type": "message", "position": {"x": 0, "y": 400}, "data": {
                "type": "message", "content": "You picked {{question_1.response}}. Error was: {{rest_api_2.error}}"}}
        ],
        "edges": [
            {"id": "e1", "source": "start", "target": "lookup"},
            {"id": "e2", "source": "lookup", "target": "broken", "sourceHandle": "success"},
            {"id": "e3", "source": "lookup", "target": "broken", "sourceHandle": "error"},
            {"id": "e4", "source": "broken", "target": "pick", "sourceHandle": "success"},
            {"id": "e5", "source": "broken", "target": "pick", "sourceHandle": "error"},
            {"id": "e6", "source": "pick", "target": "done"}
        ]
    })
}

/// Every row of every table, as text, except the tables that hold the configuration
/// the secrets were typed into (`wabot_chatbot_versions` is the chatbot's graph as
/// the editor saved it, kept while a conversation runs on it).
async fn stored_rows(pool: &PgPool) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
           AND table_name NOT IN ('chatbots', 'wabot_chatbot_versions', 'data_sources', \
                                  'data_source_connections', 'whatsapp_config', \
                                  '_sqlx_migrations')",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    assert!(
        tables.iter().any(|t| t == "conversation_contexts"),
        "{tables:?}"
    );
    let mut out = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
            .fetch_all(pool)
            .await
            .expect("rows");
        for row in rows {
            out.push_str(&table);
            out.push_str(": ");
            out.push_str(&row);
            out.push('\n');
        }
    }
    out
}

#[tokio::test]
async fn no_secret_reaches_a_log_a_stored_row_or_meta() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .finish();
    // This test's runtime runs on this thread, and so do the daemon's tasks.
    let _log = tracing::subscriber::set_default(subscriber);

    let (api, api_seen) = spawn_api().await;
    let source = spawn_source().await;
    let engine = Engine::start().await;
    let pool = &engine.app.pool;
    let data_source = insert_source(
        pool,
        NewSource {
            base_url: source.base_url.clone(),
            auth_type: "BEARER",
            auth_token: Some(DATASOURCE_SECRET.into()),
            ..Default::default()
        },
    )
    .await;
    let connection = insert_connection(
        pool,
        data_source,
        NewConnection {
            endpoint: "/rest/items",
            data_key: Some("result.rows"),
            transform: Some(json!({"idField": "code", "titleField": "label.en"})),
            ..Default::default()
        },
    )
    .await;
    install_chatbot(pool, &chatbot(&api, &connection.to_string())).await;

    engine.say(text("wamid.SECRET1", "hello")).await;
    let list = engine.replies(0, 1).await;
    assert_eq!(
        list[0].body["interactive"]["type"], "list",
        "{:?}",
        list[0].body
    );
    engine.say(list_reply("wamid.SECRET2", "A1", "Alpha")).await;
    let done = engine.replies(1, 1).await;
    let done = done[0].text().expect("a text reply").to_owned();
    assert!(done.starts_with("You picked"), "{done}");
    eventually(
        pool,
        "SELECT count(*) FROM conversation_contexts WHERE status = 'completed'",
        1,
    )
    .await;

    // The secrets did go where they were meant to.
    let api_seen = api_seen.lock().expect("seen").join("\n");
    for secret in [
        HEADER_SECRET,
        AUTH_QUERY_SECRET,
        PARAM_QUERY_SECRET,
        BODY_SECRET,
    ] {
        assert!(
            api_seen.contains(secret),
            "{secret} reached the API: {api_seen}"
        );
    }
    assert_eq!(
        source.last().header("authorization"),
        Some(format!("Bearer {DATASOURCE_SECRET}").as_str())
    );
    // The failed call ran and left an error behind.
    let outputs: Value = sqlx::query_scalar(
        "SELECT \"nodeOutputs\" FROM conversation_contexts ORDER BY \"createdAt\" DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .expect("nodeOutputs");
    assert_eq!(outputs["broken"]["success"], false, "{outputs}");
    assert!(outputs["broken"]["error"].is_string(), "{outputs}");

    let rows = stored_rows(pool).await;
    let sent: String = engine
        .graph
        .requests()
        .iter()
        .map(|r| format!("{:?}\n", r.body))
        .collect();
    let log = log.text();
    assert!(log.contains("rest_api"), "the log was captured: {log}");
    for secret in SECRETS {
        for (what, text) in [("the log", &log), ("a stored row", &rows), ("Meta", &sent)] {
            let line = text.lines().find(|l| l.contains(secret));
            assert!(line.is_none(), "{secret} reached {what}: {line:?}");
        }
    }
}
