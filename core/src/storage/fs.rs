//! `LocalDirStorage`: the store in a local directory, the embedded default.
//!
//! Every write goes to a temporary file and is renamed into place, so readers never see half an
//! object. Conditional writes hold an exclusive lock on `.lock` while they compare and rename,
//! which gives the same create-if-absent and replace-if-unchanged guarantees as S3 to every
//! process sharing the directory.

use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use async_trait::async_trait;
use aws_lc_rs::{digest, rand};
use bytes::Bytes;

use super::{ETag, Storage, StorageKey, StoredObject};
use crate::error::{Error, Result};

/// A store kept in a directory.
#[derive(Debug, Clone)]
pub struct LocalDirStorage {
    root: Arc<PathBuf>,
}

impl LocalDirStorage {
    /// Opens (and creates if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let tmp = root.join(".tmp");
        fs::create_dir_all(&tmp).map_err(|e| Error::storage(root.display().to_string(), e))?;
        Ok(Self {
            root: Arc::new(root.to_path_buf()),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        key: &StorageKey,
        op: impl FnOnce(&Path, &Path) -> io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let root = Arc::clone(&self.root);
        let path = root.join(key.as_str());
        tokio::task::spawn_blocking(move || op(&root, &path))
            .await
            .map_err(|e| Error::storage(key.as_str(), e))?
            .map_err(|e| Error::storage(key.as_str(), e))
    }
}

fn etag_of(bytes: &[u8]) -> ETag {
    let hash = digest::digest(&digest::SHA256, bytes);
    ETag::new(
        hash.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

fn read(path: &Path) -> io::Result<Option<StoredObject>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(StoredObject {
            etag: etag_of(&bytes),
            bytes: Bytes::from(bytes),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to a fresh temporary file and renames it over `path`.
fn write_atomically(root: &Path, path: &Path, bytes: &[u8]) -> io::Result<ETag> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut suffix = [0u8; 12];
    rand::fill(&mut suffix).map_err(|_| io::Error::other("no randomness"))?;
    let name: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = root.join(".tmp").join(name);
    let result = (|| {
        let mut file = File::create_new(&tmp)?;
        file.write_all(bytes)?;
        file.sync_data()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| etag_of(bytes))
}

/// Runs `op` while holding the store-wide lock that serializes conditional writes.
fn locked<T>(root: &Path, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(".lock"))?;
    lock.lock()?;
    let result = op();
    lock.unlock()?;
    result
}

fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, root, out)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

#[async_trait]
impl Storage for LocalDirStorage {
    async fn get(&self, key: &StorageKey) -> Result<Option<StoredObject>> {
        self.blocking(key, |_, path| read(path)).await
    }

    async fn put(&self, key: &StorageKey, bytes: Bytes) -> Result<ETag> {
        self.blocking(key, move |root, path| write_atomically(root, path, &bytes))
            .await
    }

    async fn create(&self, key: &StorageKey, bytes: Bytes) -> Result<Option<ETag>> {
        self.blocking(key, move |root, path| {
            locked(root, || {
                if path.try_exists()? {
                    return Ok(None);
                }
                write_atomically(root, path, &bytes).map(Some)
            })
        })
        .await
    }

    async fn replace(
        &self,
        key: &StorageKey,
        bytes: Bytes,
        expected: &ETag,
    ) -> Result<Option<ETag>> {
        let expected = expected.clone();
        self.blocking(key, move |root, path| {
            locked(root, || match read(path)? {
                Some(current) if current.etag == expected => {
                    write_atomically(root, path, &bytes).map(Some)
                }
                _ => Ok(None),
            })
        })
        .await
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        self.blocking(key, |root, path| {
            locked(root, || match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
        })
        .await
    }

    async fn list(&self, prefix: &StorageKey) -> Result<Vec<StorageKey>> {
        let wanted = prefix.as_str().to_owned();
        let mut keys = self
            .blocking(prefix, move |root, _| {
                // Walk the deepest directory that the prefix names in full.
                let dir = match wanted.rfind('/') {
                    Some(i) => root.join(&wanted[..i]),
                    None => root.to_path_buf(),
                };
                let mut found = Vec::new();
                walk(&dir, root, &mut found)?;
                Ok(found)
            })
            .await?
            .into_iter()
            .filter(|k| k.starts_with(prefix.as_str()))
            .filter_map(|k| StorageKey::from_listing(&k))
            .collect::<Vec<_>>();
        keys.sort();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_conformance_suite() {
        let dir = std::env::temp_dir().join(format!("certbucket-fs-{}", std::process::id()));
        let store = LocalDirStorage::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        conformance::run(Arc::new(store)).await;
        let _ = fs::remove_dir_all(&dir);
    }
}
