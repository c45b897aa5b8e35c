//! `CertificateInfo`: one entry of the certificate listing, with Kong's field names.

use serde::Serialize;
use time::{OffsetDateTime, format_description::FormatItem, macros::format_description};
use tracing::warn;

use crate::{
    error::Result,
    host::Host,
    record::CertificateRecord,
    storage::{Storage, StorageKeys},
};

/// Kong's `YYYY-MM-DD HH:MM:SS`; certbucket always lists UTC.
const KONG_TIME: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// A listed certificate; never holds key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateInfo {
    /// The host it is stored for.
    pub host: String,
    /// The leaf's notBefore, UTC.
    pub not_before: String,
    /// The leaf's notAfter, UTC.
    pub not_after: String,
    /// The issuer's common name.
    pub issuer_cn: String,
    /// `AA:BB:..`
    pub serial_number: String,
    /// SHA-1 of the leaf's DER, `AA:BB:..`
    pub digest: String,
    /// `rsaEncryption` or `id-ecPublicKey`.
    pub pubkey_type: String,
    /// Whether `now` lies between notBefore and notAfter.
    pub valid: bool,
}

impl CertificateInfo {
    /// Lists one record as of `now`.
    pub fn from_record(record: &CertificateRecord, now: OffsetDateTime) -> Result<Self> {
        let leaf = record.leaf()?;
        let format = |t: OffsetDateTime| {
            t.to_offset(time::UtcOffset::UTC)
                .format(KONG_TIME)
                .unwrap_or_default()
        };
        Ok(Self {
            host: record.host.to_string(),
            not_before: format(leaf.not_before),
            not_after: format(leaf.not_after),
            issuer_cn: leaf.issuer_cn,
            serial_number: leaf.serial_number,
            digest: leaf.digest,
            pubkey_type: leaf.pubkey_type,
            valid: leaf.not_before <= now && now <= leaf.not_after,
        })
    }

    /// The listing entry for `host`, or `None` when nothing is stored for it.
    pub async fn of_host(
        store: &dyn Storage,
        host: &Host,
        now: OffsetDateTime,
    ) -> Result<Option<Self>> {
        let Some(object) = store.get(&StorageKeys::cert(host)).await? else {
            return Ok(None);
        };
        let record = CertificateRecord::from_json(host, &object.bytes)?;
        Self::from_record(&record, now).map(Some)
    }

    /// Every stored certificate, sorted by host; unreadable records are logged and left out.
    pub async fn all(store: &dyn Storage, now: OffsetDateTime) -> Result<Vec<Self>> {
        let mut listed = Vec::new();
        for key in store.list(&StorageKeys::certs_prefix()).await? {
            let Some(host) = StorageKeys::host_of_cert(&key) else {
                continue;
            };
            match Self::of_host(store, &host, now).await {
                Ok(Some(info)) => listed.push(info),
                Ok(None) => {}
                Err(e) => {
                    warn!(%host, error = %e, "left an unreadable certificate out of the listing")
                }
            }
        }
        Ok(listed)
    }
}
