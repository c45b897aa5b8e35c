//! `--upstream-map-file` on the `certbucket-edge` binary: a mapped host goes to its upstream;
//! a bad file stops the edge at start with the line at fault.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{EdgeProcess, Fixture, SITE, connect, get, http1, temp_dir, upstream_saying};
use http::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_file_sends_a_host_to_its_own_upstream() {
    let fixture = Fixture::new().await;
    let default = upstream_saying(b"default", Some(std::time::Duration::ZERO)).await;
    let mapped = upstream_saying(b"mapped", Some(std::time::Duration::ZERO)).await;
    let map = temp_dir("map").join("upstreams");
    std::fs::write(
        &map,
        format!("# host upstream\n{SITE} http://{mapped}\nother.example.com=http://{default}\n"),
    )
    .unwrap();
    let edge = EdgeProcess::start(
        &fixture,
        default,
        &["--upstream-map-file", map.to_str().unwrap()],
    )
    .await;
    let mut client = http1(connect(&fixture.connector(), edge.https).await.unwrap()).await;
    let (status, body) = get(&mut client).await.unwrap();
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"mapped"[..]));
}

#[test]
fn a_bad_map_file_is_refused_at_start_naming_the_line() {
    let map = temp_dir("bad-map").join("upstreams");
    std::fs::write(
        &map,
        "good.example.com http://app:1\nbad..host http://app:2\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_certbucket-edge"))
        .args(["--upstream", "http://app:8080"])
        .args(["--upstream-map-file", map.to_str().unwrap()])
        .args([
            "--https-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args([
            "--store",
            &format!("file://{}", temp_dir("bad-map-store").display()),
        ])
        .env_remove("CERTBUCKET_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2: "), "{stderr}");
}
