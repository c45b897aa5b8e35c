//! `ManifestPoller`: learns of new and renewed certificates by polling `v1/manifest.json` with
//! a conditional read, so a change reaches this edge within one poll interval and an idle edge
//! costs the store one request per poll, whatever the number of certificates.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use certbucket_core::{ETag, Freshness, Host, Manifest, Storage, StorageKeys};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    metrics::{Metrics, StoreError},
    resolver::CertResolver,
    store_health::StoreHealth,
};

/// How long one poll may take before it counts as failed.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);
/// While the store is down, polls are spaced out up to this many intervals...
const MAX_BACKOFF_INTERVALS: u32 = 8;
/// ...and at most this long, so the edge notices the store's return soon.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Polls the manifest and re-reads the certificates whose version changed.
pub(crate) struct ManifestPoller {
    store: Arc<dyn Storage>,
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
    health: Arc<StoreHealth>,
    interval: Duration,
}

impl ManifestPoller {
    pub(crate) fn new(
        store: Arc<dyn Storage>,
        resolver: Arc<CertResolver>,
        metrics: Arc<Metrics>,
        health: Arc<StoreHealth>,
        interval: Duration,
    ) -> Self {
        Self {
            store,
            resolver,
            metrics,
            health,
            interval,
        }
    }

    /// How long to wait before the next poll after `failures` failed ones in a row.
    fn wait(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.interval;
        }
        let cap = (self.interval * MAX_BACKOFF_INTERVALS)
            .min(MAX_BACKOFF)
            .max(self.interval);
        self.interval.saturating_mul(1 << failures.min(16)).min(cap)
    }

    /// Polls until `shutdown`; a failed poll keeps everything served and is retried with a
    /// back-off.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let key = StorageKeys::manifest();
        // The tag last read (usable or not) and the last usable host -> version map.
        let mut known_tag: Option<ETag> = None;
        let mut known: Option<BTreeMap<String, String>> = None;
        let mut failures = 0u32;
        loop {
            self.metrics.manifest_poll();
            let read = tokio::time::timeout(
                POLL_TIMEOUT,
                self.store.get_if_changed(&key, known_tag.as_ref()),
            )
            .await;
            match read {
                Ok(Ok(freshness)) => {
                    failures = 0;
                    self.health.succeeded();
                    self.health.set_manifest_loaded();
                    if let Freshness::Changed(object) = freshness {
                        match serde_json::from_slice::<Manifest>(&object.bytes) {
                            Ok(manifest) => {
                                // Before the first manifest, a cached certificate may be older
                                // than it: everything in it counts as changed (and is re-read).
                                let before = known.take().unwrap_or_default();
                                self.invalidate_changed(&before, &manifest.certs);
                                known = Some(manifest.certs);
                            }
                            Err(e) => {
                                self.metrics.store_error(StoreError::Unusable);
                                // Logged once per bad version: its tag is remembered.
                                warn!(error = %e, "unreadable manifest; keeping what is served");
                            }
                        }
                        known_tag = Some(object.etag);
                    }
                }
                Ok(Err(e)) => {
                    failures = failures.saturating_add(1);
                    self.metrics.store_error(StoreError::Unreachable);
                    self.health.failed(Instant::now(), "manifest", &e);
                }
                Err(_) => {
                    failures = failures.saturating_add(1);
                    self.metrics.store_error(StoreError::Unreachable);
                    let message = format!("no answer within {} s", POLL_TIMEOUT.as_secs());
                    self.health.failed(Instant::now(), "manifest", &message);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.wait(failures)) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    fn invalidate_changed(
        &self,
        before: &BTreeMap<String, String>,
        now: &BTreeMap<String, String>,
    ) {
        for (name, version) in now {
            if before.get(name) == Some(version) {
                continue;
            }
            if let Ok(host) = Host::parse(name) {
                debug!(%host, "new certificate version in the manifest");
                self.resolver.invalidate(&host);
            }
        }
    }
}
