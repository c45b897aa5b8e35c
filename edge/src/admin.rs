//! `AdminServer`: the local-only listener for health checks, readiness and metrics, and in
//! single-box mode the admin API (`/acme`, `/acme/certificates`).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use certbucket_core::{AdminApi, MAX_BODY_BYTES, Storage, StorageKeys, json_message};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::debug;

use crate::{
    challenge::text,
    error::EdgeError,
    metrics::{Metrics, render_store_up},
    resolver::CertResolver,
    server::{Edge, accept_loop, drive, listen},
    store_health::StoreHealth,
};

/// How long the store may take to answer a readiness probe's read.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long admin requests may run on after shutdown starts.
const ADMIN_GRACE: Duration = Duration::from_secs(2);

/// What the admin listener reports on, taken from an [`Edge`].
#[derive(Debug, Clone)]
struct Observed {
    store: Arc<dyn Storage>,
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
    health: Arc<StoreHealth>,
}

/// The admin listener: `GET /healthz` answers `200 ok`; once given an [`Edge`] with
/// [`AdminServer::observe`], `/readyz` and `/metrics` too.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    addr: SocketAddr,
    observed: Option<Observed>,
    acme: Option<Arc<AdminApi>>,
}

impl AdminServer {
    /// Binds the admin listener.
    pub async fn bind(addr: SocketAddr) -> Result<Self, EdgeError> {
        let (listener, addr) = listen("admin", addr).await?;
        Ok(Self {
            listener,
            addr,
            observed: None,
            acme: None,
        })
    }

    /// Also answers the admin API's routes (`/acme...`) with `api`, as Kong's admin port does.
    #[must_use]
    pub fn with_admin_api(mut self, api: AdminApi) -> Self {
        self.acme = Some(Arc::new(api));
        self
    }

    /// Reports on `edge`: `/readyz` reads its store, `/metrics` shows its counters and cache.
    #[must_use]
    pub fn observe(mut self, edge: &Edge) -> Self {
        let (store, resolver, metrics) = edge.observed();
        self.observed = Some(Observed {
            store,
            resolver,
            metrics,
            health: edge.health(),
        });
        self
    }

    /// The address the admin listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), EdgeError> {
        let tracker = TaskTracker::new();
        let (observed, acme) = (self.observed, self.acme);
        accept_loop(
            "admin",
            self.listener,
            &shutdown,
            &tracker,
            None,
            |tcp, _peer| serve_admin(tcp, observed.clone(), acme.clone(), shutdown.clone()),
        )
        .await;
        tracker.close();
        tracker.wait().await;
        Ok(())
    }
}

async fn serve_admin(
    tcp: TcpStream,
    observed: Option<Observed>,
    acme: Option<Arc<AdminApi>>,
    shutdown: CancellationToken,
) {
    let service = service_fn(move |req: Request<Incoming>| {
        let (observed, acme) = (observed.clone(), acme.clone());
        async move {
            let response = match acme {
                Some(api) if req.uri().path().starts_with("/acme") => admin_api(&api, req).await,
                _ => respond(&req, observed.as_ref()).await,
            };
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    drive(conn, &shutdown, ADMIN_GRACE, None, |conn| {
        conn.graceful_shutdown();
    })
    .await;
}

/// One admin API request: the body is read up to the API's limit, then routed.
async fn admin_api(api: &AdminApi, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            let text = format!("request body is larger than {MAX_BODY_BYTES} bytes or unreadable");
            return json_message(StatusCode::PAYLOAD_TOO_LARGE, &text).map(Full::new);
        }
    };
    api.handle(Request::from_parts(parts, body))
        .await
        .map(Full::new)
}

async fn respond<B>(req: &Request<B>, observed: Option<&Observed>) -> Response<Full<Bytes>> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return text(StatusCode::NOT_FOUND, "Not found\n");
    }
    match (req.uri().path(), observed) {
        ("/healthz", _) => text(StatusCode::OK, "ok"),
        ("/readyz", Some(observed)) => readiness(observed.store.as_ref(), &observed.health).await,
        ("/metrics", Some(observed)) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let mut body = observed.metrics.render(observed.resolver.summary(), now);
            body.push_str(&render_store_up(!observed.health.is_down()));
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "Not found\n"),
    }
}

/// `200` when the manifest poller has read the manifest (present or not) once and the store
/// answers a read of it now, in time; else `503` saying why. Certificates already held are
/// served either way: readiness is for a new edge joining, and for alerting.
async fn readiness(store: &dyn Storage, health: &StoreHealth) -> Response<Full<Bytes>> {
    let read = tokio::time::timeout(READY_TIMEOUT, store.get(&StorageKeys::manifest())).await;
    let reason = match read {
        Ok(Ok(_)) if health.manifest_loaded() => return text(StatusCode::OK, "ready\n"),
        Ok(Ok(_)) => "not ready: the manifest has not been read yet\n".to_owned(),
        Ok(Err(e)) => format!("not ready: the store cannot be read: {e}\n"),
        Err(_) => format!(
            "not ready: the store did not answer within {} s\n",
            READY_TIMEOUT.as_secs()
        ),
    };
    debug!("{}", reason.trim_end());
    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, "");
    *response.body_mut() = Full::new(Bytes::from(reason));
    response
}
