//! `CertificateRecord`: what `v1/certs/{host}.json` holds — the chain, its key and metadata.

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::{Deserialize, Serialize};

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{
    config::CertType,
    error::{Error, Result},
    host::Host,
    secret::Secret,
    storage::StorageKeys,
};

/// A certificate as stored for a host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRecord {
    /// The host the certificate is for.
    pub host: Host,
    /// Leaf first, then intermediates, PEM.
    pub chain_pem: String,
    /// The leaf's private key, PKCS#8 PEM.
    pub key_pem: Secret,
    /// The key type it was issued with.
    pub cert_type: CertType,
    /// The leaf's notBefore, Unix seconds.
    pub not_before: i64,
    /// The leaf's notAfter, Unix seconds.
    pub not_after: i64,
    /// When certbucket stored it, Unix seconds.
    pub issued_at: i64,
    /// The leaf's serial number, `AA:BB:..`.
    pub serial_number: String,
}

impl CertificateRecord {
    /// Builds a record from a freshly issued chain and its key, reading the leaf's metadata.
    pub fn new(
        host: Host,
        chain_pem: String,
        key_pem: Secret,
        cert_type: CertType,
        now: OffsetDateTime,
    ) -> Result<Self> {
        let leaf = LeafCertificate::from_chain_pem(host.as_str(), &chain_pem)?;
        let record = Self {
            not_before: leaf.not_before.unix_timestamp(),
            not_after: leaf.not_after.unix_timestamp(),
            serial_number: leaf.serial_number,
            issued_at: now.unix_timestamp(),
            host,
            chain_pem,
            key_pem,
            cert_type,
        };
        record.check_key()?;
        Ok(record)
    }

    /// Reads a stored record, refusing anything that does not hold together.
    pub fn from_json(host: &Host, bytes: &[u8]) -> Result<Self> {
        let key = StorageKeys::cert(host);
        let record: Self = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(key.as_str(), e.to_string()))?;
        if &record.host != host {
            return Err(Error::corrupt(
                key.as_str(),
                format!("holds a certificate for {}", record.host),
            ));
        }
        LeafCertificate::from_chain_pem(host.as_str(), &record.chain_pem)?;
        record.check_key()?;
        Ok(record)
    }

    /// The JSON stored in the bucket.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| Error::Crypto {
            host: self.host.to_string(),
            message: e.to_string(),
        })
    }

    /// The chain as DER certificates, leaf first.
    pub fn chain_der(&self) -> Result<Vec<CertificateDer<'static>>> {
        let chain = CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.crypto(format!("unreadable chain: {e}")))?;
        if chain.is_empty() {
            return Err(self.crypto("the chain holds no certificate".to_owned()));
        }
        Ok(chain)
    }

    /// The private key as DER.
    pub fn key_der(&self) -> Result<PrivateKeyDer<'static>> {
        // The parse error names the PEM section, never the key bytes.
        PrivateKeyDer::from_pem_slice(self.key_pem.expose().as_bytes())
            .map_err(|_| self.crypto("the private key is not a PEM private key".to_owned()))
    }

    /// The leaf certificate's parsed fields.
    pub fn leaf(&self) -> Result<LeafCertificate> {
        LeafCertificate::from_chain_pem(self.host.as_str(), &self.chain_pem)
    }

    fn check_key(&self) -> Result<()> {
        self.chain_der()?;
        self.key_der()?;
        Ok(())
    }

    fn crypto(&self, message: String) -> Error {
        Error::Crypto {
            host: self.host.to_string(),
            message,
        }
    }
}

/// The fields of a leaf certificate that listing and renewal need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafCertificate {
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// The issuer's common name (empty when it has none).
    pub issuer_cn: String,
    /// Serial number as `AA:BB:..`.
    pub serial_number: String,
    /// SHA-1 of the DER as `AA:BB:..`, as Kong lists it.
    pub digest: String,
    /// `rsaEncryption` or `id-ecPublicKey`.
    pub pubkey_type: String,
    /// The DNS names of the subjectAltName extension.
    pub dns_names: Vec<String>,
}

/// The issuer CN of a PEM chain's last certificate: the root the chain leads to, which
/// `preferred_chain` names.
pub(crate) fn chain_top_issuer(chain_pem: &str) -> Option<String> {
    let last = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .filter_map(std::result::Result::ok)
        .last()?;
    let (_, cert) = X509Certificate::from_der(&last).ok()?;
    let cn = cert.issuer().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

impl LeafCertificate {
    /// Parses the first certificate of a PEM chain.
    pub fn from_chain_pem(host: &str, chain_pem: &str) -> Result<Self> {
        let crypto = |message: String| Error::Crypto {
            host: host.to_owned(),
            message,
        };
        let der = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .next()
            .ok_or_else(|| crypto("the chain holds no certificate".to_owned()))?
            .map_err(|e| crypto(format!("unreadable chain: {e}")))?;
        Self::from_der(&der).map_err(crypto)
    }

    /// Parses one DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("bad leaf: {e}"))?;
        let issuer_cn = cert
            .issuer()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let dns_names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        x509_parser::extensions::GeneralName::DNSName(dns) => {
                            Some((*dns).to_owned())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let pubkey_type = match cert
            .public_key()
            .algorithm
            .algorithm
            .to_id_string()
            .as_str()
        {
            "1.2.840.113549.1.1.1" => "rsaEncryption".to_owned(),
            "1.2.840.10045.2.1" => "id-ecPublicKey".to_owned(),
            other => other.to_owned(),
        };
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
        Ok(Self {
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            issuer_cn,
            serial_number: hex_pairs(cert.raw_serial()),
            digest: hex_pairs(sha1.as_ref()),
            pubkey_type,
            dns_names,
        })
    }
}

/// Uppercase hex byte pairs joined by `:`, as Kong prints serials and digests.
pub(crate) fn hex_pairs(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_pairs_like_kong() {
        assert_eq!(hex_pairs(&[0x93, 0xb8, 0x0a]), "93:B8:0A");
        assert_eq!(hex_pairs(&[]), "");
    }

    #[test]
    fn the_top_issuer_is_the_root_the_chain_leads_to() {
        use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca = |cn: &str| {
            let mut params = CertificateParams::new(Vec::new()).unwrap_or_else(|e| panic!("{e}"));
            params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            (
                params,
                KeyPair::generate().unwrap_or_else(|e| panic!("{e}")),
            )
        };
        let (root_params, root_key) = ca("Example Root X2");
        let root = Issuer::new(root_params.clone(), &root_key);
        let (mid_params, mid_key) = ca("Example Intermediate E9");
        let mid_cert = mid_params
            .signed_by(&mid_key, &root)
            .unwrap_or_else(|e| panic!("{e}"));
        let mid = Issuer::new(mid_params, &mid_key);
        let leaf_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let leaf = CertificateParams::new(vec!["a.example".to_owned()])
            .and_then(|p| p.signed_by(&leaf_key, &mid))
            .unwrap_or_else(|e| panic!("{e}"));
        let chain = format!("{}{}", leaf.pem(), mid_cert.pem());
        assert_eq!(chain_top_issuer(&chain).as_deref(), Some("Example Root X2"));
        assert_eq!(chain_top_issuer("not a chain"), None);
    }
}
