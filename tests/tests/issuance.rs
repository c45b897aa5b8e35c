//! The walking skeleton end to end, against real Pebble, real TLS and (for S3) real LocalStack:
//! the `apply` handler issues for two hosts while the edge answers Pebble's http-01
//! validation from the store; the edge then serves each certificate by SNI and proxies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use certbucket_core::{
    AdminApi, Config, Issuer, IssuerOptions, LeafCertificate, LocalDirStorage, Storage,
    StorageKeys, tls,
};
use certbucket_edge::{Edge, EdgeConfig};
use certbucket_tests::{Pebble, S3Env, init_tracing, temp_dir, upstream};
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// An edge, a Pebble validating through it, and the admin API issuing into `store`.
struct Stack {
    api: AdminApi,
    store: Arc<dyn Storage>,
    pebble: Pebble,
    edge_https: SocketAddr,
    edge_stop: CancellationToken,
}

impl Stack {
    async fn start(store: Arc<dyn Storage>) -> Self {
        init_tracing();
        tls::install_crypto_provider();
        let (upstream_addr, _upstream) = upstream().await.unwrap();
        let edge = Edge::bind(EdgeConfig {
            http_listen: "127.0.0.1:0".parse().unwrap(),
            https_listen: "127.0.0.1:0".parse().unwrap(),
            upstream: format!("http://{upstream_addr}").parse().unwrap(),
            store: Arc::clone(&store),
            redirect_http: true,
        })
        .await
        .unwrap();
        let pebble = Pebble::start(edge.http_addr().port()).await.unwrap();
        let edge_https = edge.https_addr();
        let edge_stop = edge.shutdown_token();
        tokio::spawn(edge.run());

        let config = Config::from_json(
            &json!({
                "account_email": "ops@example.test",
                "api_uri": pebble.directory_url(),
                "tos_accepted": true,
                "cert_type": "ecc",
                "domains": ["*.example.test"],
            })
            .to_string(),
        )
        .unwrap();
        let http = tls::acme_http(Some(pebble.ca_bundle_path())).unwrap();
        let issuer = Issuer::new(
            Arc::clone(&store),
            Arc::new(config),
            http,
            IssuerOptions::default(),
        );
        Self {
            api: AdminApi::new(issuer),
            store,
            pebble,
            edge_https,
            edge_stop,
        }
    }

    async fn post_form(&self, host: &str) -> (StatusCode, Value) {
        let request = Request::post("/acme")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Bytes::from(format!("host={host}")))
            .unwrap();
        into_json(self.api.handle(request).await)
    }

    /// The same route through the Lambda adapter, with a JSON body as API Gateway passes it.
    async fn post_lambda_json(&self, host: &str) -> (StatusCode, Value) {
        let event = Request::post("/acme")
            .header(header::CONTENT_TYPE, "application/json")
            .body(lambda_http::Body::Text(json!({ "host": host }).to_string()))
            .unwrap();
        let response = certbucket_functions::handle_lambda(&self.api, event)
            .await
            .unwrap();
        let status = response.status();
        let body = match response.into_body() {
            lambda_http::Body::Text(text) => text,
            other => panic!("unexpected body {other:?}"),
        };
        (status, serde_json::from_str(&body).unwrap())
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let request = Request::get(uri).body(Bytes::new()).unwrap();
        into_json(self.api.handle(request).await)
    }

    async fn keys(&self, prefix: &certbucket_core::StorageKey) -> Vec<String> {
        let keys = self.store.list(prefix).await.unwrap();
        keys.iter().map(ToString::to_string).collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.edge_stop.cancel();
    }
}

fn into_json(response: http::Response<Bytes>) -> (StatusCode, Value) {
    let status = response.status();
    let body = serde_json::from_slice(response.body()).unwrap();
    (status, body)
}

/// A TLS handshake with the edge for `sni`, verified against `root_pem`; returns the leaf and
/// the body of a `GET /` proxied through it.
async fn handshake_and_get(
    edge: SocketAddr,
    sni: &str,
    root_pem: &str,
) -> (LeafCertificate, String) {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(edge).await.unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("verified handshake for {sni}: {e}"));
    let leaf_der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let leaf = LeafCertificate::from_der(&leaf_der).unwrap();

    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .method(Method::GET)
        .uri("/")
        .header(header::HOST, sni)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (leaf, String::from_utf8(body.to_vec()).unwrap())
}

fn assert_kong_pairs(text: &str, bytes: usize) {
    let pairs: Vec<_> = text.split(':').collect();
    assert!(pairs.len() <= bytes && !pairs.is_empty(), "{text}");
    assert!(
        pairs.iter().all(|p| p.len() == 2
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))),
        "{text}"
    );
}

async fn issue_two_hosts_and_serve_them(store: Arc<dyn Storage>) {
    let stack = Stack::start(store).await;
    let hosts = ["alpha.example.test", "beta.example.test"];

    assert_eq!(
        stack.post_form(hosts[0]).await,
        (
            StatusCode::CREATED,
            json!({"message": "certificate for host alpha.example.test is created"})
        )
    );
    assert_eq!(
        stack.post_lambda_json(hosts[1]).await,
        (
            StatusCode::CREATED,
            json!({"message": "certificate for host beta.example.test is created"})
        )
    );
    assert_eq!(stack.pebble.new_order_count(), 2);
    assert!(
        stack
            .keys(&StorageKeys::challenge_prefix())
            .await
            .is_empty(),
        "challenges cleaned up"
    );

    // Each SNI gets its own certificate, verified against Pebble's issuing root.
    let root = stack.pebble.issuing_root_pem().await.unwrap();
    let mut served = Vec::new();
    for host in hosts {
        let (leaf, body) = handshake_and_get(stack.edge_https, host, &root).await;
        assert_eq!(leaf.dns_names, [host]);
        assert_eq!(
            body,
            format!("hello from upstream host={host} proto=https\n")
        );
        served.push(leaf);
    }

    // The listing has Kong's fields, computed from the certificates the edge serves.
    let (status, listing) = stack.get("/acme/certificates").await;
    assert_eq!(status, StatusCode::OK);
    let entries = listing["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listing}");
    for (entry, (host, leaf)) in entries.iter().zip(hosts.iter().zip(&served)) {
        let fields: Vec<_> = entry.as_object().unwrap().keys().cloned().collect();
        let mut want = [
            "host",
            "not_before",
            "not_after",
            "issuer_cn",
            "serial_number",
            "digest",
            "pubkey_type",
            "valid",
        ];
        want.sort_unstable();
        assert_eq!(fields, want, "{entry}");
        assert_eq!(entry["host"], *host);
        assert_eq!(entry["valid"], true);
        assert_eq!(entry["pubkey_type"], "id-ecPublicKey");
        assert_eq!(entry["issuer_cn"], leaf.issuer_cn.as_str());
        assert!(
            leaf.issuer_cn.starts_with("Pebble Intermediate CA"),
            "{}",
            leaf.issuer_cn
        );
        assert_eq!(entry["digest"], leaf.digest.as_str());
        assert_eq!(entry["serial_number"], leaf.serial_number.as_str());
        assert_kong_pairs(entry["digest"].as_str().unwrap(), 20);
        assert_kong_pairs(entry["serial_number"].as_str().unwrap(), 20);
        let format =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        let not_after =
            time::PrimitiveDateTime::parse(entry["not_after"].as_str().unwrap(), format).unwrap();
        assert_eq!(not_after.assume_utc(), leaf.not_after);
        assert!(!entry.to_string().contains("PRIVATE KEY"));
    }
    let (status, one) = stack.get("/acme/certificates/beta.example.test").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["data"], entries[1]);
    let (status, _) = stack.get("/acme/certificates/gamma.example.test").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A second issuance reuses the stored account: one account object, unchanged.
    let accounts = stack
        .store
        .list(&StorageKeys::accounts_prefix())
        .await
        .unwrap();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    let before = stack.store.get(&accounts[0]).await.unwrap().unwrap().etag;
    assert_eq!(stack.post_form(hosts[0]).await.0, StatusCode::CREATED);
    assert_eq!(
        stack
            .store
            .list(&StorageKeys::accounts_prefix())
            .await
            .unwrap(),
        accounts
    );
    assert_eq!(
        stack.store.get(&accounts[0]).await.unwrap().unwrap().etag,
        before
    );
    assert_eq!(
        stack.pebble.new_account_count(),
        1,
        "one ACME account registered in all"
    );
    let (renewed, _) = handshake_and_get(stack.edge_https, hosts[0], &root).await;
    assert_eq!(renewed.dns_names, [hosts[0]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_and_serves_on_localstack_s3() {
    let s3 = S3Env::from_env().unwrap();
    let store: Arc<dyn Storage> = s3.fresh_store().await.unwrap();
    issue_two_hosts_and_serve_them(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_and_serves_on_the_local_directory() {
    let store: Arc<dyn Storage> = Arc::new(LocalDirStorage::open(&temp_dir("issuance")).unwrap());
    issue_two_hosts_and_serve_them(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_applies_for_one_host_make_one_order() {
    let s3 = S3Env::from_env().unwrap();
    let store: Arc<dyn Storage> = s3.fresh_store().await.unwrap();
    let stack = Stack::start(store).await;
    // Register the account first so both callers race on the order, not on the account.
    assert_eq!(
        stack.post_form("warmup.example.test").await.0,
        StatusCode::CREATED
    );
    let orders_before = stack.pebble.new_order_count();

    let (a, b) = tokio::join!(
        stack.post_form("race.example.test"),
        stack.post_form("race.example.test")
    );
    assert_eq!(
        stack.pebble.new_order_count() - orders_before,
        1,
        "exactly one ACME order"
    );
    // Both callers are told the truth: the certificate exists, and both say so.
    let created = json!({"message": "certificate for host race.example.test is created"});
    assert_eq!(a, (StatusCode::CREATED, created.clone()));
    assert_eq!(b, (StatusCode::CREATED, created));
    let (status, listed) = stack.get("/acme/certificates/race.example.test").await;
    assert_eq!(
        (status, &listed["data"]["valid"]),
        (StatusCode::OK, &json!(true))
    );
    assert!(
        stack
            .keys(&StorageKeys::challenge_prefix())
            .await
            .is_empty()
    );
}
