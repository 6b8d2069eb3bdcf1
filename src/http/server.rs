//! The listener loop: hyper connections with the limits `axum::serve` lacks.
//!
//! Anyone can open a socket to the webhook URL, so a connection must not be able
//! to hold resources by saying nothing: a request head must arrive whole within
//! `header_timeout` of its first byte (of the accept, for a connection's first
//! request), a connection with no request in flight is closed after `idle_timeout`, a
//! body must arrive whole within `body_timeout`, a declared `Content-Length` above
//! `max_body_bytes` is refused at once with 413, and past `max_connections` new
//! sockets get a 503 and are closed without a task of their own.
//!
//! Bodies are read here, whole, before the router sees the request: every route
//! reads its body whole anyway (signatures are over the exact bytes), and reading it
//! here is what lets a slow or short body get a 408 instead of holding a handler.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::http::{header, HeaderValue, Request, Response, StatusCode, Version};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::config::ServerConfig;

/// What the listener enforces on every connection.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// From accept (or from the end of the previous response) to a complete request
    /// head.
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// From the request head to the end of its body.
    pub body_timeout: Duration,
    /// The largest body any route takes; a larger declared length is refused
    /// before a byte of it is read.
    pub max_body_bytes: usize,
}

impl ServerLimits {
    pub fn from_config(server: &ServerConfig) -> ServerLimits {
        ServerLimits {
            header_timeout: Duration::from_secs(server.header_timeout_secs),
            idle_timeout: Duration::from_secs(server.idle_timeout_secs),
            max_connections: server.max_connections,
            body_timeout: Duration::from_secs(server.body_timeout_secs),
            max_body_bytes: super::webhook::MAX_BODY_BYTES,
        }
    }
}

/// The answer to a connection over the cap, written without waiting.
const OVERLOADED: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Serves `router` on `listener` until `shutdown` is cancelled, then stops
/// accepting, lets every connection finish its in-flight requests and returns once
/// all are closed. The caller bounds that drain with its own deadline.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper starts its header timer when a kept-alive connection goes idle, so
        // it also bounds the wait between requests: set to the header timeout it
        // closed connections idle for 10 s while `idle_timeout` promised a minute,
        // without a word, and a client (Meta) reusing one at that moment lost its
        // request's answer. It is only the backstop now; a head's own deadline is
        // `Activity::head_overdue`.
        .header_read_timeout(limits.header_timeout.max(limits.idle_timeout))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .keep_alive_interval(Some(limits.idle_timeout / 2).filter(|d| !d.is_zero()))
        .keep_alive_timeout(limits.header_timeout);
    let mut last_shed_log: Option<Instant> = None;
    let mut shed_since_log: u64 = 0;

    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close
                // instead of spinning on accept.
                tracing::error!(error = %e, "accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            shed(&stream);
            crate::metrics::connection_refused();
            shed_since_log += 1;
            if last_shed_log.map_or(true, |t| t.elapsed() >= Duration::from_secs(5)) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    shed = shed_since_log,
                    "connection limit reached: new connections answered 503"
                );
                last_shed_log = Some(Instant::now());
                shed_since_log = 0;
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            router.clone(),
            builder.clone(),
            limits.clone(),
            shutdown.clone(),
            permit,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of one connection that did not make it through accept; the listener is
/// fine.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Answers 503 if the socket takes it right now, and closes it.
fn shed(stream: &TcpStream) {
    let _ = stream.try_write(OVERLOADED);
}

async fn connection(
    stream: TcpStream,
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    limits: Arc<ServerLimits>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    // The peer's address, for handlers that count by it (the operator API's
    // failed-token limiter).
    let peer = stream.peer_addr().ok();
    let service = {
        let activity = activity.clone();
        let limits = limits.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            if let Some(peer) = peer {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
            }
            let guard = activity.begin();
            let router = router.clone();
            let limits = limits.clone();
            async move {
                let response = handle(router, &limits, request).await;
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(Tracked {
                        inner: body,
                        _guard: guard,
                    })
                }))
            }
        })
    };
    let stream = Watched {
        inner: stream,
        activity: activity.clone(),
        protocol: Protocol::Undecided(0),
    };
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // hyper's header timeout starts once the protocol is known; a socket that never
    // sends a byte is still in the auto-detection read, so the first head has a
    // deadline of its own.
    let first_head = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(first_head);
    // A select's conditions are read when it starts, not when a branch fires: the
    // sleep has to look again once it fires. (Without that look every connection
    // was cut `header_timeout` after its accept, requests in flight or not: their
    // webhooks were stored but the answers were lost.)
    let mut first_head_armed = true;
    let mut closing = false;
    loop {
        tokio::select! {
            _ = &mut first_head, if first_head_armed => {
                first_head_armed = false;
                if activity.started() {
                    continue;
                }
                tracing::debug!("no request head in time: connection closed");
                return;
            }
            _ = activity.head_overdue(limits.header_timeout) => {
                tracing::debug!("a request head did not arrive whole in time: connection closed");
                return;
            }
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = activity.idle_for(limits.idle_timeout), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Reads the body whole within the limits, then lets the router answer.
async fn handle(
    router: Router,
    limits: &ServerLimits,
    request: Request<Incoming>,
) -> Response<Body> {
    let webhook =
        request.method() == axum::http::Method::POST && request.uri().path() == "/webhook";
    let response = answer(router, limits, request).await;
    if webhook {
        crate::metrics::webhook(response.status().as_u16());
    }
    response
}

async fn answer(
    router: Router,
    limits: &ServerLimits,
    request: Request<Incoming>,
) -> Response<Body> {
    let version = request.version();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, version);
    }
    let (parts, body) = request.into_parts();
    let read = Limited::new(body, limits.max_body_bytes).collect();
    let bytes = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, version);
        }
        // The client went away or sent a malformed chunk.
        Ok(Err(_)) => return refuse(StatusCode::BAD_REQUEST, version),
        Err(_) => {
            static SLOW_BODY: crate::telemetry::Throttle =
                crate::telemetry::Throttle::new("slow_body", 10);
            if let Some(count) = SLOW_BODY.hit() {
                tracing::warn!(
                    timeout_secs = limits.body_timeout.as_secs(),
                    count,
                    "request bodies not received in time (count since the last such line)"
                );
            }
            return refuse(StatusCode::REQUEST_TIMEOUT, version);
        }
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// A refusal that also ends the connection: the rest of the body is never read.
fn refuse(status: StatusCode, version: Version) -> Response<Body> {
    let mut response = Response::new(Body::from(status.canonical_reason().unwrap_or("error")));
    *response.status_mut() = status;
    if version <= Version::HTTP_11 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// When a connection last finished a request, and how many it has in flight.
struct Activity {
    start: Instant,
    /// Whether a request head has arrived at all.
    any: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds from `start` to the end of the last response.
    last_done_ms: AtomicU64,
    /// Milliseconds from `start` (plus one; 0: none) to the first byte read while no
    /// request was in flight: a head has begun and not yet been taken.
    head_since_ms: AtomicU64,
    /// Wakes `head_overdue` when a head begins.
    head_began: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            any: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(0),
            head_began: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Bytes arrived: with no request in flight they begin a head.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0
            && self
                .head_since_ms
                .compare_exchange(0, self.now_ms() + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.head_began.notify_one();
        }
    }

    /// Resolves once a head has been arriving for longer than `timeout` without
    /// becoming a request.
    async fn head_overdue(&self, timeout: Duration) {
        loop {
            let since = self.head_since_ms.load(Ordering::SeqCst);
            if since == 0 {
                self.head_began.notified().await;
                continue;
            }
            let deadline = self.start + Duration::from_millis(since - 1) + timeout;
            tokio::time::sleep_until(deadline).await;
            if self.head_since_ms.load(Ordering::SeqCst) == since {
                return;
            }
        }
    }

    fn started(&self) -> bool {
        self.any.load(Ordering::SeqCst)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.any.store(true, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        // The head it began with is whole.
        self.head_since_ms.store(0, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let now = Instant::now();
            let deadline = if self.in_flight.load(Ordering::SeqCst) > 0 {
                now + timeout
            } else {
                self.start
                    + Duration::from_millis(self.last_done_ms.load(Ordering::SeqCst))
                    + timeout
            };
            if now >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A request in flight; dropped when its response body is done (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let elapsed = self.0.start.elapsed().as_millis();
        self.0
            .last_done_ms
            .store(u64::try_from(elapsed).unwrap_or(u64::MAX), Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in flight until it is sent.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, telling `Activity` when bytes arrive (hyper owns the reads, so this
/// is where the start of a head can be seen). HTTP/1 only: an HTTP/2 connection's
/// frames (pings, settings) flow between requests and begin no head; h2 is bounded
/// by its keep-alive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    protocol: Protocol,
}

/// What the first bytes of a connection said.
enum Protocol {
    /// Fewer bytes than HTTP/2's `PRI ` so far, all of them its prefix (the first
    /// head's deadline from the accept covers this time).
    Undecided(usize),
    Http1,
    Http2,
}

impl Protocol {
    fn read(&mut self, bytes: &[u8]) {
        const PREFACE: &[u8] = b"PRI ";
        if let Protocol::Undecided(seen) = *self {
            let more = &bytes[..bytes.len().min(PREFACE.len() - seen)];
            *self = if PREFACE[seen..].starts_with(more) {
                if seen + more.len() == PREFACE.len() {
                    Protocol::Http2
                } else {
                    Protocol::Undecided(seen + more.len())
                }
            } else {
                Protocol::Http1
            };
        }
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let this = &mut *self;
            this.protocol.read(&buf.filled()[before..]);
            if matches!(this.protocol, Protocol::Http1) {
                this.activity.bytes_read();
            }
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol;

    fn after(reads: &[&[u8]]) -> Protocol {
        let mut protocol = Protocol::Undecided(0);
        for bytes in reads {
            protocol.read(bytes);
        }
        protocol
    }

    #[test]
    fn the_first_bytes_tell_http1_from_http2_even_split_across_reads() {
        assert!(matches!(after(&[b"GET / HTTP/1.1\r\n"]), Protocol::Http1));
        assert!(matches!(after(&[b"POST /webhook"]), Protocol::Http1));
        assert!(matches!(
            after(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]),
            Protocol::Http2
        ));
        assert!(matches!(after(&[b"PR", b"I * HTTP/2.0"]), Protocol::Http2));
        assert!(matches!(after(&[b"P", b"OST /"]), Protocol::Http1));
        assert!(matches!(after(&[b"PR"]), Protocol::Undecided(2)));
        // Once decided, later bytes change nothing.
        assert!(matches!(after(&[b"GET ", b"PRI "]), Protocol::Http1));
    }
}
