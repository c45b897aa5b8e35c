//! TLS set-up shared by every binary: the one crypto provider, and the roots trusted for the
//! ACME directory.

use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, pem::PemObject};

use crate::error::{Error, Result};

/// Installs aws-lc-rs as the process-wide rustls provider; call first thing in `main`.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The system's roots plus the PEM certificates in `extra` (`--acme-ca-bundle`).
pub fn root_store(extra: Option<&Path>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    // Missing system roots are not fatal: a private CA may be all that is trusted.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra {
        let setup = |message: String| Error::Setup {
            what: format!("--acme-ca-bundle {}", path.display()),
            source: message.into(),
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| setup(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| setup(e.to_string()))?;
        if certs.is_empty() {
            return Err(setup("holds no PEM certificate".to_owned()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| setup(e.to_string()))?;
        }
    }
    Ok(roots)
}

/// A rustls client config trusting [`root_store`].
pub fn client_config(extra: Option<&Path>) -> Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder()
        .with_root_certificates(root_store(extra)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The HTTP client for the ACME directory, trusting [`root_store`]; one pool shared by all
/// accounts made from it.
pub fn acme_http(extra: Option<&Path>) -> Result<crate::account::AcmeHttpFactory> {
    use bytes::Bytes;
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    use instant_acme::BodyWrapper;

    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*client_config(extra)?).clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    let client: Client<_, BodyWrapper<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    Ok(Arc::new(move || Box::new(client.clone())))
}

/// Checks a server's handshake signatures but not its certificate chain: for tests and
/// benchmarks that look at what a server presents (or load it), never for trusting one.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug)]
pub struct SignatureOnlyVerifier(Arc<rustls::crypto::CryptoProvider>);

#[cfg(any(test, feature = "testing"))]
impl SignatureOnlyVerifier {
    /// A verifier using aws-lc-rs's signature algorithms.
    pub fn new() -> Arc<Self> {
        Arc::new(Self(
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        ))
    }
}

#[cfg(any(test, feature = "testing"))]
impl rustls::client::danger::ServerCertVerifier for SignatureOnlyVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
