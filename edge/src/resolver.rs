//! `CertResolver`: the TLS configuration for a ClientHello's SNI, from the cache or the store,
//! and the default certificate for every name the store cannot answer for.
//!
//! All of the rustls-specific building (signing keys, `CertifiedKey`, `ServerConfig`, the
//! `ResolvesServerCert` impl) stays in this file: those names change in rustls 0.24.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use certbucket_core::{CertificateRecord, Host, Storage, StorageKeys};
use rustls::{
    crypto::{CryptoProvider, aws_lc_rs},
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ClientHello, ResolvesServerCert, ServerConfig},
    sign::CertifiedKey,
};
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::{
    cache::{CertCache, Lookup},
    error::EdgeError,
    metrics::{CacheSummary, Metrics, StoreError},
    ondemand::OnDemandRequests,
    store_health::StoreHealth,
};

/// How long a certificate read from the store is served before it is read again (in the
/// background: the handshake that finds it due is served the one held).
const FOUND_TTL: Duration = Duration::from_secs(300);
/// How long a name the store had nothing for is answered with the default certificate
/// without asking the store again; also the first back-off of a failed re-read.
const MISSING_TTL: Duration = Duration::from_secs(5);
/// How long one store read may take before it counts as failed: a handshake waits for it only
/// for a name not held.
const STORE_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Re-reads running at once in the background (after a manifest change touching many names).
const MAX_REFRESHES: usize = 8;
/// How far in the future a certificate's notBefore may be (clock skew between the CA and this
/// machine) before the certificate counts as not valid yet.
const MAX_CLOCK_SKEW: i64 = 3600;
/// Hosts whose last problem is remembered, so each is logged once; past this, forgotten.
const MAX_PROBLEMS: usize = 10_000;

/// The name and common name of the certificate served when no stored one fits.
pub(crate) const DEFAULT_CERT_NAME: &str = "certbucket.invalid";
const DEFAULT_CERT_CN: &str = "certbucket default";

/// Picks the `ServerConfig` for an SNI: cache, then store, else the default certificate (and,
/// for names the allow-list takes, an on-demand request). Writes nothing else.
pub(crate) struct CertResolver {
    store: Arc<dyn Storage>,
    on_demand: Option<Arc<OnDemandRequests>>,
    cache: Arc<CertCache<Served>>,
    metrics: Arc<Metrics>,
    health: Arc<StoreHealth>,
    provider: Arc<CryptoProvider>,
    default: Arc<ServerConfig>,
    refreshes: Semaphore,
    /// The last problem logged per host (an unusable object), so a bad object is logged once,
    /// not at every re-read.
    problems: Mutex<HashMap<Host, String>>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A stored certificate ready to serve.
#[derive(Clone)]
struct Served {
    config: Arc<ServerConfig>,
    /// The leaf's notAfter, Unix seconds.
    not_after: i64,
    /// The leaf's serial number, to tell a new certificate from the same one read again.
    serial: Arc<str>,
}

/// The outcome of reading a host's certificate from the store.
enum Loaded {
    Found(Served),
    Missing,
    Failed,
}

impl CertResolver {
    /// A resolver over `store` holding at most `cache_size` names, with a freshly generated
    /// default certificate.
    pub(crate) fn new(
        store: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        health: Arc<StoreHealth>,
        on_demand: Option<Arc<OnDemandRequests>>,
        cache_size: usize,
    ) -> Result<Self, EdgeError> {
        // The process-wide provider when main installed one; aws-lc-rs otherwise (tests, embedders).
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(aws_lc_rs::default_provider()));
        let default = server_config(&provider, default_certified_key()?).map_err(|source| {
            EdgeError::Tls {
                host: "the default certificate".to_owned(),
                source,
            }
        })?;
        Ok(Self {
            store,
            on_demand,
            cache: Arc::new(CertCache::new(cache_size, FOUND_TTL, MISSING_TTL)),
            metrics,
            health,
            provider,
            default,
            refreshes: Semaphore::new(MAX_REFRESHES),
            problems: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration to finish a handshake with; the default one for anything unknown.
    /// Waits for the store only for a name not held, and not at all while the store is down.
    pub(crate) async fn server_config(self: &Arc<Self>, sni: Option<&str>) -> Arc<ServerConfig> {
        let Some(name) = sni else {
            debug!("no SNI: default certificate");
            return Arc::clone(&self.default);
        };
        let host = match Host::parse(name) {
            Ok(host) => host,
            Err(e) => {
                debug!(sni = ?name, "invalid SNI ({e}): default certificate");
                return Arc::clone(&self.default);
            }
        };
        let now = Instant::now();
        let lookup = self.cache.lookup(&host, now);
        if matches!(lookup, Lookup::Serve(_) | Lookup::Missing) {
            self.metrics.cache_hit();
        } else {
            self.metrics.cache_miss();
        }
        match lookup {
            Lookup::Serve(served) => served.config,
            Lookup::Missing => Arc::clone(&self.default),
            Lookup::ServeAndRefresh(last_good) => {
                self.spawn_refresh(host);
                last_good.config
            }
            Lookup::Unknown if !self.health.worth_asking(now) => {
                debug!(%host, "the store is down: default certificate");
                self.cache.insert_missing(host, now);
                Arc::clone(&self.default)
            }
            Lookup::Unknown => match self.load(&host).await {
                Loaded::Found(served) => {
                    info!(%host, serial = %served.serial, "certificate loaded");
                    let config = Arc::clone(&served.config);
                    self.cache.insert(host, served, Instant::now());
                    config
                }
                Loaded::Missing => {
                    if let Some(on_demand) = &self.on_demand {
                        let (cache, name) = (Arc::clone(&self.cache), host.clone());
                        // Once issued here, the next handshake reads the new certificate.
                        on_demand.ask(&host, move || cache.forget(&name));
                    }
                    self.cache.insert_missing(host, Instant::now());
                    Arc::clone(&self.default)
                }
                Loaded::Failed => {
                    self.cache.insert_missing(host, Instant::now());
                    Arc::clone(&self.default)
                }
            },
        }
    }

    /// The store has a new version of `host`'s certificate: a held one is re-read now in the
    /// background (and kept unless the new one is usable), a known absence is forgotten.
    pub(crate) fn invalidate(self: &Arc<Self>, host: &Host) {
        if self.cache.invalidate(host, Instant::now()) {
            self.spawn_refresh(host.clone());
        }
    }

    /// Re-reads `host` in the background; the caller claimed the re-read from the cache.
    fn spawn_refresh(self: &Arc<Self>, host: Host) {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            // Never closed: acquiring only waits.
            let _permit = this.refreshes.acquire().await;
            this.refresh(host).await;
        });
    }

    /// Re-reads a held certificate: swapped only for a usable one, kept on any failure, and
    /// kept when its object is gone too — as nginx and Caddy keep serving a loaded certificate
    /// whose file was removed, and so that a store that lost its objects (a bucket recreated, a
    /// wrong prefix) does not take every site down.
    async fn refresh(&self, host: Host) {
        match self.load(&host).await {
            Loaded::Found(served) => {
                let old = match self.cache.lookup(&host, Instant::now()) {
                    Lookup::Serve(old) | Lookup::ServeAndRefresh(old) => Some(old.serial),
                    Lookup::Missing | Lookup::Unknown => None,
                };
                if old.as_deref() == Some(&*served.serial) {
                    debug!(%host, "certificate unchanged");
                } else {
                    info!(%host, serial = %served.serial, "new certificate loaded");
                }
                self.cache.insert(host, served, Instant::now());
            }
            Loaded::Missing => {
                self.problem(
                    &host,
                    "the certificate is gone from the store: serving the one held",
                );
                self.cache.keep(&host, Instant::now());
            }
            Loaded::Failed => {
                // An unreachable store or a bad new object must not take a working site down.
                let failures = self.cache.keep(&host, Instant::now());
                debug!(%host, failures, "keeping the certificate held");
            }
        }
    }

    async fn load(&self, host: &Host) -> Loaded {
        let key = StorageKeys::cert(host);
        let read = tokio::time::timeout(STORE_READ_TIMEOUT, self.store.get(&key)).await;
        let object = match read {
            Ok(Ok(Some(object))) => {
                self.health.succeeded();
                object
            }
            Ok(Ok(None)) => {
                self.health.succeeded();
                debug!(%host, "no certificate in the store: default certificate");
                return Loaded::Missing;
            }
            Ok(Err(e)) => {
                self.metrics.store_error(StoreError::Unreachable);
                self.health.failed(Instant::now(), key.as_str(), &e);
                return Loaded::Failed;
            }
            Err(_) => {
                self.metrics.store_error(StoreError::Unreachable);
                let message = format!("no answer within {} s", STORE_READ_TIMEOUT.as_secs());
                self.health.failed(Instant::now(), key.as_str(), &message);
                return Loaded::Failed;
            }
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let built = CertificateRecord::from_json(host, &object.bytes)
            .map_err(|e| e.to_string())
            .and_then(|record| {
                let leaf = record.leaf().map_err(|e| e.to_string())?;
                let not_after = leaf.not_after.unix_timestamp();
                if not_after <= now {
                    return Err(format!("the certificate expired at {}", leaf.not_after));
                }
                if leaf.not_before.unix_timestamp() > now + MAX_CLOCK_SKEW {
                    return Err(format!(
                        "the certificate is not valid before {}",
                        leaf.not_before
                    ));
                }
                let key = certified_key(&record)?;
                let config = server_config(&self.provider, key).map_err(|e| e.to_string())?;
                Ok(Served {
                    config,
                    not_after,
                    serial: Arc::from(leaf.serial_number.as_str()),
                })
            });
        match built {
            Ok(served) => {
                self.problem_solved(host);
                Loaded::Found(served)
            }
            Err(message) => {
                self.metrics.store_error(StoreError::Unusable);
                self.problem(
                    host,
                    &format!("unusable certificate in {key}, ignored: {message}"),
                );
                Loaded::Failed
            }
        }
    }

    /// Logs a problem with `host`'s object once, until a different one or a usable object.
    fn problem(&self, host: &Host, message: &str) {
        let mut problems = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        if problems.get(host).is_some_and(|last| last == message) {
            debug!(%host, "still: {message}");
            return;
        }
        warn!(%host, "{message}");
        if problems.len() >= MAX_PROBLEMS {
            problems.clear();
        }
        problems.insert(host.clone(), message.to_owned());
    }

    fn problem_solved(&self, host: &Host) {
        let mut problems = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        problems.remove(host);
    }

    /// Whether `config` is the default certificate's.
    pub(crate) fn is_default(&self, config: &Arc<ServerConfig>) -> bool {
        Arc::ptr_eq(config, &self.default)
    }

    /// How many certificates are cached and when the first of them expires.
    pub(crate) fn summary(&self) -> CacheSummary {
        self.cache
            .fold(CacheSummary::default(), |acc, served| CacheSummary {
                certificates: acc.certificates + 1,
                earliest_not_after: Some(
                    acc.earliest_not_after
                        .map_or(served.not_after, |t| t.min(served.not_after)),
                ),
            })
    }
}

/// The chain and signing key of a stored record, checked to belong together.
fn certified_key(record: &CertificateRecord) -> Result<CertifiedKey, String> {
    let chain = record.chain_der().map_err(|e| e.to_string())?;
    let key_der = record.key_der().map_err(|e| e.to_string())?;
    // rustls' message names the key type at most, never key bytes.
    let signing_key = aws_lc_rs::sign::any_supported_type(&key_der)
        .map_err(|e| format!("unusable private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key cannot tell its public half; nothing to compare, as rustls itself does.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(e) => Err(format!(
            "the private key does not match the certificate: {e}"
        )),
    }
}

/// A self-signed ECDSA P-256 certificate for `certbucket.invalid`, made at start-up.
fn default_certified_key() -> Result<CertifiedKey, EdgeError> {
    let fail = |e: rcgen::Error| EdgeError::DefaultCertificate {
        message: e.to_string(),
    };
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(fail)?;
    let mut params =
        rcgen::CertificateParams::new(vec![DEFAULT_CERT_NAME.to_owned()]).map_err(fail)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, DEFAULT_CERT_CN);
    let cert = params.self_signed(&key_pair).map_err(fail)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let signing_key = aws_lc_rs::sign::any_supported_type(&key_der).map_err(|e| {
        EdgeError::DefaultCertificate {
            message: e.to_string(),
        }
    })?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing_key))
}

/// A server configuration that always presents `key`, offering HTTP/2 and HTTP/1.1.
fn server_config(
    provider: &Arc<CryptoProvider>,
    key: CertifiedKey,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedCert(Arc::new(key))));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Presents one certificate whatever the ClientHello says: the choice was made before.
struct FixedCert(Arc<CertifiedKey>);

impl fmt::Debug for FixedCert {
    // The signing key's own Debug is rustls' business; never risk printing it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FixedCert")
    }
}

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use certbucket_core::{CertType, Secret};
    use time::OffsetDateTime;

    use super::*;
    use crate::{
        cache::DEFAULT_CAPACITY,
        testing::{TestCa, TestStore, host},
    };

    fn resolver(store: &Arc<TestStore>) -> (Arc<CertResolver>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let resolver = CertResolver::new(
            store.clone(),
            Arc::clone(&metrics),
            Arc::default(),
            None,
            DEFAULT_CAPACITY,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (Arc::new(resolver), metrics)
    }

    fn is_default(resolver: &CertResolver, config: &Arc<ServerConfig>) -> bool {
        Arc::ptr_eq(config, &resolver.default)
    }

    /// A record whose chain is `host`'s but whose key belongs to another certificate.
    fn mismatched_record(ca: &TestCa, name: &str) -> Vec<u8> {
        let (chain_pem, _) = ca.issue(name);
        let (_, other_key) = ca.issue(name);
        CertificateRecord::new(
            host(name),
            chain_pem,
            Secret::new(other_key),
            CertType::Ecc,
            OffsetDateTime::now_utc(),
        )
        .and_then(|record| record.to_json())
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn known_names_are_read_once_then_cached() {
        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, "site.example.com").await;
        let (resolver, _) = resolver(&store);

        let first = resolver.server_config(Some("site.example.com")).await;
        assert!(!is_default(&resolver, &first));
        assert_eq!(first.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        // SNI is case-insensitive: the same host, the same cached configuration.
        let again = resolver.server_config(Some("SITE.example.com")).await;
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(store.gets(), 1);
    }

    #[tokio::test]
    async fn unknown_names_hit_the_store_once_per_negative_period() {
        let store = TestStore::new();
        let (resolver, _) = resolver(&store);
        for _ in 0..5 {
            let config = resolver.server_config(Some("nobody.example.com")).await;
            assert!(is_default(&resolver, &config));
        }
        assert_eq!(store.gets(), 1);
        assert!(store.keys().await.is_empty());
    }

    #[tokio::test]
    async fn missing_or_invalid_sni_never_reaches_the_store() {
        let store = TestStore::new();
        let (resolver, _) = resolver(&store);
        let long = "a".repeat(300);
        for sni in [
            None,
            Some(""),
            Some("a..b"),
            Some("x/../y"),
            Some("_bad.example"),
            Some(long.as_str()),
        ] {
            let config = resolver.server_config(sni).await;
            assert!(is_default(&resolver, &config), "{sni:?}");
        }
        assert_eq!(store.gets(), 0);
    }

    #[tokio::test]
    async fn unusable_records_and_store_errors_get_the_default() {
        let store = TestStore::new();
        let ca = TestCa::new();
        let corrupt = host("corrupt.example.com");
        store
            .put_raw(&StorageKeys::cert(&corrupt), "{not json")
            .await;
        // A record for another host stored under this host's key.
        let misplaced = host("misplaced.example.com");
        store
            .put_raw(
                &StorageKeys::cert(&misplaced),
                ca.record_json("other.example.com"),
            )
            .await;
        // A chain with someone else's key.
        store
            .put_raw(
                &StorageKeys::cert(&host("mismatch.example.com")),
                mismatched_record(&ca, "mismatch.example.com"),
            )
            .await;
        let (chain, key) = ca.issue_expired("expired.example.com");
        store
            .put_raw(
                &StorageKeys::cert(&host("expired.example.com")),
                ca.record_json_of("expired.example.com", chain, key),
            )
            .await;
        let before = store.keys().await;

        let (resolver, metrics) = resolver(&store);
        for sni in [
            "corrupt.example.com",
            "misplaced.example.com",
            "mismatch.example.com",
            "expired.example.com",
        ] {
            let config = resolver.server_config(Some(sni)).await;
            assert!(is_default(&resolver, &config), "{sni}");
        }
        let text = metrics.render(CacheSummary::default(), 0);
        assert!(
            text.contains("certbucket_edge_store_errors_total{cause=\"unusable\"} 4\n"),
            "{text}"
        );
        store.fail_reads(true);
        ca.store_cert(&store, "down.example.com").await;
        let config = resolver.server_config(Some("down.example.com")).await;
        assert!(is_default(&resolver, &config));
        store.fail_reads(false);

        let mut after = store.keys().await;
        after.retain(|key| *key != StorageKeys::cert(&host("down.example.com")));
        assert_eq!(before, after);
    }

    /// Waits until the background re-read of `name` has ended (nothing left to re-read).
    async fn settle(resolver: &CertResolver) {
        for _ in 0..200 {
            if resolver.refreshes.available_permits() == MAX_REFRESHES {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if resolver.refreshes.available_permits() == MAX_REFRESHES {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the re-read did not end");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn garbage_in_the_store_never_replaces_a_good_certificate() {
        let store = TestStore::new();
        let ca = TestCa::new();
        let name = "site.example.com";
        let site = host(name);
        ca.store_cert(&store, name).await;
        let (resolver, metrics) = resolver(&store);
        let good = resolver.server_config(Some(name)).await;
        assert!(!is_default(&resolver, &good));

        let (expired_chain, expired_key) = ca.issue_expired(name);
        let (future_chain, future_key) = ca.issue_valid_from(name, time::Duration::days(2));
        let garbage: [(&str, Vec<u8>); 7] = [
            ("truncated JSON", ca.record_json(name)[..100].to_vec()),
            ("a key that does not match", mismatched_record(&ca, name)),
            (
                "an expired certificate",
                ca.record_json_of(name, expired_chain, expired_key),
            ),
            (
                "a certificate not valid yet",
                ca.record_json_of(name, future_chain, future_key),
            ),
            ("not UTF-8", vec![0xff, 0xfe, 0x00, 0x80]),
            ("empty", Vec::new()),
            ("another host's", ca.record_json("other.example.com")),
        ];
        for (i, (what, bytes)) in garbage.into_iter().enumerate() {
            store.put_raw(&StorageKeys::cert(&site), bytes).await;
            // As the manifest poller does when the object's version changes.
            resolver.invalidate(&site);
            settle(&resolver).await;
            let served = resolver.server_config(Some(name)).await;
            assert!(
                Arc::ptr_eq(&served, &good),
                "still the good one after {what}"
            );
            let text = metrics.render(CacheSummary::default(), 0);
            let want = format!(
                "certbucket_edge_store_errors_total{{cause=\"unusable\"}} {}\n",
                i + 1
            );
            assert!(text.contains(&want), "{what}: {text}");
        }

        // A usable replacement is swapped in.
        ca.store_cert(&store, name).await;
        resolver.invalidate(&site);
        settle(&resolver).await;
        let renewed = resolver.server_config(Some(name)).await;
        assert!(!Arc::ptr_eq(&renewed, &good) && !is_default(&resolver, &renewed));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_certificate_whose_object_is_gone_is_still_served() {
        let store = TestStore::new();
        let ca = TestCa::new();
        let name = "site.example.com";
        ca.store_cert(&store, name).await;
        let (resolver, _) = resolver(&store);
        let good = resolver.server_config(Some(name)).await;
        store
            .delete(&StorageKeys::cert(&host(name)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        resolver.invalidate(&host(name));
        settle(&resolver).await;
        assert!(Arc::ptr_eq(
            &resolver.server_config(Some(name)).await,
            &good
        ));
        // And a name never held is not served from nothing.
        let other = resolver.server_config(Some("other.example.com")).await;
        assert!(is_default(&resolver, &other));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_outage_keeps_held_certificates_and_stops_asking_for_unknown_names() {
        let store = TestStore::new();
        let ca = TestCa::new();
        let name = "site.example.com";
        ca.store_cert(&store, name).await;
        let (resolver, _) = resolver(&store);
        let good = resolver.server_config(Some(name)).await;

        store.fail_reads(true);
        resolver.invalidate(&host(name));
        settle(&resolver).await;
        assert!(Arc::ptr_eq(
            &resolver.server_config(Some(name)).await,
            &good
        ));

        // The first unknown name finds the store down; the next ones do not wait on it.
        let gets = store.gets();
        for i in 0..50 {
            let sni = format!("unknown{i}.example.com");
            let config = resolver.server_config(Some(&sni)).await;
            assert!(is_default(&resolver, &config), "{sni}");
            assert!(Arc::ptr_eq(
                &resolver.server_config(Some(name)).await,
                &good
            ));
        }
        assert!(store.gets() - gets <= 2, "{} reads", store.gets() - gets);

        // Back: the next name (after the back-off) is read again.
        store.fail_reads(false);
        ca.store_cert(&store, "later.example.com").await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let later = resolver.server_config(Some("later.example.com")).await;
        assert!(!is_default(&resolver, &later));
    }
}
