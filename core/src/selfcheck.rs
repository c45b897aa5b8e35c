//! `Http01SelfCheck`: `test_http_challenge_flow`, a wiring check of the http-01 path without
//! asking the CA: write a random token, fetch it over HTTP from the host, compare, clean up.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{
    challenge::ChallengeToken,
    domains::DomainPolicy,
    error::Error,
    host::Host,
    storage::{Storage, StorageKeys},
};

const TIMEOUT: Duration = Duration::from_secs(10);

/// One `HOST1:PORT1:HOST2:PORT2` rule of curl's `--connect-to`; empty parts match anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    from_host: String,
    from_port: String,
    to_host: String,
    to_port: String,
}

impl ConnectTo {
    /// Parses a comma-separated list of rules.
    pub fn parse_list(spec: &str) -> Result<Vec<Self>, Error> {
        spec.split(',')
            .map(str::trim)
            .filter(|rule| !rule.is_empty())
            .map(|rule| {
                let parts: Vec<_> = rule.split(':').collect();
                let [from_host, from_port, to_host, to_port] = parts[..] else {
                    return Err(Error::config(
                        "CERTBUCKET_CONNECT_TO",
                        format!("{rule:?} is not HOST1:PORT1:HOST2:PORT2"),
                    ));
                };
                Ok(Self {
                    from_host: from_host.to_owned(),
                    from_port: from_port.to_owned(),
                    to_host: to_host.to_owned(),
                    to_port: to_port.to_owned(),
                })
            })
            .collect()
    }

    /// Where to connect for `host:port` under `rules` (the first match wins).
    fn resolve(rules: &[Self], host: &str, port: u16) -> (String, u16) {
        for rule in rules {
            let host_ok = rule.from_host.is_empty() || rule.from_host.eq_ignore_ascii_case(host);
            let port_ok = rule.from_port.is_empty() || rule.from_port == port.to_string();
            if host_ok && port_ok {
                let to_host = if rule.to_host.is_empty() {
                    host
                } else {
                    &rule.to_host
                };
                let to_port = rule.to_port.parse().unwrap_or(port);
                return (to_host.to_owned(), to_port);
            }
        }
        (host.to_owned(), port)
    }
}

/// The http-01 wiring check.
#[derive(Debug)]
pub(crate) struct Http01SelfCheck<'a> {
    store: &'a Arc<dyn Storage>,
    connect_to: &'a [ConnectTo],
}

impl<'a> Http01SelfCheck<'a> {
    pub(crate) fn new(store: &'a Arc<dyn Storage>, connect_to: &'a [ConnectTo]) -> Self {
        Self { store, connect_to }
    }

    /// `Ok` when the host answers its challenge path from the store; else what was wrong.
    pub(crate) async fn run(&self, host: &Host, policy: &DomainPolicy) -> Result<(), String> {
        if !policy.allows(host) {
            return Err("host is not included in the domains list".to_owned());
        }
        let mut raw = [0u8; 32];
        aws_lc_rs::rand::fill(&mut raw).map_err(|_| "no randomness available".to_owned())?;
        let text = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw);
        let token = ChallengeToken::parse(&text).ok_or("could not make a token")?;
        let expected = format!("{text}.certbucket-sanity-check");
        let key = StorageKeys::challenge(&token);
        self.store
            .put(&key, Bytes::from(expected.clone()))
            .await
            .map_err(|e| format!("could not write the test token: {e}"))?;
        let fetched = tokio::time::timeout(TIMEOUT, self.fetch(host, &token)).await;
        if let Err(e) = self.store.delete(&key).await {
            tracing::warn!(%host, error = %e, "could not remove the test token");
        }
        let (status, body) =
            fetched.map_err(|_| "timed out fetching the challenge".to_owned())??;
        if status != StatusCode::OK {
            return Err(format!("unexpected status code {}", status.as_u16()));
        }
        if body.trim_end() != expected {
            return Err(
                "unexpected response body: the edge answered with other content".to_owned(),
            );
        }
        Ok(())
    }

    async fn fetch(
        &self,
        host: &Host,
        token: &ChallengeToken,
    ) -> Result<(StatusCode, String), String> {
        let (to_host, to_port) = ConnectTo::resolve(self.connect_to, host.as_str(), 80);
        let stream = TcpStream::connect((to_host.as_str(), to_port))
            .await
            .map_err(|e| format!("could not connect to {host} ({to_host}:{to_port}): {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {host} failed: {e}"))?;
        tokio::spawn(connection);
        let request = Request::get(format!("/.well-known/acme-challenge/{token}"))
            .header(header::HOST, host.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request to {host} failed: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 4096)
            .collect()
            .await
            .map_err(|e| format!("reading the answer from {host} failed: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectTo;

    #[test]
    fn connect_to_like_curl() {
        let rules = ConnectTo::parse_list("a.test:80:127.0.0.1:8080, :80::9090")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            ConnectTo::resolve(&rules, "a.test", 80),
            ("127.0.0.1".to_owned(), 8080)
        );
        assert_eq!(
            ConnectTo::resolve(&rules, "b.test", 80),
            ("b.test".to_owned(), 9090)
        );
        assert_eq!(
            ConnectTo::resolve(&rules, "b.test", 81),
            ("b.test".to_owned(), 81)
        );
        assert!(ConnectTo::parse_list("a:b:c").is_err());
    }
}
