//! `whatsapp_config.api_version` decides the Graph API version of every call: the
//! fake Graph API on loopback serves only v24.0, so the path a call took shows which
//! version the client used.

use serde_json::json;
use wabot::credentials::CredentialStore;
use wabot::store::whatsapp_config::{self, NewConfig};
use wabot::whatsapp::graph::GraphClient;

use crate::helpers;
use crate::support_graph::{FakeGraph, VERSION};

#[tokio::test]
async fn the_active_rows_api_version_is_the_one_called() {
    let pool = helpers::fresh_pool().await;
    let graph = FakeGraph::start().await;
    let mut config = helpers::test_config("postgres://unused");
    config.whatsapp.graph_api_base = graph.url();
    // The configured version is one the fake does not serve.
    config.whatsapp.graph_api_version = "v23.0".into();
    let client = GraphClient::new(&config.whatsapp).expect("client");
    let store = CredentialStore::new(pool.clone(), config.whatsapp.clone());
    let body = json!({"messaging_product": "whatsapp", "to": "905551112233", "type": "text",
                      "text": {"body": "hi"}});
    let path = |version: &str| format!("/{version}/{}/messages", helpers::PHONE_NUMBER_ID);

    // No row: the configured version.
    let creds = store.current().await.expect("credentials");
    assert_eq!(creds.api_version, None);
    assert!(client.send_message(&creds, &body).await.is_err());
    assert_eq!(graph.requests().last().expect("a call").path, path("v23.0"));

    // An active row (its api_version defaults to v24.0) wins.
    whatsapp_config::insert(
        &pool,
        &NewConfig {
            phone_number_id: helpers::PHONE_NUMBER_ID,
            business_account_id: helpers::BUSINESS_ACCOUNT_ID,
            access_token: helpers::ACCESS_TOKEN,
            webhook_verify_token: helpers::VERIFY_TOKEN,
            app_secret: None,
            is_active: true,
        },
    )
    .await
    .expect("row");
    store.invalidate().await;
    let creds = store.current().await.expect("credentials");
    assert_eq!(creds.api_version.as_deref(), Some(VERSION));
    client
        .send_message(&creds, &body)
        .await
        .expect("accepted on the row's version");
    assert_eq!(graph.requests().last().expect("a call").path, path(VERSION));

    // An admin's change is followed; a value that is no version is not.
    for (stored, used) in [("v25.0", "v25.0"), ("latest", "v23.0")] {
        sqlx::query("UPDATE whatsapp_config SET api_version = $1")
            .bind(stored)
            .execute(&pool)
            .await
            .expect("update");
        store.invalidate().await;
        let creds = store.current().await.expect("credentials");
        assert!(
            client.send_message(&creds, &body).await.is_err(),
            "{stored}"
        );
        assert_eq!(
            graph.requests().last().expect("a call").path,
            path(used),
            "{stored}"
        );
    }
}
