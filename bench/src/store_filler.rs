//! Fills a store for the benchmark: many certificates, each with its own ECDSA P-256 key and signed by a
//! throw-away local CA, into a local-directory store in the layout the edge reads
//! (`v1/certs/{host}.json` holding a [`CertificateRecord`], plus `v1/manifest.json`).

use std::{collections::BTreeMap, fs, path::Path, thread};

use anyhow::Context;
use aws_lc_rs::digest;
use certbucket_core::{
    CertType, CertificateRecord, Host, LocalDirStorage, Manifest, Secret, StorageKeys,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use time::{Duration, OffsetDateTime};

/// The throw-away CA that signs every generated leaf.
pub(crate) struct LocalCa {
    params: CertificateParams,
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl LocalCa {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "certbucket bench CA");
        let cert = params.self_signed(&key)?;
        Ok(Self { params, key, cert })
    }

    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }

    /// The stored JSON of a fresh 90-day certificate for `host`, as `certbucket apply` writes it.
    fn record_json(&self, host: &Host, now: OffsetDateTime) -> anyhow::Result<Vec<u8>> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(90);
        let leaf = params.signed_by(&key, &Issuer::from_params(&self.params, &self.key))?;
        let record = CertificateRecord::new(
            host.clone(),
            leaf.pem() + &self.cert.pem(),
            Secret::new(key.serialize_pem()),
            CertType::Ecc,
            now,
        )?;
        Ok(record.to_json()?)
    }
}

/// Writes the certificates on `threads` threads, then the manifest naming all of them.
///
/// Objects are written straight into the directory, without the store's per-object fsync and
/// rename: 100,000 fsyncs would take minutes and the edge cannot tell the difference.
pub(crate) fn fill_store(
    dir: &Path,
    count: usize,
    domain: &str,
    ca: &LocalCa,
    threads: usize,
) -> anyhow::Result<()> {
    LocalDirStorage::open(dir)?;
    let certs_dir = dir.join(StorageKeys::certs_prefix().as_str());
    fs::create_dir_all(&certs_dir)
        .with_context(|| format!("cannot create {}", certs_dir.display()))?;
    let now = OffsetDateTime::now_utc();
    let versions = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                scope.spawn(move || -> anyhow::Result<Vec<(String, String)>> {
                    let mut versions = Vec::new();
                    for i in (worker..count).step_by(threads) {
                        let host = Host::parse(&format!("n{i}.{domain}"))?;
                        let json = ca.record_json(&host, now)?;
                        let path = dir.join(StorageKeys::cert(&host).as_str());
                        fs::write(&path, &json)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        versions.push((host.to_string(), version_of(&json)));
                    }
                    Ok(versions)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .map_err(|_| anyhow::anyhow!("a writer thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let manifest = Manifest {
        certs: versions.into_iter().flatten().collect::<BTreeMap<_, _>>(),
    };
    let path = dir.join(StorageKeys::manifest().as_str());
    fs::write(&path, serde_json::to_vec(&manifest)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The version the local-directory store would give these bytes (its ETag: the first 16 bytes
/// of their SHA-256, hex), so the manifest looks like one the functions wrote.
fn version_of(bytes: &[u8]) -> String {
    digest::digest(&digest::SHA256, bytes).as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
