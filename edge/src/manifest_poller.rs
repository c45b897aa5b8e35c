//! `ManifestPoller`: learns of new and renewed certificates by polling `v1/manifest.json` with
//! a conditional read, so a change reaches this edge within one poll interval and an idle edge
//! costs the store one request per poll, whatever the number of certificates.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use certbucket_core::{ETag, Freshness, Host, Manifest, Storage, StorageKeys};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{metrics::Metrics, resolver::CertResolver};

/// Polls the manifest and invalidates the certificates whose version changed.
pub(crate) struct ManifestPoller {
    store: Arc<dyn Storage>,
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
    interval: Duration,
}

impl ManifestPoller {
    pub(crate) fn new(
        store: Arc<dyn Storage>,
        resolver: Arc<CertResolver>,
        metrics: Arc<Metrics>,
        interval: Duration,
    ) -> Self {
        Self {
            store,
            resolver,
            metrics,
            interval,
        }
    }

    /// Polls until `shutdown`; a failed poll keeps everything served and is retried next time.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let key = StorageKeys::manifest();
        let mut known: Option<(ETag, BTreeMap<String, String>)> = None;
        let mut failing = false;
        loop {
            self.metrics.manifest_poll();
            let read = self
                .store
                .get_if_changed(&key, known.as_ref().map(|(tag, _)| tag))
                .await;
            match read {
                Ok(Freshness::Unchanged | Freshness::Missing) => {}
                Ok(Freshness::Changed(object)) => {
                    match serde_json::from_slice::<Manifest>(&object.bytes) {
                        Ok(manifest) => {
                            // Before the first manifest, a cached certificate may be older than
                            // it: everything in it counts as changed (and is re-read once).
                            let before = known.map(|(_, certs)| certs).unwrap_or_default();
                            self.invalidate_changed(&before, &manifest.certs);
                            known = Some((object.etag, manifest.certs));
                        }
                        Err(e) => warn!(error = %e, "unreadable manifest; keeping what is served"),
                    }
                }
                Err(e) => {
                    self.metrics.store_error();
                    // Once per outage, not once per poll.
                    if !failing {
                        warn!(error = %e, "cannot poll the manifest; serving what is cached");
                    }
                    failing = true;
                    tokio::select! {
                        () = tokio::time::sleep(self.interval) => {}
                        () = shutdown.cancelled() => return,
                    }
                    continue;
                }
            }
            if failing {
                info!("the manifest can be read again");
                failing = false;
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
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
