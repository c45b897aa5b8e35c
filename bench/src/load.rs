//! `NewConnectionLoad`: one new TCP + TLS 1.3 connection per HTTP/1.1 request, many at once.
//!
//! wrk and h2load keep the TLS session of a closed connection and resume it on the next one, so
//! their "new connection" skips the certificate signature. This load decides: every handshake a
//! full one (what a first-time visitor costs), or resumed whenever the server allows (what a
//! returning browser costs).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use certbucket_core::tls::SignatureOnlyVerifier;
use rustls::{
    ClientConfig, HandshakeKind, client::Resumption, crypto::aws_lc_rs, pki_types::ServerName,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// How long one connection may take, from connect to the end of the response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct NewConnectionLoad {
    /// Where to connect.
    pub(crate) connect: SocketAddr,
    /// SNI and Host.
    pub(crate) host: String,
    /// Connections open at once.
    pub(crate) connections: usize,
    /// How long to keep opening connections.
    pub(crate) duration: Duration,
    /// Offer the sessions servers hand out (else every handshake is a full one).
    pub(crate) resume: bool,
}

/// What happened.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LoadReport {
    /// Requests answered with 200.
    pub(crate) ok: u64,
    /// Requests answered with anything else.
    pub(crate) other_status: u64,
    /// Connections that failed (connect, handshake, I/O or timeout).
    pub(crate) errors: u64,
    /// Handshakes that resumed a session.
    pub(crate) resumed: u64,
    /// Wall time of the whole run.
    pub(crate) elapsed: Duration,
}

impl NewConnectionLoad {
    /// Runs the load on the calling thread (one core, like wrk -t1).
    pub(crate) fn run(&self) -> anyhow::Result<LoadReport> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(self.drive())
    }

    async fn drive(&self) -> anyhow::Result<LoadReport> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        // The servers all present the same certificate, checked once by bench/run; the
        // handshake signature (the server's work measured here) is still verified.
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(SignatureOnlyVerifier::new())
            .with_no_client_auth();
        config.resumption = if self.resume {
            Resumption::in_memory_sessions(4 * self.connections.max(64))
        } else {
            Resumption::disabled()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = Arc::new(Client {
            connector: TlsConnector::from(Arc::new(config)),
            connect: self.connect,
            name: ServerName::try_from(self.host.clone())?,
            request: format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.host
            )
            .into_bytes(),
        });
        let started = Instant::now();
        let deadline = started + self.duration;
        let workers: Vec<_> = (0..self.connections.max(1))
            .map(|_| tokio::spawn(Arc::clone(&client).keep_connecting(deadline)))
            .collect();
        let mut total = LoadReport::default();
        for worker in workers {
            let report = worker.await?;
            total.ok += report.ok;
            total.other_status += report.other_status;
            total.errors += report.errors;
            total.resumed += report.resumed;
        }
        total.elapsed = started.elapsed();
        Ok(total)
    }
}

struct Client {
    connector: TlsConnector,
    connect: SocketAddr,
    name: ServerName<'static>,
    request: Vec<u8>,
}

impl Client {
    async fn keep_connecting(self: Arc<Self>, deadline: Instant) -> LoadReport {
        let mut report = LoadReport::default();
        let mut response = Vec::with_capacity(4096);
        while Instant::now() < deadline {
            match tokio::time::timeout(REQUEST_TIMEOUT, self.one_request(&mut response)).await {
                Ok(Ok((status_ok, resumed))) => {
                    if status_ok {
                        report.ok += 1;
                    } else {
                        report.other_status += 1;
                    }
                    report.resumed += u64::from(resumed);
                }
                Ok(Err(_)) | Err(_) => report.errors += 1,
            }
        }
        report
    }

    /// One connection, one request; (answered 200, handshake resumed).
    async fn one_request(&self, response: &mut Vec<u8>) -> std::io::Result<(bool, bool)> {
        let tcp = TcpStream::connect(self.connect).await?;
        tcp.set_nodelay(true)?;
        let mut tls = self.connector.connect(self.name.clone(), tcp).await?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
        tls.write_all(&self.request).await?;
        response.clear();
        // The server closes after the answer; some without close_notify, which is fine here.
        if let Err(e) = tls.read_to_end(response).await
            && e.kind() != std::io::ErrorKind::UnexpectedEof
        {
            return Err(e);
        }
        Ok((response.starts_with(b"HTTP/1.1 200 "), resumed))
    }
}
