//! The WhatsApp Flows endpoint end to end: Meta's encryption, the flow token, a
//! brand → product cascade from a Strapi data source on loopback.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::datasource_support::*;
use crate::flows_support::*;
use crate::helpers::{sign, APP_SECRET};

/// A Strapi data source with a brands connection and a products connection that
/// depends on it, wired to the cascade Flow; returns the fake source and the token.
async fn cascade(app: &crate::helpers::TestApp, meta_flow_id: &str) -> (FakeSource, String) {
    let fake = spawn_source().await;
    let source = insert_source(
        &app.pool,
        NewSource {
            kind: "STRAPI",
            base_url: format!("{}/api", fake.base_url),
            auth_type: "BEARER",
            auth_token: Some("strapi-token".into()),
            ..Default::default()
        },
    )
    .await;
    let brands = insert_connection(
        &app.pool,
        source,
        NewConnection {
            name: "Brands",
            endpoint: "/brands",
            transform: Some(json!({"idField": "slug", "titleField": "name"})),
            ..Default::default()
        },
    )
    .await;
    let products = insert_connection(
        &app.pool,
        source,
        NewConnection {
            name: "Products",
            endpoint: "/products",
            depends_on: Some(brands),
            default_params: Some(json!({"pagination[pageSize]": 100})),
            param_mapping: Some(json!({"filters[brand][slug][$eq]": "$.selected_brand"})),
            transform: Some(json!({"idField": "documentId", "titleField": "name"})),
            ..Default::default()
        },
    )
    .await;
    let metadata = json!({"dataSourceConfig": [
        {"componentName": "brands", "connectionId": brands},
        {"componentName": "products", "connectionId": products, "dependsOn": "selected_brand"}
    ]});
    insert_flow(
        &app.pool,
        meta_flow_id,
        cascade_flow_json(),
        metadata,
        Some(source),
    )
    .await;
    let token = waiting_context(
        &app.pool,
        meta_flow_id,
        json!({"flowInitialData": {"greeting": "Hello"}}),
    )
    .await;
    (fake, token)
}

#[tokio::test]
async fn ping_is_answered_encrypted_with_the_flipped_iv() {
    let app = spawn_flows_app(900).await;
    let (status, answer) = exchange(&app, json!({"version": "3.0", "action": "ping"})).await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"data": {"status": "active"}}));
}

#[tokio::test]
async fn tampered_tag_wrong_key_and_bad_base64_get_421_and_a_bad_signature_432() {
    let app = spawn_flows_app(900).await;
    let ping = json!({"version": "3.0", "action": "ping"});

    let mut tampered = meta_encrypt(&server_public_pem(), &ping).body;
    let mut data = base64_decode(tampered["encrypted_flow_data"].as_str().unwrap());
    let last = data.len() - 1;
    data[last] ^= 0x01;
    tampered["encrypted_flow_data"] = json!(base64_encode(&data));

    let other = wabot::whatsapp::flows_crypto::generate().unwrap();
    let wrong_key = meta_encrypt(&other.public_pem, &ping).body;

    let mut bad_base64 = meta_encrypt(&server_public_pem(), &ping).body;
    bad_base64["encrypted_aes_key"] = json!("not base64 at all!");

    for body in [tampered, wrong_key, bad_base64, json!({"hello": "world"})] {
        let bytes = body.to_string().into_bytes();
        let response = post_raw(&app, &bytes, &sign(&bytes, APP_SECRET)).await;
        assert_eq!(response.status().as_u16(), 421, "{body}");
    }

    let bytes = meta_encrypt(&server_public_pem(), &ping)
        .body
        .to_string()
        .into_bytes();
    let response = post_raw(&app, &bytes, &sign(&bytes, "another-secret")).await;
    assert_eq!(response.status().as_u16(), 432);
    let response = post_raw(&app, &bytes, "sha256=zz").await;
    assert_eq!(response.status().as_u16(), 432);
}

#[tokio::test]
async fn init_data_exchange_back_and_completion_walk_a_brand_product_cascade() {
    let app = spawn_flows_app(900).await;
    let (fake, token) = cascade(&app, "META_FLOW_CASCADE").await;

    let (status, answer) = exchange(
        &app,
        json!({"version": "3.0", "action": "INIT", "flow_token": token}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["screen"], "BRAND_SCREEN");
    assert_eq!(answer["data"]["greeting"], "Hello");
    assert_eq!(
        answer["data"]["brands"],
        json!([{"id": "bosch", "title": "Bosch"}, {"id": "makita", "title": "Makita"}])
    );
    assert_eq!(
        fake.last().header("authorization"),
        Some("Bearer strapi-token")
    );

    let (status, answer) = exchange(
        &app,
        json!({"version": "3.0", "action": "data_exchange", "screen": "BRAND_SCREEN",
               "data": {"selected_brand": "bosch"}, "flow_token": token}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["screen"], "PRODUCT_SCREEN");
    assert_eq!(
        answer["data"]["products"],
        json!([{"id": "p1", "title": "Drill"}, {"id": "p2", "title": "Saw"}])
    );
    assert!(answer["data"].get("error_message").is_none(), "{answer}");
    let seen = fake.last();
    assert_eq!(seen.path, "/api/products");
    assert_eq!(seen.param("filters[brand][slug][$eq]"), Some("bosch"));
    assert_eq!(seen.param("pagination[pageSize]"), Some("100"));

    let (status, answer) = exchange(
        &app,
        json!({"version": "3.0", "action": "BACK", "screen": "BRAND_SCREEN", "data": {}, "flow_token": token}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["screen"], "BRAND_SCREEN");
    assert_eq!(answer["data"]["brands"].as_array().map(Vec::len), Some(2));

    let (_, answer) = exchange(
        &app,
        json!({"version": "3.0", "action": "data_exchange", "screen": "PRODUCT_SCREEN",
               "data": {"selected_product": "p2"}, "flow_token": token}),
    )
    .await;
    // The summary screen declares both picks: the earlier one is carried over.
    assert_eq!(answer["screen"], "CONFIRM_SCREEN");
    assert_eq!(
        answer["data"],
        json!({"selected_brand": "bosch", "selected_product": "p2"})
    );

    let (status, answer) = exchange(
        &app,
        json!({"version": "3.0", "action": "data_exchange", "screen": "CONFIRM_SCREEN",
               "data": {"note": "gift"}, "flow_token": token}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["screen"], "SUCCESS");
    let params = &answer["data"]["extension_message_response"]["params"];
    assert_eq!(params["flow_token"], json!(token));
    assert_eq!(params["selected_brand"], "bosch");
    assert_eq!(params["selected_product"], "p2");
    assert_eq!(params["note"], "gift");
}

#[tokio::test]
async fn an_error_notification_is_acknowledged() {
    let app = spawn_flows_app(900).await;
    let (_, token) = cascade(&app, "META_FLOW_ERR").await;
    let (status, answer) = exchange(
        &app,
        json!({"version": "3.0", "action": "data_exchange", "flow_token": token,
               "data": {"error": "invalid_screen_data", "error_message": "products missing"}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"data": {"acknowledged": true}}));
}

#[tokio::test]
async fn a_flow_token_finds_its_node_in_the_version_its_context_runs_on_after_an_edit() {
    let app = spawn_flows_app(900).await;
    let pool = &app.pool;
    let (_fake, token) = cascade(&app, "META_FLOW_PINNED").await;
    let context = Uuid::parse_str(token.split(':').next().unwrap()).unwrap();
    // The context is pinned to the graph it started on, as the turn stage leaves it.
    let (chatbot, nodes, edges): (Uuid, Value, Value) = sqlx::query_as(
        "SELECT b.id, b.nodes, b.edges FROM chatbots b \
         JOIN conversation_contexts c ON c.\"chatbotId\" = b.id WHERE c.id = $1",
    )
    .bind(context)
    .fetch_one(pool)
    .await
    .unwrap();
    let hash = wabot::engine::version::hash(&nodes, &edges, None);
    sqlx::query(
        "INSERT INTO wabot_chatbot_versions (chatbot_id, hash, name, nodes, edges) \
         VALUES ($1, $2, 'flows bot', $3, $4)",
    )
    .bind(chatbot)
    .bind(&hash)
    .bind(&nodes)
    .bind(&edges)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE conversation_contexts \
         SET variables = jsonb_build_object('__wabot', jsonb_build_object('version', $2::text)) \
         WHERE id = $1",
    )
    .bind(context)
    .bind(&hash)
    .execute(pool)
    .await
    .unwrap();
    // The editor deletes the Flow node.
    sqlx::query(
        "UPDATE chatbots SET nodes = '[{\"id\": \"start-1\", \"type\": \"start\", \"data\": {}}]', \
                \"updatedAt\" = now() WHERE id = $1",
    )
    .bind(chatbot)
    .execute(pool)
    .await
    .unwrap();

    let init = json!({"version": "3.0", "action": "INIT", "flow_token": token});
    let (status, answer) = exchange(&app, init.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["screen"], "BRAND_SCREEN");

    // Without its version the token would name a node the chatbot no longer has.
    sqlx::query("UPDATE conversation_contexts SET variables = '{}' WHERE id = $1")
        .bind(context)
        .execute(pool)
        .await
        .unwrap();
    let (status, _) = exchange(&app, init).await;
    assert_eq!(status, 427);
}

#[tokio::test]
async fn an_unknown_or_finished_flow_token_gets_427() {
    let app = spawn_flows_app(900).await;
    let (_, token) = cascade(&app, "META_FLOW_DEAD").await;
    let unknown = format!("{}:flow-node-1", Uuid::new_v4());
    for bad in [
        unknown.as_str(),
        "no-colon-here",
        "not-a-uuid:flow-node-1",
        "",
        &token.replace("flow-node-1", "other-node"),
    ] {
        let (status, answer) = exchange(
            &app,
            json!({"version": "3.0", "action": "INIT", "flow_token": bad}),
        )
        .await;
        assert_eq!(status, 427, "{bad}");
        assert!(answer.get("error_msg").is_some(), "{answer}");
    }
    let context = Uuid::parse_str(token.split(':').next().unwrap()).unwrap();
    sqlx::query(
        "UPDATE conversation_contexts SET status = 'completed', \"isActive\" = false WHERE id = $1",
    )
    .bind(context)
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, _) = exchange(
        &app,
        json!({"version": "3.0", "action": "INIT", "flow_token": token}),
    )
    .await;
    assert_eq!(status, 427);
}

#[tokio::test]
async fn a_slow_data_source_yields_the_screen_with_an_error_message_instead_of_a_hang() {
    let app = spawn_flows_app(400).await;
    let fake = spawn_source().await;
    let source = insert_source(
        &app.pool,
        NewSource {
            base_url: fake.base_url.clone(),
            ..Default::default()
        },
    )
    .await;
    // The /slow endpoint answers after 10 s; the data source's own timeout is longer
    // than the endpoint's deadline, so the deadline must cut it.
    let metadata = json!({"dataSourceConfig": [
        {"componentName": "brands", "dataSourceId": source, "endpoint": "/slow", "dataKey": "result.rows",
         "transformTo": {"idField": "code", "titleField": "label.en"}}
    ]});
    insert_flow(
        &app.pool,
        "META_FLOW_SLOW",
        cascade_flow_json(),
        metadata,
        None,
    )
    .await;
    let token = waiting_context(&app.pool, "META_FLOW_SLOW", json!({})).await;

    let started = Instant::now();
    let (status, answer) = exchange(
        &app,
        json!({"version": "3.0", "action": "INIT", "flow_token": token}),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the answer waited for the slow source"
    );
    assert_eq!(status, 200);
    assert_eq!(answer["screen"], "BRAND_SCREEN");
    assert_eq!(answer["data"]["brands"], json!([]));
    assert!(
        answer["data"]["error_message"]
            .as_str()
            .is_some_and(|m| m.contains("brands")),
        "{answer}"
    );
}

#[tokio::test]
async fn without_a_key_the_endpoint_answers_503_and_a_bad_key_fails_start_up() {
    let app = crate::helpers::spawn_app().await;
    let bytes = json!({"x": 1}).to_string().into_bytes();
    let response = post_raw(&app, &bytes, &sign(&bytes, APP_SECRET)).await;
    assert_eq!(response.status().as_u16(), 503);

    let mut config = app.config.clone();
    config.flows.private_key = Some(fixture("pkcs8_des3.pem"));
    config.flows.private_key_passphrase = Some("wrong".to_owned().into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = wabot::startup::Application::with_parts(config, app.pool.clone(), listener)
        .err()
        .expect("a key that cannot be loaded fails start-up");
    assert!(
        format!("{err:#}").contains("WABOT_FLOWS_PRIVATE_KEY"),
        "{err:#}"
    );
}

#[test]
fn pkcs1_pkcs8_and_passphrase_protected_keys_load() {
    use wabot::whatsapp::flows_crypto::FlowsKey;
    let pass = Some(secrecy::SecretString::from(PASSPHRASE));
    let expected = server_public_pem();
    for (file, passphrase) in [
        ("pkcs1.pem", None),
        ("pkcs8.pem", None),
        ("pkcs8_aes256.pem", pass.as_ref()),
    ] {
        let key = FlowsKey::load(&fixture(file), passphrase).unwrap();
        assert_eq!(key.public_key_pem().trim(), expected.trim(), "{file}");
    }
    FlowsKey::load(&fixture("pkcs8_des3.pem"), pass.as_ref())
        .expect("openssl genrsa -des3 output loads");
    let err = FlowsKey::load(&fixture("pkcs8_des3.pem"), None).unwrap_err();
    assert!(err.to_string().contains("no passphrase"), "{err}");
}

#[test]
fn the_executor_opens_an_endpoint_flow_with_data_exchange_and_others_with_navigate() {
    use wabot::datasource::flow::{flow_launch, FlowAction};
    use wabot::store::flows::FlowRow;
    let mut flow = FlowRow {
        id: Uuid::new_v4(),
        whatsapp_flow_id: Some("1".into()),
        name: "f".into(),
        flow_json: json!({"version": "7.2", "routing_model": {"A": ["B"], "B": []}, "screens": [{"id": "B"}, {"id": "A"}]}),
        endpoint_uri: None,
        metadata: None,
        data_source_id: None,
        is_active: true,
    };
    let node = json!({"flowInitialData": "{\"name\": \"Ada\"}"});
    let launch = flow_launch(Some(&flow), &node);
    assert_eq!(launch.flow_action, FlowAction::Navigate);
    assert_eq!(launch.screen.as_deref(), Some("A"));
    assert_eq!(launch.data, Some(json!({"name": "Ada"})));

    flow.endpoint_uri = Some("https://bot.example/flows/endpoint".into());
    let launch = flow_launch(Some(&flow), &node);
    assert_eq!(launch.flow_action, FlowAction::DataExchange);
    assert_eq!((launch.screen, launch.data), (None, None));
    let forced: Value = json!({"flowMode": "navigate", "flowInitialScreen": "B"});
    assert_eq!(
        flow_launch(Some(&flow), &forced).screen.as_deref(),
        Some("B")
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn wabot_flows_keygen_writes_a_key_the_server_loads_and_prints_its_public_half() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.pem");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wabot"))
        .args(["flows", "keygen", "--out", path.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(
        printed.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{printed}"
    );
    let key = wabot::whatsapp::flows_crypto::FlowsKey::load(&path, None).unwrap();
    assert_eq!(key.public_key_pem(), printed);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the private key must not be readable by others"
        );
    }
    let again = tokio::process::Command::new(env!("CARGO_BIN_EXE_wabot"))
        .args(["flows", "keygen", "--out", path.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(
        !again.status.success(),
        "an existing key is not overwritten without --force"
    );
}
