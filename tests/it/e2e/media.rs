//! Inbound media downloaded durably: a media message's download job is written with
//! the message; the media stage resolves the id on the fake Graph API (wabot's own,
//! `dev::fake_graph`, which serves media through `dev::fake_media`), streams the
//! bytes into the media store (a directory, or `object_store`'s in-memory store
//! through the same trait), checks the sha256 and records where the file is in the
//! message's content, or why it gave up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use wabot::config::Config;
use wabot::dev::fake_graph::{self, FakeGraph, StatusOptions};
use wabot::dev::fake_media::Knobs;
use wabot::media::object::ObjectMedia;
use wabot::media::{read_all, MediaStore};

use super::{eventually, CUSTOMER, CUSTOMER_NAME};
use crate::helpers::{self, spawn_app_with_media, TestApp};
use crate::webhook::{messages_webhook, now_secs};

/// Deterministic bytes that do not compress to nothing.
fn bytes(len: usize, seed: u8) -> Vec<u8> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

struct MediaApp {
    app: TestApp,
    graph: Arc<FakeGraph>,
}

/// Where a test's media goes.
enum Store {
    /// `WABOT_MEDIA_DIR` (the test sets it).
    Dir,
    /// This store, through the same trait (`object_store`'s in-memory one).
    Given(Arc<dyn MediaStore>),
}

/// The daemon (worker on) with wabot's fake Graph API, media downloads polled
/// every 50 ms and retried after 20 ms.
async fn start(store: Store, configure: impl FnOnce(&mut Config)) -> MediaApp {
    let (graph, url) = fake_graph::start(
        "127.0.0.1:0".parse().unwrap(),
        fake_graph::Options {
            run: "media".into(),
            app_secret: helpers::APP_SECRET.into(),
            phone_number_id: helpers::PHONE_NUMBER_ID.into(),
            statuses: StatusOptions {
                enabled: false,
                delay: Duration::from_millis(10),
                redeliver: false,
            },
        },
    )
    .await
    .unwrap();
    let media = match store {
        Store::Dir => None,
        Store::Given(store) => Some(store),
    };
    let app = spawn_app_with_media(
        |c| {
            c.worker.enabled = true;
            c.worker.lease_secs = 5;
            c.whatsapp.graph_api_base = url;
            c.whatsapp.graph_timeout_ms = 2_000;
            c.media.retry_base_ms = 20;
            c.media.max_attempts = 3;
            configure(c);
        },
        media,
    )
    .await;
    MediaApp { app, graph }
}

impl MediaApp {
    async fn say(&self, messages: Vec<Value>) {
        let body = messages_webhook(CUSTOMER, CUSTOMER_NAME, messages);
        let response = self.app.post_webhook(&body).await;
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }
}

fn media_message(wamid: &str, kind: &str, media: Value) -> Value {
    let mut m = json!({"from": CUSTOMER, "id": wamid, "timestamp": now_secs().to_string(),
                       "type": kind});
    m[kind] = media;
    m
}

/// `content.media` of the message `wamid`.
async fn media_of(pool: &PgPool, wamid: &str) -> Value {
    sqlx::query_scalar(
        "SELECT coalesce(content -> 'media', 'null'::jsonb) FROM messages \
         WHERE content ->> 'whatsappMessageId' = $1",
    )
    .bind(wamid)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn finished(pool: &PgPool, n: i64) {
    eventually(
        pool,
        "SELECT count(*) FROM wabot_media_jobs WHERE done_at IS NOT NULL",
        n,
    )
    .await;
}

/// The three everyday kinds, posted in one webhook; each one's bytes.
async fn send_three(m: &MediaApp) -> Vec<(&'static str, Vec<u8>)> {
    let image = bytes(40_000, 1);
    let voice = bytes(120_000, 2);
    let document = bytes(300_000, 3);
    let media = &m.graph.media;
    let image_sha = media.put("3001", image.clone(), "image/jpeg");
    let voice_sha = media.put("3002", voice.clone(), "audio/ogg; codecs=opus");
    let document_sha = media.put("3003", document.clone(), "application/pdf");
    m.say(vec![
        media_message(
            "wamid.M.IMG",
            "image",
            json!({"id": "3001", "mime_type": "image/jpeg", "sha256": image_sha,
                   "caption": "the broken part"}),
        ),
        media_message(
            "wamid.M.VOICE",
            "audio",
            json!({"id": "3002", "mime_type": "audio/ogg; codecs=opus", "sha256": voice_sha,
                   "voice": true}),
        ),
        media_message(
            "wamid.M.DOC",
            "document",
            json!({"id": "3003", "mime_type": "application/pdf", "sha256": document_sha,
                   "filename": "invoice.pdf"}),
        ),
    ])
    .await;
    // The jobs were committed with the messages, before the 200.
    let jobs: Vec<(String, String)> = sqlx::query_as(
        "SELECT j.kind, j.media_id FROM wabot_media_jobs j \
         JOIN messages m ON m.id = j.message_id ORDER BY j.id",
    )
    .fetch_all(&m.app.pool)
    .await
    .unwrap();
    assert_eq!(
        jobs,
        [("image", "3001"), ("audio", "3002"), ("document", "3003")]
            .map(|(k, i)| (k.to_owned(), i.to_owned()))
    );
    vec![
        ("wamid.M.IMG", image),
        ("wamid.M.VOICE", voice),
        ("wamid.M.DOC", document),
    ]
}

/// Each message's stored location names bytes equal to what Meta served.
async fn check_stored(pool: &PgPool, store: &dyn MediaStore, sent: &[(&str, Vec<u8>)]) {
    for (wamid, original) in sent {
        let media = media_of(pool, wamid).await;
        let stored = &media["stored"];
        assert_eq!(stored["store"], store.kind(), "{wamid}: {media}");
        assert_eq!(stored["size"], original.len(), "{wamid}");
        assert_eq!(
            stored["sha256"],
            hex::encode(Sha256::digest(original)),
            "{wamid}"
        );
        let key = stored["key"].as_str().unwrap();
        assert_eq!(&read_all(store, key).await.unwrap(), original, "{wamid}");
    }
    let results: Vec<(String, i64)> =
        sqlx::query_as("SELECT result, count(*) FROM wabot_media_jobs GROUP BY result")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(results, [("stored".to_owned(), 3)]);
}

#[tokio::test]
async fn an_image_a_voice_note_and_a_document_are_downloaded_checked_and_stored_in_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let m = start(Store::Dir, |c| {
        c.media.dir = root.clone();
    })
    .await;
    let sent = send_three(&m).await;
    finished(&m.app.pool, 3).await;
    let store = wabot::media::dir::DirStore::new(root.clone());
    check_stored(&m.app.pool, &store, &sent).await;

    // Files named by kind, month and message, with the type's extension.
    let voice = media_of(&m.app.pool, "wamid.M.VOICE").await;
    let key = voice["stored"]["key"].as_str().unwrap();
    assert!(key.starts_with("audio/") && key.ends_with(".ogg"), "{key}");
    assert!(root.join(key).is_file());
    assert_eq!(voice["stored"]["mime_type"], "audio/ogg; codecs=opus");
    assert_eq!(m.graph.media.resolves.load(Ordering::Relaxed), 3);
    // WhatsApp Builder's keys are left as they were.
    let content: Value = sqlx::query_scalar(
        "SELECT content FROM messages WHERE content ->> 'whatsappMessageId' = 'wamid.M.DOC'",
    )
    .fetch_one(&m.app.pool)
    .await
    .unwrap();
    assert_eq!(
        (&content["id"], &content["filename"]),
        (&json!("3003"), &json!("invoice.pdf"))
    );
}

#[tokio::test]
async fn the_same_downloads_go_into_an_in_memory_object_store_through_the_same_trait() {
    let memory: Arc<dyn MediaStore> = Arc::new(ObjectMedia::in_memory());
    // One download at a time: the others wait for the slot.
    let m = start(Store::Given(memory.clone()), |c| c.media.concurrency = 1).await;
    let sent = send_three(&m).await;
    finished(&m.app.pool, 3).await;
    check_stored(&m.app.pool, memory.as_ref(), &sent).await;
}

#[tokio::test]
async fn a_url_that_expires_mid_way_is_resolved_again_and_the_download_goes_on_from_there() {
    let memory: Arc<dyn MediaStore> = Arc::new(ObjectMedia::in_memory());
    let m = start(Store::Given(memory.clone()), |_| {}).await;
    let media = &m.graph.media;
    // Once: broken after 50 kB, then the URL is gone (404); twice for the voice note.
    let document = bytes(200_000, 4);
    let doc_sha = media.put_with(
        "4001",
        document.clone(),
        "application/pdf",
        Knobs {
            expire_after_bytes: Some(50_000),
            ..Knobs::default()
        },
    );
    let voice = bytes(90_000, 5);
    let voice_sha = media.put_with(
        "4002",
        voice.clone(),
        "audio/ogg",
        Knobs {
            expire_after_bytes: Some(20_000),
            expiring_urls: 2,
            ..Knobs::default()
        },
    );
    // A server that ignores `Range`: the new URL's whole file is taken instead.
    let video = bytes(80_000, 15);
    let video_sha = media.put_with(
        "4003",
        video.clone(),
        "video/mp4",
        Knobs {
            expire_after_bytes: Some(30_000),
            no_range: true,
            ..Knobs::default()
        },
    );
    // A range that does not fit the first piece: the sha256 says so, and the file is
    // taken again from its first byte.
    let sheet = bytes(60_000, 16);
    let sheet_sha = media.put_with(
        "4004",
        sheet.clone(),
        "application/vnd.ms-excel",
        Knobs {
            expire_after_bytes: Some(10_000),
            bad_ranges: true,
            ..Knobs::default()
        },
    );
    m.say(vec![
        media_message(
            "wamid.E.SHEET",
            "document",
            json!({"id": "4004", "mime_type": "application/vnd.ms-excel", "sha256": sheet_sha}),
        ),
        media_message(
            "wamid.E.DOC",
            "document",
            json!({"id": "4001", "mime_type": "application/pdf", "sha256": doc_sha}),
        ),
        media_message(
            "wamid.E.VOICE",
            "audio",
            json!({"id": "4002", "mime_type": "audio/ogg", "sha256": voice_sha, "voice": true}),
        ),
        media_message(
            "wamid.E.VIDEO",
            "video",
            json!({"id": "4003", "mime_type": "video/mp4", "sha256": video_sha}),
        ),
    ])
    .await;
    finished(&m.app.pool, 4).await;
    for (wamid, original) in [
        ("wamid.E.SHEET", &sheet),
        ("wamid.E.DOC", &document),
        ("wamid.E.VOICE", &voice),
        ("wamid.E.VIDEO", &video),
    ] {
        let media = media_of(&m.app.pool, wamid).await;
        let key = media["stored"]["key"]
            .as_str()
            .unwrap_or_else(|| panic!("{media}"));
        assert_eq!(&read_all(memory.as_ref(), key).await.unwrap(), original);
    }
    // The document: resolved, broken, 404, resolved again, the rest asked for with
    // a range. The voice note once more. The video from the start again. The sheet
    // resumed, refused, and whole again from the second URL.
    assert_eq!(media.resolves.load(Ordering::Relaxed), 2 + 2 + 3 + 2);
    assert_eq!(media.ranges.load(Ordering::Relaxed), 1 + 1 + 2);
    assert_eq!(
        media.bytes_served.load(Ordering::Relaxed),
        60_000 * 2 + 200_000 + 90_000 + (30_000 + 80_000),
        "nothing sent twice but the video's first 30 kB and the sheet"
    );
    // Every break and expiry within the first attempt.
    let attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempts FROM wabot_media_jobs ORDER BY id")
            .fetch_all(&m.app.pool)
            .await
            .unwrap();
    assert_eq!(attempts, [1, 1, 1, 1]);
}

#[tokio::test]
async fn a_checksum_mismatch_and_an_oversized_file_are_given_up_with_their_reason_and_nothing_is_kept(
) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let m = start(Store::Dir, |c| {
        c.media.dir = root.clone();
    })
    .await;
    let media = &m.graph.media;
    // The webhook's checksum is of other bytes.
    media.put("5001", bytes(30_000, 6), "image/jpeg");
    let other = media.put("5999", bytes(30_000, 7), "image/jpeg");
    // The media endpoint's checksum is of other bytes (the webhook's is right).
    let doc_sha = media.put_with(
        "5002",
        bytes(60_000, 8),
        "application/pdf",
        Knobs {
            wrong_checksum: true,
            ..Knobs::default()
        },
    );
    // A sticker over Meta's 500 KB whose size nobody announces: cut while streaming.
    let sticker_sha = media.put_with(
        "5003",
        bytes(600 * 1024, 9),
        "image/webp",
        Knobs {
            hide_size: true,
            ..Knobs::default()
        },
    );
    // An image whose announced size is past 5 MB: not even fetched.
    let big_sha = media.put("5004", bytes(5 * 1024 * 1024 + 1, 10), "image/jpeg");
    m.say(vec![
        media_message(
            "wamid.X.SUM",
            "image",
            json!({"id": "5001", "mime_type": "image/jpeg", "sha256": other}),
        ),
        media_message(
            "wamid.X.META",
            "document",
            json!({"id": "5002", "mime_type": "application/pdf", "sha256": doc_sha}),
        ),
        media_message(
            "wamid.X.STICKER",
            "sticker",
            json!({"id": "5003", "mime_type": "image/webp", "sha256": sticker_sha,
                   "animated": true}),
        ),
        media_message(
            "wamid.X.BIG",
            "image",
            json!({"id": "5004", "mime_type": "image/jpeg", "sha256": big_sha}),
        ),
    ])
    .await;
    finished(&m.app.pool, 4).await;
    for (wamid, reason) in [
        ("wamid.X.SUM", "checksum mismatch"),
        ("wamid.X.META", "checksum mismatch"),
        ("wamid.X.STICKER", "too large"),
        ("wamid.X.BIG", "too large"),
    ] {
        let media = media_of(&m.app.pool, wamid).await;
        assert_eq!(media["failed"]["reason"], reason, "{wamid}: {media}");
        assert!(media["failed"]["detail"].as_str().unwrap().len() > 10);
        assert!(media.get("stored").is_none(), "{wamid}: {media}");
    }
    let given_up: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM wabot_media_jobs WHERE result = 'given_up' AND attempts = 1 \
           AND store_key IS NULL",
    )
    .fetch_one(&m.app.pool)
    .await
    .unwrap();
    assert_eq!(
        given_up, 4,
        "given up at the first attempt, nothing recorded as stored"
    );
    // Nothing kept: no file anywhere under the directory, no partial one either.
    let files: Vec<_> = walk(&root);
    assert!(files.is_empty(), "{files:?}");
    // The oversized image was never fetched: three GETs of bytes in all.
    assert_eq!(media.downloads.load(Ordering::Relaxed), 3);
}

/// Every file under `root` (none when it does not exist).
fn walk(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn media_past_its_retention_is_deleted_with_its_job_and_the_message_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let m = start(Store::Dir, |c| {
        c.media.dir = root.clone();
        c.media.retention_days = Some(3);
    })
    .await;
    let sent = send_three(&m).await;
    finished(&m.app.pool, 3).await;
    assert_eq!(walk(&root).len(), 3);
    // The image and the voice note are four days old; the document is not.
    sqlx::query(
        "UPDATE wabot_media_jobs SET created_at = now() - interval '4 days' \
         WHERE kind IN ('image', 'audio')",
    )
    .execute(&m.app.pool)
    .await
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let purged = wabot::worker::retention::purge_media(&m.app.state.ctx, &stop)
        .await
        .unwrap();
    assert_eq!(purged, 2);
    assert_eq!(walk(&root).len(), 1);
    let image = media_of(&m.app.pool, sent[0].0).await;
    assert_eq!(image["purged"]["reason"], "retention", "{image}");
    assert!(image.get("stored").is_none());
    let document = media_of(&m.app.pool, sent[2].0).await;
    assert!(document["stored"]["key"].is_string());
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM wabot_media_jobs")
        .fetch_one(&m.app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
}

#[tokio::test]
async fn an_outage_is_retried_with_backoff_and_given_up_after_the_bound_and_an_unknown_id_at_once()
{
    let memory: Arc<dyn MediaStore> = Arc::new(ObjectMedia::in_memory());
    let m = start(Store::Given(memory.clone()), |_| {}).await;
    let media = &m.graph.media;
    let flaky = bytes(10_000, 11);
    let flaky_sha = media.put_with(
        "6001",
        flaky.clone(),
        "image/png",
        Knobs {
            resolve_failures: 1,
            ..Knobs::default()
        },
    );
    let down_sha = media.put_with(
        "6002",
        bytes(10_000, 12),
        "image/png",
        Knobs {
            resolve_failures: 100,
            ..Knobs::default()
        },
    );
    m.say(vec![
        media_message(
            "wamid.R.FLAKY",
            "image",
            json!({"id": "6001", "mime_type": "image/png", "sha256": flaky_sha}),
        ),
        media_message(
            "wamid.R.DOWN",
            "image",
            json!({"id": "6002", "mime_type": "image/png", "sha256": down_sha}),
        ),
        media_message(
            "wamid.R.UNKNOWN",
            "video",
            json!({"id": "6999", "mime_type": "video/mp4", "sha256": "c2hh"}),
        ),
    ])
    .await;
    finished(&m.app.pool, 3).await;
    let jobs: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT media_id, result, attempts, last_error FROM wabot_media_jobs ORDER BY id",
    )
    .fetch_all(&m.app.pool)
    .await
    .unwrap();
    // Retried once after Meta's 500, then stored.
    assert_eq!((jobs[0].1.as_str(), jobs[0].2), ("stored", 2), "{jobs:?}");
    let stored = media_of(&m.app.pool, "wamid.R.FLAKY").await;
    let key = stored["stored"]["key"].as_str().unwrap();
    assert_eq!(read_all(memory.as_ref(), key).await.unwrap(), flaky);
    // Still failing after WABOT_MEDIA_MAX_ATTEMPTS (3): given up, saying why.
    assert_eq!((jobs[1].1.as_str(), jobs[1].2), ("given_up", 3), "{jobs:?}");
    let down = media_of(&m.app.pool, "wamid.R.DOWN").await;
    assert_eq!(down["failed"]["reason"], "attempts exhausted", "{down}");
    assert!(
        down["failed"]["detail"]
            .as_str()
            .unwrap()
            .contains("Service temporarily unavailable"),
        "{down}"
    );
    // An id Meta does not know: given up at once.
    assert_eq!((jobs[2].1.as_str(), jobs[2].2), ("given_up", 1), "{jobs:?}");
    let unknown = media_of(&m.app.pool, "wamid.R.UNKNOWN").await;
    assert_eq!(unknown["failed"]["reason"], "unavailable", "{unknown}");
}

#[tokio::test]
async fn a_batch_without_media_creates_no_job_and_a_repeated_delivery_no_second_one() {
    let memory: Arc<dyn MediaStore> = Arc::new(ObjectMedia::in_memory());
    let m = start(Store::Given(memory), |_| {}).await;
    let sha = m.graph.media.put("7001", bytes(1000, 13), "image/jpeg");
    let image = media_message(
        "wamid.D.IMG",
        "image",
        json!({"id": "7001", "mime_type": "image/jpeg", "sha256": sha}),
    );
    m.say(vec![crate::webhook::text(
        CUSTOMER,
        "wamid.D.TXT",
        "hello",
        now_secs(),
    )])
    .await;
    m.say(vec![image.clone()]).await;
    m.say(vec![image]).await;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM wabot_media_jobs")
        .fetch_one(&m.app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
}

#[tokio::test]
async fn a_download_running_at_shutdown_keeps_its_lease_then_is_handed_back_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("media");
    let mut m = start(Store::Dir, |c| {
        c.media.dir = root.clone();
        c.worker.lease_secs = 1;
        c.whatsapp.graph_timeout_ms = 30_000;
        c.server.shutdown_timeout_secs = 2;
    })
    .await;
    let sha = m.graph.media.put_with(
        "8001",
        bytes(400_000, 14),
        "application/pdf",
        Knobs {
            stall_after_bytes: Some(100_000),
            ..Knobs::default()
        },
    );
    m.say(vec![media_message(
        "wamid.S.DOC",
        "document",
        json!({"id": "8001", "mime_type": "application/pdf", "sha256": sha}),
    )])
    .await;
    eventually(
        &m.app.pool,
        "SELECT count(*) FROM wabot_media_jobs WHERE locked_until > now()",
        1,
    )
    .await;
    let lease = || async {
        sqlx::query_as::<_, (Option<String>, bool)>(
            "SELECT locked_by, locked_until > now() + interval '200 milliseconds' \
             FROM wabot_media_jobs",
        )
        .fetch_one(&m.app.pool)
        .await
        .unwrap()
    };
    let (token, _) = lease().await;
    // Stalled for three leases: the lease is still ours, kept by the stage.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (kept, live) = lease().await;
    assert_eq!((kept.as_ref(), live), (token.as_ref(), true));
    assert_eq!(walk(&root).len(), 1, "the partial file only");
    // `wabot status` shows the media queue on a line of its own.
    let out = crate::ops_cli::wabot(&m.app.config.database_url, &["status"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    let line = shown
        .lines()
        .find(|l| l.trim_start().starts_with("media download"))
        .unwrap_or_else(|| panic!("{shown}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &columns[2..5],
        ["1", "0", "1"],
        "open, waiting, leased: {line}"
    );

    m.app.stop().await;
    let (locked_by, attempts, done): (Option<String>, i32, bool) =
        sqlx::query_as("SELECT locked_by, attempts, done_at IS NOT NULL FROM wabot_media_jobs")
            .fetch_one(&m.app.pool)
            .await
            .unwrap();
    assert_eq!(
        (locked_by, attempts, done),
        (None, 0, false),
        "handed back, the attempt not counted"
    );
    assert!(walk(&root).is_empty(), "{:?}", walk(&root));
}
