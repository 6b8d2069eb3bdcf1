//! The running engine end to end: signed webhooks in, the chatbot's replies out
//! through a fake Graph API on loopback, the database checked after every step.

mod campaigns;
mod conversations;
mod customers;
mod kinds;
mod media;
mod people;
mod receipts;
mod reliability;
mod templates;
mod versions;

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;
use wabot::config::Config;
use wabot::engine::ChatbotDoc;
use wabot::store::chatbots::{insert, NewChatbot};

use crate::helpers::{spawn_app_with, TestApp};
use crate::support_graph::{FakeGraph, GraphRequest};
use crate::webhook::{messages_webhook, now_secs};

/// A customer of the tests.
pub const CUSTOMER: &str = "905551112233";
pub const CUSTOMER_NAME: &str = "Ayşe";

/// The daemon with its worker on, sending to a fresh fake Graph API.
pub struct Engine {
    pub app: TestApp,
    pub graph: FakeGraph,
}

impl Engine {
    pub async fn start() -> Engine {
        Engine::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> Engine {
        let graph = FakeGraph::start().await;
        let url = graph.url();
        let app = spawn_app_with(|c| {
            c.worker.enabled = true;
            c.whatsapp.graph_api_base = url;
            c.whatsapp.graph_timeout_ms = 500;
            c.worker.send_retry_base_ms = 10;
            c.worker.send_rate_per_sec = 1000;
            c.worker.lease_secs = 5;
            configure(c);
        })
        .await;
        Engine { app, graph }
    }

    /// Posts one message from the test customer and expects Meta's 200.
    pub async fn say(&self, message: Value) {
        let body = messages_webhook(CUSTOMER, CUSTOMER_NAME, vec![message]);
        let response = self.app.post_webhook(&body).await;
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }

    /// Waits until `n` messages in all were accepted by the fake Graph API and returns
    /// the ones after the first `skip`.
    pub async fn replies(&self, skip: usize, n: usize) -> Vec<GraphRequest> {
        let all = self
            .graph
            .wait_for_accepted(skip + n, Duration::from_secs(20))
            .await;
        assert_eq!(
            all.len(),
            skip + n,
            "accepted requests: {:#?}",
            all.iter().map(|r| &r.body).collect::<Vec<_>>()
        );
        all[skip..].to_vec()
    }
}

/// Stores the test number's credentials with `access_token` as the active
/// `whatsapp_config` row, as WhatsApp Builder's settings page does.
pub async fn store_access_token(pool: &PgPool, access_token: &str) {
    use wabot::store::whatsapp_config::{insert, NewConfig};
    insert(
        pool,
        &NewConfig {
            phone_number_id: crate::helpers::PHONE_NUMBER_ID,
            business_account_id: crate::helpers::BUSINESS_ACCOUNT_ID,
            access_token,
            webhook_verify_token: crate::helpers::VERIFY_TOKEN,
            app_secret: Some(crate::helpers::APP_SECRET),
            is_active: true,
        },
    )
    .await
    .unwrap();
}

/// Stores a chatbot document as the active chatbot; returns its id.
pub async fn install_chatbot(pool: &PgPool, doc: &Value) -> Uuid {
    let doc = ChatbotDoc::from_json(doc).expect("a chatbot document");
    insert(pool, &NewChatbot::from_doc(&doc, true))
        .await
        .expect("chatbot stored")
}

pub fn load_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn text(wamid: &str, body: &str) -> Value {
    crate::webhook::text(CUSTOMER, wamid, body, now_secs())
}

pub fn button_reply(wamid: &str, id: &str, title: &str) -> Value {
    json!({"from": CUSTOMER, "id": wamid, "timestamp": now_secs().to_string(), "type": "interactive",
           "interactive": {"type": "button_reply", "button_reply": {"id": id, "title": title}}})
}

pub fn list_reply(wamid: &str, id: &str, title: &str) -> Value {
    json!({"from": CUSTOMER, "id": wamid, "timestamp": now_secs().to_string(), "type": "interactive",
           "interactive": {"type": "list_reply", "list_reply": {"id": id, "title": title}}})
}

pub fn nfm_reply(wamid: &str, response: &Value) -> Value {
    json!({"from": CUSTOMER, "id": wamid, "timestamp": now_secs().to_string(), "type": "interactive",
           "interactive": {"type": "nfm_reply", "nfm_reply": {
               "name": "flow", "body": "Sent", "response_json": response.to_string()}}})
}

/// The active context's (status, current node, variables), if any.
pub async fn active_context(pool: &PgPool) -> Option<(String, String, Value)> {
    sqlx::query_as(
        "SELECT status::text, \"currentNodeId\"::text, variables FROM conversation_contexts \
         WHERE \"isActive\" ORDER BY \"createdAt\" DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Polls `sql` (a single bigint) until it equals `expected`, for at most 20 s.
pub async fn eventually(pool: &PgPool, sql: &str, expected: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let value: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        if value == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`{sql}` stayed {value}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Outbound messages (sent by the business) not yet accepted by Meta.
pub const UNSENT: &str = "SELECT count(*) FROM messages m JOIN users u ON u.id = m.\"senderId\" \
                          WHERE u.\"phoneNumber\" <> '905551112233' AND m.status = 'pending'";
