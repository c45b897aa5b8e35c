//! `Manifest`: `v1/manifest.json`, host -> version of each stored certificate, so an edge can
//! learn of every change by polling one object.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    host::Host,
    storage::{ETag, Storage, StorageKeys},
};

/// Conditional writes lost to concurrent writers before giving up; each loss means another
/// writer made progress, so this bounds only pathological contention.
const MAX_ATTEMPTS: usize = 16;

/// The manifest document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Host -> version (the certificate object's ETag).
    pub certs: BTreeMap<String, String>,
}

impl Manifest {
    /// The stored manifest and its tag; `None` when there is none yet.
    pub async fn load(store: &dyn Storage) -> Result<Option<(Self, ETag)>> {
        let key = StorageKeys::manifest();
        let Some(object) = store.get(&key).await? else {
            return Ok(None);
        };
        let manifest = serde_json::from_slice(&object.bytes)
            .map_err(|e| Error::corrupt(key.as_str(), e.to_string()))?;
        Ok(Some((manifest, object.etag)))
    }

    /// Sets `host`'s version, replacing the manifest only if no one changed it meanwhile
    /// (and retrying when someone did). A corrupt manifest is rebuilt from this entry on.
    pub async fn record(store: &dyn Storage, host: &Host, version: &ETag) -> Result<()> {
        let key = StorageKeys::manifest();
        for _ in 0..MAX_ATTEMPTS {
            let current = store.get(&key).await?;
            let mut manifest = current
                .as_ref()
                .and_then(|object| serde_json::from_slice::<Self>(&object.bytes).ok())
                .unwrap_or_default();
            manifest.certs.insert(
                host.to_string(),
                version.as_str().trim_matches('"').to_owned(),
            );
            let json = serde_json::to_vec(&manifest)
                .map_err(|e| Error::corrupt(key.as_str(), e.to_string()))?;
            let written = match &current {
                Some(object) => store.replace(&key, Bytes::from(json), &object.etag).await?,
                None => store.create(&key, Bytes::from(json)).await?,
            };
            if written.is_some() {
                return Ok(());
            }
        }
        Err(Error::storage(
            key.as_str(),
            format!("gave up after {MAX_ATTEMPTS} concurrent updates"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::LocalDirStorage;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_all_land() {
        let dir = std::env::temp_dir().join(format!("certbucket-manifest-{}", std::process::id()));
        let store: Arc<dyn Storage> =
            Arc::new(LocalDirStorage::open(&dir).unwrap_or_else(|e| panic!("{e}")));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let host =
                        Host::parse(&format!("h{i}.example")).unwrap_or_else(|e| panic!("{e}"));
                    Manifest::record(&*store, &host, &ETag::new(format!("\"v{i}\""))).await
                })
            })
            .collect();
        for task in tasks {
            task.await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let (manifest, _) = Manifest::load(&*store)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("manifest written"));
        assert_eq!(manifest.certs.len(), 8);
        assert_eq!(
            manifest.certs.get("h3.example").map(String::as_str),
            Some("v3")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
