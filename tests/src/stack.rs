//! `Stack`: an edge, a Pebble validating through it, and the admin API issuing into a store;
//! what the end-to-end tests share.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use certbucket_core::{
    AdminApi, Config, Issuer, IssuerOptions, LeafCertificate, Storage, StorageKey, tls,
};
use certbucket_edge::{Edge, EdgeConfig};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::{Pebble, PebbleOptions, init_tracing, upstream};

/// An edge, a Pebble validating through it, and the admin API issuing into `store`.
#[derive(Debug)]
pub struct Stack {
    /// The admin API over the issuer.
    pub api: AdminApi,
    /// The store everything shares.
    pub store: Arc<dyn Storage>,
    /// The CA.
    pub pebble: Pebble,
    /// The edge's http-01 listener.
    pub edge_http: SocketAddr,
    /// The edge's TLS listener.
    pub edge_https: SocketAddr,
    /// The config document the issuer runs with, for a `certbucket` process to share.
    pub config_json: String,
    edge_stop: CancellationToken,
}

impl Stack {
    /// Starts an upstream, an edge and a Pebble; `config` is merged over an ECDSA config that
    /// trusts this Pebble and allows `*.example.test`.
    pub async fn start(store: Arc<dyn Storage>, config: Value) -> anyhow::Result<Self> {
        Self::start_with(store, config, Pebble::options()).await
    }

    /// [`Stack::start`] with a Pebble started from `pebble` (EAB keys, nonce rejection, ...).
    pub async fn start_with(
        store: Arc<dyn Storage>,
        config: Value,
        pebble: PebbleOptions,
    ) -> anyhow::Result<Self> {
        init_tracing();
        tls::install_crypto_provider();
        let (upstream_addr, _upstream) = upstream().await?;
        let edge = Edge::bind(EdgeConfig {
            http_listen: "127.0.0.1:0".parse()?,
            https_listen: "127.0.0.1:0".parse()?,
            upstream: format!("http://{upstream_addr}").parse()?,
            upstream_map: Vec::new(),
            store: Arc::clone(&store),
            redirect_http: true,
            on_demand: None,
        })
        .await?;
        let pebble = pebble.start(edge.http_addr().port()).await?;
        let edge_http = edge.http_addr();
        let edge_https = edge.https_addr();
        let edge_stop = edge.shutdown_token();
        tokio::spawn(edge.run());

        let mut document = json!({
            "account_email": "ops@example.test",
            "api_uri": pebble.directory_url(),
            "tos_accepted": true,
            "cert_type": "ecc",
            "domains": ["*.example.test"],
        });
        if let (Some(base), Value::Object(extra)) = (document.as_object_mut(), config) {
            base.extend(extra);
        }
        let config_json = document.to_string();
        let config = Config::load(&config_json).await?;
        let http = tls::acme_http(Some(pebble.ca_bundle_path()))?;
        let issuer = Issuer::new(
            Arc::clone(&store),
            Arc::new(config),
            http,
            IssuerOptions::default(),
        );
        Ok(Self {
            api: AdminApi::new(issuer),
            store,
            pebble,
            edge_http,
            edge_https,
            config_json,
            edge_stop,
        })
    }

    /// `POST /acme` with a form body.
    pub async fn post_form(&self, host: &str) -> (StatusCode, Value) {
        let request = Request::post("/acme")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Bytes::from(format!("host={host}")))
            .unwrap_or_default();
        into_json(self.api.handle(request).await)
    }

    /// `POST /acme` through the Lambda adapter, with a JSON body as API Gateway passes it.
    pub async fn post_lambda_json(&self, host: &str) -> anyhow::Result<(StatusCode, Value)> {
        let event = Request::post("/acme")
            .header(header::CONTENT_TYPE, "application/json")
            .body(lambda_http::Body::Text(json!({ "host": host }).to_string()))?;
        let response = certbucket_functions::handle_lambda(&self.api, event)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let status = response.status();
        let body = match response.into_body() {
            lambda_http::Body::Text(text) => text,
            other => anyhow::bail!("unexpected body {other:?}"),
        };
        Ok((status, serde_json::from_str(&body)?))
    }

    /// A request to the admin API with an empty body.
    pub async fn call(&self, method: Method, uri: &str) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Bytes::new())
            .unwrap_or_default();
        into_json(self.api.handle(request).await)
    }

    /// `GET uri` on the admin API.
    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri).await
    }

    /// The keys under `prefix`, as text.
    pub async fn keys(&self, prefix: &StorageKey) -> anyhow::Result<Vec<String>> {
        let keys = self.store.list(prefix).await?;
        Ok(keys.iter().map(ToString::to_string).collect())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.edge_stop.cancel();
    }
}

fn into_json(response: http::Response<Bytes>) -> (StatusCode, Value) {
    let status = response.status();
    let body = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (status, body)
}

/// A TLS handshake with the edge for `sni`, verified against `root_pem`; returns the leaf and
/// the body of a `GET /` proxied through it.
pub async fn handshake_and_get(
    edge: SocketAddr,
    sni: &str,
    root_pem: &str,
) -> anyhow::Result<(LeafCertificate, String)> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(edge).await?;
    let name = ServerName::try_from(sni.to_owned())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .with_context(|| format!("verified handshake for {sni}"))?;
    let leaf_der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("no peer certificate")?
        .clone();
    let leaf = LeafCertificate::from_der(&leaf_der).map_err(anyhow::Error::msg)?;

    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::GET)
        .uri("/")
        .header(header::HOST, sni)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "GET / answered {}",
        response.status()
    );
    let body = response.into_body().collect().await?.to_bytes();
    Ok((leaf, String::from_utf8(body.to_vec())?))
}
