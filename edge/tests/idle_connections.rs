//! 10,000 idle TLS connections against the `certbucket-edge` binary (its default
//! `--max-connections`): they are held in bounded memory (the edge's RSS is printed), a client
//! already connected keeps being served, and the next connection waits in the accept queue
//! until one of them closes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::{EdgeProcess, Fixture, connect, get, http1, open_files_limit, rss_kib, upstream};
use http::StatusCode;
use tokio::{sync::Semaphore, task::JoinSet};

const CONNECTIONS: usize = 10_000;
/// Handshakes in flight at once while opening them.
const OPENING: usize = 64;
/// A ceiling far above what is measured (about 20 KiB per connection), to catch a leak or a
/// buffer per connection sized by mistake, not to grade.
const MAX_KIB_PER_CONNECTION: u64 = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_are_held_in_bounded_memory() {
    // This process holds the client ends; the edge inherits the same limit.
    let needed = (CONNECTIONS + 500) as u64;
    let limit = open_files_limit();
    assert!(
        limit >= needed,
        "this test opens {CONNECTIONS} connections: raise the open files limit to at least {needed} (`ulimit -n {needed}`; scripts/test does) — it is {limit}"
    );
    let fixture = Fixture::new().await;
    let upstream = upstream(Some(Duration::ZERO)).await;
    // Idle connections are cut after the header read timeout by default (10 s): held longer
    // here, so that all 10,000 are open at once.
    let edge = EdgeProcess::start(
        &fixture,
        upstream,
        &[
            "--max-connections",
            &CONNECTIONS.to_string(),
            "--header-read-timeout",
            "600s",
            "--idle-timeout",
            "600s",
        ],
    )
    .await;
    let connector = fixture.connector();

    // A client with a keep-alive connection, served before, during and after the flood.
    let mut client = http1(connect(&connector, edge.https).await.unwrap()).await;
    assert_eq!(get(&mut client).await.unwrap().0, StatusCode::OK);
    let rss_before = rss_kib(edge.pid());

    let mut opening = JoinSet::new();
    let gate = Arc::new(Semaphore::new(OPENING));
    for _ in 0..CONNECTIONS - 1 {
        let (connector, gate, https) = (connector.clone(), Arc::clone(&gate), edge.https);
        opening.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            // Bounded so that a connection the edge never takes fails the test instead of hanging.
            tokio::time::timeout(Duration::from_secs(60), connect(&connector, https))
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("not served within 60 s")))
        });
    }
    let mut idle = Vec::with_capacity(CONNECTIONS);
    while let Some(opened) = opening.join_next().await {
        idle.push(
            opened
                .unwrap()
                .expect("an idle TLS connection under the limit"),
        );
    }
    let rss_full = rss_kib(edge.pid());
    let per_connection = rss_full.saturating_sub(rss_before) / CONNECTIONS as u64;
    println!(
        "edge RSS: {rss_before} KiB with 1 connection, {rss_full} KiB with {CONNECTIONS} idle TLS connections: {per_connection} KiB per connection"
    );
    assert_eq!(
        get(&mut client).await.unwrap().0,
        StatusCode::OK,
        "a connected client is still served at the limit"
    );

    // Over the limit: accepted by the kernel, not by the edge, until a connection closes.
    let waiting = {
        let connector = connector.clone();
        let https = edge.https;
        tokio::spawn(async move { connect(&connector, https).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "the connection over the limit waits (no handshake)"
    );
    idle.truncate(idle.len() - 10);
    let tls = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting connection is taken once others close")
        .unwrap()
        .unwrap();
    let mut late = http1(tls).await;
    assert_eq!(get(&mut late).await.unwrap().0, StatusCode::OK);

    let (_, metrics) = edge.admin_get("/metrics").await.unwrap();
    assert!(metrics.contains("certbucket_edge_handshakes_total{outcome=\"known\"}"));
    drop(idle);
    assert!(
        per_connection <= MAX_KIB_PER_CONNECTION,
        "{per_connection} KiB per idle connection"
    );
}
