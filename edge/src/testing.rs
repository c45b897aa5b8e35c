//! Test fixtures: a store in a fresh temporary directory that counts reads and can fail, and a
//! CA made with rcgen at test time (no checked-in keys).

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use bytes::Bytes;
use certbucket_core::{
    CertType, CertificateRecord, ETag, Error, Host, LocalDirStorage, Result, Secret, Storage,
    StorageKey, StorageKeys, StoredObject,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::RootCertStore;
use time::OffsetDateTime;

pub(crate) fn host(name: &str) -> Host {
    Host::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A directory under the system temp dir, unique per test, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "certbucket-edge-test-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A local-directory store that counts `get`s and `create`s and can be made to fail reads.
#[derive(Debug)]
pub(crate) struct TestStore {
    inner: LocalDirStorage,
    gets: AtomicUsize,
    creates: AtomicUsize,
    failing: AtomicBool,
    _dir: TempDir,
}

impl TestStore {
    pub(crate) fn new() -> Arc<Self> {
        let dir = TempDir::new();
        let inner = LocalDirStorage::open(&dir.0).unwrap_or_else(|e| panic!("open store: {e}"));
        Arc::new(Self {
            inner,
            gets: AtomicUsize::new(0),
            creates: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            _dir: dir,
        })
    }

    pub(crate) fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }

    pub(crate) fn creates(&self) -> usize {
        self.creates.load(Ordering::SeqCst)
    }

    pub(crate) fn fail_reads(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Every key in the store, to show a test wrote nothing.
    pub(crate) async fn keys(&self) -> Vec<StorageKey> {
        self.inner
            .list(&StorageKeys::everything())
            .await
            .unwrap_or_else(|e| panic!("list: {e}"))
    }

    pub(crate) async fn put_raw(&self, key: &StorageKey, bytes: impl Into<Bytes>) {
        self.inner
            .put(key, bytes.into())
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
}

#[async_trait]
impl Storage for TestStore {
    async fn get(&self, key: &StorageKey) -> Result<Option<StoredObject>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::Storage {
                key: key.to_string(),
                source: "injected failure".into(),
            });
        }
        self.inner.get(key).await
    }

    async fn put(&self, key: &StorageKey, bytes: Bytes) -> Result<ETag> {
        self.inner.put(key, bytes).await
    }

    async fn create(&self, key: &StorageKey, bytes: Bytes) -> Result<Option<ETag>> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.inner.create(key, bytes).await
    }

    async fn replace(
        &self,
        key: &StorageKey,
        bytes: Bytes,
        expected: &ETag,
    ) -> Result<Option<ETag>> {
        self.inner.replace(key, bytes, expected).await
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &StorageKey) -> Result<Vec<StorageKey>> {
        self.inner.list(prefix).await
    }
}

/// A throw-away CA that issues leaf certificates for test hosts.
pub(crate) struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl TestCa {
    pub(crate) fn new() -> Self {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let mut params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| panic!("CA params: {e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "certbucket test CA");
        let cert = params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("CA cert: {e}"));
        Self { params, key, cert }
    }

    /// Roots that trust only this CA.
    pub(crate) fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert.der().clone())
            .unwrap_or_else(|e| panic!("root: {e}"));
        roots
    }

    /// A leaf for `host`: (chain PEM, key PEM).
    pub(crate) fn issue(&self, host: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("leaf key: {e}"));
        let params = CertificateParams::new(vec![host.to_owned()])
            .unwrap_or_else(|e| panic!("leaf params: {e}"));
        let issuer = Issuer::from_params(&self.params, &self.key);
        let leaf = params
            .signed_by(&key, &issuer)
            .unwrap_or_else(|e| panic!("leaf: {e}"));
        (leaf.pem() + &self.cert.pem(), key.serialize_pem())
    }

    /// A leaf for `host` that expired yesterday: (chain PEM, key PEM).
    pub(crate) fn issue_expired(&self, host: &str) -> (String, String) {
        self.issue_valid_from(host, -time::Duration::days(30))
    }

    /// A leaf for `host` valid from `offset` from now, for 29 days: (chain PEM, key PEM).
    pub(crate) fn issue_valid_from(&self, host: &str, offset: time::Duration) -> (String, String) {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("leaf key: {e}"));
        let mut params = CertificateParams::new(vec![host.to_owned()])
            .unwrap_or_else(|e| panic!("leaf params: {e}"));
        let now = OffsetDateTime::now_utc();
        params.not_before = now + offset;
        params.not_after = now + offset + time::Duration::days(29);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let leaf = params
            .signed_by(&key, &issuer)
            .unwrap_or_else(|e| panic!("leaf: {e}"));
        (leaf.pem() + &self.cert.pem(), key.serialize_pem())
    }

    /// The stored record JSON for a chain and key, as the issuer would write it.
    pub(crate) fn record_json_of(
        &self,
        host_name: &str,
        chain_pem: String,
        key_pem: String,
    ) -> Vec<u8> {
        let record = CertificateRecord::new(
            host(host_name),
            chain_pem,
            Secret::new(key_pem),
            CertType::Ecc,
            OffsetDateTime::now_utc(),
        )
        .unwrap_or_else(|e| panic!("record: {e}"));
        record.to_json().unwrap_or_else(|e| panic!("json: {e}"))
    }

    /// The stored record JSON for `host`, as the issuer would write it.
    pub(crate) fn record_json(&self, host_name: &str) -> Vec<u8> {
        let (chain_pem, key_pem) = self.issue(host_name);
        let record = CertificateRecord::new(
            host(host_name),
            chain_pem,
            Secret::new(key_pem),
            CertType::Ecc,
            OffsetDateTime::now_utc(),
        )
        .unwrap_or_else(|e| panic!("record: {e}"));
        record.to_json().unwrap_or_else(|e| panic!("json: {e}"))
    }

    /// Stores a certificate for `host_name` in `store`.
    pub(crate) async fn store_cert(&self, store: &TestStore, host_name: &str) {
        store
            .put_raw(
                &StorageKeys::cert(&host(host_name)),
                self.record_json(host_name),
            )
            .await;
    }
}
