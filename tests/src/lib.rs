//! The integration-test harness: real Pebble + pebble-challtestsrv per test, LocalStack S3
//! buckets, a tiny upstream, temp dirs and tracing.
//!
//! Services that a test needs and cannot reach make it fail with a message that says what to
//! start; nothing is skipped. `scripts/install-services` installs Pebble and LocalStack,
//! `scripts/services start` runs LocalStack, and `scripts/test` does both and runs the tests.

pub mod edge;
pub mod localstack;
pub mod packaged;
pub mod runtime_api;
pub mod stack;

use std::{
    collections::hash_map::RandomState,
    convert::Infallible,
    fs,
    hash::{BuildHasher, Hasher},
    io::ErrorKind,
    net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use aws_sdk_s3::error::DisplayErrorContext;
use bytes::Bytes;
use certbucket_core::S3Storage;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::task::JoinHandle;

/// The line Pebble 2.4 logs for every request to its new-order endpoint (before it checks
/// the JWS, so a request it rejects, e.g. for a bad nonce, counts too).
const NEW_ORDER_LOG: &str = " POST /order-plz -> calling handler()";
/// The line Pebble 2.4 logs for every request to its new-account endpoint.
const NEW_ACCOUNT_LOG: &str = " POST /sign-me-up -> calling handler()";
/// The line Pebble 2.4 logs when it has stored a new order.
const ORDER_ADDED_LOG: &str = " Added order ";

const INSTALL_HINT: &str = "run scripts/install-services (apt-get install pebble)";
const LOCALSTACK_HINT: &str = "run scripts/test, or `eval \"$(scripts/services start)\"`";

/// A free TCP port on 127.0.0.1 (bound, read, released; a later bind may rarely race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|err| panic!("cannot bind 127.0.0.1:0 to find a free port: {err}"))
}

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A token unique within this process and very likely across processes: `<pid>-<n>-<random>`.
fn unique_suffix() -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{}-{n}-{:08x}", std::process::id(), hasher.finish() as u32)
}

/// A binary of this workspace (`certbucket`, `certbucket-edge`, ...) next to the test
/// executables; fails saying how to build it.
pub fn workspace_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable is not under target/<profile>/deps")?;
    let bin = dir.join(name);
    if !bin.is_file() {
        bail!(
            "{} is not built: run `cargo build --workspace` (scripts/test does) first",
            bin.display()
        );
    }
    Ok(bin)
}

/// A new, empty directory under the system temp dir, unique per call. The caller removes it
/// (or leaves it for inspection).
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("certbucket-tests")
        .join(format!("{tag}-{}", unique_suffix()));
    fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("cannot create {}: {err}", dir.display()));
    dir
}

/// Logs to the test's captured output; filter with `RUST_LOG` (default `info`). Idempotent.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Fails only when a subscriber is already installed: that one is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A plain HTTP/1.1 upstream on 127.0.0.1 that answers every request with 200 and
/// `hello from upstream host=<Host> proto=<X-Forwarded-Proto>\n`. Abort the handle to stop it.
pub async fn upstream() -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the upstream")?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let body = format!(
                        "hello from upstream host={} proto={}\n",
                        header("host"),
                        header("x-forwarded-proto")
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                // A client that goes away mid-request is not the upstream's problem.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

/// How to start a [`Pebble`]: extra environment, EAB keys, certificate lifetime.
#[derive(Debug, Clone, Default)]
pub struct PebbleOptions {
    env: Vec<(String, String)>,
    eab_keys: Vec<(String, String)>,
    cert_validity: Option<Duration>,
}

impl PebbleOptions {
    /// Sets an environment variable for Pebble, e.g. `PEBBLE_WFE_NONCEREJECT=50`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Requires external account binding and accepts `kid` with the base64url HMAC `key`.
    pub fn eab_key(mut self, kid: &str, key_b64url: &str) -> Self {
        self.eab_keys.push((kid.to_owned(), key_b64url.to_owned()));
        self
    }

    /// The lifetime of the certificates Pebble issues (default: about five years).
    pub fn cert_validity(mut self, validity: Duration) -> Self {
        self.cert_validity = Some(validity);
        self
    }

    /// Starts Pebble validating http-01 on `127.0.0.1:http_port`.
    pub async fn start(self, http_port: u16) -> anyhow::Result<Pebble> {
        // Ports are picked free and then bound by the children: retry if one was taken meanwhile.
        let mut last = None;
        for _ in 0..3 {
            match Pebble::start_once(&self, http_port).await {
                Ok(pebble) => return Ok(pebble),
                Err(err) if err.is::<PortRace>() => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("pebble did not start")))
    }
}

/// A Pebble exited during startup, perhaps because a port was taken: worth another try.
#[derive(Debug)]
struct PortRace(String);

impl std::fmt::Display for PortRace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PortRace {}

/// A running Pebble (ACME test CA) and its pebble-challtestsrv (DNS), stopped on drop.
///
/// Every Pebble has its own ports, temp dir and issuing root. Challenges are validated by
/// connecting to `127.0.0.1:http_port` (challtestsrv answers every A query with 127.0.0.1).
#[derive(Debug)]
pub struct Pebble {
    dir: PathBuf,
    pebble: Child,
    challtestsrv: Child,
    listen_port: u16,
    management_port: u16,
    dns_port: u16,
    challtestsrv_port: u16,
    ca_bundle: PathBuf,
    ca_pem: String,
    keep_logs: bool,
}

impl Pebble {
    /// Starts Pebble validating http-01 on `127.0.0.1:http_port`.
    pub async fn start(http_port: u16) -> anyhow::Result<Self> {
        PebbleOptions::default().start(http_port).await
    }

    /// Starts Pebble with extra environment, e.g. `&[("PEBBLE_WFE_NONCEREJECT", "50")]`.
    pub async fn start_with(http_port: u16, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        env.iter()
            .fold(PebbleOptions::default(), |o, (k, v)| o.env(k, v))
            .start(http_port)
            .await
    }

    /// Options for a Pebble with EAB, other env or a shorter certificate lifetime.
    pub fn options() -> PebbleOptions {
        PebbleOptions::default()
    }

    async fn start_once(options: &PebbleOptions, http_port: u16) -> anyhow::Result<Self> {
        let dir = temp_dir("pebble");
        let ca_pem = write_listener_pki(&dir)?;
        let (listen_port, management_port, tls_port) = (free_port(), free_port(), free_port());
        let (dns_port, challtestsrv_port) = (free_port(), free_port());

        let mut config = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{listen_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.join("listener.pem"),
            "privateKey": dir.join("listener.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": !options.eab_keys.is_empty(),
        });
        if !options.eab_keys.is_empty() {
            let keys: serde_json::Map<_, _> = options
                .eab_keys
                .iter()
                .map(|(kid, key)| (kid.clone(), key.clone().into()))
                .collect();
            config["externalAccountMACKeys"] = keys.into();
        }
        if let Some(validity) = options.cert_validity {
            config["certificateValidityPeriod"] = validity.as_secs().into();
        }
        let config_path = dir.join("pebble-config.json");
        fs::write(
            &config_path,
            serde_json::to_vec_pretty(&serde_json::json!({ "pebble": config }))?,
        )?;

        let mut pebble_cmd = Command::new("pebble");
        pebble_cmd
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Deterministic request counts by default; a test can ask for rejected nonces.
            .env("PEBBLE_WFE_NONCEREJECT", "0");
        for (key, value) in &options.env {
            pebble_cmd.env(key, value);
        }
        let mut pebble = match spawn_logged(&mut pebble_cmd, &dir.join("pebble.log")) {
            Ok(child) => child,
            Err(err) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(not_found_hint(err, "pebble"));
            }
        };

        let challtestsrv = match spawn_logged(
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-management", &format!("127.0.0.1:{challtestsrv_port}")]),
            &dir.join("challtestsrv.log"),
        ) {
            Ok(child) => child,
            Err(err) => {
                let _ = pebble.kill();
                let _ = pebble.wait();
                let _ = fs::remove_dir_all(&dir);
                return Err(not_found_hint(err, "pebble-challtestsrv"));
            }
        };

        let mut this = Self {
            ca_bundle: dir.join("listener-ca.pem"),
            dir,
            pebble,
            challtestsrv,
            listen_port,
            management_port,
            dns_port,
            challtestsrv_port,
            ca_pem,
            keep_logs: false,
        };
        if let Err(err) = this.wait_ready().await {
            this.keep_logs = true;
            return Err(err);
        }
        Ok(this)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let exited = [
                ("pebble", self.pebble.try_wait()?),
                ("pebble-challtestsrv", self.challtestsrv.try_wait()?),
            ];
            if let Some((name, Some(status))) = exited.into_iter().find(|(_, s)| s.is_some()) {
                return Err(PortRace(format!(
                    "{name} exited during startup ({status}); logs in {}:\n{}",
                    self.dir.display(),
                    self.log_tail()
                ))
                .into());
            }
            let dns_up = TcpStream::connect(("127.0.0.1", self.challtestsrv_port)).is_ok();
            if dns_up && let Ok((200, _)) = https_get(&self.ca_pem, &self.directory_url()).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "Pebble did not answer {} within 30 s; logs in {}:\n{}",
                    self.directory_url(),
                    self.dir.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ACME directory, e.g. `https://127.0.0.1:PORT/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.listen_port)
    }

    /// The PEM of the CA that signed Pebble's own HTTPS listener (for `--acme-ca-bundle`).
    pub fn ca_bundle_path(&self) -> &Path {
        &self.ca_bundle
    }

    /// The same CA as [`Self::ca_bundle_path`], as PEM text.
    pub fn ca_bundle_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The process ids of Pebble and pebble-challtestsrv.
    pub fn pids(&self) -> [u32; 2] {
        [self.pebble.id(), self.challtestsrv.id()]
    }

    /// The pebble-challtestsrv DNS server Pebble resolves names with.
    pub fn dns_server(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.dns_port))
    }

    /// pebble-challtestsrv's management API (e.g. `/add-a`, `/set-default-ipv4`).
    pub fn challtestsrv_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.challtestsrv_port)
    }

    /// The root Pebble issues under (new every start), from the management API `/roots/0`.
    pub async fn issuing_root_pem(&self) -> anyhow::Result<String> {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management_port);
        let (status, body) = https_get(&self.ca_pem, &url).await?;
        if status != 200 {
            bail!("GET {url}: HTTP {status}");
        }
        String::from_utf8(body.to_vec()).context("Pebble's root is not text")
    }

    /// How many requests reached Pebble's new-order endpoint, counted in its log (the line
    /// `POST /order-plz -> calling handler()`), including any Pebble then rejected.
    pub fn new_order_count(&self) -> usize {
        self.count_log_lines(NEW_ORDER_LOG)
    }

    /// How many requests reached Pebble's new-account endpoint (its log line
    /// `POST /sign-me-up -> calling handler()`); Pebble 2.4 logs no line per created account.
    pub fn new_account_count(&self) -> usize {
        self.count_log_lines(NEW_ACCOUNT_LOG)
    }

    /// How many orders Pebble created (its `Added order ... to the db` log lines).
    pub fn orders_created(&self) -> usize {
        self.count_log_lines(ORDER_ADDED_LOG)
    }

    fn count_log_lines(&self, needle: &str) -> usize {
        fs::read_to_string(self.dir.join("pebble.log"))
            .map(|log| log.lines().filter(|l| l.contains(needle)).count())
            .unwrap_or(0)
    }

    /// The last lines of Pebble's and challtestsrv's logs, for failure messages.
    pub fn log_tail(&self) -> String {
        let tail = |name: &str| {
            let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<_> = text.lines().collect();
            let start = lines.len().saturating_sub(40);
            format!(
                "--- {name} (last {} lines)\n{}\n",
                lines.len() - start,
                lines[start..].join("\n")
            )
        };
        tail("pebble.log") + &tail("challtestsrv.log")
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [&mut self.pebble, &mut self.challtestsrv] {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() || self.keep_logs {
            eprintln!("Pebble logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn spawn_logged(command: &mut Command, log: &Path) -> std::io::Result<Child> {
    let out = fs::File::create(log)?;
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
}

fn not_found_hint(err: std::io::Error, program: &str) -> anyhow::Error {
    if err.kind() == ErrorKind::NotFound {
        anyhow::anyhow!("{program} not found: {INSTALL_HINT}")
    } else {
        anyhow::Error::new(err).context(format!("starting {program}"))
    }
}

/// Writes a fresh CA and a `localhost`/`127.0.0.1` leaf for Pebble's listener into `dir`;
/// returns the CA's PEM.
fn write_listener_pki(dir: &Path) -> anyhow::Result<String> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "certbucket tests Pebble listener CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    fs::write(dir.join("listener-ca.pem"), ca_cert.pem())?;
    fs::write(dir.join("listener.pem"), leaf_cert.pem() + &ca_cert.pem())?;
    fs::write(dir.join("listener.key"), leaf_key.serialize_pem())?;
    Ok(ca_cert.pem())
}

/// GETs an `https://` URL trusting only the CAs in `ca_pem`; returns status and body.
pub async fn https_get(ca_pem: &str, url: &str) -> anyhow::Result<(u16, Bytes)> {
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let host = uri.host().context("URL without host")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let server_name = ServerName::try_from(host.clone())?;
    let authority = uri
        .authority()
        .context("URL without authority")?
        .to_string();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();

    let exchange = async move {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let tls = connector.connect(server_name, tcp).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let driver = tokio::spawn(conn);
        let request = Request::get(path)
            .header(http::header::HOST, authority)
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        driver.abort();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("GET {url} timed out"))?
        .with_context(|| format!("GET {url}"))
}

/// The LocalStack (or other S3) endpoint from the environment, to make fresh buckets in.
#[derive(Debug, Clone)]
pub struct S3Env {
    endpoint: String,
}

impl S3Env {
    /// Requires `AWS_ENDPOINT_URL` and credentials in the environment and the endpoint to
    /// accept connections; otherwise fails saying how to start LocalStack.
    pub fn from_env() -> anyhow::Result<Self> {
        let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") else {
            bail!("LocalStack is not running (AWS_ENDPOINT_URL is not set): {LOCALSTACK_HINT}");
        };
        let uri: http::Uri = endpoint
            .parse()
            .with_context(|| format!("AWS_ENDPOINT_URL={endpoint} is not a URL"))?;
        let host = uri.host().unwrap_or("127.0.0.1");
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let reachable = (host, port)
            .to_socket_addrs()
            .ok()
            .into_iter()
            .flatten()
            .any(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
        if !reachable {
            bail!(
                "LocalStack is not running (nothing answers at AWS_ENDPOINT_URL={endpoint}): {LOCALSTACK_HINT}"
            );
        }
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            bail!("AWS_ACCESS_KEY_ID is not set for LocalStack at {endpoint}: {LOCALSTACK_HINT}");
        }
        Ok(Self { endpoint })
    }

    /// The endpoint, as in `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates a new, empty bucket with a unique name (`cb-test-<pid>-<n>-<random>`).
    pub async fn fresh_bucket(&self) -> anyhow::Result<String> {
        let bucket = format!("cb-test-{}", unique_suffix());
        S3Storage::from_env(bucket.clone(), String::new())
            .await
            .client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("{}", DisplayErrorContext(err)))
            .with_context(|| format!("creating bucket {bucket} at {}", self.endpoint))?;
        Ok(bucket)
    }

    /// A store over a fresh bucket, without a prefix.
    pub async fn fresh_store(&self) -> anyhow::Result<Arc<S3Storage>> {
        self.fresh_store_with_prefix("").await
    }

    /// A store over a fresh bucket, under `prefix` (e.g. `team/a`).
    pub async fn fresh_store_with_prefix(&self, prefix: &str) -> anyhow::Result<Arc<S3Storage>> {
        let bucket = self.fresh_bucket().await?;
        Ok(Arc::new(
            S3Storage::from_env(bucket, prefix.to_owned()).await,
        ))
    }
}
