//! `AdminServer`: the local-only listener for health checks (later metrics and the embedded
//! admin API).

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    challenge::text,
    error::EdgeError,
    server::{accept_loop, drive, listen},
};

/// The admin listener: `GET /healthz` answers `200 ok`.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl AdminServer {
    /// Binds the admin listener.
    pub async fn bind(addr: SocketAddr) -> Result<Self, EdgeError> {
        let (listener, addr) = listen("admin", addr).await?;
        Ok(Self { listener, addr })
    }

    /// The address the admin listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), EdgeError> {
        let tracker = TaskTracker::new();
        accept_loop("admin", self.listener, &shutdown, &tracker, |tcp, _peer| {
            serve_admin(tcp, shutdown.clone())
        })
        .await;
        tracker.close();
        tracker.wait().await;
        Ok(())
    }
}

async fn serve_admin(tcp: TcpStream, shutdown: CancellationToken) {
    let service = service_fn(|req| async move { Ok::<_, Infallible>(respond(&req)) });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    drive(conn, &shutdown, |conn| conn.graceful_shutdown()).await;
}

fn respond<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok"),
        _ => text(StatusCode::NOT_FOUND, "Not found\n"),
    }
}
