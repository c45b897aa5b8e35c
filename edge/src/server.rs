//! `Edge`: the two public listeners — http-01 and redirects on port 80, SNI TLS and the reverse
//! proxy on port 443 — and their shutdown.

use std::{
    convert::Infallible, fmt::Display, future::Future, net::SocketAddr, pin::Pin, sync::Arc,
    time::Duration,
};

use certbucket_core::Storage;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use crate::{challenge::Http01Service, error::EdgeError, proxy::Proxy, resolver::CertResolver};

/// How long a client may take to send its ClientHello and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests may run on after shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the edge serves and where.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The plain-HTTP listener (http-01 answers, redirects); port 0 picks one.
    pub http_listen: SocketAddr,
    /// The TLS listener; port 0 picks one.
    pub https_listen: SocketAddr,
    /// Where TLS traffic is proxied to: `http://HOST[:PORT]`.
    pub upstream: http::Uri,
    /// The bucket holding certificates and challenges; the edge never writes to it.
    pub store: Arc<dyn Storage>,
    /// Whether non-challenge requests on the HTTP listener get a `308` to https (else `404`).
    pub redirect_http: bool,
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
            store,
            redirect_http: true,
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
    shutdown: CancellationToken,
}

impl Edge {
    /// Binds both listeners (so tests can read the chosen ports before running).
    pub async fn bind(config: EdgeConfig) -> Result<Self, EdgeError> {
        let proxy = Arc::new(Proxy::new(&config.upstream)?);
        let resolver = Arc::new(CertResolver::new(Arc::clone(&config.store))?);
        let (http, http_addr) = listen("http", config.http_listen).await?;
        let (https, https_addr) = listen("https", config.https_listen).await?;
        Ok(Self {
            http,
            https,
            http_addr,
            https_addr,
            challenges: Http01Service::new(config.store, config.redirect_http),
            resolver,
            proxy,
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

    /// Cancelling this token stops the edge: no new connections, in-flight requests get a few
    /// seconds to finish.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
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
            shutdown,
            ..
        } = self;

        let http_loop = accept_loop("http", http, &shutdown, &tracker, |tcp, _peer| {
            serve_http(tcp, challenges.clone(), shutdown.clone())
        });
        let https_loop = accept_loop("https", https, &shutdown, &tracker, |tcp, peer| {
            serve_https(
                tcp,
                peer,
                Arc::clone(&resolver),
                Arc::clone(&proxy),
                shutdown.clone(),
            )
        });
        tokio::join!(http_loop, https_loop);

        tracker.close();
        // Every connection task ends within the grace period; the margin covers scheduling.
        let drained = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), tracker.wait());
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

/// Accepts connections until `shutdown`, each handled in its own task on `tracker`.
pub(crate) async fn accept_loop<F, Fut>(
    what: &'static str,
    listener: TcpListener,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                tracker.spawn(handle(tcp, peer));
            }
            Err(e) => {
                warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    debug!(listener = what, "stopped accepting");
}

/// Runs a hyper connection to its end; on shutdown, closes it gracefully, then drops it after
/// the grace period.
pub(crate) async fn drive<C, E>(
    conn: C,
    shutdown: &CancellationToken,
    graceful: impl FnOnce(Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = shutdown.cancelled() => {
            graceful(conn.as_mut());
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = result {
        debug!("connection ended: {e}");
    }
}

/// Serves one plain-HTTP connection (HTTP/1.1 only, as ACME CAs and browsers use on port 80).
async fn serve_http(tcp: TcpStream, challenges: Http01Service, shutdown: CancellationToken) {
    let service = service_fn(move |req| {
        let challenges = challenges.clone();
        async move { Ok::<_, Infallible>(challenges.respond(&req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    drive(conn, &shutdown, |conn| conn.graceful_shutdown()).await;
}

/// Serves one TLS connection: picks the certificate by SNI, then proxies HTTP/1.1 or HTTP/2.
async fn serve_https(
    tcp: TcpStream,
    peer: SocketAddr,
    resolver: Arc<CertResolver>,
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
) {
    let handshake = async {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let config = resolver.server_config(sni.as_deref()).await;
        start.into_stream(config).await
    };
    let tls = tokio::select! {
        () = shutdown.cancelled() => return,
        done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(%peer, "TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };

    let client_ip = peer.ip();
    let service = service_fn(move |req| {
        let proxy = Arc::clone(&proxy);
        async move { Ok::<_, Infallible>(proxy.forward(req, client_ip).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    drive(conn, &shutdown, |conn| conn.graceful_shutdown()).await;
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
    use crate::testing::{AcceptAnyCert, TestCa, TestStore};

    const SITE: &str = "site.example.com";
    const TOKEN: &str = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";

    struct Running {
        http: SocketAddr,
        https: SocketAddr,
        shutdown: CancellationToken,
        task: JoinHandle<Result<(), EdgeError>>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    async fn start(store: Arc<TestStore>, upstream: Uri, redirect_http: bool) -> Running {
        let localhost = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut config = EdgeConfig::new(localhost, localhost, upstream, store);
        config.redirect_http = redirect_http;
        let edge = Edge::bind(config)
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let (http, https, shutdown) = (edge.http_addr(), edge.https_addr(), edge.shutdown_token());
        let task = tokio::spawn(edge.run());
        Running {
            http,
            https,
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
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
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
        let verifier: Arc<dyn ServerCertVerifier> = AcceptAnyCert::new();
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

        let mut tcp = TcpStream::connect(edge.https)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut rest = Vec::new();
        // The edge drops the connection (possibly after a TLS alert); it never answers HTTP.
        let _ = tcp.read_to_end(&mut rest).await;
        assert!(!rest.starts_with(b"HTTP/"));

        handshake(edge.https, client(ca.roots(), &[]), SITE)
            .await
            .unwrap_or_else(|e| panic!("the edge stopped serving after garbage: {e}"));
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
}
