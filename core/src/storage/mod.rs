//! `Storage`: the one bucket that holds all state, and where it lives (`StoreUrl`).
//!
//! Two implementations keep the same contract, checked by one conformance suite:
//! [`S3Storage`] (any S3-compatible endpoint) and [`LocalDirStorage`] (the embedded default).

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod fs;
mod keys;
mod s3;

use std::{fmt, path::PathBuf, sync::Arc};

use async_trait::async_trait;
use bytes::Bytes;

pub use self::{
    fs::LocalDirStorage,
    keys::{StorageKey, StorageKeys},
    s3::S3Storage,
};
use crate::error::{Error, Result};

/// An object's version tag: S3's ETag, or a content hash for the local directory.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    pub(crate) fn new(tag: impl Into<String>) -> Self {
        Self(tag.into())
    }

    /// The tag as text (quoted for S3, as S3 sends it).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// An object read from the store, with the tag to replace it conditionally.
#[derive(Clone)]
pub struct StoredObject {
    /// The content.
    pub bytes: Bytes,
    /// The version read.
    pub etag: ETag,
}

impl fmt::Debug for StoredObject {
    // Objects hold keys and account credentials: never print the content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredObject")
            .field("len", &self.bytes.len())
            .field("etag", &self.etag)
            .finish()
    }
}

/// What a conditional read found.
#[derive(Debug, Clone)]
pub enum Freshness {
    /// The object is still at the tag the caller knows.
    Unchanged,
    /// The object changed (or the caller knew none): here it is.
    Changed(StoredObject),
    /// There is no such object.
    Missing,
}

/// The state store. Conditional writes are atomic: of two racing writers exactly one wins.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// Reads an object; a missing one is `Ok(None)`.
    async fn get(&self, key: &StorageKey) -> Result<Option<StoredObject>>;

    /// Reads an object unless it is still at `known`. The default compares tags after a plain
    /// read; S3 asks with `If-None-Match`, so an unchanged object costs no transfer.
    async fn get_if_changed(&self, key: &StorageKey, known: Option<&ETag>) -> Result<Freshness> {
        Ok(match self.get(key).await? {
            None => Freshness::Missing,
            Some(object) if Some(&object.etag) == known => Freshness::Unchanged,
            Some(object) => Freshness::Changed(object),
        })
    }

    /// Writes an object whatever is there.
    async fn put(&self, key: &StorageKey, bytes: Bytes) -> Result<ETag>;

    /// Writes an object only if none exists; `Ok(None)` when one already did.
    async fn create(&self, key: &StorageKey, bytes: Bytes) -> Result<Option<ETag>>;

    /// Replaces an object only if it is still at `expected`; `Ok(None)` when it changed or vanished.
    async fn replace(
        &self,
        key: &StorageKey,
        bytes: Bytes,
        expected: &ETag,
    ) -> Result<Option<ETag>>;

    /// Removes an object; removing a missing one is not an error.
    async fn delete(&self, key: &StorageKey) -> Result<()>;

    /// The keys under `prefix`, sorted.
    async fn list(&self, prefix: &StorageKey) -> Result<Vec<StorageKey>>;
}

/// Where the store lives: `s3://BUCKET[/PREFIX]` or `file:///abs/dir` (or `file://./rel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// An S3 bucket and an optional namespace prefix.
    S3 {
        /// The bucket name.
        bucket: String,
        /// The namespace prefix, without leading or trailing `/`; may be empty.
        prefix: String,
    },
    /// A local directory.
    Dir(PathBuf),
}

/// The default store: a directory beside the process, as Caddy keeps its data.
pub const DEFAULT_STORE: &str = "file://./.certbucket";

impl StoreUrl {
    /// Parses a store URL.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |message: &str| Error::StoreUrl {
            url: url.to_owned(),
            message: message.to_owned(),
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !bucket_ok {
                return Err(bad(
                    "the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.'",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "..") {
                return Err(bad("the prefix must not contain '..'"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(bad("a file:// store needs a directory"));
            }
            return Ok(Self::Dir(PathBuf::from(path)));
        }
        Err(bad("expected s3://BUCKET[/PREFIX] or file:///DIR"))
    }

    /// Opens the store; S3 settings come from the standard AWS environment.
    pub async fn open(&self) -> Result<Arc<dyn Storage>> {
        Ok(match self {
            Self::S3 { bucket, prefix } => {
                Arc::new(S3Storage::from_env(bucket.clone(), prefix.clone()).await)
            }
            Self::Dir(path) => Arc::new(LocalDirStorage::open(path)?),
        })
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Self::Dir(path) => write!(f, "file://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        let s3 = |bucket: &str, prefix: &str| StoreUrl::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        };
        let good = [
            ("s3://my-bucket", s3("my-bucket", "")),
            ("s3://my-bucket/team/a/", s3("my-bucket", "team/a")),
            (
                "file:///var/lib/certbucket",
                StoreUrl::Dir("/var/lib/certbucket".into()),
            ),
            (
                "file://./.certbucket",
                StoreUrl::Dir("./.certbucket".into()),
            ),
        ];
        for (url, want) in good {
            assert_eq!(StoreUrl::parse(url).ok(), Some(want), "{url}");
        }
        for bad in [
            "s3://ab",
            "s3://Upper",
            "s3://bucket/../x",
            "file://",
            "/tmp/x",
            "gs://b",
        ] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
