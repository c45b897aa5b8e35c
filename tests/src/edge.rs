//! `TestEdge`: an edge of a test's own with its admin listener (metrics), and the TLS clients
//! the robustness tests drive it with.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use certbucket_core::{LeafCertificate, Storage, tls::SignatureOnlyVerifier};
use certbucket_edge::{AdminServer, Edge, EdgeConfig, EdgeLimits};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, RootCertStore,
    crypto::aws_lc_rs,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::upstream;

/// An edge on 127.0.0.1 over `store`, with its admin listener and an upstream of its own.
#[derive(Debug)]
pub struct TestEdge {
    /// The TLS listener.
    pub https: SocketAddr,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin: SocketAddr,
    /// The edge's task: finished only if the edge stopped (or crashed).
    pub task: JoinHandle<Result<(), certbucket_edge::EdgeError>>,
    stop: CancellationToken,
    _upstream: JoinHandle<()>,
}

impl TestEdge {
    /// Starts an edge polling the manifest every `poll`.
    pub async fn start(store: Arc<dyn Storage>, poll: Duration) -> anyhow::Result<Self> {
        let (upstream_addr, upstream_task) = upstream().await?;
        let localhost: SocketAddr = "127.0.0.1:0".parse()?;
        let config = EdgeConfig::new(
            localhost,
            localhost,
            format!("http://{upstream_addr}").parse()?,
            store,
        );
        // Non-exhaustive: built from the defaults.
        let mut limits = EdgeLimits::default();
        limits.manifest_poll = poll;
        let edge = Edge::bind_with(config, limits).await?;
        let admin = AdminServer::bind(localhost).await?.observe(&edge);
        let (https, admin_addr, stop) =
            (edge.https_addr(), admin.local_addr(), edge.shutdown_token());
        tokio::spawn(admin.run(stop.clone()));
        let task = tokio::spawn(edge.run());
        Ok(Self {
            https,
            admin: admin_addr,
            task,
            stop,
            _upstream: upstream_task,
        })
    }

    /// `GET path` on the admin listener: (status, body).
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut tcp = TcpStream::connect(self.admin).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await?;
        let answer = String::from_utf8(answer)?;
        let status = answer.get(9..12).context("short answer")?.parse()?;
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// The value of one `/metrics` series, e.g. `certbucket_edge_store_up`.
    pub async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let (_, text) = self.admin_get("/metrics").await?;
        sample(&text, series).with_context(|| format!("no {series} in\n{text}"))
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The value of `series` in a Prometheus text page.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// A TLS client that verifies against `root_pem` only, offering HTTP/1.1.
pub fn verifying_client(root_pem: &str) -> anyhow::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A TLS client that accepts whatever certificate it is shown, to look at it.
pub fn looking_client() -> anyhow::Result<TlsConnector> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config
        .dangerous()
        .set_certificate_verifier(SignatureOnlyVerifier::new());
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A new TLS connection to `edge` for `sni` and one `GET /` over it: the leaf presented and the
/// body (which must come with `200`).
pub async fn fetch(
    connector: &TlsConnector,
    edge: SocketAddr,
    sni: &str,
) -> anyhow::Result<(LeafCertificate, String)> {
    let tcp = TcpStream::connect(edge).await?;
    let tls = connector
        .connect(ServerName::try_from(sni.to_owned())?, tcp)
        .await
        .with_context(|| format!("handshake for {sni}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("no peer certificate")?;
    let leaf = LeafCertificate::from_der(leaf).map_err(anyhow::Error::msg)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    let driver = tokio::spawn(connection);
    let request = Request::get("/")
        .header(header::HOST, sni)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    anyhow::ensure!(
        status == StatusCode::OK,
        "GET / for {sni} answered {status}"
    );
    Ok((leaf, String::from_utf8(body.to_vec())?))
}

/// How long a test waits for something the edge should do within a poll or two.
pub const PATIENCE: Duration = Duration::from_secs(30);
