//! What the binary-level tests share: the `certbucket-edge` process with a certificate in a
//! local-directory store, an upstream, and TLS clients trusting a throw-away CA.
#![allow(dead_code, unreachable_pub)]

use std::{
    convert::Infallible,
    fs,
    net::{SocketAddr, TcpListener as StdListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use certbucket_core::{
    CertType, CertificateRecord, Host, LocalDirStorage, Secret, Storage, StorageKeys,
};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::{ClientConfig, RootCertStore, crypto::aws_lc_rs, pki_types::ServerName};
use time::OffsetDateTime;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsConnector, client::TlsStream};

pub const SITE: &str = "site.example.com";

/// A free port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free port: {e}"))
}

/// A fresh directory under the temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir()
        .join("certbucket-edge-tests")
        .join(format!("{tag}-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// The soft limit on open files of this process (children inherit it).
pub fn open_files_limit() -> u64 {
    let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(0)
}

/// A process's resident memory, KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}"))
}

/// A throw-away CA, and a certificate for [`SITE`] from it in a local-directory store.
pub struct Fixture {
    pub store_dir: PathBuf,
    pub roots: RootCertStore,
}

impl Fixture {
    pub async fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "edge tests CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap_or_else(|e| panic!("{e}"));
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let leaf = CertificateParams::new(vec![SITE.to_owned()])
            .and_then(|p| p.signed_by(&key, &issuer))
            .unwrap_or_else(|e| panic!("{e}"));
        let host = Host::parse(SITE).unwrap_or_else(|e| panic!("{e}"));
        let record = CertificateRecord::new(
            host.clone(),
            leaf.pem() + &ca_cert.pem(),
            Secret::new(key.serialize_pem()),
            CertType::Ecc,
            OffsetDateTime::now_utc(),
        )
        .and_then(|r| r.to_json())
        .unwrap_or_else(|e| panic!("{e}"));
        let store_dir = temp_dir("store");
        let store = LocalDirStorage::open(&store_dir).unwrap_or_else(|e| panic!("{e}"));
        store
            .put(&StorageKeys::cert(&host), Bytes::from(record))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut roots = RootCertStore::empty();
        roots
            .add(ca_cert.der().clone())
            .unwrap_or_else(|e| panic!("{e}"));
        Self { store_dir, roots }
    }

    /// A connector trusting only this CA, offering HTTP/1.1.
    pub fn connector(&self) -> TlsConnector {
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap_or_else(|e| panic!("{e}"))
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

/// An upstream answering `hello` after `delay` (forever: `None`).
pub async fn upstream(delay: Option<Duration>) -> SocketAddr {
    upstream_saying(b"hello", delay).await
}

/// An upstream answering `body` after `delay` (forever: `None`).
pub async fn upstream_saying(body: &'static [u8], delay: Option<Duration>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = service_fn(move |_req: Request<Incoming>| async move {
                match delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending::<()>().await,
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(body))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    addr
}

/// A running `certbucket-edge` process; killed on drop.
pub struct EdgeProcess {
    pub child: Child,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl EdgeProcess {
    /// Starts the binary over `fixture`'s store, proxying to `upstream`, with `extra` flags, and
    /// waits for `/healthz`.
    pub async fn start(fixture: &Fixture, upstream: SocketAddr, extra: &[&str]) -> Self {
        let [https, http, admin] = [free_port(), free_port(), free_port()]
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
        let log = fixture.store_dir.with_extension("edge.log");
        let out = fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(env!("CARGO_BIN_EXE_certbucket-edge"))
            .arg("--store")
            .arg(format!("file://{}", fixture.store_dir.display()))
            .args(["--https-listen", &https.to_string()])
            .args(["--http-listen", &http.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--upstream", &format!("http://{upstream}")])
            .args(extra)
            .env_remove("CERTBUCKET_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting certbucket-edge: {e}"));
        let this = Self {
            child,
            https,
            http,
            admin,
            log,
        };
        let started = Instant::now();
        while this.admin_get("/healthz").await.map(|(s, _)| s) != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the edge did not answer /healthz; log:\n{}",
                this.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        this
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the admin listener: (status, body); `None` when it does not answer.
    pub async fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        let mut tcp = TcpStream::connect(self.admin).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.ok()?;
        let answer = String::from_utf8(answer).ok()?;
        let status = answer.get(9..12)?.parse().ok()?;
        Some((status, answer.split_once("\r\n\r\n")?.1.to_owned()))
    }

    /// Sends `signal` (`TERM`, `INT`) to the edge.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS connection to `edge` for [`SITE`].
pub async fn connect(
    connector: &TlsConnector,
    edge: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(edge).await?;
    let name = ServerName::try_from(SITE).unwrap_or_else(|e| panic!("{e}"));
    connector.connect(name, tcp).await
}

/// A keep-alive HTTP/1.1 client over one TLS connection.
pub async fn http1(
    tls: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(conn);
    sender
}

/// `GET /` over `sender`: the status, or the error text.
pub async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let req = Request::get("/")
        .header(header::HOST, SITE)
        .body(Empty::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}
