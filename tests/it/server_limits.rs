//! The listener's limits over real sockets: silent and half-written connections,
//! idle keep-alives, the connection cap, slow and oversized bodies, and a drain that
//! lets in-flight requests finish. Most run `http::server::serve` on a small router;
//! the oversized body goes through the whole application.
//!
//! The timeouts here are seconds and the guards around each wait are many times
//! longer: a guard that fires means the server never closed, not that it was slow.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wabot::http::server::{serve, ServerLimits};

use crate::helpers::spawn_app;

/// How long a test waits for something the server must do on its own.
const GUARD: Duration = Duration::from_secs(20);

fn limits() -> ServerLimits {
    ServerLimits {
        header_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        max_connections: 64,
        body_timeout: Duration::from_secs(60),
        max_body_bytes: 1024,
    }
}

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(limits: ServerLimits) -> Server {
    let router = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "slow"
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, router, limits, shutdown.clone()));
    Server {
        addr,
        shutdown,
        task,
    }
}

/// Reads until the server closes the connection; what it sent before that.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(GUARD, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    out
}

/// Reads one response head and its `content-length` body, leaving the connection
/// open.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1];
    tokio::time::timeout(GUARD, async {
        while !out.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed inside a response head");
            out.push(buf[0]);
        }
        let head = String::from_utf8_lossy(&out).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.unwrap();
        out.extend_from_slice(&body);
    })
    .await
    .expect("a response arrives");
    String::from_utf8(out).unwrap()
}

/// Writes a header every 250 ms for ten seconds, far past any header timeout here;
/// whether the server closed the connection rather than answer.
async fn trickle_headers_until_closed(stream: &mut TcpStream) -> bool {
    for i in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if stream
            .write_all(format!("x-h{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            return true;
        }
    }
    read_to_close(stream).await.is_empty()
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let server = start(ServerLimits {
        header_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let sent = read_to_close(&mut stream).await;
    assert!(
        !String::from_utf8_lossy(&sent).contains("200 OK"),
        "nothing was asked, nothing answered"
    );
}

#[tokio::test]
async fn a_half_written_request_line_is_closed_after_the_header_timeout() {
    let server = start(ServerLimits {
        header_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"POST /echo HT").await.unwrap();
    read_to_close(&mut stream).await;

    // A request that trickles in header by header is cut off the same way: the
    // timeout is for the whole head, not for each read.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let closed = trickle_headers_until_closed(&mut stream).await;
    assert!(closed, "a trickled head got an answer instead of a close");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = start(ServerLimits {
        idle_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // The connection is kept alive for a second request...
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    // ...and closed once it has been idle (the header timeout is a minute here).
    let rest = read_to_close(&mut stream).await;
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
}

#[tokio::test]
async fn a_request_in_flight_when_the_first_head_deadline_passes_is_answered() {
    // The first head's deadline counts from the accept; a request that began before
    // it is not cut off by it, nor is the connection afterwards.
    let server = start(ServerLimits {
        header_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let slow = read_response(&mut stream).await;
    assert!(slow.starts_with("HTTP/1.1 200"), "{slow}");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let next = read_response(&mut stream).await;
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");
}

#[tokio::test]
async fn a_kept_alive_connection_idle_past_the_header_timeout_still_answers() {
    // The wait between requests is the idle timeout's to bound, not the header
    // timeout's: a client that reuses a connection after a pause (Meta does) must
    // not find it closed under its next request.
    let server = start(ServerLimits {
        header_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

#[tokio::test]
async fn a_later_head_that_trickles_is_closed_after_the_header_timeout() {
    let server = start(ServerLimits {
        header_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut stream).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // The second head trickles in header by header, for far longer than a second.
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let closed = trickle_headers_until_closed(&mut stream).await;
    assert!(
        closed,
        "a trickled second head got an answer instead of a close"
    );
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_and_served_again_once_one_closes() {
    let server = start(ServerLimits {
        max_connections: 2,
        ..limits()
    })
    .await;
    let held_a = TcpStream::connect(server.addr).await.unwrap();
    let _held_b = TcpStream::connect(server.addr).await.unwrap();
    // Give the accept loop time to take both before the third arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut excess = TcpStream::connect(server.addr).await.unwrap();
    let _ = excess.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let answer = String::from_utf8_lossy(&read_to_close(&mut excess).await).into_owned();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "an excess connection was served: {answer}"
    );

    drop(held_a);
    // The permit comes back when the server notices the close; try until it has.
    let served = tokio::time::timeout(GUARD, async {
        loop {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            let _ = stream
                .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await;
            let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
            if answer.starts_with("HTTP/1.1 200") {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a connection is served again once one closed");
    assert!(served.ends_with("ok"), "{served}");
}

#[tokio::test]
async fn a_body_slower_than_the_body_timeout_gets_408_and_a_close() {
    let server = start(ServerLimits {
        body_timeout: Duration::from_secs(1),
        ..limits()
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    // A body that arrives in time is read whole and handed to the route.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n0123456789")
        .await
        .unwrap();
    let answer = read_response(&mut stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n10"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413() {
    let server = start(limits()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let chunk = vec![b'a'; 800];
    let mut request =
        b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(&chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn a_huge_content_length_with_a_short_body_gets_413_from_the_application() {
    let app = spawn_app().await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            b"POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              x-hub-signature-256: sha256=00\r\ncontent-length: 4294967296\r\n\r\n{}",
        )
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // The flows endpoint is behind the same listener.
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST {} HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999999\r\n\r\nab",
                app.config.flows.endpoint_path
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_to_close(&mut stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // And the application still answers ordinary requests.
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_closes_idle_ones_and_returns() {
    let server = start(limits()).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));

    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown.cancel();

    let answer = String::from_utf8_lossy(&read_to_close(&mut busy).await).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("slow"),
        "{answer}"
    );
    assert!(read_to_close(&mut idle).await.is_empty());
    tokio::time::timeout(GUARD, server.task)
        .await
        .expect("serve returns once drained")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "the listener is closed"
    );
}
