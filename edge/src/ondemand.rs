//! `OnDemandRequests`: gets a certificate the edge does not have, for hosts that
//! `domains`/`allow_any_domain` allow: by writing `v1/requests/{host}` once for the functions to
//! issue, or, in single-box mode, by issuing right here.
//!
//! A flood of handshakes for one unknown name costs one write: the resolver's negative cache
//! already spaces the misses out, and a set of names asked for in this process stops the rest.
//! The write is create-if-absent, so many edges asking for one name leave one object.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use certbucket_core::{DomainPolicy, Host, Issuer, Storage, StorageKeys};
use serde_json::json;
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::metrics::{Metrics, StoreError};

/// Names remembered as asked for; past this, asking again is a harmless create-if-absent.
const MAX_REMEMBERED: usize = 10_000;

/// What the edge does for an unknown SNI that the allow-list takes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum OnDemand {
    /// Write `v1/requests/{host}` for the functions to issue (the serverless deployment).
    Request(DomainPolicy),
    /// Issue in this process with this issuer and its config's allow-list (`--issue-locally`).
    Issue(Issuer),
}

/// Gets certificates for allowed hosts the edge has none for.
pub(crate) struct OnDemandRequests {
    store: Arc<dyn Storage>,
    policy: DomainPolicy,
    issuer: Option<Issuer>,
    asked: Mutex<HashSet<Host>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for OnDemandRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemandRequests")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl OnDemandRequests {
    pub(crate) fn new(store: Arc<dyn Storage>, action: OnDemand, metrics: Arc<Metrics>) -> Self {
        let (policy, issuer) = match action {
            OnDemand::Request(policy) => (policy, None),
            OnDemand::Issue(issuer) => (issuer.config().domains.clone(), Some(issuer)),
        };
        Self {
            store,
            policy,
            issuer,
            asked: Mutex::new(HashSet::new()),
            metrics,
        }
    }

    /// Asks for `host` in the background if it is allowed and not asked for yet; `issued` runs
    /// once a certificate was issued here.
    pub(crate) fn ask(self: &Arc<Self>, host: &Host, issued: impl FnOnce() + Send + 'static) {
        if !self.policy.allows(host) || !self.remember(host) {
            return;
        }
        let this = Arc::clone(self);
        let host = host.clone();
        if let Some(issuer) = self.issuer.clone() {
            tokio::spawn(async move {
                match issuer.issue(&host).await {
                    Ok(_) => {
                        info!(%host, "certificate issued on demand");
                        issued();
                    }
                    Err(e) => warn!(%host, error = %e, "on-demand issuance failed"),
                }
                // Issued or not, a later handshake may ask again (the issuer's backoff applies).
                this.forget(&host);
            });
            return;
        }
        tokio::spawn(async move {
            let body = json!({
                "host": host.as_str(),
                "requested_at": OffsetDateTime::now_utc().unix_timestamp(),
            });
            let key = StorageKeys::request(&host);
            match this.store.create(&key, Bytes::from(body.to_string())).await {
                Ok(Some(_)) => {
                    this.metrics.request_written();
                    info!(%host, "asked for a certificate (on-demand request written)");
                }
                Ok(None) => {}
                Err(e) => {
                    this.metrics.store_error(StoreError::Unreachable);
                    // Forget it, so a later handshake asks again.
                    this.forget(&host);
                    warn!(%host, error = %e, "could not write the on-demand request");
                }
            }
        });
    }

    /// Records `host` as asked for; false when it already was.
    fn remember(&self, host: &Host) -> bool {
        let Ok(mut asked) = self.asked.lock() else {
            return false;
        };
        if asked.contains(host) {
            return false;
        }
        if asked.len() < MAX_REMEMBERED {
            asked.insert(host.clone());
        }
        true
    }

    fn forget(&self, host: &Host) {
        if let Ok(mut asked) = self.asked.lock() {
            asked.remove(host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestStore, host};

    fn policy() -> DomainPolicy {
        DomainPolicy {
            patterns: vec![
                certbucket_core::DomainPattern::parse("*.example.com")
                    .unwrap_or_else(|e| panic!("{e}")),
            ],
            allow_any_domain: false,
            enable_ipv4_common_name: true,
        }
    }

    #[tokio::test]
    async fn asks_once_per_allowed_name_and_never_for_others() {
        let store = TestStore::new();
        let metrics = Arc::new(Metrics::default());
        let requests = Arc::new(OnDemandRequests::new(
            store.clone(),
            OnDemand::Request(policy()),
            Arc::clone(&metrics),
        ));
        for _ in 0..1_000 {
            requests.ask(&host("fresh.example.com"), || {});
            requests.ask(&host("evil.example.org"), || {});
            requests.ask(&host("example.com"), || {});
        }
        // The write runs on a task: wait for it.
        for _ in 0..100 {
            if !store.keys().await.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let keys: Vec<_> = store.keys().await.iter().map(ToString::to_string).collect();
        assert_eq!(keys, ["v1/requests/fresh.example.com"]);
        assert_eq!(store.creates(), 1);
    }
}
