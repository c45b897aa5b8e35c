//! Single-box mode (`certbucket-edge --issue-locally`): the edge issues in-process on the first
//! handshake for an allowed name, and its admin listener answers the reference plugin's curl
//! sequence. Real Pebble, real TLS, real HTTP, on the local-directory store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use certbucket_core::{
    AdminApi, Config, Issuer, IssuerOptions, LocalDirStorage, Renewer, Storage, StorageKeys, tls,
};
use certbucket_edge::{AdminServer, Edge, EdgeConfig, OnDemand};
use certbucket_tests::{Pebble, init_tracing, stack::handshake_and_get, temp_dir, upstream};
use serde_json::{Value, json};
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, net::TcpStream};

/// One HTTP/1.1 request the way curl sends it; returns (status, body).
async fn curl(admin: SocketAddr, method: &str, path: &str, form: Option<&str>) -> (u16, String) {
    let mut tcp = TcpStream::connect(admin).await.unwrap();
    let body = form.unwrap_or("");
    let content_type = if form.is_some() {
        "Content-Type: application/x-www-form-urlencoded\r\n"
    } else {
        ""
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:8001\r\nUser-Agent: curl/8.5.0\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_locally_answers_the_reference_curls_and_issues_on_first_handshake() {
    init_tracing();
    tls::install_crypto_provider();
    let store: Arc<dyn Storage> = Arc::new(LocalDirStorage::open(&temp_dir("single-box")).unwrap());
    let (upstream_addr, _upstream) = upstream().await.unwrap();
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();

    // The edge's http port must be known before Pebble starts: bind it, then build the issuer.
    let mut config = EdgeConfig::new(
        localhost,
        localhost,
        format!("http://{upstream_addr}").parse().unwrap(),
        Arc::clone(&store),
    );
    let probe = Edge::bind(config.clone()).await.unwrap();
    let http_port = probe.http_addr().port();
    drop(probe);
    let pebble = Pebble::start(http_port).await.unwrap();
    let document = json!({
        "account_email": "ops@example.test", "api_uri": pebble.directory_url(), "tos_accepted": true,
        "cert_type": "ecc", "domains": ["*.example.test"],
    });
    let issuer = Issuer::new(
        Arc::clone(&store),
        Arc::new(Config::from_json(&document.to_string()).unwrap()),
        tls::acme_http(Some(pebble.ca_bundle_path())).unwrap(),
        IssuerOptions::default(),
    );
    config.http_listen = SocketAddr::from(([127, 0, 0, 1], http_port));
    config.on_demand = Some(OnDemand::Issue(issuer.clone()));
    let edge = Edge::bind(config).await.unwrap();
    let https = edge.https_addr();
    let trigger = Renewer::background_trigger(issuer.clone());
    let admin = AdminServer::bind(localhost)
        .await
        .unwrap()
        .observe(&edge)
        .with_admin_api(AdminApi::new(issuer).with_renewal_trigger(trigger));
    let admin_addr = admin.local_addr();
    let stop = edge.shutdown_token();
    tokio::spawn(admin.run(stop.clone()));
    tokio::spawn(edge.run());
    let root = pebble.issuing_root_pem().await.unwrap();

    // curl http://localhost:8001/acme -d host=mydomain.com
    let (status, body) = curl(admin_addr, "POST", "/acme", Some("host=admin.example.test")).await;
    assert_eq!(
        (status, body.as_str()),
        (
            201,
            r#"{"message":"certificate for host admin.example.test is created"}"#
        )
    );
    // curl http://localhost:8001/acme/certificates
    let (status, body) = curl(admin_addr, "GET", "/acme/certificates", None).await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["data"][0]["host"], "admin.example.test");
    // curl http://localhost:8001/acme -XPATCH
    let (status, body) = curl(admin_addr, "PATCH", "/acme", None).await;
    assert_eq!(
        (status, body.as_str()),
        (202, r#"{"message":"Renewal process started successfully"}"#)
    );
    // The health routes still answer beside them.
    assert_eq!(curl(admin_addr, "GET", "/healthz", None).await.0, 200);

    // A fresh allowed name: the first handshake gets the default certificate...
    let fresh = "fresh.example.test";
    assert!(
        handshake_and_get(https, fresh, &root).await.is_err(),
        "default certificate first"
    );
    // ...and soon after, the issued one, without a request object in between.
    let mut served = None;
    for _ in 0..100 {
        if let Ok((leaf, body)) = handshake_and_get(https, fresh, &root).await {
            served = Some((leaf, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leaf, body) = served.expect("the issued certificate within 10 s");
    assert_eq!(leaf.dns_names, [fresh]);
    assert!(
        body.starts_with("hello from upstream host=fresh.example.test"),
        "{body}"
    );
    assert!(
        store
            .list(&StorageKeys::requests_prefix())
            .await
            .unwrap()
            .is_empty()
    );

    // A name outside `domains` never gets one.
    assert!(
        handshake_and_get(https, "nope.other.test", &root)
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let certs = store.list(&StorageKeys::certs_prefix()).await.unwrap();
    assert_eq!(certs.len(), 2, "{certs:?}");
    stop.cancel();
}
