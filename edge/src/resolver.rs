//! `CertResolver`: the TLS configuration for a ClientHello's SNI, from the cache or the store,
//! and the default certificate for every name the store cannot answer for.
//!
//! All of the rustls-specific building (signing keys, `CertifiedKey`, `ServerConfig`, the
//! `ResolvesServerCert` impl) stays in this file: those names change in rustls 0.24.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use certbucket_core::{CertificateRecord, Host, Storage, StorageKeys};
use rustls::{
    crypto::{CryptoProvider, aws_lc_rs},
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ClientHello, ResolvesServerCert, ServerConfig},
    sign::CertifiedKey,
};
use tracing::{debug, info, warn};

use crate::{
    cache::{CertCache, Lookup},
    error::EdgeError,
    metrics::{CacheSummary, Metrics},
    ondemand::OnDemandRequests,
};

/// How long a certificate read from the store is served before it is read again.
const FOUND_TTL: Duration = Duration::from_secs(300);
/// How long a name the store had nothing for is answered with the default certificate
/// without asking the store again.
const MISSING_TTL: Duration = Duration::from_secs(5);

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
    provider: Arc<CryptoProvider>,
    default: Arc<ServerConfig>,
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
}

/// The outcome of reading a host's certificate from the store.
enum Loaded {
    Found(Served),
    Missing,
    Failed,
}

impl CertResolver {
    /// A resolver over `store`, with a freshly generated default certificate.
    pub(crate) fn new(
        store: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
        on_demand: Option<Arc<OnDemandRequests>>,
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
            cache: Arc::new(CertCache::new(FOUND_TTL, MISSING_TTL)),
            metrics,
            provider,
            default,
        })
    }

    /// The configuration to finish a handshake with; the default one for anything unknown.
    pub(crate) async fn server_config(&self, sni: Option<&str>) -> Arc<ServerConfig> {
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
        let lookup = self.cache.lookup(&host, Instant::now());
        if matches!(lookup, Lookup::Fresh(_) | Lookup::Missing) {
            self.metrics.cache_hit();
        } else {
            self.metrics.cache_miss();
        }
        match lookup {
            Lookup::Fresh(served) => served.config,
            Lookup::Missing => Arc::clone(&self.default),
            Lookup::Unknown => match self.load(&host).await {
                Loaded::Found(served) => {
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
            Lookup::Stale(last_good) => match self.load(&host).await {
                Loaded::Found(served) => {
                    let config = Arc::clone(&served.config);
                    self.cache.insert(host, served, Instant::now());
                    config
                }
                Loaded::Missing => {
                    info!(%host, "certificate removed from the store");
                    self.cache.insert_missing(host, Instant::now());
                    Arc::clone(&self.default)
                }
                Loaded::Failed => {
                    // An unreachable store or a bad new object must not take a working site down.
                    self.cache.keep(&host, Instant::now());
                    last_good.config
                }
            },
        }
    }

    async fn load(&self, host: &Host) -> Loaded {
        let key = StorageKeys::cert(host);
        let object = match self.store.get(&key).await {
            Ok(Some(object)) => object,
            Ok(None) => {
                debug!(%host, "no certificate in the store: default certificate");
                return Loaded::Missing;
            }
            Err(e) => {
                self.metrics.store_error();
                warn!(%host, error = %e, "cannot read the certificate");
                return Loaded::Failed;
            }
        };
        let built = CertificateRecord::from_json(host, &object.bytes)
            .map_err(|e| e.to_string())
            .and_then(|record| {
                let key = certified_key(&record)?;
                let config = server_config(&self.provider, key).map_err(|e| e.to_string())?;
                Ok(Served {
                    config,
                    not_after: record.not_after,
                })
            });
        match built {
            Ok(served) => {
                info!(%host, object = %key, "certificate loaded");
                Loaded::Found(served)
            }
            Err(message) => {
                warn!(%host, object = %key, "unusable certificate: {message}");
                Loaded::Failed
            }
        }
    }
}

impl CertResolver {
    /// Re-reads `host`'s certificate on its next handshake: the store has a new version.
    pub(crate) fn invalidate(&self, host: &Host) {
        self.cache.invalidate(host, Instant::now());
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
    use crate::testing::{TestCa, TestStore, host};

    fn is_default(resolver: &CertResolver, config: &Arc<ServerConfig>) -> bool {
        Arc::ptr_eq(config, &resolver.default)
    }

    #[tokio::test]
    async fn known_names_are_read_once_then_cached() {
        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, "site.example.com").await;
        let resolver = CertResolver::new(store.clone(), Arc::default(), None)
            .unwrap_or_else(|e| panic!("{e}"));

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
        let resolver = CertResolver::new(store.clone(), Arc::default(), None)
            .unwrap_or_else(|e| panic!("{e}"));
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
        let resolver = CertResolver::new(store.clone(), Arc::default(), None)
            .unwrap_or_else(|e| panic!("{e}"));
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
        let (chain_pem, _) = ca.issue("mismatch.example.com");
        let (_, other_key) = ca.issue("mismatch.example.com");
        let mismatch = CertificateRecord::new(
            host("mismatch.example.com"),
            chain_pem,
            Secret::new(other_key),
            CertType::Ecc,
            OffsetDateTime::now_utc(),
        )
        .and_then(|record| record.to_json())
        .unwrap_or_else(|e| panic!("{e}"));
        store
            .put_raw(&StorageKeys::cert(&host("mismatch.example.com")), mismatch)
            .await;
        let before = store.keys().await;

        let resolver = CertResolver::new(store.clone(), Arc::default(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        for sni in [
            "corrupt.example.com",
            "misplaced.example.com",
            "mismatch.example.com",
        ] {
            let config = resolver.server_config(Some(sni)).await;
            assert!(is_default(&resolver, &config), "{sni}");
        }
        store.fail_reads(true);
        ca.store_cert(&store, "down.example.com").await;
        let config = resolver.server_config(Some("down.example.com")).await;
        assert!(is_default(&resolver, &config));
        store.fail_reads(false);

        let mut after = store.keys().await;
        after.retain(|key| *key != StorageKeys::cert(&host("down.example.com")));
        assert_eq!(before, after);
    }
}
