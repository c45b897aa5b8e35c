//! `Issuer`: one issuance for one host, end to end, under the host's lease.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewOrder,
    Order, OrderStatus, RetryPolicy,
};
use rcgen::{
    CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
    RsaKeySize,
};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::{
    account::{AcmeAccounts, AcmeHttpFactory},
    ari::{self, RenewalWindow},
    challenge::ChallengeToken,
    config::{CertType, Config},
    error::{Error, Result},
    host::Host,
    lease::{Lease, LeaseAttempt},
    manifest::Manifest,
    record::{self, CertificateRecord},
    renewal_record::RenewalRecord,
    retry::{self, retrying},
    secret::Secret,
    storage::{Storage, StorageKeys},
};

/// Timings of an issuance.
#[derive(Debug, Clone)]
pub struct IssuerOptions {
    /// How long a lease lasts; a crashed issuer's lease runs out after this.
    pub lease_ttl: Duration,
    /// How long to wait for the CA to validate, or for another issuer's order to finish.
    pub wait_timeout: Duration,
}

impl Default for IssuerOptions {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(300),
            wait_timeout: Duration::from_secs(120),
        }
    }
}

/// Issues certificates for hosts into the store.
#[derive(Clone)]
pub struct Issuer {
    store: Arc<dyn Storage>,
    config: Arc<Config>,
    accounts: AcmeAccounts,
    options: IssuerOptions,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("store", &self.store)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer for the CA and key type of `config`, talking HTTP through `http`.
    pub fn new(
        store: Arc<dyn Storage>,
        config: Arc<Config>,
        http: AcmeHttpFactory,
        options: IssuerOptions,
    ) -> Self {
        let accounts = AcmeAccounts::new(Arc::clone(&store), Arc::clone(&config), http);
        Self {
            store,
            config,
            accounts,
            options,
        }
    }

    /// The store this issuer writes to.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// The config this issuer runs with.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Issues a certificate for `host` and stores it.
    ///
    /// When another issuer holds the host's lease, waits for it to finish and returns the
    /// certificate it stored; never claims a certificate that was not stored.
    pub async fn issue(&self, host: &Host) -> Result<CertificateRecord> {
        self.issue_replacing(host, None).await
    }

    /// Like [`Issuer::issue`], telling an ARI-capable CA which certificate the new one
    /// replaces (RFC 9773 `replaces`).
    pub async fn issue_replacing(
        &self,
        host: &Host,
        replaces: Option<&CertificateIdentifier<'static>>,
    ) -> Result<CertificateRecord> {
        if !self.config.tos_accepted {
            return Err(Error::Refused {
                host: host.clone(),
                message: format!(
                    "tos_accepted must be true: read and accept the terms of service of {} first",
                    self.config.api_uri
                ),
            });
        }
        let started = OffsetDateTime::now_utc();
        self.refuse_if_backing_off(host, started).await?;
        let deadline = tokio::time::Instant::now() + self.options.wait_timeout;
        loop {
            let now = OffsetDateTime::now_utc();
            let attempt =
                Lease::try_take(Arc::clone(&self.store), host, self.options.lease_ttl, now).await?;
            let LeaseAttempt::Taken(lease) = attempt else {
                // Someone else is ordering this host: wait for them, then use what they stored.
                if let Some(record) = self.wait_for_other(host, started, deadline).await? {
                    return Ok(record);
                }
                // They stopped without a certificate (or crashed and their lease ran out):
                // their failure may have started the backoff, which holds for us too.
                self.refuse_if_backing_off(host, OffsetDateTime::now_utc())
                    .await?;
                continue;
            };
            let result = self.issue_under_lease(host, replaces).await;
            self.record_outcome(host, &result).await;
            if let Err(e) = lease.release().await {
                // The lease runs out by itself; the certificate (if any) is stored already.
                warn!(%host, error = %e, "could not release the lease");
            }
            return result;
        }
    }

    /// Waits for another issuer's lease on `host` to end; returns the certificate it stored
    /// since `started`, or `None` when it ended without one.
    async fn wait_for_other(
        &self,
        host: &Host,
        started: OffsetDateTime,
        deadline: tokio::time::Instant,
    ) -> Result<Option<CertificateRecord>> {
        info!(%host, "another issuer holds the lease; waiting for its result");
        while Lease::is_held(&*self.store, host, OffsetDateTime::now_utc()).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::InProgress { host: host.clone() });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        match self.stored(host).await? {
            Some(record) if record.issued_at >= started.unix_timestamp() => Ok(Some(record)),
            _ => Ok(None),
        }
    }

    /// `Err(BackingOff)` while a failure's `fail_backoff_minutes` runs for `host`.
    async fn refuse_if_backing_off(&self, host: &Host, now: OffsetDateTime) -> Result<()> {
        let history = RenewalRecord::load(&*self.store, host).await?;
        match history.and_then(|h| h.backing_off_until(now)) {
            Some(until) => Err(Error::BackingOff {
                host: host.clone(),
                until: until.unix_timestamp(),
            }),
            None => Ok(()),
        }
    }

    /// Writes the renewal record: a success clears the backoff, a failure starts it.
    async fn record_outcome(&self, host: &Host, result: &Result<CertificateRecord>) {
        let now = OffsetDateTime::now_utc();
        let recorded = match result {
            Ok(_) => RenewalRecord::record_success(&*self.store, host, now).await,
            Err(e) => {
                let mut backoff =
                    time::Duration::seconds_f64(self.config.fail_backoff_minutes * 60.0);
                // A rate-limited CA is left alone until the time it names, if that is later.
                if let Some(until) = ari::rate_limited_until(e, now) {
                    backoff = backoff.max(until - now);
                }
                RenewalRecord::record_failure(&*self.store, host, now, &e.to_string(), backoff)
                    .await
                    .map(drop)
            }
        };
        if let Err(e) = recorded {
            warn!(%host, error = %e, "could not write the renewal record");
        }
    }

    /// The ACME account (loaded from the store, or registered and stored).
    pub async fn account(&self) -> Result<Account> {
        self.accounts.load_or_create().await
    }

    /// The CA's ARI window for `record` and the identifier a replacing order names; `None`
    /// when the CA does not offer ARI (Pebble 2.4, many private CAs).
    pub async fn renewal_window(
        &self,
        account: &Account,
        record: &CertificateRecord,
    ) -> Result<Option<(RenewalWindow, CertificateIdentifier<'static>)>> {
        let chain = record.chain_der()?;
        let Some(leaf) = chain.first() else {
            return Ok(None);
        };
        let id = CertificateIdentifier::try_from(leaf)
            .map_err(|message| Error::Crypto {
                host: record.host.to_string(),
                message: format!("no ARI identifier in the stored certificate: {message}"),
            })?
            .into_owned();
        match retrying!("renewal info", account.renewal_info(&id).await) {
            Ok((info, _retry_after)) => Ok(Some((
                RenewalWindow {
                    start: info.suggested_window.start,
                    end: info.suggested_window.end,
                },
                id,
            ))),
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(acme(&record.host, "asking for renewal information", e)),
        }
    }

    /// The record stored for `host`, if any and readable.
    pub async fn stored(&self, host: &Host) -> Result<Option<CertificateRecord>> {
        match self.store.get(&StorageKeys::cert(host)).await? {
            Some(object) => CertificateRecord::from_json(host, &object.bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn issue_under_lease(
        &self,
        host: &Host,
        replaces: Option<&CertificateIdentifier<'static>>,
    ) -> Result<CertificateRecord> {
        let account = self.accounts.load_or_create().await?;
        let identifier = match host.as_str().parse() {
            Ok(ip) => Identifier::Ip(ip),
            Err(_) => Identifier::Dns(host.to_string()),
        };
        let identifiers = [identifier];
        let mut created = match replaces {
            Some(id) => {
                let replacing = NewOrder::new(&identifiers).replaces(id.clone());
                retrying!("new order", account.new_order(&replacing).await)
            }
            None => retrying!(
                "new order",
                account.new_order(&NewOrder::new(&identifiers)).await
            ),
        };
        if let (Some(_), Err(e)) = (replaces, &created) {
            // A CA may refuse `replaces` (already replaced, unknown certificate): order anew.
            warn!(%host, error = %e, "the CA refused the replacement order; ordering anew");
            let plain = NewOrder::new(&identifiers);
            created = retrying!("new order", account.new_order(&plain).await);
        }
        let mut order = created.map_err(|e| acme(host, "creating the order", e))?;
        info!(%host, order = order.url(), "order created");

        let mut published = Vec::new();
        let outcome = self.complete_order(host, &mut order, &mut published).await;
        for token in &published {
            if let Err(e) = self.store.delete(&StorageKeys::challenge(token)).await {
                warn!(%host, error = %e, "could not remove a challenge object");
            }
        }
        outcome
    }

    /// Publishes and readies every pending challenge. A transient failure restarts the walk
    /// over the authorizations, skipping the challenges already readied.
    async fn ready_challenges(
        &self,
        host: &Host,
        order: &mut Order,
        published: &mut Vec<ChallengeToken>,
    ) -> Result<()> {
        let mut readied: Vec<String> = Vec::new();
        let mut attempt = 1;
        loop {
            match self.ready_pass(host, order, published, &mut readied).await {
                Err(ReadyError::Acme(step, e))
                    if attempt < retry::MAX_ATTEMPTS && retry::is_transient(&e) =>
                {
                    tracing::debug!(%host, step, attempt, error = %e, "transient ACME error; retrying");
                    tokio::time::sleep(retry::backoff(attempt)).await;
                    attempt += 1;
                }
                Err(ReadyError::Acme(step, e)) => return Err(acme(host, step, e)),
                Err(ReadyError::Other(e)) => return Err(e),
                Ok(()) => return Ok(()),
            }
        }
    }

    async fn ready_pass(
        &self,
        host: &Host,
        order: &mut Order,
        published: &mut Vec<ChallengeToken>,
        readied: &mut Vec<String>,
    ) -> Result<(), ReadyError> {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(|e| ReadyError::Acme("fetching the authorization", e))?;
            if authorization.status == AuthorizationStatus::Valid {
                continue;
            }
            let mut challenge =
                authorization
                    .challenge(ChallengeType::Http01)
                    .ok_or_else(|| Error::Refused {
                        host: host.clone(),
                        message: "the CA offered no http-01 challenge".to_owned(),
                    })?;
            if readied.contains(&challenge.url) {
                continue;
            }
            let token = ChallengeToken::parse(&challenge.token).ok_or_else(|| Error::Refused {
                host: host.clone(),
                message: "the CA sent a challenge token that is not base64url".to_owned(),
            })?;
            let key_authorization = challenge.key_authorization();
            self.store
                .put(
                    &StorageKeys::challenge(&token),
                    Bytes::from(key_authorization.as_str().to_owned()),
                )
                .await?;
            published.push(token);
            challenge
                .set_ready()
                .await
                .map_err(|e| ReadyError::Acme("telling the CA the challenge is ready", e))?;
            readied.push(challenge.url.clone());
        }
        Ok(())
    }

    async fn complete_order(
        &self,
        host: &Host,
        order: &mut Order,
        published: &mut Vec<ChallengeToken>,
    ) -> Result<CertificateRecord> {
        self.ready_challenges(host, order, published).await?;

        // instant-acme sleeps before its first look, so start small (a CA like Pebble validates
        // and issues within milliseconds) and back off gently: 10, 15, 22 ms ... a dozen looks in
        // the first 2.5 s against a slower CA. instant-acme honours a Retry-After the CA sends.
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(10))
            .backoff(1.5)
            .timeout(self.options.wait_timeout);
        let status = retrying!("poll ready", order.poll_ready(&retries).await)
            .map_err(|e| acme(host, "waiting for validation", e))?;
        if status != OrderStatus::Ready {
            return Err(Error::Refused {
                host: host.clone(),
                message: format!(
                    "the CA did not validate the host: {}",
                    failure_of(order).await
                ),
            });
        }

        let (key_pem, csr_der) = self.key_and_csr(host)?;
        if let Err(e) = retrying!("finalize", order.finalize_csr(&csr_der).await) {
            // A finalize whose answer was lost may have gone through: go on if it did.
            let state = retrying!("refresh", order.refresh().await.map(|s| s.status));
            if !matches!(state, Ok(OrderStatus::Processing | OrderStatus::Valid)) {
                return Err(acme(host, "finalizing the order", e));
            }
        }
        let chain_pem = retrying!("certificate", order.poll_certificate(&retries).await)
            .map_err(|e| acme(host, "downloading the certificate", e))?;
        self.check_preferred_chain(host, &chain_pem);

        let record = CertificateRecord::new(
            host.clone(),
            chain_pem,
            key_pem,
            self.config.cert_type,
            OffsetDateTime::now_utc(),
        )?;
        let version = self
            .store
            .put(&StorageKeys::cert(host), Bytes::from(record.to_json()?))
            .await?;
        // The certificate is stored and served on a miss already; the manifest tells running
        // edges to reload it, so a failure here is logged, not returned.
        if let Err(e) = Manifest::record(&*self.store, host, &version).await {
            warn!(%host, error = %e, "could not update the manifest");
        }
        info!(%host, serial = %record.serial_number, "certificate stored");
        Ok(record)
    }

    /// Kong picks the alternate chain whose top issuer is `preferred_chain` and falls back to
    /// the default chain. instant-acme gives only the default chain (alternates are announced
    /// in `Link` headers it does not expose), so certbucket stores the default chain and says
    /// so when it is not the preferred one.
    fn check_preferred_chain(&self, host: &Host, chain_pem: &str) {
        let Some(preferred) = self.config.preferred_chain.as_deref() else {
            return;
        };
        let top = record::chain_top_issuer(chain_pem).unwrap_or_default();
        if top != preferred {
            warn!(
                %host,
                preferred_chain = preferred,
                default_chain = %top,
                "storing the CA's default chain: alternate chains cannot be fetched"
            );
        }
    }

    /// A fresh private key of `cert_type` and a CSR naming only `host`.
    fn key_and_csr(&self, host: &Host) -> Result<(Secret, Vec<u8>)> {
        let crypto = |e: rcgen::Error| Error::Crypto {
            host: host.to_string(),
            message: e.to_string(),
        };
        let key = match self.config.cert_type {
            CertType::Ecc => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
            CertType::Rsa => {
                let size = match self.config.rsa_key_size {
                    2048 => RsaKeySize::_2048,
                    3072 => RsaKeySize::_3072,
                    _ => RsaKeySize::_4096,
                };
                KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, size)
            }
        }
        .map_err(crypto)?;
        let mut params = CertificateParams::new(vec![host.to_string()]).map_err(crypto)?;
        params.distinguished_name = DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(crypto)?;
        Ok((Secret::new(key.serialize_pem()), csr.der().to_vec()))
    }
}

/// What the CA said about an invalid order, for the error message.
async fn failure_of(order: &mut Order) -> String {
    if let Some(problem) = order.state().error.as_ref() {
        return problem.to_string();
    }
    let mut details = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        if let Ok(state) = authorization.refresh().await {
            details.extend(
                state
                    .challenges
                    .iter()
                    .filter_map(|c| c.error.as_ref().map(ToString::to_string)),
            );
        }
    }
    if details.is_empty() {
        "the order became invalid".to_owned()
    } else {
        details.join("; ")
    }
}

/// A failure while readying challenges: an ACME call (maybe transient) or anything else.
enum ReadyError {
    Acme(&'static str, instant_acme::Error),
    Other(Error),
}

impl From<Error> for ReadyError {
    fn from(e: Error) -> Self {
        Self::Other(e)
    }
}

fn acme(host: &Host, step: &'static str, err: instant_acme::Error) -> Error {
    Error::Acme {
        host: host.to_string(),
        step,
        source: Box::new(err),
    }
}
