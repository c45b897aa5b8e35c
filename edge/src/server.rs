//! `Edge`: the two public listeners — http-01 and redirects on port 80, SNI TLS and the reverse
//! proxy on port 443 — and their shutdown.

use std::{
    convert::Infallible, fmt::Display, future::Future, net::SocketAddr, pin::Pin, sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use certbucket_core::Storage;
use http::{Request, Response};
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Instant,
};
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use crate::{
    challenge::Http01Service,
    error::EdgeError,
    limits::EdgeLimits,
    manifest_poller::ManifestPoller,
    metrics::{Handshake, Metrics},
    ondemand::{OnDemand, OnDemandRequests},
    proxy::Proxy,
    resolver::CertResolver,
    store_health::StoreHealth,
    upstream_map::UpstreamRoute,
    watch::{Check, ConnectionWatch, WatchedIo},
};

/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// hyper's smallest allowed HTTP/1 read buffer.
const MIN_BUF_SIZE: usize = 8192;

/// What the edge serves and where.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The plain-HTTP listener (http-01 answers, redirects); port 0 picks one.
    pub http_listen: SocketAddr,
    /// The TLS listener; port 0 picks one.
    pub https_listen: SocketAddr,
    /// Where TLS traffic is proxied to: `http://HOST[:PORT]`.
    pub upstream: http::Uri,
    /// Hosts whose requests go elsewhere than `upstream` (by the request's `Host`).
    pub upstream_map: Vec<UpstreamRoute>,
    /// The bucket holding certificates and challenges; the edge writes only on-demand requests.
    pub store: Arc<dyn Storage>,
    /// Whether non-challenge requests on the HTTP listener get a `308` to https (else `404`).
    pub redirect_http: bool,
    /// What to do for unknown SNIs the allow-list takes: write a request for the functions, or
    /// issue here; `None` does neither.
    pub on_demand: Option<OnDemand>,
}

impl EdgeConfig {
    /// A configuration with the default `redirect_http: true`.
    pub fn new(
        http_listen: SocketAddr,
        https_listen: SocketAddr,
        upstream: http::Uri,
        store: Arc<dyn Storage>,
    ) -> Self {
        Self {
            http_listen,
            https_listen,
            upstream,
            upstream_map: Vec::new(),
            store,
            redirect_http: true,
            on_demand: None,
        }
    }
}

/// The edge server, bound and ready to run.
#[derive(Debug)]
pub struct Edge {
    http: TcpListener,
    https: TcpListener,
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    challenges: Http01Service,
    resolver: Arc<CertResolver>,
    proxy: Arc<Proxy>,
    store: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
    health: Arc<StoreHealth>,
    limits: EdgeLimits,
    shutdown: CancellationToken,
}

impl Edge {
    /// Binds both listeners (so tests can read the chosen ports before running), with the
    /// default [`EdgeLimits`].
    pub async fn bind(config: EdgeConfig) -> Result<Self, EdgeError> {
        Self::bind_with(config, EdgeLimits::default()).await
    }

    /// Binds both listeners with the given limits.
    pub async fn bind_with(config: EdgeConfig, limits: EdgeLimits) -> Result<Self, EdgeError> {
        let metrics = Arc::new(Metrics::default());
        let proxy = Arc::new(Proxy::new(&config.upstream, &config.upstream_map)?);
        let on_demand = config.on_demand.map(|action| {
            Arc::new(OnDemandRequests::new(
                Arc::clone(&config.store),
                action,
                Arc::clone(&metrics),
            ))
        });
        let health = Arc::new(StoreHealth::default());
        let resolver = Arc::new(CertResolver::new(
            Arc::clone(&config.store),
            Arc::clone(&metrics),
            Arc::clone(&health),
            on_demand,
            limits.cache_size,
        )?);
        let (http, http_addr) = listen("http", config.http_listen).await?;
        let (https, https_addr) = listen("https", config.https_listen).await?;
        Ok(Self {
            http,
            https,
            http_addr,
            https_addr,
            challenges: Http01Service::new(
                Arc::clone(&config.store),
                config.redirect_http,
                Arc::clone(&metrics),
            ),
            resolver,
            proxy,
            store: config.store,
            metrics,
            health,
            limits,
            shutdown: CancellationToken::new(),
        })
    }

    /// The address the HTTP listener is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The address the TLS listener is bound to.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// Cancelling this token stops the edge: no new connections, in-flight requests get the
    /// grace period to finish.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// What the admin listener reports on: the store, the certificate cache and the counters.
    pub(crate) fn observed(&self) -> (Arc<dyn Storage>, Arc<CertResolver>, Arc<Metrics>) {
        (
            Arc::clone(&self.store),
            Arc::clone(&self.resolver),
            Arc::clone(&self.metrics),
        )
    }

    /// Whether the store answered lately and the manifest was read.
    pub(crate) fn health(&self) -> Arc<StoreHealth> {
        Arc::clone(&self.health)
    }

    /// Serves until the shutdown token is cancelled.
    pub async fn run(self) -> Result<(), EdgeError> {
        let tracker = TaskTracker::new();
        let Self {
            http,
            https,
            challenges,
            resolver,
            proxy,
            metrics,
            limits,
            shutdown,
            store,
            health,
            ..
        } = self;
        let poller = ManifestPoller::new(
            Arc::clone(&store),
            Arc::clone(&resolver),
            Arc::clone(&metrics),
            health,
            limits.manifest_poll,
        );
        tracker.spawn(poller.run(shutdown.clone()));
        // Both listeners draw from one pool: the limit is on the process's sockets.
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));

        let http_loop = accept_loop(
            "http",
            http,
            &shutdown,
            &tracker,
            Some(&permits),
            |tcp, _peer| serve_http(tcp, challenges.clone(), limits, shutdown.clone()),
        );
        let https_loop = accept_loop(
            "https",
            https,
            &shutdown,
            &tracker,
            Some(&permits),
            |tcp, peer| {
                serve_https(
                    tcp,
                    peer,
                    Arc::clone(&resolver),
                    Arc::clone(&proxy),
                    Arc::clone(&metrics),
                    limits,
                    shutdown.clone(),
                )
            },
        );
        tokio::join!(http_loop, https_loop);

        tracker.close();
        // Every connection task ends within the grace period; the margin covers scheduling.
        let drained =
            tokio::time::timeout(limits.grace_period + Duration::from_secs(1), tracker.wait());
        if drained.await.is_err() {
            warn!(
                open = tracker.len(),
                "connections still open after the shutdown grace period"
            );
        }
        Ok(())
    }
}

/// Binds `addr`, returning the listener and the address it got.
pub(crate) async fn listen(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), EdgeError> {
    let bind_error = |source| EdgeError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Accepts connections until `shutdown`, each handled in its own task on `tracker`. With
/// `permits`, a connection is served only with a permit, held until it ends; while none is free
/// the listener stops accepting, so excess clients wait in the kernel's accept queue instead of
/// costing memory here. A listener waiting for a connection holds no permit: the limit counts
/// connections, not listeners.
pub(crate) async fn accept_loop<F, Fut>(
    what: &'static str,
    listener: TcpListener,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    permits: Option<&Arc<Semaphore>>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut warned_full = false;
    loop {
        if let Some(permits) = permits
            && permits.available_permits() == 0
        {
            if !warned_full {
                warn!(
                    listener = what,
                    "connection limit reached: new connections wait"
                );
                warned_full = true;
            }
            // Wait for a free slot without keeping it.
            tokio::select! {
                () = shutdown.cancelled() => break,
                permit = Arc::clone(permits).acquire_owned() => drop(permit),
            }
        }
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let permit = match permits {
            Some(permits) => {
                let permit = match Arc::clone(permits).try_acquire_owned() {
                    Ok(permit) => Ok(permit),
                    // The other listener took the last slot meanwhile: this connection waits
                    // for the next one, unserved.
                    Err(_) => tokio::select! {
                        () = shutdown.cancelled() => break,
                        permit = Arc::clone(permits).acquire_owned() => permit,
                    },
                };
                // The semaphore is never closed.
                let Ok(permit) = permit else { break };
                if permits.available_permits() > 0 {
                    warned_full = false;
                }
                Some(permit)
            }
            None => None,
        };
        let served = handle(tcp, peer);
        tracker.spawn(async move {
            served.await;
            drop(permit);
        });
    }
    debug!(listener = what, "stopped accepting");
}

/// Runs a hyper connection to its end. On shutdown, or when `watch` finds it idle, closes it
/// gracefully, then drops it after `grace`; a request head overdue drops it at once.
pub(crate) async fn drive<C, E>(
    conn: C,
    shutdown: &CancellationToken,
    grace: Duration,
    watch: Option<&ConnectionWatch>,
    graceful: impl FnOnce(Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut conn = std::pin::pin!(conn);
    let mut graceful = Some(graceful);
    let mut closing_until: Option<Instant> = None;
    let result = loop {
        let now = Instant::now();
        let mut wake = closing_until;
        if closing_until.is_none()
            && let Some(watch) = watch
        {
            match watch.check() {
                Check::Fine(after) => wake = Some(now + after),
                Check::HeadTooSlow => {
                    debug!("request head too slow: closing the connection");
                    return;
                }
                Check::Idle => {
                    debug!("idle connection: closing");
                    if let Some(close) = graceful.take() {
                        close(conn.as_mut());
                    }
                    closing_until = Some(now + grace);
                    wake = closing_until;
                }
            }
        }
        let sleep = tokio::time::sleep_until(wake.unwrap_or(now + Duration::from_secs(86_400)));
        tokio::select! {
            result = conn.as_mut() => break result,
            () = shutdown.cancelled(), if closing_until.is_none() => {
                if let Some(close) = graceful.take() {
                    close(conn.as_mut());
                }
                closing_until = Some(Instant::now() + grace);
            }
            () = sleep => {
                if closing_until.is_some_and(|until| Instant::now() >= until) {
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        debug!("connection ended: {e}");
    }
}

/// A response body that keeps `guard` alive until hyper is done with it.
fn guarded<B>(
    response: Response<B>,
    guard: impl Send + Sync + 'static,
) -> Response<BoxBody<Bytes, B::Error>>
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
{
    response.map(|body| {
        body.map_frame(move |frame| {
            let _held = &guard;
            frame
        })
        .boxed()
    })
}

/// Serves one plain-HTTP connection (HTTP/1.1 only, as ACME CAs and browsers use on port 80).
async fn serve_http(
    tcp: TcpStream,
    challenges: Http01Service,
    limits: EdgeLimits,
    shutdown: CancellationToken,
) {
    let watch = ConnectionWatch::new(&limits, true);
    let service = {
        let watch = Arc::clone(&watch);
        service_fn(move |req: Request<hyper::body::Incoming>| {
            let guard = watch.request_started();
            let challenges = challenges.clone();
            async move { Ok::<_, Infallible>(guarded(challenges.respond(&req).await, guard)) }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF_SIZE));
    let io = TokioIo::new(WatchedIo::new(tcp, Arc::clone(&watch)));
    let conn = builder.serve_connection(io, service);
    drive(conn, &shutdown, limits.grace_period, Some(&watch), |conn| {
        conn.graceful_shutdown();
    })
    .await;
}

/// Serves one TLS connection: picks the certificate by SNI, then proxies HTTP/1.1 or HTTP/2.
async fn serve_https(
    tcp: TcpStream,
    peer: SocketAddr,
    resolver: Arc<CertResolver>,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    limits: EdgeLimits,
    shutdown: CancellationToken,
) {
    let handshake = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let config = resolver.server_config(sni.as_deref()).await;
        let known = !resolver.is_default(&config);
        Ok::<_, std::io::Error>((start.into_stream(config).await?, known))
    };
    let (tls, known) = tokio::select! {
        () = shutdown.cancelled() => return,
        // As nginx times the TLS handshake with client_header_timeout: a client dribbling its
        // ClientHello holds a connection slot no longer than one dribbling its headers.
        done = tokio::time::timeout(limits.header_read_timeout, handshake) => match done {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                metrics.handshake(Handshake::Failed);
                debug!(%peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                metrics.handshake(Handshake::Failed);
                debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    metrics.handshake(if known {
        Handshake::Known
    } else {
        Handshake::Default
    });

    // HTTP/2 reads pings and settings between requests: only HTTP/1 heads are timed.
    let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let watch = ConnectionWatch::new(&limits, !is_h2);
    let client_ip = peer.ip();
    let service = {
        let watch = Arc::clone(&watch);
        service_fn(move |req| {
            let guard = watch.request_started();
            let proxy = Arc::clone(&proxy);
            let metrics = Arc::clone(&metrics);
            async move {
                let response = proxy.forward(req, client_ip).await;
                metrics.proxy_response(response.status());
                Ok::<_, Infallible>(guarded(response, guard))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(MIN_BUF_SIZE));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let io = TokioIo::new(WatchedIo::new(tls, Arc::clone(&watch)));
    let conn = builder.serve_connection(io, service);
    drive(conn, &shutdown, limits.grace_period, Some(&watch), |conn| {
        conn.graceful_shutdown();
    })
    .await;
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use certbucket_core::{ChallengeToken, LeafCertificate, StorageKeys};
    use http::{HeaderMap, Request, StatusCode, Uri, header};
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::body::Incoming;
    use rustls::{
        ClientConfig, RootCertStore, client::danger::ServerCertVerifier, crypto::aws_lc_rs,
    };
    use tokio::task::JoinHandle;
    use tokio_rustls::{TlsConnector, client::TlsStream};

    use super::*;
    use crate::testing::{TestCa, TestStore};

    const SITE: &str = "site.example.com";
    const TOKEN: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";

    struct Running {
        http: SocketAddr,
        https: SocketAddr,
        admin: SocketAddr,
        shutdown: CancellationToken,
        task: JoinHandle<Result<(), EdgeError>>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    async fn start(store: Arc<TestStore>, upstream: Uri, redirect_http: bool) -> Running {
        start_with(store, upstream, redirect_http, EdgeLimits::default()).await
    }

    async fn start_with(
        store: Arc<TestStore>,
        upstream: Uri,
        redirect_http: bool,
        limits: EdgeLimits,
    ) -> Running {
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = EdgeConfig::new(localhost, localhost, upstream, store);
        config.redirect_http = redirect_http;
        let edge = Edge::bind_with(config, limits)
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let admin = crate::AdminServer::bind(localhost)
            .await
            .unwrap_or_else(|e| panic!("bind admin: {e}"))
            .observe(&edge);
        let (http, https, shutdown) = (edge.http_addr(), edge.https_addr(), edge.shutdown_token());
        let admin_addr = admin.local_addr();
        tokio::spawn(admin.run(shutdown.clone()));
        let task = tokio::spawn(edge.run());
        Running {
            http,
            https,
            admin: admin_addr,
            shutdown,
            task,
        }
    }

    /// An upstream that answers with what it was sent.
    async fn echo_upstream() -> Uri {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let get = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    let body = format!(
                        "host={} proto={} for={} fwd-host={} hop={} path={}",
                        get("host"),
                        get("x-forwarded-proto"),
                        get("x-forwarded-for"),
                        get("x-forwarded-host"),
                        get("x-hop"),
                        req.uri(),
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service);
                tokio::spawn(conn);
            }
        });
        format!("http://{addr}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// An upstream address nothing listens on.
    async fn dead_upstream() -> Uri {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        drop(listener);
        format!("http://{addr}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn client(roots: RootCertStore, alpn: &[&[u8]]) -> ClientConfig {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    fn accept_any_client() -> ClientConfig {
        let mut config = client(RootCertStore::empty(), &[]);
        let verifier: Arc<dyn ServerCertVerifier> =
            certbucket_core::tls::SignatureOnlyVerifier::new();
        config.dangerous().set_certificate_verifier(verifier);
        config
    }

    async fn handshake(
        addr: SocketAddr,
        config: ClientConfig,
        sni: &str,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from(sni.to_owned())
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// The DNS names of the certificate the server presented.
    fn presented_names(tls: &TlsStream<TcpStream>) -> Vec<String> {
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .unwrap_or_else(|| panic!("no peer certificate"));
        LeafCertificate::from_der(leaf)
            .unwrap_or_else(|e| panic!("{e}"))
            .dns_names
    }

    /// One HTTP/1.1 request over `io`: (status, headers, body).
    async fn send_http1<IO>(io: IO, req: Request<Empty<Bytes>>) -> (StatusCode, HeaderMap, Bytes)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(conn);
        let response = sender
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        (parts.status, parts.headers, body)
    }

    async fn plain_get(
        addr: SocketAddr,
        host: Option<&str>,
        path: &str,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let tcp = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut req = Request::get(path);
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
        let req = req.body(Empty::new()).unwrap_or_else(|e| panic!("{e}"));
        send_http1(tcp, req).await
    }

    /// The DER of the leaf the edge serves for `sni`, verified against `ca`.
    async fn served_leaf(https: SocketAddr, ca: &TestCa, sni: &str) -> Vec<u8> {
        let tls = handshake(https, client(ca.roots(), &[]), sni)
            .await
            .unwrap_or_else(|e| panic!("verified handshake for {sni}: {e}"));
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.to_vec())
            .unwrap_or_else(|| panic!("no certificate"))
    }

    async fn record_in_manifest(store: &TestStore, name: &str) {
        let host = crate::testing::host(name);
        let object = store
            .get(&StorageKeys::cert(&host))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("stored"));
        certbucket_core::Manifest::record(store, &host, &object.etag)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renewed_certificates_are_served_after_one_manifest_poll_and_idle_polls_cost_one_read()
    {
        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, SITE).await;
        record_in_manifest(&store, SITE).await;
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        let config = EdgeConfig::new(localhost, localhost, echo_upstream().await, store.clone());
        let limits = EdgeLimits {
            manifest_poll: Duration::from_millis(100),
            ..EdgeLimits::default()
        };
        let edge = Edge::bind_with(config, limits)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (https, stop) = (edge.https_addr(), edge.shutdown_token());
        let (_, _, metrics) = edge.observed();
        tokio::spawn(edge.run());
        let first = served_leaf(https, &ca, SITE).await;

        // Idle: every store read is a manifest poll, one read each, however many certificates.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (gets, polls) = (store.gets(), metrics.manifest_polls());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (gets_delta, polls_delta) = (store.gets() - gets, metrics.manifest_polls() - polls);
        assert!(polls_delta >= 2, "the poller ran ({polls_delta} polls)");
        // The two counters are read one after the other: a poll may fall between them.
        assert!(
            (gets_delta as u64).abs_diff(polls_delta) <= 1,
            "one store read per poll: {gets_delta} reads for {polls_delta} polls"
        );

        // Renewed in the store: served without a restart once the manifest says so.
        ca.store_cert(&store, SITE).await;
        record_in_manifest(&store, SITE).await;
        let mut renewed = false;
        for _ in 0..50 {
            if served_leaf(https, &ca, SITE).await != first {
                renewed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(renewed, "the renewed certificate is served");
        stop.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_handshakes_for_an_unknown_allowed_name_writes_one_request() {
        let store = TestStore::new();
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config =
            EdgeConfig::new(localhost, localhost, echo_upstream().await, store.clone());
        config.on_demand = Some(OnDemand::Request(certbucket_core::DomainPolicy {
            patterns: vec![
                certbucket_core::DomainPattern::parse("*.example.com")
                    .unwrap_or_else(|e| panic!("{e}")),
            ],
            allow_any_domain: false,
            enable_ipv4_common_name: true,
        }));
        let edge = Edge::bind(config).await.unwrap_or_else(|e| panic!("{e}"));
        let (https, stop) = (edge.https_addr(), edge.shutdown_token());
        tokio::spawn(edge.run());

        for sni in ["fresh.example.com", "evil.example.org"] {
            for _ in 0..20 {
                let batch: Vec<_> = (0..50)
                    .map(|_| tokio::spawn(handshake(https, accept_any_client(), sni)))
                    .collect();
                for task in batch {
                    let tls = task
                        .await
                        .unwrap_or_else(|e| panic!("{e}"))
                        .unwrap_or_else(|e| panic!("{sni}: {e}"));
                    assert_eq!(presented_names(&tls), [crate::resolver::DEFAULT_CERT_NAME]);
                }
            }
        }
        stop.cancel();
        // The one write runs on a task of its own: give it a moment if it is still going.
        for _ in 0..100 {
            if store.creates() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let keys: Vec<_> = store.keys().await.iter().map(ToString::to_string).collect();
        assert_eq!(keys, ["v1/requests/fresh.example.com"]);
        assert_eq!(store.creates(), 1, "1,000 handshakes, one write");
    }

    #[tokio::test]
    async fn serves_the_stored_certificate_for_a_known_sni() {
        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, SITE).await;
        let before = store.keys().await;
        let edge = start(store.clone(), echo_upstream().await, true).await;

        let tls = handshake(edge.https, client(ca.roots(), &[b"h2", b"http/1.1"]), SITE)
            .await
            .unwrap_or_else(|e| panic!("verified handshake for {SITE}: {e}"));
        assert_eq!(presented_names(&tls), [SITE]);
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(store.keys().await, before);
    }

    #[tokio::test]
    async fn serves_the_default_certificate_for_unknown_names() {
        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, SITE).await;
        let before = store.keys().await;
        let edge = start(store.clone(), echo_upstream().await, true).await;

        let refused = handshake(edge.https, client(ca.roots(), &[]), "unknown.example.com").await;
        let error = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains("certificate"),
            "expected a certificate error, got {error:?}"
        );

        let tls = handshake(edge.https, accept_any_client(), "unknown.example.com")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(presented_names(&tls), [crate::resolver::DEFAULT_CERT_NAME]);

        // Without SNI (an IP literal is never sent as SNI).
        let tls = handshake(edge.https, accept_any_client(), "127.0.0.1")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(presented_names(&tls), [crate::resolver::DEFAULT_CERT_NAME]);

        assert_eq!(
            store.keys().await,
            before,
            "the edge must not write to the store"
        );
    }

    #[tokio::test]
    async fn garbage_on_the_tls_port_does_not_stop_the_edge() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, SITE).await;
        let edge = start(store, echo_upstream().await, true).await;

        for (what, bytes) in garbage_client_hellos() {
            let mut tcp = TcpStream::connect(edge.https)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            // The edge may hang up before reading it all.
            let _ = tcp.write_all(&bytes).await;
            let _ = tcp.shutdown().await;
            let mut rest = Vec::new();
            // The edge drops the connection (possibly after a TLS alert); it never answers HTTP.
            let _ = tcp.read_to_end(&mut rest).await;
            assert!(!rest.starts_with(b"HTTP/"), "{what}");
            handshake(edge.https, client(ca.roots(), &[]), SITE)
                .await
                .unwrap_or_else(|e| panic!("the edge stopped serving after {what}: {e}"));
        }
        let (_, _, metrics) = plain_get(edge.admin, Some("localhost"), "/metrics").await;
        let text = String::from_utf8_lossy(&metrics);
        let failed = sample(
            &text,
            "certbucket_edge_handshakes_total{outcome=\"failed\"}",
        );
        assert!(failed >= 5.0, "{failed} failed handshakes counted");
    }

    /// Bytes no TLS client sends: plain HTTP, random records, lying lengths, a ClientHello
    /// cut short, and a well-formed one whose SNI is not a host name.
    fn garbage_client_hellos() -> Vec<(&'static str, Vec<u8>)> {
        let hello_with_sni = |name: &[u8]| {
            let mut sni = vec![0x00];
            sni.extend((name.len() as u16).to_be_bytes());
            sni.extend(name);
            let mut sni_list = ((sni.len()) as u16).to_be_bytes().to_vec();
            sni_list.extend(sni);
            let mut extensions = vec![0x00, 0x00];
            extensions.extend((sni_list.len() as u16).to_be_bytes());
            extensions.extend(sni_list);
            // supported_versions: TLS 1.3.
            extensions.extend([0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
            let mut body = vec![0x03, 0x03];
            body.extend([0x42; 32]);
            body.extend([0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
            body.extend((extensions.len() as u16).to_be_bytes());
            body.extend(extensions);
            let mut handshake = vec![0x01, 0x00];
            handshake.extend((body.len() as u16).to_be_bytes());
            handshake.extend(body);
            let mut record = vec![0x16, 0x03, 0x01];
            record.extend((handshake.len() as u16).to_be_bytes());
            record.extend(handshake);
            record
        };
        let mut cut_short = hello_with_sni(SITE.as_bytes());
        cut_short.truncate(40);
        let mut random_record = vec![0x16, 0x03, 0x01, 0x00, 0x30];
        random_record.extend([0xaa; 0x30]);
        vec![
            ("plain HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
            ("a handshake record of random bytes", random_record),
            (
                "a record longer than TLS allows",
                vec![0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00],
            ),
            ("a ClientHello cut short", cut_short),
            (
                "a ClientHello whose SNI is not a name",
                hello_with_sni(b"\xff\xfe../\x00evil"),
            ),
            (
                "a ClientHello with a 300-byte SNI",
                hello_with_sni(&[b'a'; 300]),
            ),
            (
                "an alert instead of a ClientHello",
                vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28],
            ),
        ]
    }

    #[tokio::test]
    async fn answers_http01_challenges_from_the_store() {
        let store = TestStore::new();
        let token = ChallengeToken::parse(TOKEN).unwrap_or_else(|| panic!("token"));
        let key_authorization = format!("{TOKEN}.thumbprint-of-the-account-key");
        store
            .put_raw(&StorageKeys::challenge(&token), key_authorization.clone())
            .await;
        let edge = start(store.clone(), echo_upstream().await, true).await;

        // Any Host: an admin may issue for hosts outside `domains`.
        for host in [
            Some("a.example.com"),
            Some("elsewhere.example.org:80"),
            None,
        ] {
            let path = format!("/.well-known/acme-challenge/{TOKEN}");
            let (status, headers, body) = plain_get(edge.http, host, &path).await;
            assert_eq!(status, StatusCode::OK, "{host:?}");
            assert_eq!(body, key_authorization.as_bytes(), "{host:?}");
            assert_eq!(
                headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
                Some("text/plain")
            );
        }

        let reads = store.gets();
        let missing = "/.well-known/acme-challenge/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let (status, _, body) = plain_get(edge.http, Some("a.example.com"), missing).await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::NOT_FOUND, &b"Not found\n"[..])
        );
        assert_eq!(store.gets(), reads + 1);

        let malformed = ["abc.def", "..%2Fx", "../x", "%2e%2e", "a/b", ""];
        for token in malformed {
            let path = format!("/.well-known/acme-challenge/{token}");
            let (status, _, body) = plain_get(edge.http, Some("a.example.com"), &path).await;
            assert_eq!(
                (status, &body[..]),
                (StatusCode::NOT_FOUND, &b"Not found\n"[..]),
                "{token}"
            );
        }
        assert_eq!(
            store.gets(),
            reads + 1,
            "a malformed token must not reach the store"
        );

        store.fail_reads(true);
        let path = format!("/.well-known/acme-challenge/{TOKEN}");
        let (status, _, _) = plain_get(edge.http, Some("a.example.com"), &path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn redirects_plain_http_to_https() {
        let store = TestStore::new();
        let edge = start(store.clone(), echo_upstream().await, true).await;

        let (status, headers, _) =
            plain_get(edge.http, Some("Site.Example.com:80"), "/a/b?c=d").await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            headers.get(header::LOCATION).and_then(|v| v.to_str().ok()),
            Some("https://site.example.com/a/b?c=d")
        );
        for host in [None, Some("bad..host"), Some("[::1]:80")] {
            let (status, _, _) = plain_get(edge.http, host, "/").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{host:?}");
        }

        let quiet = start(store, echo_upstream().await, false).await;
        let (status, headers, body) = plain_get(quiet.http, Some(SITE), "/a").await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::NOT_FOUND, &b"Not found\n"[..])
        );
        assert!(headers.get(header::LOCATION).is_none());
    }

    #[tokio::test]
    async fn proxies_http1_and_http2_to_the_upstream() {
        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, SITE).await;
        let edge = start(store, echo_upstream().await, true).await;

        let tls = handshake(edge.https, client(ca.roots(), &[b"http/1.1"]), SITE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let req = Request::get("/p?q=1")
            .header(header::HOST, SITE)
            .header("x-forwarded-for", "6.6.6.6")
            .header(header::CONNECTION, "x-hop")
            .header("x-hop", "1")
            .body(Empty::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, _, body) = send_http1(tls, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            format!("host={SITE} proto=https for=127.0.0.1 fwd-host={SITE} hop=- path=/p?q=1")
        );

        let tls = handshake(edge.https, client(ca.roots(), &[b"h2"]), SITE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(conn);
        let req = Request::get(format!("https://{SITE}/h2"))
            .body(Empty::<Bytes>::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let response = sender
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status(), StatusCode::OK);
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        assert_eq!(
            body,
            format!("host={SITE} proto=https for=127.0.0.1 fwd-host={SITE} hop=- path=/h2")
        );
    }

    /// An upstream that answers every request with its own name.
    async fn named_upstream(name: &'static str) -> Uri {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service = service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service);
                tokio::spawn(conn);
            }
        });
        format!("http://{addr}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn mapped_hosts_go_to_their_own_upstreams_and_the_rest_to_the_default() {
        let store = TestStore::new();
        let ca = TestCa::new();
        let names = [
            "a.example.com",
            "b.example.com",
            "c.example.com",
            "x.wild.example.com",
        ];
        for name in names {
            ca.store_cert(&store, name).await;
        }
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = EdgeConfig::new(
            localhost,
            localhost,
            named_upstream("default").await,
            store.clone(),
        );
        config.upstream_map = vec![
            UpstreamRoute {
                pattern: certbucket_core::DomainPattern::parse("a.example.com")
                    .unwrap_or_else(|e| panic!("{e}")),
                upstream: named_upstream("a").await,
            },
            format!("B.example.com={}", named_upstream("b").await)
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
            format!("*.wild.example.com={}", named_upstream("wild").await)
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        ];
        let edge = Edge::bind(config)
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let (https, stop) = (edge.https_addr(), edge.shutdown_token());
        tokio::spawn(edge.run());

        // (SNI, Host header, the upstream that answers): the request's Host decides, as in nginx.
        let cases = [
            ("a.example.com", "a.example.com", "a"),
            ("a.example.com", "A.EXAMPLE.COM:443", "a"),
            ("b.example.com", "b.example.com", "b"),
            ("c.example.com", "c.example.com", "default"),
            ("x.wild.example.com", "x.wild.example.com", "wild"),
            ("c.example.com", "not a host", "default"),
        ];
        for (sni, host, want) in cases {
            let tls = handshake(https, client(ca.roots(), &[b"http/1.1"]), sni)
                .await
                .unwrap_or_else(|e| panic!("{sni}: {e}"));
            let req = Request::get("/")
                .header(header::HOST, host)
                .body(Empty::new())
                .unwrap_or_else(|e| panic!("{e}"));
            let (status, _, body) = send_http1(tls, req).await;
            assert_eq!(
                (status, &body[..]),
                (StatusCode::OK, want.as_bytes()),
                "{host}"
            );
        }

        // HTTP/2 routes by :authority.
        let tls = handshake(https, client(ca.roots(), &[b"h2"]), "b.example.com")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(conn);
        let req = Request::get("https://b.example.com/")
            .body(Empty::<Bytes>::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let response = sender
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        assert_eq!(&body[..], b"b");
        stop.cancel();
    }

    #[tokio::test]
    async fn refuses_a_bad_upstream_map() {
        let store = TestStore::new();
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        for entries in [
            vec!["a.example.com=https://app:1"],
            vec!["a.example.com=http://app:1/base"],
            vec!["a.example.com=http://app:1", "a.example.com=http://app:2"],
        ] {
            let mut config =
                EdgeConfig::new(localhost, localhost, echo_upstream().await, store.clone());
            config.upstream_map = entries
                .iter()
                .map(|e| e.parse().unwrap_or_else(|e| panic!("{e}")))
                .collect();
            assert!(Edge::bind(config).await.is_err(), "{entries:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_a_bad_gateway() {
        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, SITE).await;
        let edge = start(store, dead_upstream().await, true).await;

        let tls = handshake(edge.https, client(ca.roots(), &[]), SITE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let req = Request::get("/")
            .header(header::HOST, SITE)
            .body(Empty::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, _, _) = send_http1(tls, req).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn stops_when_the_token_is_cancelled() {
        let store = TestStore::new();
        let mut edge = start(store, echo_upstream().await, true).await;
        edge.shutdown.cancel();
        let done = tokio::time::timeout(Duration::from_secs(30), &mut edge.task).await;
        let result = done
            .unwrap_or_else(|_| panic!("run did not return after shutdown"))
            .unwrap_or_else(|e| panic!("run panicked: {e}"));
        assert!(result.is_ok());
        assert!(TcpStream::connect(edge.http).await.is_err());
    }

    #[tokio::test]
    async fn refuses_a_non_http_upstream() {
        let store = TestStore::new();
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        let upstream: Uri = "https://app.internal"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let config = EdgeConfig::new(localhost, localhost, upstream, store);
        assert!(matches!(
            Edge::bind(config).await,
            Err(EdgeError::Upstream { .. })
        ));
    }

    /// Reads until the peer closes (or `limit` passes): what it sent, and whether it closed.
    async fn read_until_closed(tcp: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let read = tokio::time::timeout(limit, tcp.read_to_end(&mut got)).await;
        (got, read.is_ok())
    }

    /// The value of one sample line (`name{labels}`) in a Prometheus text page.
    fn sample(page: &str, series: &str) -> f64 {
        page.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from\n{page}"))
    }

    #[tokio::test]
    async fn a_slowloris_client_is_cut_off_while_others_are_served() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let store = TestStore::new();
        let limits = EdgeLimits {
            header_read_timeout: Duration::from_millis(500),
            ..EdgeLimits::default()
        };
        let edge = start_with(store, echo_upstream().await, true, limits).await;

        let mut slow = TcpStream::connect(edge.http)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let head = b"GET / HTTP/1.1\r\nHost: site.example.com\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa";
        let mut sent = 0;
        let mut buf = [0u8; 256];
        let closed = loop {
            // One byte a second, watching for the edge to hang up in between.
            if slow.write_all(&head[sent..=sent]).await.is_err() {
                break true;
            }
            sent += 1;
            let (status, _, _) = plain_get(edge.http, Some(SITE), "/served").await;
            assert_eq!(status, StatusCode::PERMANENT_REDIRECT, "a normal client");
            match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(n)) => panic!(
                    "the edge answered a request it never fully got: {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ),
                Err(_) if sent == head.len() => break false,
                Err(_) => {}
            }
        };
        assert!(
            closed,
            "the slow client was still connected after {sent} bytes"
        );
        assert!(sent < head.len());
    }

    #[tokio::test]
    async fn a_slow_tls_handshake_is_cut_off_while_others_are_served() {
        use tokio::io::AsyncWriteExt;

        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, SITE).await;
        let limits = EdgeLimits {
            header_read_timeout: Duration::from_millis(500),
            ..EdgeLimits::default()
        };
        let edge = start_with(store, echo_upstream().await, true, limits).await;
        // The first bytes of a ClientHello record, then nothing; and a client that sends nothing.
        let mut dribbling = TcpStream::connect(edge.https)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        dribbling
            .write_all(&[0x16, 0x03, 0x01])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut silent = TcpStream::connect(edge.https)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        handshake(edge.https, client(ca.roots(), &[]), SITE)
            .await
            .unwrap_or_else(|e| panic!("a normal client: {e}"));
        // Well within the 10 s a fixed handshake timeout would allow: the configured one applies.
        for (what, tcp) in [("dribbling", &mut dribbling), ("silent", &mut silent)] {
            let (_, closed) = read_until_closed(tcp, Duration::from_secs(5)).await;
            assert!(closed, "the {what} client is disconnected");
        }
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        use tokio::io::AsyncWriteExt;

        let store = TestStore::new();
        let limits = EdgeLimits {
            idle_timeout: Duration::from_millis(300),
            ..EdgeLimits::default()
        };
        let edge = start_with(store, echo_upstream().await, true, limits).await;

        let mut tcp = TcpStream::connect(edge.http)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: site.example.com\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(20)).await;
        assert!(answer.starts_with(b"HTTP/1.1 308"), "{answer:?}");
        assert!(closed, "the idle connection stayed open");
    }

    #[tokio::test]
    async fn the_header_timeout_does_not_cut_keep_alive_between_requests() {
        let store = TestStore::new();
        let limits = EdgeLimits {
            header_read_timeout: Duration::from_millis(200),
            ..EdgeLimits::default()
        };
        let edge = start_with(store, echo_upstream().await, true, limits).await;

        let tcp = TcpStream::connect(edge.http)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(conn);
        for _ in 0..2 {
            let req = Request::get("/")
                .header(header::HOST, SITE)
                .body(Empty::<Bytes>::new())
                .unwrap_or_else(|e| panic!("{e}"));
            let response = sender
                .send_request(req)
                .await
                .unwrap_or_else(|e| panic!("the kept-alive connection was closed: {e}"));
            assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
            // Idle for longer than the header timeout, well within the idle timeout.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
    }

    #[tokio::test]
    async fn oversized_headers_are_refused() {
        use tokio::io::AsyncWriteExt;

        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, SITE).await;
        let limits = EdgeLimits {
            max_header_bytes: 8 * 1024,
            ..EdgeLimits::default()
        };
        let edge = start_with(store, echo_upstream().await, true, limits).await;
        let big = "a".repeat(12 * 1024);

        // Plain HTTP.
        let mut tcp = TcpStream::connect(edge.http)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let request = format!("GET / HTTP/1.1\r\nHost: {SITE}\r\nX-Big: {big}\r\n\r\n");
        // The edge may hang up before the whole request is written.
        let _ = tcp.write_all(request.as_bytes()).await;
        let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(20)).await;
        assert!(closed);
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 431"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );

        // HTTP/1.1 over TLS.
        let tls = handshake(edge.https, client(ca.roots(), &[b"http/1.1"]), SITE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(conn);
        let req = Request::get("/")
            .header(header::HOST, SITE)
            .header("x-big", big.as_str())
            .body(Empty::<Bytes>::new())
            .unwrap_or_else(|e| panic!("{e}"));
        match sender.send_request(req).await {
            Ok(response) => assert_eq!(
                response.status(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            ),
            Err(e) => assert!(!e.is_user(), "{e}"),
        }

        // Headers within the limit are fine.
        let tls = handshake(edge.https, client(ca.roots(), &[b"http/1.1"]), SITE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let req = Request::get("/")
            .header(header::HOST, SITE)
            .header("x-big", "a".repeat(2048))
            .body(Empty::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let (status, _, _) = send_http1(tls, req).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_limit_counts_connections_not_listeners() {
        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, SITE).await;
        let limits = EdgeLimits {
            max_connections: 2,
            ..EdgeLimits::default()
        };
        let edge = start_with(store, echo_upstream().await, true, limits).await;
        // Both slots on the TLS listener, while the HTTP listener waits with none.
        let first = handshake(edge.https, client(ca.roots(), &[]), SITE).await;
        let second = tokio::time::timeout(
            Duration::from_secs(20),
            handshake(edge.https, client(ca.roots(), &[]), SITE),
        )
        .await;
        assert!(first.is_ok());
        assert!(
            matches!(second, Ok(Ok(_))),
            "the second connection within the limit was served"
        );
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_until_one_closes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let store = TestStore::new();
        let limits = EdgeLimits {
            max_connections: 2,
            ..EdgeLimits::default()
        };
        let edge = start_with(store, echo_upstream().await, true, limits).await;
        let request = b"GET / HTTP/1.1\r\nHost: site.example.com\r\nConnection: close\r\n\r\n";

        // One connection on each listener: the limit is shared (and an idle listener takes none).
        let mut held_http = TcpStream::connect(edge.http)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let held_https = TcpStream::connect(edge.https)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The held connections were accepted: the first one is served.
        held_http
            .write_all(b"GET / HTTP/1.1\r\nHost: site.example.com\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(20), held_http.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("a connection within the limit was not served"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(buf[..n].starts_with(b"HTTP/1.1 308"));

        // The kernel completes the third connection, but the edge does not take it yet.
        let mut third = TcpStream::connect(edge.http)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        third
            .write_all(request)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
        assert!(early.is_err(), "a connection past the limit was served");

        drop(held_https);
        let (answer, closed) = read_until_closed(&mut third, Duration::from_secs(20)).await;
        assert!(closed);
        assert!(answer.starts_with(b"HTTP/1.1 308"), "{answer:?}");
        drop(held_http);
    }

    #[tokio::test]
    async fn metrics_count_handshakes_lookups_and_responses() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, SITE).await;
        let token = ChallengeToken::parse(TOKEN).unwrap_or_else(|| panic!("token"));
        store
            .put_raw(&StorageKeys::challenge(&token), format!("{TOKEN}.x"))
            .await;
        let edge = start(store.clone(), echo_upstream().await, true).await;
        let scrape = || async {
            let (status, headers, body) =
                plain_get(edge.admin, Some("localhost"), "/metrics").await;
            assert_eq!(status, StatusCode::OK);
            assert!(
                headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("text/plain; version=0.0.4"))
            );
            String::from_utf8(body.to_vec()).unwrap_or_else(|e| panic!("{e}"))
        };
        let before = scrape().await;
        assert_eq!(sample(&before, "certbucket_edge_certificates_cached"), 0.0);
        assert!(
            !before
                .lines()
                .any(|l| l.starts_with("certbucket_edge_seconds_until_earliest_expiry"))
        );

        // A known name, then an unknown one, each carrying one proxied request.
        for (config, sni) in [
            (client(ca.roots(), &[]), SITE),
            (accept_any_client(), "unknown.example.com"),
        ] {
            let tls = handshake(edge.https, config, sni)
                .await
                .unwrap_or_else(|e| panic!("{sni}: {e}"));
            let req = Request::get("/")
                .header(header::HOST, sni)
                .body(Empty::new())
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(send_http1(tls, req).await.0, StatusCode::OK);
        }
        // Garbage on the TLS port: a failed handshake.
        let mut tcp = TcpStream::connect(edge.https)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tcp.write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = tcp.read_to_end(&mut Vec::new()).await;
        // Challenges: found, missing, invalid.
        for path in [
            format!("/.well-known/acme-challenge/{TOKEN}"),
            "/.well-known/acme-challenge/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
            "/.well-known/acme-challenge/a.b".to_owned(),
        ] {
            plain_get(edge.http, Some(SITE), &path).await;
        }

        let after = scrape().await;
        let expected = [
            ("certbucket_edge_certificates_cached", 1.0),
            ("certbucket_edge_cert_cache_hits_total", 0.0),
            ("certbucket_edge_cert_cache_misses_total", 2.0),
            ("certbucket_edge_handshakes_total{outcome=\"known\"}", 1.0),
            ("certbucket_edge_handshakes_total{outcome=\"default\"}", 1.0),
            ("certbucket_edge_handshakes_total{outcome=\"failed\"}", 1.0),
            (
                "certbucket_edge_store_errors_total{cause=\"unreachable\"}",
                0.0,
            ),
            ("certbucket_edge_proxy_responses_total{class=\"2xx\"}", 2.0),
            ("certbucket_edge_proxy_responses_total{class=\"5xx\"}", 0.0),
            (
                "certbucket_edge_challenge_requests_total{outcome=\"found\"}",
                1.0,
            ),
            (
                "certbucket_edge_challenge_requests_total{outcome=\"missing\"}",
                1.0,
            ),
            (
                "certbucket_edge_challenge_requests_total{outcome=\"invalid\"}",
                1.0,
            ),
        ];
        for (series, want) in expected {
            assert_eq!(sample(&after, series), want, "{series}");
        }
        // rcgen leaves are valid for years; the gauge only needs to be a future instant.
        assert!(sample(&after, "certbucket_edge_seconds_until_earliest_expiry") > 0.0);

        // The same names again: answered from memory.
        handshake(edge.https, client(ca.roots(), &[]), SITE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        handshake(edge.https, accept_any_client(), "unknown.example.com")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let again = scrape().await;
        assert_eq!(sample(&again, "certbucket_edge_cert_cache_hits_total"), 2.0);
        assert_eq!(
            sample(&again, "certbucket_edge_cert_cache_misses_total"),
            2.0
        );
    }

    #[tokio::test]
    async fn readyz_follows_the_store() {
        let store = TestStore::new();
        let edge = start(store.clone(), echo_upstream().await, true).await;

        // Ready once the manifest poller has read the manifest (here: found none) once.
        let mut ready = plain_get(edge.admin, Some("localhost"), "/readyz").await;
        for _ in 0..100 {
            if ready.0 == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            ready = plain_get(edge.admin, Some("localhost"), "/readyz").await;
        }
        let (status, _, body) = ready;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ready\n"[..]));
        let (status, _, _) = plain_get(edge.admin, Some("localhost"), "/healthz").await;
        assert_eq!(status, StatusCode::OK);

        store.fail_reads(true);
        let (status, _, body) = plain_get(edge.admin, Some("localhost"), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("store cannot be read"), "{body}");
        store.fail_reads(false);
        let (status, _, _) = plain_get(edge.admin, Some("localhost"), "/readyz").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn shutdown_lets_a_request_in_flight_finish() {
        // An upstream that answers only once told to, so the request is surely in flight.
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let upstream: Uri = format!(
            "http://{}",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        )
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
        let (arrived, mut arrival) = tokio::sync::mpsc::channel::<()>(1);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let released = Arc::clone(&released);
                let arrived = arrived.clone();
                let service = service_fn(move |_req: Request<Incoming>| {
                    let released = Arc::clone(&released);
                    let arrived = arrived.clone();
                    async move {
                        let _ = arrived.send(()).await;
                        if let Some(wait) = released.lock().await.take() {
                            let _ = wait.await;
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("late"))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });

        let store = TestStore::new();
        let ca = TestCa::new();
        ca.store_cert(&store, SITE).await;
        let mut edge = start(store, upstream, true).await;
        let tls = handshake(edge.https, client(ca.roots(), &[]), SITE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let req = Request::get("/slow")
            .header(header::HOST, SITE)
            .body(Empty::new())
            .unwrap_or_else(|e| panic!("{e}"));
        let in_flight = tokio::spawn(send_http1(tls, req));
        arrival.recv().await;

        edge.shutdown.cancel();
        // Let the shutdown reach the connection before the upstream answers.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = release.send(());
        let (status, _, body) = tokio::time::timeout(Duration::from_secs(20), in_flight)
            .await
            .unwrap_or_else(|_| panic!("the request in flight never finished"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"late"[..]));
        let done = tokio::time::timeout(Duration::from_secs(20), &mut edge.task).await;
        assert!(matches!(done, Ok(Ok(Ok(())))));
    }
}
