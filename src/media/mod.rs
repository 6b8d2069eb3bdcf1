//! The media store: where downloaded inbound media (photos, voice notes, documents,
//! ...) is kept.
//!
//! One trait, [`MediaStore`], with two implementations: a directory on the local disk
//! ([`dir::DirStore`], `WABOT_MEDIA_DIR`, the default) and any `object_store` backend
//! ([`object::ObjectMedia`]): S3-compatible object storage when
//! `WABOT_MEDIA_S3_BUCKET` is set, or `object_store`'s in-memory store in tests.
//!
//! Writes stream: [`MediaStore::begin`] opens a [`MediaWriter`] that takes the bytes
//! chunk by chunk, so a 100 MB document is never whole in memory, and nothing is
//! visible under the key until [`MediaWriter::finish`]: the downloader checks the
//! checksum first and calls [`MediaWriter::abort`] on a mismatch, which keeps
//! nothing.

pub mod dir;
pub mod object;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::config::MediaConfig;

/// Why the media store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum MediaStoreError {
    /// The key is not one this store makes (empty, absolute, `..`, odd characters).
    #[error("`{0}` is not a valid media key")]
    BadKey(String),
    /// Nothing is stored under the key.
    #[error("no media stored under `{0}`")]
    NotFound(String),
    // The cause is in the message too: the download's error is kept as text.
    #[error("media directory: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object store: {context}: {source}")]
    Object {
        context: String,
        #[source]
        source: object_store::Error,
    },
}

impl MediaStoreError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        MediaStoreError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Where downloaded media is kept.
#[async_trait]
pub trait MediaStore: Send + Sync + 'static {
    /// What kind of store this is (`dir`, `s3`, `memory`): recorded with each stored
    /// file, next to its key.
    fn kind(&self) -> &str;

    /// Starts writing the object `key`; it appears only when the writer finishes.
    async fn begin(&self, key: &str) -> Result<Box<dyn MediaWriter>, MediaStoreError>;

    /// The bytes stored under `key`, as a stream.
    async fn get(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, MediaStoreError>>, MediaStoreError>;

    /// Deletes `key`; deleting what is not there is not an error.
    async fn delete(&self, key: &str) -> Result<(), MediaStoreError>;

    /// Deletes what writers killed mid-way (no chance to abort) left, older than
    /// `age`; how many. Stores that keep nothing unfinished have nothing to do.
    async fn sweep_unfinished(&self, age: std::time::Duration) -> Result<u64, MediaStoreError> {
        let _ = age;
        Ok(0)
    }
}

/// One object being written.
#[async_trait]
pub trait MediaWriter: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), MediaStoreError>;
    /// Makes the object visible under its key (replacing what was there).
    async fn finish(self: Box<Self>) -> Result<(), MediaStoreError>;
    /// Drops what was written; nothing is kept.
    async fn abort(self: Box<Self>) -> Result<(), MediaStoreError>;
}

/// The store the configuration names: S3 when `WABOT_MEDIA_S3_BUCKET` is set, else
/// the directory `WABOT_MEDIA_DIR`. (A program embedding wabot, or a test, brings a
/// store of its own through `startup::Application::with_media_store`.)
pub fn open(config: &MediaConfig) -> anyhow::Result<Arc<dyn MediaStore>> {
    if config.s3.bucket.is_some() {
        return Ok(Arc::new(object::ObjectMedia::s3(&config.s3)?));
    }
    Ok(Arc::new(dir::DirStore::new(config.dir.clone())))
}

/// Reads a whole object: for tests and small tools, never the download path.
pub async fn read_all(store: &dyn MediaStore, key: &str) -> Result<Vec<u8>, MediaStoreError> {
    let mut stream = store.get(key).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Checks a key: relative, `/`-separated segments of ASCII letters, digits, `.`,
/// `_` and `-`, no segment empty or starting with a dot (`..`, and the directory
/// store's `.partial/`). Keys are made by wabot, but the
/// directory store turns them into paths, so a bad one is refused, never followed.
pub fn check_key(key: &str) -> Result<(), MediaStoreError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && !segment.starts_with('.')
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        });
    if ok {
        Ok(())
    } else {
        Err(MediaStoreError::BadKey(key.to_owned()))
    }
}

/// The key of a message's media: `<kind>/<yyyy-mm>/<message id>.<ext>`, by message
/// id rather than content hash, so that deleting one message's file (retention)
/// never takes away another's, even when both sent the same sticker.
pub fn key_for(
    kind: &str,
    message_id: uuid::Uuid,
    mime_type: Option<&str>,
    at: chrono::DateTime<chrono::Utc>,
) -> String {
    let kind = match kind {
        "image" | "audio" | "video" | "document" | "sticker" => kind,
        _ => "other",
    };
    format!(
        "{kind}/{}/{}.{}",
        at.format("%Y-%m"),
        message_id.simple(),
        extension(mime_type)
    )
}

/// A file extension for the MIME types WhatsApp carries (PROTOCOL.md, Meta's list of
/// supported media types); `bin` for the rest.
fn extension(mime_type: Option<&str>) -> &'static str {
    // Parameters (`audio/ogg; codecs=opus`) do not change the extension.
    let essence = mime_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "audio/ogg" => "ogg",
        "audio/mpeg" => "mp3",
        "audio/mp4" => "m4a",
        "audio/aac" => "aac",
        "audio/amr" => "amr",
        "video/mp4" => "mp4",
        "video/3gpp" | "video/3gp" => "3gp",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "application/vnd.ms-powerpoint" => "ppt",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation" => "pptx",
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_before_they_become_paths() {
        for good in ["image/2026-12/abc.jpg", "a", "a-b_c.d/e"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/./b",
            ".partial/x",
            "a b",
            "a\\b",
            "é",
        ] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_configuration_picks_the_store() {
        let mut config = MediaConfig::default();
        assert_eq!(open(&config).unwrap().kind(), "dir");
        config.s3.bucket = Some("wabot-media".into());
        config.s3.region = Some("eu-central-1".into());
        config.s3.endpoint = Some("http://127.0.0.1:9000".into());
        config.s3.access_key_id = Some("AKIA".to_owned().into());
        config.s3.secret_access_key = Some("very-secret".to_owned().into());
        // Building the S3 client makes no request.
        assert_eq!(open(&config).unwrap().kind(), "s3");
        assert!(!format!("{config:?}").contains("very-secret"));
    }

    #[test]
    fn a_key_names_the_kind_the_month_and_the_message() {
        let id = uuid::Uuid::nil();
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            key_for("audio", id, Some("audio/ogg; codecs=opus"), at),
            format!("audio/2026-12/{}.ogg", id.simple())
        );
        assert_eq!(
            key_for("document", id, Some("application/x-unknown"), at),
            format!("document/2026-12/{}.bin", id.simple())
        );
        assert!(check_key(&key_for("image", id, None, at)).is_ok());
    }
}
