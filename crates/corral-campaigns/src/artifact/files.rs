//! Artifact content on disk, addressed by its SHA-256: `<dir>/sha256/<hex>`. An upload is
//! streamed into `<dir>/incoming/` while it is hashed and counted, flushed to disk, and only then
//! renamed into place, so a cut or oversized upload leaves nothing behind and a file under
//! `sha256/` is always whole. Identical uploads share one file.

use crate::CampaignError;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// An upload that arrived whole and was flushed, not yet in place.
#[derive(Debug)]
pub struct Received {
    temp: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// The content store under one directory.
#[derive(Debug, Clone)]
pub struct ArtifactFiles {
    dir: PathBuf,
}

impl ArtifactFiles {
    /// Opens (creating) the store and removes uploads a crash left half-written.
    pub async fn open(dir: &Path) -> Result<ArtifactFiles, CampaignError> {
        let files = ArtifactFiles { dir: dir.to_path_buf() };
        tokio::fs::create_dir_all(files.dir.join("sha256")).await?;
        let incoming = files.dir.join("incoming");
        if tokio::fs::try_exists(&incoming).await? {
            tokio::fs::remove_dir_all(&incoming).await?;
        }
        tokio::fs::create_dir_all(&incoming).await?;
        Ok(files)
    }

    /// Where the content with this digest is.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join("sha256").join(sha256)
    }

    /// Streams `body` to a temporary file, hashing it; more than `limit` bytes or a body that
    /// ends in an error (the client went away) removes the file and fails.
    pub async fn receive<S, E>(&self, body: S, limit: u64) -> Result<Received, CampaignError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let temp = self.dir.join("incoming").join(format!("{:016x}.part", rand::random::<u64>()));
        let result = Self::write(&temp, body, limit).await;
        match result {
            Ok((sha256, size)) => Ok(Received { temp, sha256, size }),
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }

    async fn write<S, E>(temp: &Path, body: S, limit: u64) -> Result<(String, u64), CampaignError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let mut file = tokio::fs::File::create(temp).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| CampaignError::bad(format!("the upload was cut: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(CampaignError::TooLarge(format!("artifacts are limited to {limit} bytes")));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        if size == 0 {
            return Err(CampaignError::bad("the artifact is empty"));
        }
        file.sync_all().await?;
        Ok((hex::encode(hasher.finalize()), size))
    }

    /// Puts a received upload in place (or drops it when the same content is there already).
    pub async fn keep(&self, received: Received) -> Result<PathBuf, CampaignError> {
        let target = self.path(&received.sha256);
        if tokio::fs::try_exists(&target).await? {
            tokio::fs::remove_file(&received.temp).await?;
        } else {
            tokio::fs::rename(&received.temp, &target).await?;
            // The rename is durable once the directory is.
            tokio::fs::File::open(self.dir.join("sha256")).await?.sync_all().await?;
        }
        Ok(target)
    }

    /// Drops a received upload that will not be kept (its signature did not verify).
    pub async fn discard(&self, received: Received) {
        let _ = tokio::fs::remove_file(&received.temp).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<Result<&'static [u8], &'static str>>) -> impl Stream<Item = Result<Bytes, &'static str>> {
        futures::stream::iter(parts.into_iter().map(|p| p.map(Bytes::from_static)))
    }

    fn leftovers(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("incoming")).unwrap().count()
    }

    #[tokio::test]
    async fn an_upload_is_stored_by_its_digest_and_a_cut_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = ArtifactFiles::open(dir.path()).await.unwrap();
        let received = files.receive(chunks(vec![Ok(b"hello "), Ok(b"world")]), 1024).await.unwrap();
        assert_eq!(received.sha256, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        assert_eq!(received.size, 11);
        let path = files.keep(received).await.unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"hello world");

        let cut = files.receive(chunks(vec![Ok(b"hello "), Err("connection reset")]), 1024).await;
        assert!(matches!(cut, Err(CampaignError::BadInput(ref m)) if m.contains("connection reset")), "{cut:?}");
        let big = files.receive(chunks(vec![Ok(b"0123456789"), Ok(b"0123456789")]), 15).await;
        assert!(matches!(big, Err(CampaignError::TooLarge(_))), "{big:?}");
        assert_eq!(leftovers(dir.path()), 0);

        // The same content again is one file.
        let again = files.receive(chunks(vec![Ok(b"hello world")]), 1024).await.unwrap();
        files.keep(again).await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("sha256")).unwrap().count(), 1);
        assert_eq!(leftovers(dir.path()), 0);
    }
}
