//! `serve_admin`: the admin API on a local HTTP listener, as `certbucket serve-admin` runs it.

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use certbucket_core::{AdminApi, MAX_BODY_BYTES, json_message};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Serves `api` on `listener` until `shutdown` is cancelled.
pub async fn serve_admin(
    api: AdminApi,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let api = Arc::new(api);
    info!(addr = %listener.local_addr()?, "admin API listening");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = shutdown.cancelled() => return Ok(()),
        };
        let api = Arc::clone(&api);
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(Arc::clone(&api), request));
            let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                warn!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

async fn answer(
    api: Arc<AdminApi>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            let text = format!("request body is larger than {MAX_BODY_BYTES} bytes");
            return Ok(json_message(StatusCode::PAYLOAD_TOO_LARGE, &text).map(Full::new));
        }
        Err(_) => {
            let text = "could not read the request body";
            return Ok(json_message(StatusCode::BAD_REQUEST, text).map(Full::new));
        }
    };
    let response = api.handle(Request::from_parts(parts, body)).await;
    Ok(response.map(Full::new))
}
