//! The database out of reach: the daemon's connections run through a TCP proxy on
//! loopback that the test cuts (the shared PostgreSQL is never stopped). Meta must
//! get a 503, and the delivery it retries later must be stored exactly once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::helpers::spawn_app_with;
use crate::webhook::{count, messages_webhook, now_secs, text};

/// A loopback TCP proxy that can be cut (every open connection closed, new ones
/// closed on accept) and restored.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    /// Cancelled to close every connection open at the time of a cut.
    open: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (cut2, open2, stop2) = (cut.clone(), open.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop2.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                if cut2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let closed = open2.lock().unwrap().clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = closed.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            open,
            stop,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        open.cancel();
        *open = CancellationToken::new();
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test]
async fn an_unreachable_database_gets_503_and_the_retried_delivery_is_stored_once() {
    let server = url::Url::parse(&crate::helpers::server_url()).unwrap();
    let upstream = format!(
        "{}:{}",
        server.host_str().unwrap_or("127.0.0.1"),
        server.port().unwrap_or(5432)
    );
    let proxy = Proxy::start(upstream).await;
    let mut direct_url = None;
    let app = spawn_app_with(|config| {
        direct_url = Some(config.database_url.clone());
        let mut proxied = url::Url::parse(&config.database_url).unwrap();
        proxied.set_port(Some(proxy.port)).unwrap();
        config.database_url = proxied.to_string();
        config.database.acquire_timeout_ms = 1_000;
    })
    .await;
    // A pool that bypasses the proxy, to look at what was stored.
    let direct: PgPool = PgPool::connect(&direct_url.unwrap()).await.unwrap();

    let wa_id = "16505550050";
    let warm = messages_webhook(
        wa_id,
        "Di",
        vec![text(wa_id, "wamid.WARM", "before", now_secs())],
    );
    assert_eq!(app.post_webhook(&warm).await.status(), 200);

    proxy.cut();
    let body = messages_webhook(
        wa_id,
        "Di",
        vec![text(wa_id, "wamid.OUTAGE", "during", now_secs())],
    );
    let started = Instant::now();
    let response = app.post_webhook(&body).await;
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "503 within a bounded time"
    );
    assert_eq!(count(&direct, "messages").await, 1);
    assert_eq!(count(&direct, "webhook_events").await, 1);

    proxy.restore();
    // Meta retries; the first retries may still meet the pool's broken connections.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = app.post_webhook(&body).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "the delivery is stored once the database is back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And a duplicate retry after that.
    assert_eq!(app.post_webhook(&body).await.status(), 200);
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE content ->> 'whatsappMessageId' = 'wamid.OUTAGE'",
    )
    .fetch_one(&direct)
    .await
    .unwrap();
    assert_eq!(rows, 1);
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM turn_jobs j JOIN messages m ON m.id = j.message_id \
         WHERE m.content ->> 'whatsappMessageId' = 'wamid.OUTAGE'",
    )
    .fetch_one(&direct)
    .await
    .unwrap();
    assert_eq!(jobs, 1);
    direct.close().await;
}
