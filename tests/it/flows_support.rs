//! Meta's side of the Flows endpoint, written from Meta's description and reference
//! endpoint code rather than from wabot's: RSA-OAEP-SHA256 with the public key (an
//! OpenSSL-made PEM), AES-128-GCM with a 16-byte IV, and the answer opened with the
//! inverted IV. Plus the rows a live flow token needs.
#![allow(dead_code)]

use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes128;
use aes_gcm::{AesGcm, Nonce};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{self, sign, TestApp, APP_SECRET};

type Gcm16 = AesGcm<Aes128, U16>;

pub const PASSPHRASE: &str = "wabot-test";

/// A fixture file under fixtures/flows.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/flows")
        .join(name)
}

/// Starts wabot with the passphrase-protected PKCS#8 fixture key.
pub async fn spawn_flows_app(deadline_ms: u64) -> TestApp {
    helpers::spawn_app_with(|c| {
        c.flows.private_key = Some(fixture("pkcs8_aes256.pem"));
        c.flows.private_key_passphrase = Some(PASSPHRASE.to_owned().into());
        c.flows.deadline_ms = deadline_ms;
    })
    .await
}

/// One encrypted request and what Meta keeps to read the answer.
pub struct Sealed {
    pub body: Value,
    key: [u8; 16],
    iv: [u8; 16],
}

/// Encrypts `request` for the holder of `public_pem`, as Meta's client does.
pub fn meta_encrypt(public_pem: &str, request: &Value) -> Sealed {
    let der = pem_der(public_pem);
    let public =
        OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(&der).unwrap()).unwrap();
    let key: [u8; 16] = rand::random();
    let iv: [u8; 16] = rand::random();
    let mut wrapped = vec![0u8; public.ciphertext_size()];
    let wrapped = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &key, &mut wrapped, None)
        .unwrap()
        .to_vec();
    let data = Gcm16::new(&key.into())
        .encrypt(
            Nonce::<U16>::from_slice(&iv),
            request.to_string().as_bytes(),
        )
        .unwrap();
    Sealed {
        body: json!({
            "encrypted_flow_data": BASE64.encode(data),
            "encrypted_aes_key": BASE64.encode(wrapped),
            "initial_vector": BASE64.encode(iv),
        }),
        key,
        iv,
    }
}

impl Sealed {
    /// Opens an answer: base64, AES-128-GCM under the inverted IV.
    pub fn open(&self, answer: &str) -> Value {
        let flipped: Vec<u8> = self.iv.iter().map(|b| b ^ 0xFF).collect();
        let bytes = BASE64.decode(answer.trim()).expect("the answer is base64");
        let plain = Gcm16::new(&self.key.into())
            .decrypt(Nonce::<U16>::from_slice(&flipped), bytes.as_slice())
            .expect("the answer decrypts with the flipped IV");
        serde_json::from_slice(&plain).expect("the answer is JSON")
    }
}

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    BASE64.decode(b64).unwrap()
}

/// The public key matching the server's fixture key, made by OpenSSL.
pub fn server_public_pem() -> String {
    std::fs::read_to_string(fixture("pkcs1.pub.pem")).unwrap()
}

/// POSTs raw bytes to the Flows endpoint with the given signature header value.
pub async fn post_raw(app: &TestApp, body: &[u8], signature: &str) -> reqwest::Response {
    app.client
        .post(format!("{}{}", app.address, app.config.flows.endpoint_path))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body.to_vec())
        .send()
        .await
        .expect("the server answers")
}

/// Encrypts, signs and posts `request`; returns the status and the opened answer.
pub async fn exchange(app: &TestApp, request: Value) -> (u16, Value) {
    let sealed = meta_encrypt(&server_public_pem(), &request);
    let bytes = sealed.body.to_string().into_bytes();
    let response = post_raw(app, &bytes, &sign(&bytes, APP_SECRET)).await;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    if status == 200 {
        assert_eq!(content_type.as_deref(), Some("text/plain"));
    }
    if text.is_empty() {
        return (status, Value::Null);
    }
    (status, sealed.open(&text))
}

/// Inserts a customer, a conversation, a chatbot with a whatsapp_flow node naming
/// `meta_flow_id`, and a context waiting for the flow; returns the flow token.
pub async fn waiting_context(pool: &PgPool, meta_flow_id: &str, node_data: Value) -> String {
    let user: Uuid = sqlx::query_scalar(
        "INSERT INTO users (\"phoneNumber\", name) VALUES ($1, 'Customer') RETURNING id",
    )
    .bind(format!("90555{}", rand::random::<u32>() % 10_000_000))
    .fetch_one(pool)
    .await
    .unwrap();
    let conversation: Uuid =
        sqlx::query_scalar("INSERT INTO conversations DEFAULT VALUES RETURNING id")
            .fetch_one(pool)
            .await
            .unwrap();
    sqlx::query(
        "INSERT INTO conversation_participants (\"conversationId\", \"userId\") VALUES ($1, $2)",
    )
    .bind(conversation)
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    let mut data = node_data;
    data["whatsappFlowId"] = json!(meta_flow_id);
    let nodes = json!([
        {"id": "start-1", "type": "start", "data": {}},
        {"id": "flow-node-1", "type": "whatsapp_flow", "data": data}
    ]);
    let chatbot: Uuid = sqlx::query_scalar(
        "INSERT INTO chatbots (name, nodes, edges, \"isActive\", status) \
         VALUES ('flows bot', $1, '[]', true, 'active') RETURNING id",
    )
    .bind(nodes)
    .fetch_one(pool)
    .await
    .unwrap();
    let context: Uuid = sqlx::query_scalar(
        "INSERT INTO conversation_contexts (\"conversationId\", \"chatbotId\", \"currentNodeId\", status) \
         VALUES ($1, $2, 'flow-node-1', 'waiting_flow') RETURNING id",
    )
    .bind(conversation)
    .bind(chatbot)
    .fetch_one(pool)
    .await
    .unwrap();
    format!("{context}:flow-node-1")
}

/// Inserts a whatsapp_flows row.
pub async fn insert_flow(
    pool: &PgPool,
    meta_flow_id: &str,
    flow_json: Value,
    metadata: Value,
    source: Option<Uuid>,
) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO whatsapp_flows (whatsapp_flow_id, name, status, \"flowJson\", metadata, data_source_id) \
         VALUES ($1, 'test flow', 'PUBLISHED', $2, $3, $4) RETURNING id",
    )
    .bind(meta_flow_id)
    .bind(flow_json)
    .bind(metadata)
    .bind(source)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// A three-screen Flow: brand → product → confirm.
pub fn cascade_flow_json() -> Value {
    let list = json!({"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "title": {"type": "string"}}}});
    json!({
        "version": "7.2",
        "data_api_version": "3.0",
        "routing_model": {
            "BRAND_SCREEN": ["PRODUCT_SCREEN"],
            "PRODUCT_SCREEN": ["CONFIRM_SCREEN"],
            "CONFIRM_SCREEN": []
        },
        "screens": [
            {"id": "BRAND_SCREEN", "data": {"brands": list, "greeting": {"type": "string"}}, "layout": {}},
            {"id": "PRODUCT_SCREEN", "data": {"products": list}, "layout": {}},
            {"id": "CONFIRM_SCREEN", "terminal": true, "data": {"selected_brand": {"type": "string"}, "selected_product": {"type": "string"}}, "layout": {}}
        ]
    })
}
