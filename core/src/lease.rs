//! `Lease`: the per-host lock that keeps two issuers from ordering the same host at once.
//!
//! A lease is the object `v1/locks/{host}` holding its owner and expiry. It is taken with a
//! create-if-absent, or by replacing an expired one at its ETag; it is released by overwriting
//! it as expired at its ETag (LocalStack refuses conditional DELETEs). While held, a task
//! extends it every third of its lifetime, so a slow order keeps it; a crashed issuer's lease
//! simply runs out and the next issuer takes it over.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::{sync::Mutex, task::JoinHandle};
use tracing::warn;

use crate::{
    error::Result,
    host::Host,
    storage::{ETag, Storage, StorageKeys},
};

#[derive(Debug, Serialize, Deserialize)]
struct LeaseBody {
    owner: String,
    expires_at: i64,
}

/// A held lease on one host, extended in the background until released.
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn Storage>,
    host: Host,
    owner: String,
    etag: Arc<Mutex<ETag>>,
    refresher: JoinHandle<()>,
}

/// What trying to take a lease gave.
#[derive(Debug)]
pub enum LeaseAttempt {
    /// This caller holds the lease now.
    Taken(Lease),
    /// Someone else holds it until the given Unix time.
    Busy {
        /// When the other holder's lease runs out.
        expires_at: i64,
    },
}

impl Lease {
    /// Tries once to take the lease on `host` for `ttl`.
    pub async fn try_take(
        store: Arc<dyn Storage>,
        host: &Host,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<LeaseAttempt> {
        let key = StorageKeys::lock(host);
        let owner = random_owner();
        let body = encode(&owner, now.unix_timestamp() + ttl.as_secs() as i64);
        // Three rounds cover a lease that vanishes or changes between our read and our write.
        for _ in 0..3 {
            if let Some(etag) = store.create(&key, body.clone()).await? {
                return Ok(LeaseAttempt::Taken(Self::held(
                    store, host, owner, etag, ttl,
                )));
            }
            let Some(current) = store.get(&key).await? else {
                continue;
            };
            // A lease we cannot read is treated as expired rather than blocking the host forever.
            let expires_at = serde_json::from_slice::<LeaseBody>(&current.bytes)
                .map_or(0, |lease| lease.expires_at);
            if expires_at > now.unix_timestamp() {
                return Ok(LeaseAttempt::Busy { expires_at });
            }
            if let Some(etag) = store.replace(&key, body.clone(), &current.etag).await? {
                return Ok(LeaseAttempt::Taken(Self::held(
                    store, host, owner, etag, ttl,
                )));
            }
        }
        Ok(LeaseAttempt::Busy {
            expires_at: now.unix_timestamp() + 1,
        })
    }

    fn held(
        store: Arc<dyn Storage>,
        host: &Host,
        owner: String,
        etag: ETag,
        ttl: Duration,
    ) -> Self {
        let etag = Arc::new(Mutex::new(etag));
        let refresher = tokio::spawn(extend_until_released(
            Arc::clone(&store),
            host.clone(),
            owner.clone(),
            Arc::clone(&etag),
            ttl,
        ));
        Self {
            store,
            host: host.clone(),
            owner,
            etag,
            refresher,
        }
    }

    /// Whether the lease on `host` is held by anyone right now.
    pub async fn is_held(store: &dyn Storage, host: &Host, now: OffsetDateTime) -> Result<bool> {
        let Some(current) = store.get(&StorageKeys::lock(host)).await? else {
            return Ok(false);
        };
        Ok(serde_json::from_slice::<LeaseBody>(&current.bytes)
            .is_ok_and(|lease| lease.expires_at > now.unix_timestamp()))
    }

    /// Gives the lease up by overwriting it as expired, if it is still ours.
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        let key = StorageKeys::lock(&self.host);
        let body = encode(&self.owner, 0);
        let etag = self.etag.lock().await.clone();
        // Lost means it expired and someone took it over: nothing of ours left to release.
        self.store.replace(&key, body, &etag).await.map(drop)
    }

    /// Forgets the lease without releasing it, as a crashed issuer would.
    #[cfg(any(test, feature = "conformance"))]
    pub fn abandon(self) {
        self.refresher.abort();
    }
}

/// Extends the lease every third of `ttl` while its holder works; stops when it is lost.
async fn extend_until_released(
    store: Arc<dyn Storage>,
    host: Host,
    owner: String,
    etag: Arc<Mutex<ETag>>,
    ttl: Duration,
) {
    let key = StorageKeys::lock(&host);
    loop {
        tokio::time::sleep(ttl / 3).await;
        let expires_at = OffsetDateTime::now_utc().unix_timestamp() + ttl.as_secs() as i64;
        let mut current = etag.lock().await;
        match store
            .replace(&key, encode(&owner, expires_at), &current)
            .await
        {
            Ok(Some(next)) => *current = next,
            Ok(None) => {
                warn!(%host, "lost the lease while issuing: another issuer took it over");
                return;
            }
            // Keep trying: the lease is still valid for two more thirds of its lifetime.
            Err(e) => warn!(%host, error = %e, "could not extend the lease"),
        }
    }
}

fn encode(owner: &str, expires_at: i64) -> Bytes {
    let body = LeaseBody {
        owner: owner.to_owned(),
        expires_at,
    };
    // Serializing a struct of a string and an integer cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

fn random_owner() -> String {
    let mut bytes = [0u8; 12];
    // Without randomness two owners could share a name; the lease then still excludes by ETag.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalDirStorage;

    #[tokio::test]
    async fn excludes_then_expires_then_releases() {
        let dir = std::env::temp_dir().join(format!("certbucket-lease-{}", std::process::id()));
        let store: Arc<dyn Storage> =
            Arc::new(LocalDirStorage::open(&dir).unwrap_or_else(|e| panic!("{e}")));
        let host = Host::parse("lease.test").unwrap_or_else(|e| panic!("{e}"));
        let now = OffsetDateTime::now_utc();
        let ttl = Duration::from_secs(60);

        let first = match Lease::try_take(Arc::clone(&store), &host, ttl, now).await {
            Ok(LeaseAttempt::Taken(lease)) => lease,
            other => panic!("first take: {other:?}"),
        };
        let busy = Lease::try_take(Arc::clone(&store), &host, ttl, now).await;
        assert!(matches!(busy, Ok(LeaseAttempt::Busy { .. })), "{busy:?}");

        // After its expiry anyone may take it over.
        let later = now + Duration::from_secs(61);
        let second = match Lease::try_take(Arc::clone(&store), &host, ttl, later).await {
            Ok(LeaseAttempt::Taken(lease)) => lease,
            other => panic!("take-over: {other:?}"),
        };
        // The first holder's release must not free the second holder's lease.
        first.release().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(Lease::is_held(&*store, &host, later).await.unwrap_or(false));
        second.release().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!Lease::is_held(&*store, &host, later).await.unwrap_or(true));

        // A held lease outlives its first expiry: the refresher extends it.
        let short = Duration::from_secs(3);
        let held = match Lease::try_take(
            Arc::clone(&store),
            &host,
            short,
            OffsetDateTime::now_utc(),
        )
        .await
        {
            Ok(LeaseAttempt::Taken(lease)) => lease,
            other => panic!("take: {other:?}"),
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            Lease::is_held(&*store, &host, OffsetDateTime::now_utc())
                .await
                .unwrap_or(false)
        );
        held.release().await.unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
