//! `Proxy`: forwards every request that arrived over TLS to the upstream, over plain HTTP.

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
    header,
    uri::{Authority, PathAndQuery, Scheme},
};
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use tracing::{debug, warn};

use crate::{
    challenge::text,
    error::EdgeError,
    upstream_map::{UpstreamMap, UpstreamRoute},
};

/// How long the upstream may take to send response headers.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to the upstream may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Headers that describe one hop, never forwarded (RFC 9110 section 7.6.1), besides `Proxy-*`
/// and those that `Connection` names.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The body of a proxied response: the upstream's stream, or a short error text.
pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A reverse proxy to plain-HTTP upstreams (the default one, and those mapped by host), with
/// one pooled client.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    client: Client<HttpConnector, Incoming>,
    scheme: Scheme,
    default: Authority,
    routes: UpstreamMap<Authority>,
}

/// The authority of an upstream, which must be `http://HOST[:PORT]` with no path.
fn upstream_authority(upstream: &Uri) -> Result<Authority, EdgeError> {
    let bad = |message| EdgeError::Upstream {
        uri: upstream.to_string(),
        message,
    };
    if upstream.scheme() != Some(&Scheme::HTTP) {
        return Err(bad("only http:// upstreams are supported"));
    }
    let authority = upstream
        .authority()
        .cloned()
        .ok_or_else(|| bad("the upstream needs a host"))?;
    let path_is_root = upstream
        .path_and_query()
        .is_none_or(|pq| pq.as_str().is_empty() || pq.as_str() == "/");
    if !path_is_root {
        return Err(bad("the upstream must not have a path or query"));
    }
    Ok(authority)
}

impl Proxy {
    /// A proxy to `upstream`, and to the upstreams of `routes` for the hosts they name; each
    /// must be `http://HOST[:PORT]` with no path.
    pub(crate) fn new(upstream: &Uri, routes: &[UpstreamRoute]) -> Result<Self, EdgeError> {
        let default = upstream_authority(upstream)?;
        let mapped = routes
            .iter()
            .map(|route| Ok((route.pattern.clone(), upstream_authority(&route.upstream)?)))
            .collect::<Result<Vec<_>, EdgeError>>()?;
        let routes =
            UpstreamMap::new(mapped).map_err(|message| EdgeError::UpstreamMap { message })?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(Self {
            client,
            scheme: Scheme::HTTP,
            default,
            routes,
        })
    }

    /// Forwards `req` from `client_ip`; upstream failures become `502`, slowness `504`.
    pub(crate) async fn forward(
        &self,
        req: Request<Incoming>,
        client_ip: IpAddr,
    ) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            return short(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n");
        }
        let (mut parts, body) = req.into_parts();
        // HTTP/2 clients send `:authority` instead of a Host header.
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            let authority = parts.uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let target = original_host
            .as_ref()
            .and_then(|host| host.to_str().ok())
            .and_then(|host| self.routes.route(host))
            .unwrap_or(&self.default);
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(target.clone())
            .path_and_query(path)
            .build();
        let Ok(uri) = uri else {
            return short(StatusCode::BAD_REQUEST, "Bad request\n");
        };

        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        if let Some(host) = original_host {
            headers.insert(header::HOST, host.clone());
            headers.insert(X_FORWARDED_HOST, host);
        }
        // The edge is the first hop: whatever the client claims in these is replaced, not trusted.
        if let Ok(ip) = HeaderValue::try_from(client_ip_text(client_ip)) {
            headers.insert(X_FORWARDED_FOR, ip);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        parts.uri = uri;
        parts.version = Version::HTTP_11;

        let sent = tokio::time::timeout(
            UPSTREAM_TIMEOUT,
            self.client.request(Request::from_parts(parts, body)),
        );
        match sent.await {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.boxed())
            }
            Ok(Err(e)) if e.is_connect() => {
                warn!(upstream = %target, error = %with_sources(&e), "cannot connect to the upstream");
                short(
                    StatusCode::BAD_GATEWAY,
                    "Bad gateway: upstream unreachable\n",
                )
            }
            Ok(Err(e)) => {
                warn!(upstream = %target, error = %with_sources(&e), "upstream request failed");
                short(StatusCode::BAD_GATEWAY, "Bad gateway\n")
            }
            Err(_) => {
                debug!(upstream = %target, "upstream timed out");
                short(StatusCode::GATEWAY_TIMEOUT, "Gateway timeout\n")
            }
        }
    }
}

/// The client address as `X-Forwarded-For` carries it (an IPv4-mapped IPv6 address as IPv4).
fn client_ip_text(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// An error and its causes, which hyper's client keeps out of its own message.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Removes the headers that only concern one connection.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

fn short(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    text(status, body).map(|body| body.map_err(|never| match never {}).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_headers() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "close"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("content-type", "text/plain"),
            ("x-kept", "1"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);
    }

    #[test]
    fn accepts_only_plain_http_upstreams() {
        let good = [
            "http://127.0.0.1:9000",
            "http://app.internal/",
            "http://[::1]:8080",
        ];
        for uri in good {
            let parsed: Uri = uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert!(Proxy::new(&parsed, &[]).is_ok(), "{uri}");
        }
        let bad = [
            "https://app.internal",
            "http://app.internal/base",
            "/relative",
            "http://a/?q=1",
        ];
        for uri in bad {
            let parsed: Uri = uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert!(Proxy::new(&parsed, &[]).is_err(), "{uri}");
        }
    }

    #[test]
    fn forwards_mapped_ipv4_as_ipv4() {
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(client_ip_text(mapped), "10.1.2.3");
    }
}
