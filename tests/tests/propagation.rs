//! A certificate renewed in the bucket reaches every running edge without a restart, through
//! the manifest they poll (real LocalStack S3, real Pebble, real TLS).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use certbucket_core::Storage;
use certbucket_edge::{Edge, EdgeConfig, EdgeLimits};
use certbucket_tests::{
    S3Env,
    stack::{Stack, handshake_and_get},
    upstream,
};
use http::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_reaches_two_running_edges() {
    let s3 = S3Env::from_env().unwrap();
    let store: Arc<dyn Storage> = s3.fresh_store().await.unwrap();
    let stack = Stack::start(Arc::clone(&store), json!({})).await.unwrap();
    let (upstream_addr, _upstream) = upstream().await.unwrap();
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // Non-exhaustive: built from the defaults.
    let mut limits = EdgeLimits::default();
    limits.manifest_poll = Duration::from_millis(500);
    let upstream_uri = format!("http://{upstream_addr}").parse().unwrap();
    let config = EdgeConfig::new(localhost, localhost, upstream_uri, Arc::clone(&store));
    let second = Edge::bind_with(config, limits).await.unwrap();
    let second_https = second.https_addr();
    let stop = second.shutdown_token();
    tokio::spawn(second.run());

    let host = "renewed.example.test";
    assert_eq!(stack.post_form(host).await.0, StatusCode::CREATED);
    let root = stack.pebble.issuing_root_pem().await.unwrap();
    let edges = [stack.edge_https, second_https];
    let mut before = Vec::new();
    for edge in edges {
        before.push(
            handshake_and_get(edge, host, &root)
                .await
                .unwrap()
                .0
                .serial_number,
        );
    }
    assert_eq!(before[0], before[1]);

    // Re-issued (as a renewal would): each edge serves the new one within its poll interval
    // (5 s by default for the first, 0.5 s for the second), with no restart.
    assert_eq!(stack.post_form(host).await.0, StatusCode::CREATED);
    for edge in edges {
        let mut serial = before[0].clone();
        for _ in 0..120 {
            serial = handshake_and_get(edge, host, &root)
                .await
                .unwrap()
                .0
                .serial_number;
            if serial != before[0] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_ne!(
            serial, before[0],
            "edge {edge} serves the renewed certificate"
        );
    }
    stop.cancel();
}
