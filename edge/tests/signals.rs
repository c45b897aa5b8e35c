//! Signals to the `certbucket-edge` binary: SIGTERM lets a request in flight finish, then the
//! edge exits cleanly; SIGINT exits at once, cutting what is in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{EdgeProcess, Fixture, connect, get, http1, upstream};
use http::StatusCode;

/// Waits for the edge to exit (it must, within the grace period and a margin).
async fn exit_status(edge: &mut EdgeProcess) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(status) = edge.child.try_wait().unwrap() {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the edge did not exit; log:\n{}", edge.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_request_in_flight_then_exits() {
    let fixture = Fixture::new().await;
    // Slow enough that the signal surely arrives while the request is in flight.
    let upstream = upstream(Some(Duration::from_secs(3))).await;
    let mut edge = EdgeProcess::start(&fixture, upstream, &["--grace-period", "10s"]).await;
    let connector = fixture.connector();
    let mut client = http1(connect(&connector, edge.https).await.unwrap()).await;
    let in_flight = tokio::spawn(async move { get(&mut client).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    edge.signal("TERM");
    // Draining: new connections are refused at once, while the one in flight goes on.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(edge.https).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "new connections are refused once draining");
    assert!(!in_flight.is_finished(), "the request is still in flight");

    let (status, body) = in_flight
        .await
        .unwrap()
        .expect("the request in flight finishes");
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    let exit = exit_status(&mut edge).await;
    assert!(exit.success(), "{exit}; log:\n{}", edge.log_text());
    assert!(edge.log_text().contains("SIGTERM: draining connections"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_at_once_cutting_what_is_in_flight() {
    let fixture = Fixture::new().await;
    // An upstream that never answers: only an edge that does not wait can exit.
    let upstream = upstream(None).await;
    let mut edge = EdgeProcess::start(&fixture, upstream, &["--grace-period", "600s"]).await;
    let connector = fixture.connector();
    let mut client = http1(connect(&connector, edge.https).await.unwrap()).await;
    let in_flight = tokio::spawn(async move { get(&mut client).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    edge.signal("INT");

    let exit = exit_status(&mut edge).await;
    assert_eq!(exit.code(), Some(130), "{exit}; log:\n{}", edge.log_text());
    assert!(
        in_flight.await.unwrap().is_err(),
        "the request in flight is cut"
    );
}
