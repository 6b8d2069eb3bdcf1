//! The media store as a directory (`WABOT_MEDIA_DIR`): one file per key under the
//! root. A file is written under `.partial/` and renamed into place when finished,
//! so a reader never sees half a file and a crash leaves only a partial file
//! (removed when its writer is dropped, or by hand from `.partial/`).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use super::{check_key, MediaStore, MediaStoreError, MediaWriter};

/// Where partial files are written, under the root.
const PARTIAL: &str = ".partial";

pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store under `root`, created when the first file is written.
    pub fn new(root: PathBuf) -> DirStore {
        DirStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `key`.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, MediaStoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

#[async_trait]
impl MediaStore for DirStore {
    fn kind(&self) -> &str {
        "dir"
    }

    async fn begin(&self, key: &str) -> Result<Box<dyn MediaWriter>, MediaStoreError> {
        let dest = self.path_of(key)?;
        let partial_dir = self.root.join(PARTIAL);
        tokio::fs::create_dir_all(&partial_dir)
            .await
            .map_err(|e| MediaStoreError::io(format!("create {}", partial_dir.display()), e))?;
        let tmp = partial_dir.join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| MediaStoreError::io(format!("create {}", tmp.display()), e))?;
        Ok(Box::new(DirWriter {
            file: Some(tokio::io::BufWriter::with_capacity(64 * 1024, file)),
            tmp,
            dest,
        }))
    }

    async fn get(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, MediaStoreError>>, MediaStoreError> {
        let path = self.path_of(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MediaStoreError::NotFound(key.to_owned()))
            }
            Err(e) => return Err(MediaStoreError::io(format!("open {}", path.display()), e)),
        };
        let shown = path.display().to_string();
        Ok(tokio_util::io::ReaderStream::new(file)
            .map_err(move |e| MediaStoreError::io(format!("read {shown}"), e))
            .boxed())
    }

    async fn delete(&self, key: &str) -> Result<(), MediaStoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(MediaStoreError::io(format!("delete {}", path.display()), e)),
        }
    }

    async fn sweep_unfinished(&self, age: std::time::Duration) -> Result<u64, MediaStoreError> {
        let dir = self.root.join(PARTIAL);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(MediaStoreError::io(format!("list {}", dir.display()), e)),
        };
        let mut swept = 0;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| MediaStoreError::io(format!("list {}", dir.display()), e))?
        {
            // A partial file not written to for `age` has no writer any more.
            let stale = entry
                .metadata()
                .await
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed > age);
            if stale && tokio::fs::remove_file(entry.path()).await.is_ok() {
                swept += 1;
            }
        }
        Ok(swept)
    }
}

struct DirWriter {
    /// `None` once finished or aborted.
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    tmp: PathBuf,
    dest: PathBuf,
}

#[async_trait]
impl MediaWriter for DirWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), MediaStoreError> {
        let Some(file) = self.file.as_mut() else {
            return Err(MediaStoreError::io(
                format!("write {}", self.tmp.display()),
                std::io::Error::other("the writer is closed"),
            ));
        };
        file.write_all(&chunk)
            .await
            .map_err(|e| MediaStoreError::io(format!("write {}", self.tmp.display()), e))
    }

    async fn finish(mut self: Box<Self>) -> Result<(), MediaStoreError> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        let tmp = self.tmp.clone();
        let io = |what: &str, e| MediaStoreError::io(format!("{what} {}", tmp.display()), e);
        file.flush().await.map_err(|e| io("flush", e))?;
        // On disk before it is recorded as stored.
        file.get_ref().sync_all().await.map_err(|e| io("sync", e))?;
        drop(file);
        if let Some(parent) = self.dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| MediaStoreError::io(format!("create {}", parent.display()), e))?;
        }
        tokio::fs::rename(&self.tmp, &self.dest)
            .await
            .map_err(|e| MediaStoreError::io(format!("rename to {}", self.dest.display()), e))
    }

    async fn abort(mut self: Box<Self>) -> Result<(), MediaStoreError> {
        self.file = None;
        match tokio::fs::remove_file(&self.tmp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(MediaStoreError::io(
                format!("delete {}", self.tmp.display()),
                e,
            )),
        }
    }
}

impl Drop for DirWriter {
    /// A writer dropped unfinished (a download cut short by shutdown) leaves nothing.
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::read_all;

    #[tokio::test]
    async fn a_file_appears_only_when_finished_and_an_abort_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path().join("media"));
        let mut w = store.begin("image/a.jpg").await.unwrap();
        w.write(Bytes::from_static(b"hello ")).await.unwrap();
        w.write(Bytes::from_static(b"world")).await.unwrap();
        assert!(matches!(
            read_all(&store, "image/a.jpg").await,
            Err(MediaStoreError::NotFound(_))
        ));
        w.finish().await.unwrap();
        assert_eq!(
            read_all(&store, "image/a.jpg").await.unwrap(),
            b"hello world"
        );

        let mut w = store.begin("image/b.jpg").await.unwrap();
        w.write(Bytes::from_static(b"bad")).await.unwrap();
        w.abort().await.unwrap();
        let w = store.begin("image/c.jpg").await.unwrap();
        drop(w);
        assert!(!store.path_of("image/b.jpg").unwrap().exists());
        let partial: Vec<_> = std::fs::read_dir(dir.path().join("media").join(PARTIAL))
            .unwrap()
            .collect();
        assert!(partial.is_empty(), "{partial:?}");

        store.delete("image/a.jpg").await.unwrap();
        store.delete("image/a.jpg").await.unwrap();
        assert!(store.begin("../escape").await.is_err());

        // A killed writer's partial file (its Drop never ran) goes once stale.
        let left = dir.path().join("media").join(PARTIAL).join("dead.part");
        std::fs::write(&left, b"half").unwrap();
        let day = std::time::Duration::from_secs(86_400);
        assert_eq!(store.sweep_unfinished(day).await.unwrap(), 0);
        assert_eq!(
            store
                .sweep_unfinished(std::time::Duration::ZERO)
                .await
                .unwrap(),
            1
        );
        assert!(!left.exists());
    }
}
