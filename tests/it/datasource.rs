//! Data sources and connections against real HTTP servers on loopback.

use serde_json::json;
use wabot::datasource::{resolve_connection_items, DataSourceError, Item};

use crate::datasource_support::*;
use crate::helpers::fresh_pool;

fn item(id: &str, title: &str, description: Option<&str>) -> Item {
    Item {
        id: id.into(),
        title: title.into(),
        description: description.map(Into::into),
    }
}

#[tokio::test]
async fn each_auth_type_reaches_the_data_source_as_specified() {
    let pool = fresh_pool().await;
    let fake = spawn_source().await;
    let client = loopback_client();
    let cases = [
        ("NONE", None, None),
        ("BEARER", Some("tok-bearer"), None),
        ("API_KEY", Some("tok-key"), Some("X-Api-Key")),
        ("BASIC", Some("dXNlcjpwYXNz"), None),
    ];
    for (auth_type, token, header) in cases {
        let source = insert_source(
            &pool,
            NewSource {
                base_url: fake.base_url.clone(),
                auth_type,
                auth_token: token.map(Into::into),
                auth_header_name: header.map(Into::into),
                headers: Some(json!({"X-Tenant": "acme"})),
                ..Default::default()
            },
        )
        .await;
        let conn = insert_connection(
            &pool,
            source,
            NewConnection {
                endpoint: "/rest/items",
                data_key: Some("result.rows"),
                transform: Some(json!({"idField": "code", "titleField": "label.en"})),
                ..Default::default()
            },
        )
        .await;
        resolve_connection_items(&pool, &client, conn, &json!({}))
            .await
            .unwrap();
        let seen = fake.last();
        assert_eq!(seen.header("x-tenant"), Some("acme"), "{auth_type}");
        match auth_type {
            "NONE" => {
                assert_eq!(seen.header("authorization"), None);
                assert_eq!(seen.header("x-api-key"), None);
            }
            "BEARER" => assert_eq!(seen.header("authorization"), Some("Bearer tok-bearer")),
            "API_KEY" => {
                assert_eq!(seen.header("x-api-key"), Some("tok-key"));
                assert_eq!(seen.header("authorization"), None);
            }
            _ => assert_eq!(seen.header("authorization"), Some("Basic dXNlcjpwYXNz")),
        }
    }
}

#[tokio::test]
async fn data_key_and_transform_config_shape_the_items() {
    let pool = fresh_pool().await;
    let fake = spawn_source().await;
    let source = insert_source(
        &pool,
        NewSource {
            base_url: fake.base_url.clone(),
            ..Default::default()
        },
    )
    .await;
    let conn = insert_connection(
        &pool,
        source,
        NewConnection {
            endpoint: "rest/items",
            default_params: Some(json!({"limit": 50, "tags": ["a", "b"]})),
            data_key: Some("result.rows"),
            transform: Some(
                json!({"idField": "code", "titleField": "label.en", "descriptionField": "info"}),
            ),
            ..Default::default()
        },
    )
    .await;
    let items = resolve_connection_items(&pool, &loopback_client(), conn, &json!({}))
        .await
        .unwrap();
    // The row without a `code` cannot be a dropdown entry and is left out.
    assert_eq!(
        items,
        vec![item("A1", "Alpha", Some("first")), item("B2", "Beta", None)]
    );
    let seen = fake.last();
    assert_eq!(seen.path, "/rest/items");
    assert_eq!(seen.param("limit"), Some("50"));
    assert_eq!(seen.query["tags"], vec!["a", "b"]);
}

#[tokio::test]
async fn strapi_envelopes_and_param_mapping_jsonpath_feed_a_cascade() {
    let pool = fresh_pool().await;
    let fake = spawn_source().await;
    let client = loopback_client();
    let source = insert_source(
        &pool,
        NewSource {
            kind: "STRAPI",
            base_url: format!("{}/api", fake.base_url),
            ..Default::default()
        },
    )
    .await;
    let brands = insert_connection(
        &pool,
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
        &pool,
        source,
        NewConnection {
            name: "Products",
            endpoint: "/products",
            depends_on: Some(brands),
            param_mapping: Some(json!({"filters[brand][slug][$eq]": "$.form.brand"})),
            transform: Some(
                json!({"idField": "documentId", "titleField": "name", "descriptionField": "price"}),
            ),
            ..Default::default()
        },
    )
    .await;

    let got = resolve_connection_items(&pool, &client, brands, &json!({}))
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![item("bosch", "Bosch", None), item("makita", "Makita", None)]
    );

    let got = resolve_connection_items(
        &pool,
        &client,
        products,
        &json!({"form": {"brand": "bosch"}}),
    )
    .await
    .unwrap();
    assert_eq!(
        got,
        vec![
            item("p1", "Drill", Some("120")),
            item("p2", "Saw", Some("90"))
        ]
    );
    assert_eq!(
        fake.last().param("filters[brand][slug][$eq]"),
        Some("bosch")
    );

    let err = resolve_connection_items(&pool, &client, products, &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, DataSourceError::MissingInput { .. }), "{err}");
    assert!(err.to_string().contains("$.form.brand"), "{err}");
}

#[tokio::test]
async fn graphql_sends_the_configured_query_with_mapped_variables() {
    let pool = fresh_pool().await;
    let fake = spawn_source().await;
    let client = loopback_client();
    let query = "query($brand: String!) { products(brand: $brand) { documentId name } }";
    let source = insert_source(
        &pool,
        NewSource {
            kind: "GRAPHQL",
            base_url: fake.base_url.clone(),
            config: Some(json!({"query": query, "variables": {"limit": 10}})),
            ..Default::default()
        },
    )
    .await;
    let conn = insert_connection(
        &pool,
        source,
        NewConnection {
            endpoint: "/graphql",
            param_mapping: Some(json!({"brand": "$.brand"})),
            transform: Some(json!({"idField": "documentId", "titleField": "name"})),
            ..Default::default()
        },
    )
    .await;
    let got = resolve_connection_items(&pool, &client, conn, &json!({"brand": "makita"}))
        .await
        .unwrap();
    assert_eq!(got, vec![item("p3", "Grinder", None)]);
    let seen = fake.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.body["query"], query);
    assert_eq!(
        seen.body["variables"],
        json!({"limit": 10, "brand": "makita"})
    );

    // GraphQL reports failures with HTTP 200 and `errors`.
    let err = resolve_connection_items(&pool, &client, conn, &json!({"brand": ""}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("brand is required"), "{err}");
}

#[tokio::test]
async fn a_private_address_is_refused_when_not_allowed() {
    let pool = fresh_pool().await;
    let fake = spawn_source().await;
    let strict =
        wabot::datasource::DataSourceClient::new(&wabot::config::DataSourceConfig::default());
    let port = fake.base_url.rsplit(':').next().unwrap().to_owned();
    for base_url in [fake.base_url.clone(), format!("http://localhost:{port}")] {
        let source = insert_source(
            &pool,
            NewSource {
                base_url,
                ..Default::default()
            },
        )
        .await;
        let conn = insert_connection(
            &pool,
            source,
            NewConnection {
                endpoint: "/rest/items",
                ..Default::default()
            },
        )
        .await;
        let err = resolve_connection_items(&pool, &strict, conn, &json!({}))
            .await
            .unwrap_err();
        assert!(matches!(err, DataSourceError::Blocked(_)), "{err}");
        assert!(
            err.to_string()
                .contains("WABOT_DATASOURCE_ALLOWED_NETWORKS"),
            "{err}"
        );
    }
    assert!(
        fake.requests().is_empty(),
        "nothing may reach a refused address"
    );
}

#[tokio::test]
async fn timeouts_size_caps_and_cross_host_redirects_are_enforced() {
    let pool = fresh_pool().await;
    let fake = spawn_source().await;
    let config = wabot::config::DataSourceConfig {
        allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        max_response_bytes: 16 * 1024,
        ..Default::default()
    };
    let client = wabot::datasource::DataSourceClient::new(&config);
    let source = insert_source(
        &pool,
        NewSource {
            base_url: fake.base_url.clone(),
            timeout: Some(300),
            ..Default::default()
        },
    )
    .await;
    let mut run = Vec::new();
    for endpoint in ["/slow", "/big", "/redirect-away"] {
        let conn = insert_connection(
            &pool,
            source,
            NewConnection {
                endpoint,
                ..Default::default()
            },
        )
        .await;
        run.push(
            resolve_connection_items(&pool, &client, conn, &json!({}))
                .await
                .unwrap_err(),
        );
    }
    assert!(
        matches!(run[0], DataSourceError::Timeout(300)),
        "{}",
        run[0]
    );
    assert!(matches!(run[1], DataSourceError::TooLarge(_)), "{}", run[1]);
    assert!(matches!(run[2], DataSourceError::Redirect(_)), "{}", run[2]);
}

#[tokio::test]
async fn the_seed_validation_rules_give_clear_errors() {
    let pool = fresh_pool().await;
    let client = loopback_client();
    let cases = [
        (
            NewSource {
                base_url: "http://127.0.0.1:9".into(),
                auth_type: "BEARER",
                ..Default::default()
            },
            "needs an auth_token",
        ),
        (
            NewSource {
                base_url: "http://127.0.0.1:9".into(),
                auth_type: "API_KEY",
                auth_token: Some("k".into()),
                ..Default::default()
            },
            "needs an auth_header_name",
        ),
        (
            NewSource {
                base_url: "ftp://example.com".into(),
                ..Default::default()
            },
            "not a valid http(s) URL",
        ),
    ];
    for (source, expected) in cases {
        let id = insert_source(&pool, source).await;
        let conn = insert_connection(
            &pool,
            id,
            NewConnection {
                endpoint: "/x",
                ..Default::default()
            },
        )
        .await;
        let err = resolve_connection_items(&pool, &client, conn, &json!({}))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{err}");
    }
    let id = insert_source(
        &pool,
        NewSource {
            base_url: "http://127.0.0.1:9".into(),
            ..Default::default()
        },
    )
    .await;
    let conn = insert_connection(
        &pool,
        id,
        NewConnection {
            endpoint: "https://elsewhere.example/x",
            ..Default::default()
        },
    )
    .await;
    let err = resolve_connection_items(&pool, &client, conn, &json!({}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("must be a path under base_url"),
        "{err}"
    );
}

#[tokio::test]
async fn wabot_connection_test_prints_the_transformed_items() {
    let url = crate::helpers::create_empty_database().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    wabot::store::migrate(&pool).await.unwrap();
    let fake = spawn_source().await;
    let source = insert_source(
        &pool,
        NewSource {
            kind: "STRAPI",
            base_url: format!("{}/api", fake.base_url),
            ..Default::default()
        },
    )
    .await;
    let conn = insert_connection(
        &pool,
        source,
        NewConnection {
            endpoint: "/products",
            param_mapping: Some(json!({"filters[brand][slug][$eq]": "$.brand"})),
            transform: Some(json!({"idField": "documentId", "titleField": "name"})),
            ..Default::default()
        },
    )
    .await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wabot"))
        .args([
            "connection",
            "test",
            &conn.to_string(),
            "--input",
            r#"{"brand":"makita"}"#,
        ])
        .env("DATABASE_URL", &url)
        .env("WABOT_DATASOURCE_ALLOWED_NETWORKS", "127.0.0.0/8")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Vec<Item> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed, vec![item("p3", "Grinder", None)]);
}
