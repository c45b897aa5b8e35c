//! `Http01Service`: what port 80 answers — http-01 key authorizations from the store, and a
//! redirect to https for everything else.

use std::sync::Arc;

use bytes::Bytes;
use certbucket_core::{ChallengeToken, Host, Storage, StorageKeys};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tracing::{debug, warn};

use crate::metrics::{Challenge, Metrics, StoreError};

/// The path under which ACME CAs fetch http-01 key authorizations.
const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Answers requests on the plain-HTTP listener.
#[derive(Debug, Clone)]
pub(crate) struct Http01Service {
    store: Arc<dyn Storage>,
    redirect_http: bool,
    metrics: Arc<Metrics>,
}

impl Http01Service {
    /// A service reading challenges from `store`; `redirect_http` sends the rest to https.
    pub(crate) fn new(store: Arc<dyn Storage>, redirect_http: bool, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            redirect_http,
            metrics,
        }
    }

    /// The response to one request. Challenges are answered whatever the Host: an admin may
    /// issue for a host outside `domains`.
    pub(crate) async fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if matches!(*req.method(), Method::GET | Method::HEAD)
            && let Some(raw) = req.uri().path().strip_prefix(CHALLENGE_PREFIX)
        {
            return self.answer(raw).await;
        }
        if self.redirect_http {
            redirect(req)
        } else {
            text(StatusCode::NOT_FOUND, "Not found\n")
        }
    }

    async fn answer(&self, raw: &str) -> Response<Full<Bytes>> {
        // A malformed token never reaches the store, so it cannot name another key.
        let Some(token) = ChallengeToken::parse(raw) else {
            self.metrics.challenge(Challenge::Invalid);
            debug!(token = ?raw, "malformed challenge token");
            return text(StatusCode::NOT_FOUND, "Not found\n");
        };
        match self.store.get(&StorageKeys::challenge(&token)).await {
            Ok(Some(object)) => {
                self.metrics.challenge(Challenge::Found);
                debug!(%token, "answered http-01 challenge");
                let mut response = Response::new(Full::new(object.bytes));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                response
            }
            Ok(None) => {
                self.metrics.challenge(Challenge::Missing);
                debug!(%token, "unknown challenge token");
                text(StatusCode::NOT_FOUND, "Not found\n")
            }
            Err(e) => {
                self.metrics.store_error(StoreError::Unreachable);
                warn!(%token, error = %e, "cannot read the challenge");
                text(StatusCode::SERVICE_UNAVAILABLE, "Store unavailable\n")
            }
        }
    }
}

/// `308` to the same path on https, for a valid Host; `400` otherwise.
fn redirect<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let raw_host = req
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let Some(host) = raw_host.and_then(|raw| Host::parse(strip_port(raw)).ok()) else {
        debug!(host = ?raw_host, "redirect refused: missing or invalid Host");
        return text(
            StatusCode::BAD_REQUEST,
            "Bad request: missing or invalid Host\n",
        );
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| pq.starts_with('/'))
        .unwrap_or("/");
    match HeaderValue::try_from(format!("https://{host}{path}")) {
        Ok(location) => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        Err(_) => text(StatusCode::BAD_REQUEST, "Bad request\n"),
    }
}

/// `host` without a trailing `:port`; anything else (an IPv6 literal) is left for `Host` to refuse.
fn strip_port(raw: &str) -> &str {
    match raw.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => raw,
    }
}

/// A short plain-text response.
pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports_only() {
        let cases = [
            ("example.com", "example.com"),
            ("example.com:8080", "example.com"),
            ("example.com:", "example.com:"),
            ("[::1]:80", "[::1]"),
            ("a:b", "a:b"),
        ];
        for (input, want) in cases {
            assert_eq!(strip_port(input), want, "{input}");
        }
    }

    #[test]
    fn redirects_with_path_and_query() {
        let cases = [
            (
                "example.com",
                "/a/b?c=d",
                Some("https://example.com/a/b?c=d"),
            ),
            ("Example.COM:80", "/", Some("https://example.com/")),
            ("", "/", None),
            ("evil.com/x", "/", None),
            ("a..b", "/", None),
        ];
        for (host, path, want) in cases {
            let req = Request::builder()
                .uri(path)
                .header(header::HOST, host)
                .body(())
                .unwrap_or_else(|e| panic!("{e}"));
            let response = redirect(&req);
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok());
            assert_eq!(location, want, "{host} {path}");
            let status = if want.is_some() { 308 } else { 400 };
            assert_eq!(response.status().as_u16(), status, "{host} {path}");
        }
    }
}
