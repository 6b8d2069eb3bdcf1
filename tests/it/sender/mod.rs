//! The sender against a real PostgreSQL and the fake Graph API: the shared set-up.

mod errors;
mod queue;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wabot::config::Config;
use wabot::credentials::CredentialStore;
use wabot::engine::{Choice, Outgoing};
use wabot::store::outbox;
use wabot::store::whatsapp_config::{self, NewConfig};
use wabot::whatsapp::graph::GraphClient;
use wabot::worker::sender::{SendOutcome, Sender, SenderOptions, WINDOW_CLOSED};
use wabot::worker::turns::outbound_row;

use crate::helpers;
use crate::support_graph::{Failure, FakeGraph, Outcome};

struct Setup {
    pool: PgPool,
    graph: FakeGraph,
    config: Config,
    business: Uuid,
}

impl Setup {
    async fn new() -> Setup {
        Setup::with(|_| {}).await
    }

    async fn with(configure: impl FnOnce(&mut Config)) -> Setup {
        let pool = helpers::fresh_pool().await;
        let graph = FakeGraph::start().await;
        let mut config = helpers::test_config("postgres://unused@127.0.0.1/unused");
        config.whatsapp.graph_api_base = graph.url();
        config.whatsapp.graph_timeout_ms = 300;
        config.worker.send_retry_base_ms = 5;
        config.worker.send_rate_per_sec = 1000;
        configure(&mut config);
        let business = insert_user(&pool, helpers::PHONE_NUMBER_ID, "Business").await;
        Setup {
            pool,
            graph,
            config,
            business,
        }
    }

    fn sender_on(&self, pool: PgPool) -> Sender {
        Sender::new(
            pool.clone(),
            CredentialStore::new(pool, self.config.whatsapp.clone()),
            GraphClient::new(&self.config.whatsapp).expect("graph client"),
            SenderOptions::from_config(&self.config),
        )
    }

    fn sender(&self) -> Sender {
        self.sender_on(self.pool.clone())
    }

    /// A conversation between the business and a new customer who last wrote at
    /// `last_customer_message_at`; returns (conversation id, customer phone).
    async fn conversation(&self, last_customer_message_at: DateTime<Utc>) -> (Uuid, String) {
        let phone = format!("90555{:07}", rand::random::<u32>() % 10_000_000);
        let customer = insert_user(&self.pool, &phone, "Müşteri").await;
        let conversation: Uuid = sqlx::query_scalar(
            "INSERT INTO conversations (\"lastCustomerMessageAt\") VALUES ($1) RETURNING id",
        )
        .bind(last_customer_message_at)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        for user in [self.business, customer] {
            sqlx::query(
                "INSERT INTO conversation_participants (\"conversationId\", \"userId\") VALUES ($1, $2)",
            )
            .bind(conversation)
            .bind(user)
            .execute(&self.pool)
            .await
            .unwrap();
        }
        (conversation, phone)
    }

    /// Queues texts in one transaction, as a turn does; returns the message ids.
    async fn enqueue(&self, conversation: Uuid, to: &str, texts: &[String]) -> Vec<Uuid> {
        let mut tx = self.pool.begin().await.unwrap();
        let mut ids = Vec::new();
        for text in texts {
            let msg = Outgoing::Text { body: text.clone() };
            let id = outbox::enqueue(
                &mut tx,
                &outbound_row(conversation, self.business, to, &msg),
            )
            .await
            .unwrap();
            ids.push(id);
        }
        tx.commit().await.unwrap();
        ids
    }

    async fn message(&self, id: Uuid) -> (String, Value) {
        sqlx::query_as("SELECT status::text, content FROM messages WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

async fn insert_user(pool: &PgPool, phone: &str, name: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO users (\"phoneNumber\", name) VALUES ($1, $2) RETURNING id")
        .bind(phone)
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap()
}

fn texts(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix} mesaj {i}")).collect()
}

/// Drives `send_one` until no job is left, waiting out backoffs; the outcomes.
async fn drain(sender: &Sender, pool: &PgPool) -> Vec<SendOutcome> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut outcomes = Vec::new();
    loop {
        let outcome = sender.send_one(Utc::now()).await.expect("send step");
        if outcome == SendOutcome::Idle {
            if outbox::open_jobs(pool).await.unwrap() == 0 {
                return outcomes;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "jobs left: {outcomes:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        outcomes.push(outcome);
    }
}

/// The texts the fake accepted for `to`, in order.
fn accepted_texts(graph: &FakeGraph, to: &str) -> Vec<String> {
    graph
        .accepted()
        .iter()
        .filter(|r| r.to() == Some(to))
        .filter_map(|r| r.text().map(str::to_owned))
        .collect()
}
