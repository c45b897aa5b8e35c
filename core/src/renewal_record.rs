//! `RenewalRecord`: what `v1/renewals/{host}.json` holds — the outcome of the last attempts
//! for a host, so failures back off per host and operators can see why.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::{
    error::{Error, Result},
    host::Host,
    storage::{Storage, StorageKeys},
};

/// The last attempts for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalRecord {
    /// The host.
    pub host: Host,
    /// When the last attempt ended, Unix seconds.
    pub last_attempt: i64,
    /// When a certificate was last stored, Unix seconds.
    pub last_success: Option<i64>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// The last failure's message, cleared by a success.
    pub last_error: Option<String>,
    /// No new attempt before this time (Unix seconds); set only after a failure.
    pub next_retry: Option<i64>,
}

impl RenewalRecord {
    /// The record stored for `host`; an unreadable one counts as none (it only holds history).
    pub async fn load(store: &dyn Storage, host: &Host) -> Result<Option<Self>> {
        let key = StorageKeys::renewal(host);
        let Some(object) = store.get(&key).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<Self>(&object.bytes) {
            Ok(record) if &record.host == host => Ok(Some(record)),
            _ => {
                tracing::warn!(%host, "ignoring an unreadable renewal record");
                Ok(None)
            }
        }
    }

    /// When the host may be tried again, if it is backing off at `now`.
    pub fn backing_off_until(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let until = OffsetDateTime::from_unix_timestamp(self.next_retry?).ok()?;
        (until > now).then_some(until)
    }

    /// Records a stored certificate: failures and backoff are cleared.
    pub async fn record_success(
        store: &dyn Storage,
        host: &Host,
        now: OffsetDateTime,
    ) -> Result<()> {
        let record = Self {
            host: host.clone(),
            last_attempt: now.unix_timestamp(),
            last_success: Some(now.unix_timestamp()),
            failures: 0,
            last_error: None,
            next_retry: None,
        };
        record.save(store).await
    }

    /// Records a failure and the backoff that follows it.
    pub async fn record_failure(
        store: &dyn Storage,
        host: &Host,
        now: OffsetDateTime,
        error: &str,
        backoff: Duration,
    ) -> Result<Self> {
        let previous = Self::load(store, host).await?;
        let record = Self {
            host: host.clone(),
            last_attempt: now.unix_timestamp(),
            last_success: previous.as_ref().and_then(|p| p.last_success),
            failures: previous.map_or(0, |p| p.failures).saturating_add(1),
            last_error: Some(error.to_owned()),
            next_retry: Some((now + backoff).unix_timestamp()),
        };
        record.save(store).await?;
        Ok(record)
    }

    async fn save(&self, store: &dyn Storage) -> Result<()> {
        let key = StorageKeys::renewal(&self.host);
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::corrupt(key.as_str(), e.to_string()))?;
        store.put(&key, Bytes::from(json)).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::LocalDirStorage;

    #[tokio::test]
    async fn failures_back_off_and_success_clears_them() {
        let dir = std::env::temp_dir().join(format!("certbucket-renewal-{}", std::process::id()));
        let store: Arc<dyn Storage> =
            Arc::new(LocalDirStorage::open(&dir).unwrap_or_else(|e| panic!("{e}")));
        let host = Host::parse("backoff.test").unwrap_or_else(|e| panic!("{e}"));
        let now = OffsetDateTime::from_unix_timestamp(1_000_000).unwrap_or_else(|e| panic!("{e}"));
        let backoff = Duration::minutes(5);

        assert_eq!(
            RenewalRecord::load(&*store, &host).await.ok().flatten(),
            None
        );
        RenewalRecord::record_failure(&*store, &host, now, "boom", backoff)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let second = RenewalRecord::record_failure(&*store, &host, now, "boom again", backoff)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(second.failures, 2);
        assert_eq!(second.last_error.as_deref(), Some("boom again"));
        assert_eq!(second.backing_off_until(now), Some(now + backoff));
        assert_eq!(second.backing_off_until(now + backoff), None);

        RenewalRecord::record_success(&*store, &host, now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let cleared = RenewalRecord::load(&*store, &host).await.ok().flatten();
        let cleared = cleared.unwrap_or_else(|| panic!("record after success"));
        assert_eq!((cleared.failures, cleared.next_retry), (0, None));
        assert_eq!(cleared.last_success, Some(now.unix_timestamp()));

        // A garbage record is history lost, not an error that blocks issuance.
        store
            .put(
                &StorageKeys::renewal(&host),
                Bytes::from_static(b"{garbage"),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            RenewalRecord::load(&*store, &host).await.ok().flatten(),
            None
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
