//! `Renewer`: one renew-all run over every stored certificate.
//!
//! Each host is looked at on its own: due (see [`RenewalPolicy`]) and allowed hosts are
//! re-issued with a fresh key, at most a few at a time; one failure never stops the others;
//! every outcome lands in the host's [`RenewalRecord`] (the [`Issuer`] writes it). No new work
//! starts once the deadline (a Lambda's remaining time) is near: what is left is reported and
//! done by the next run. Pending on-demand requests (`requests/{host}`) from edges are issued in
//! the same run when `domains` allows them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};
use tracing::{info, warn};

use instant_acme::{Account, CertificateIdentifier};

use crate::{
    admin::RenewalTrigger,
    ari::RenewalWindow,
    error::{Error, Result},
    host::Host,
    issuer::Issuer,
    record::CertificateRecord,
    renewal::RenewalPolicy,
    renewal_record::RenewalRecord,
    storage::StorageKeys,
};

/// What one run did, host by host.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RenewalReport {
    /// Re-issued and stored.
    pub renewed: Vec<String>,
    /// Tried and failed, with the reason.
    pub failed: Vec<RenewalFailure>,
    /// Not due yet.
    pub not_due: Vec<String>,
    /// Due, but inside `fail_backoff_minutes` after a failure.
    pub backing_off: Vec<String>,
    /// No longer allowed by `domains`: not renewed, still served until it expires.
    pub no_longer_allowed: Vec<String>,
    /// Due, but not started because the deadline was near.
    pub left_for_next_run: Vec<String>,
    /// On-demand requests (`requests/`) dropped because `domains` does not allow the host.
    pub refused_requests: Vec<String>,
}

/// One failed host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenewalFailure {
    /// The host.
    pub host: String,
    /// Why.
    pub error: String,
}

/// What serving one on-demand request came to, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestOutcome {
    /// A certificate was issued and stored.
    Issued,
    /// The host already has a certificate.
    AlreadyStored,
    /// `domains` does not allow the host.
    NotAllowed,
}

impl std::fmt::Display for RequestOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Issued => "issued",
            Self::AlreadyStored => "a certificate is stored already",
            Self::NotAllowed => "not allowed by domains",
        })
    }
}

/// Renews what is due.
#[derive(Debug, Clone)]
pub struct Renewer {
    issuer: Issuer,
    concurrency: usize,
    /// Time kept in hand before the deadline: an issuance is not started with less left.
    reserve: Duration,
}

impl Renewer {
    /// A renewer issuing through `issuer`, four hosts at a time.
    pub fn new(issuer: Issuer) -> Self {
        Self {
            issuer,
            concurrency: 4,
            reserve: Duration::from_secs(60),
        }
    }

    /// A `PATCH /acme` trigger running renew-all on a task of this process, one run at a time.
    pub fn background_trigger(issuer: Issuer) -> RenewalTrigger {
        let running = Arc::new(AtomicBool::new(false));
        Arc::new(move || {
            if running.swap(true, Ordering::SeqCst) {
                return Box::pin(async { Ok(false) });
            }
            let (issuer, running) = (issuer.clone(), Arc::clone(&running));
            tokio::spawn(async move {
                match Self::new(issuer).run(OffsetDateTime::now_utc(), None).await {
                    Ok(report) => info!(?report, "background renewal finished"),
                    Err(e) => warn!(error = %e, "background renewal failed"),
                }
                running.store(false, Ordering::SeqCst);
            });
            Box::pin(async { Ok(true) })
        })
    }

    /// At most `concurrency` issuances at once (at least one).
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Renews every due host as of `now`, starting nothing after `deadline - reserve`.
    pub async fn run(
        &self,
        now: OffsetDateTime,
        deadline: Option<Instant>,
    ) -> Result<RenewalReport> {
        let store = Arc::clone(self.issuer.store());
        let config = Arc::clone(self.issuer.config());
        let policy = RenewalPolicy::new(config.renew_threshold_days);
        // With no allow-list at all, every host came from an admin and keeps renewing.
        let has_allow_list = !config.domains.patterns.is_empty() || config.domains.allow_any_domain;

        let mut report = RenewalReport::default();
        // Hosts to issue, with the certificate each replaces when the CA offers ARI.
        let mut due: Vec<(Host, Option<CertificateIdentifier<'static>>)> = Vec::new();
        // The account is loaded once, on the first certificate, to ask for ARI windows.
        let mut account: Option<Option<Account>> = None;
        for key in store.list(&StorageKeys::certs_prefix()).await? {
            let Some(host) = StorageKeys::host_of_cert(&key) else {
                continue;
            };
            let record = match store.get(&key).await? {
                Some(object) => CertificateRecord::from_json(&host, &object.bytes),
                None => continue,
            };
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    // An unreadable record is renewed: a fresh certificate replaces it.
                    warn!(%host, error = %e, "stored certificate is unreadable; renewing it");
                    due.push((host, None));
                    continue;
                }
            };
            if has_allow_list && !config.domains.allows(&host) {
                report.no_longer_allowed.push(host.to_string());
                continue;
            }
            let account = match &account {
                Some(loaded) => loaded.as_ref(),
                None => account.insert(self.load_account().await).as_ref(),
            };
            let window = match account {
                Some(account) => self.ari_window(account, &record).await,
                None => None,
            };
            let (not_before, not_after) = (unix(record.not_before), unix(record.not_after));
            let ari_due = window
                .as_ref()
                .is_some_and(|(w, _)| w.is_due(&record.serial_number, now));
            if !ari_due && !policy.is_due(not_before, not_after, now) {
                report.not_due.push(host.to_string());
                continue;
            }
            let history = RenewalRecord::load(&*store, &host).await?;
            if history.and_then(|h| h.backing_off_until(now)).is_some() {
                report.backing_off.push(host.to_string());
                continue;
            }
            due.push((host, window.map(|(_, replaces)| replaces)));
        }
        let hosts: Vec<Host> = due.iter().map(|(host, _)| host.clone()).collect();
        let requested = self.pending_requests(&mut report, &hosts).await?;
        due.extend(requested.iter().map(|host| (host.clone(), None)));

        let slots = Arc::new(Semaphore::new(self.concurrency.max(1)));
        let mut running = JoinSet::new();
        for (host, replaces) in due {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            if deadline.is_some_and(|d| Instant::now() + self.reserve >= d) {
                report.left_for_next_run.push(host.to_string());
                continue;
            }
            let issuer = self.issuer.clone();
            running.spawn(async move {
                let outcome = issuer.issue_replacing(&host, replaces.as_ref()).await;
                drop(permit);
                (host, outcome)
            });
        }
        while let Some(joined) = running.join_next().await {
            match joined {
                Ok((host, Ok(_))) => {
                    if requested.contains(&host) {
                        self.drop_request(&host).await;
                    }
                    report.renewed.push(host.to_string());
                }
                Ok((host, Err(e))) => report.failed.push(failure(&host, &e)),
                Err(e) => warn!(error = %e, "a renewal task ended abnormally"),
            }
        }
        for list in [
            &mut report.renewed,
            &mut report.not_due,
            &mut report.left_for_next_run,
        ] {
            list.sort();
        }
        report.failed.sort_by(|a, b| a.host.cmp(&b.host));
        info!(
            renewed = report.renewed.len(),
            failed = report.failed.len(),
            not_due = report.not_due.len(),
            left = report.left_for_next_run.len(),
            "renew-all finished"
        );
        Ok(report)
    }
}

impl Renewer {
    /// The ACME account for ARI queries; without one (the CA is down), renewals go by
    /// `renew_threshold_days` alone.
    async fn load_account(&self) -> Option<Account> {
        match self.issuer.account().await {
            Ok(account) => Some(account),
            Err(e) => {
                warn!(error = %e, "cannot reach the ACME account; renewing by renew_threshold_days");
                None
            }
        }
    }

    /// The CA's ARI window for `record`, or `None` (no ARI, or it failed: logged).
    async fn ari_window(
        &self,
        account: &Account,
        record: &CertificateRecord,
    ) -> Option<(RenewalWindow, CertificateIdentifier<'static>)> {
        match self.issuer.renewal_window(account, record).await {
            Ok(window) => window,
            Err(e) => {
                warn!(host = %record.host, error = %e, "no renewal information from the CA");
                None
            }
        }
    }

    /// The hosts of pending on-demand requests to issue now. Requests the allow-list refuses,
    /// and requests for hosts that have a certificate already, are removed.
    async fn pending_requests(
        &self,
        report: &mut RenewalReport,
        already_due: &[Host],
    ) -> Result<Vec<Host>> {
        let store = self.issuer.store();
        let policy = &self.issuer.config().domains;
        let mut wanted = Vec::new();
        for key in store.list(&StorageKeys::requests_prefix()).await? {
            let Some(host) = StorageKeys::host_of_request(&key) else {
                continue;
            };
            if !policy.allows(&host) {
                report.refused_requests.push(host.to_string());
                self.drop_request(&host).await;
            } else if already_due.contains(&host) {
                continue;
            } else if store.get(&StorageKeys::cert(&host)).await?.is_some() {
                self.drop_request(&host).await;
            } else {
                wanted.push(host);
            }
        }
        Ok(wanted)
    }

    /// Serves one on-demand request now (the `apply` function's S3 event): issues when the
    /// allow-list takes the host and nothing is stored yet. The request object is removed
    /// unless issuance failed, so a later run tries again.
    pub async fn serve_request(&self, host: &Host) -> Result<RequestOutcome> {
        let outcome = if !self.issuer.config().domains.allows(host) {
            RequestOutcome::NotAllowed
        } else if self.issuer.stored(host).await?.is_some() {
            RequestOutcome::AlreadyStored
        } else {
            self.issuer.issue(host).await?;
            RequestOutcome::Issued
        };
        self.drop_request(host).await;
        Ok(outcome)
    }

    async fn drop_request(&self, host: &Host) {
        if let Err(e) = self
            .issuer
            .store()
            .delete(&StorageKeys::request(host))
            .await
        {
            warn!(%host, error = %e, "could not remove a served on-demand request");
        }
    }
}

fn unix(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn failure(host: &Host, error: &Error) -> RenewalFailure {
    RenewalFailure {
        host: host.to_string(),
        error: error.to_string(),
    }
}
