//! The media store over any `object_store` backend: S3-compatible object storage
//! (AWS S3, MinIO, Ceph, R2, ...) from `WABOT_MEDIA_S3_*`, or `object_store`'s
//! in-memory store (tests).
//!
//! Writes are multipart uploads (`WriteMultipart`): parts of 5 MiB go up as they
//! fill, at most a few in flight, so memory stays bounded whatever the file's size;
//! the object exists only once the upload completes, and an abort drops the parts.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, WriteMultipart};
use secrecy::ExposeSecret;

use super::{check_key, MediaStore, MediaStoreError, MediaWriter};
use crate::config::MediaS3Config;

/// Parts uploading at once per file.
const PARTS_IN_FLIGHT: usize = 2;

pub struct ObjectMedia {
    store: Arc<dyn ObjectStore>,
    kind: String,
}

impl ObjectMedia {
    /// Any `object_store` backend; `kind` is what the stored location records
    /// (`s3`, `memory`, ...).
    pub fn new(store: Arc<dyn ObjectStore>, kind: impl Into<String>) -> ObjectMedia {
        ObjectMedia {
            store,
            kind: kind.into(),
        }
    }

    /// `object_store`'s in-memory store (tests).
    pub fn in_memory() -> ObjectMedia {
        ObjectMedia::new(Arc::new(object_store::memory::InMemory::new()), "memory")
    }

    /// The S3-compatible store `WABOT_MEDIA_S3_*` describe. Keys left unset come
    /// from the usual AWS environment (`AWS_ACCESS_KEY_ID`, ...), as `object_store`
    /// reads them.
    pub fn s3(config: &MediaS3Config) -> anyhow::Result<ObjectMedia> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env();
        if let Some(bucket) = &config.bucket {
            builder = builder.with_bucket_name(bucket);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &config.endpoint {
            // MinIO and friends on plain HTTP inside a private network.
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(key) = &config.access_key_id {
            builder = builder.with_access_key_id(key.expose_secret());
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret.expose_secret());
        }
        let store = builder.build().map_err(|e| {
            anyhow::anyhow!("cannot configure the S3 media store (WABOT_MEDIA_S3_*): {e}")
        })?;
        Ok(ObjectMedia::new(Arc::new(store), "s3"))
    }

    fn path(key: &str) -> Result<Path, MediaStoreError> {
        check_key(key)?;
        Path::parse(key).map_err(|_| MediaStoreError::BadKey(key.to_owned()))
    }
}

fn object_error(context: String, source: object_store::Error) -> MediaStoreError {
    MediaStoreError::Object { context, source }
}

#[async_trait]
impl MediaStore for ObjectMedia {
    fn kind(&self) -> &str {
        &self.kind
    }

    async fn begin(&self, key: &str) -> Result<Box<dyn MediaWriter>, MediaStoreError> {
        let path = ObjectMedia::path(key)?;
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| object_error(format!("start the upload of {key}"), e))?;
        Ok(Box::new(ObjectWriter {
            upload: Some(WriteMultipart::new(upload)),
            key: key.to_owned(),
        }))
    }

    async fn get(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, MediaStoreError>>, MediaStoreError> {
        let path = ObjectMedia::path(key)?;
        let found = match self.store.get(&path).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(MediaStoreError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(object_error(format!("get {key}"), e)),
        };
        let key = key.to_owned();
        Ok(found
            .into_stream()
            .map_err(move |e| object_error(format!("read {key}"), e))
            .boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), MediaStoreError> {
        let path = ObjectMedia::path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(object_error(format!("delete {key}"), e)),
        }
    }
}

struct ObjectWriter {
    upload: Option<WriteMultipart>,
    key: String,
}

#[async_trait]
impl MediaWriter for ObjectWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), MediaStoreError> {
        let key = &self.key;
        let Some(upload) = self.upload.as_mut() else {
            return Ok(());
        };
        // Back-pressure: at most PARTS_IN_FLIGHT parts buffered or uploading.
        upload
            .wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|e| object_error(format!("upload {key}"), e))?;
        upload.put(chunk);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<(), MediaStoreError> {
        let Some(upload) = self.upload.take() else {
            return Ok(());
        };
        upload
            .finish()
            .await
            .map(|_| ())
            .map_err(|e| object_error(format!("complete the upload of {}", self.key), e))
    }

    async fn abort(mut self: Box<Self>) -> Result<(), MediaStoreError> {
        let Some(upload) = self.upload.take() else {
            return Ok(());
        };
        upload
            .abort()
            .await
            .map_err(|e| object_error(format!("abort the upload of {}", self.key), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::read_all;

    #[tokio::test]
    async fn an_upload_is_visible_once_finished_and_an_abort_keeps_nothing() {
        let store = ObjectMedia::in_memory();
        let mut w = store.begin("audio/x.ogg").await.unwrap();
        for _ in 0..3 {
            w.write(Bytes::from(vec![7u8; 1000])).await.unwrap();
        }
        assert!(matches!(
            read_all(&store, "audio/x.ogg").await,
            Err(MediaStoreError::NotFound(_))
        ));
        w.finish().await.unwrap();
        assert_eq!(read_all(&store, "audio/x.ogg").await.unwrap().len(), 3000);

        let mut w = store.begin("audio/y.ogg").await.unwrap();
        w.write(Bytes::from_static(b"nope")).await.unwrap();
        w.abort().await.unwrap();
        assert!(read_all(&store, "audio/y.ogg").await.is_err());
        store.delete("audio/x.ogg").await.unwrap();
        store.delete("audio/x.ogg").await.unwrap();
        assert!(read_all(&store, "audio/x.ogg").await.is_err());
    }
}
