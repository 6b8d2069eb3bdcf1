//! The egress guard against real loopback servers: rest_api requests and data sources
//! refuse private addresses given as literals, as names, and behind redirects (every
//! hop), and the operator's allowance opens exactly what it lists.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use wabot::datasource::{resolve_connection_items, DataSourceClient, DataSourceError};
use wabot::egress::rest_api::{HttpOptions, ReqwestHttp};
use wabot::engine::http::{HttpClient, HttpError, HttpRequest};

use crate::datasource_support::{
    insert_connection, insert_source, loopback_client, spawn_source, NewConnection, NewSource,
};
use crate::helpers;

/// A server on `ip` that answers `/ok` and redirects `/to?location=...` there.
async fn spawn_redirector(ip: &str) -> SocketAddr {
    #[derive(serde::Deserialize)]
    struct To {
        location: String,
    }
    let app = Router::new()
        .route("/ok", get(|| async { "reached" }))
        .route(
            "/to",
            get(|Query(to): Query<To>| async move {
                (StatusCode::FOUND, [(header::LOCATION, to.location)]).into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .expect("bind a loopback address");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    addr
}

fn client(allowed: &[&str]) -> ReqwestHttp {
    ReqwestHttp::with_options(HttpOptions {
        allowed_networks: allowed
            .iter()
            .map(|n| n.parse().expect("network"))
            .collect(),
        allow_all: false,
        max_response_bytes: 1 << 16,
    })
    .expect("client")
}

fn get_request(url: String) -> HttpRequest {
    HttpRequest {
        method: http::Method::GET,
        url,
        headers: Vec::new(),
        body: None,
        timeout: Duration::from_secs(5),
    }
}

fn redirect_to(from: SocketAddr, location: &str) -> String {
    let location: String = url::form_urlencoded::byte_serialize(location.as_bytes()).collect();
    format!("http://{from}/to?location={location}")
}

#[tokio::test]
async fn rest_api_literals_and_names_of_private_addresses_are_refused() {
    let server = spawn_redirector("127.0.0.1").await;
    let port = server.port();
    let closed = client(&[]);
    for url in [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://[::ffff:127.0.0.1]:{port}/ok"),
        format!("http://localhost:{port}/ok"),
        format!("http://[::1]:{port}/ok"),
    ] {
        let result = closed.send(get_request(url.clone())).await;
        assert!(
            matches!(&result, Err(HttpError::Forbidden(m)) if m.contains("not an allowed address")),
            "{url}: {result:?}"
        );
    }
    let open = client(&["127.0.0.0/8"]);
    for url in [
        format!("http://127.0.0.1:{port}/ok"),
        format!("http://[::ffff:127.0.0.1]:{port}/ok"),
    ] {
        let response = open.send(get_request(url.clone())).await.expect(&url);
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"reached"[..])
        );
    }
}

#[tokio::test]
async fn rest_api_redirects_are_checked_at_every_hop() {
    // The first hop is allowed (127.0.0.2 only); where it redirects decides.
    let first = spawn_redirector("127.0.0.2").await;
    let elsewhere = spawn_redirector("127.0.0.1").await;
    let http = client(&["127.0.0.2/32"]);

    let same = http
        .send(get_request(redirect_to(
            first,
            &format!("http://{first}/ok"),
        )))
        .await
        .expect("a redirect to an allowed address is followed");
    assert_eq!(same.body, b"reached");

    for location in [
        // An IP literal, which no resolver sees.
        format!("http://{elsewhere}/ok"),
        format!("http://[::ffff:127.0.0.1]:{}/ok", elsewhere.port()),
        // A name, checked by the resolver when the hop connects.
        format!("http://localhost:{}/ok", elsewhere.port()),
        // A second hop to a private address after an allowed first one.
        redirect_to(first, &format!("http://{elsewhere}/ok")),
        redirect_to(first, &format!("http://localhost:{}/ok", elsewhere.port())),
    ] {
        let result = http.send(get_request(redirect_to(first, &location))).await;
        assert!(
            matches!(&result, Err(HttpError::Forbidden(m)) if m.contains("not an allowed address")),
            "{location}: {result:?}"
        );
    }

    // Allowed everywhere, the same redirects arrive.
    let open = client(&["127.0.0.0/8"]);
    let followed = open
        .send(get_request(redirect_to(
            first,
            &format!("http://{elsewhere}/ok"),
        )))
        .await
        .expect("followed when allowed");
    assert_eq!(followed.body, b"reached");
}

#[tokio::test]
async fn rest_api_errors_do_not_carry_the_url_or_its_query() {
    // Nothing listens on port 9 (discard): the connection is refused.
    let http = client(&["127.0.0.0/8"]);
    let result = http
        .send(get_request(
            "http://user:pw-secret-1@127.0.0.1:9/x?api_key=query-secret-2".into(),
        ))
        .await;
    let Err(HttpError::Transport(message)) = &result else {
        panic!("expected a transport error: {result:?}");
    };
    assert!(!message.contains("query-secret-2"), "{message}");
    assert!(!message.contains("pw-secret-1"), "{message}");
}

#[tokio::test]
async fn data_sources_use_the_same_guard() {
    let pool = helpers::fresh_pool().await;
    let fake = spawn_source().await;
    let port = fake.base_url.rsplit(':').next().expect("port").to_owned();
    let closed = DataSourceClient::new(&Default::default());
    let open = loopback_client();
    for (base_url, allowed_when_open) in [
        (format!("http://[::ffff:127.0.0.1]:{port}"), true),
        (format!("http://[::ffff:7f00:1]:{port}"), true),
        (format!("http://localhost:{port}"), true),
        (format!("http://127.0.0.1:{port}"), true),
        // ::1 is outside the allowance of 127.0.0.0/8.
        (format!("http://[::1]:{port}"), false),
    ] {
        let source = insert_source(
            &pool,
            NewSource {
                base_url: base_url.clone(),
                ..Default::default()
            },
        )
        .await;
        let connection = insert_connection(
            &pool,
            source,
            NewConnection {
                endpoint: "/rest/items",
                data_key: Some("result.rows"),
                ..Default::default()
            },
        )
        .await;
        let seen = fake.requests().len();
        let refused = resolve_connection_items(&pool, &closed, connection, &json!({})).await;
        assert!(
            matches!(refused, Err(DataSourceError::Blocked(_))),
            "{base_url}: {refused:?}"
        );
        let opened = resolve_connection_items(&pool, &open, connection, &json!({})).await;
        if allowed_when_open {
            opened.expect(&base_url);
            assert_eq!(fake.requests().len(), seen + 1, "{base_url} reached once");
        } else {
            assert!(
                matches!(opened, Err(DataSourceError::Blocked(_))),
                "{base_url}: {opened:?}"
            );
            assert_eq!(fake.requests().len(), seen, "{base_url} never reached");
        }
    }
}
