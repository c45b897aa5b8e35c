//! The ACME side against real Pebble: EAB accounts, RSA keys, the http-01 wiring self-check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use certbucket_core::{LocalDirStorage, Storage, StorageKeys};
use certbucket_tests::{Pebble, stack::Stack, temp_dir};
use http::{Request, StatusCode, header};
use serde_json::{Value, json};

fn local_store(tag: &str) -> Arc<dyn Storage> {
    Arc::new(LocalDirStorage::open(&temp_dir(tag)).unwrap())
}

// base64url of 32 bytes; generated for this test, it protects nothing.
const EAB_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eab_account_with_the_right_key_and_a_clear_error_with_a_wrong_one() {
    let store = local_store("eab-ok");
    let config = json!({"eab_kid": "kid-1", "eab_hmac_key": EAB_KEY});
    let pebble = Pebble::options().eab_key("kid-1", EAB_KEY);
    let stack = Stack::start_with(Arc::clone(&store), config, pebble.clone())
        .await
        .unwrap();
    assert_eq!(
        stack.post_form("eab.example.test").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        stack
            .store
            .list(&StorageKeys::accounts_prefix())
            .await
            .unwrap()
            .len(),
        1
    );

    let store = local_store("eab-wrong");
    let wrong =
        json!({"eab_kid": "kid-1", "eab_hmac_key": "d3JvbmctaG1hYy1rZXktd3Jvbmctd3Jvbmctd3Jvbmc"});
    let stack = Stack::start_with(Arc::clone(&store), wrong, pebble)
        .await
        .unwrap();
    let (status, body) = stack.post_form("eab.example.test").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "failed to update certificate: ACME error for - while registering the ACME account"
        ),
        "{message}"
    );
    assert!(
        !message.contains("d3Jvbmc"),
        "the HMAC key never appears: {message}"
    );
    assert!(
        stack
            .store
            .list(&StorageKeys::accounts_prefix())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        stack
            .store
            .list(&StorageKeys::certs_prefix())
            .await
            .unwrap()
            .is_empty()
    );

    // Without EAB, a CA that requires it refuses with a message that names the problem.
    let stack = Stack::start_with(
        local_store("eab-none"),
        json!({}),
        Pebble::options().eab_key("kid-1", EAB_KEY),
    )
    .await
    .unwrap();
    let (status, body) = stack.post_form("eab.example.test").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("externalAccountBinding"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_certificates_with_the_configured_key_size() {
    let stack = Stack::start(
        local_store("rsa"),
        json!({"cert_type": "rsa", "rsa_key_size": 2048}),
    )
    .await
    .unwrap();
    assert_eq!(
        stack.post_form("rsa.example.test").await.0,
        StatusCode::CREATED
    );
    let (status, listed) = stack.get("/acme/certificates/rsa.example.test").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["data"]["pubkey_type"], "rsaEncryption");
}

async fn self_check(stack: &Stack, connect_to: &str, host: &str) -> (StatusCode, Value) {
    let api = stack.api.clone().with_connect_to(connect_to).unwrap();
    let request = Request::post("/acme")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Bytes::from(format!(
            "host={host}&test_http_challenge_flow=true"
        )))
        .unwrap();
    let response = api.handle(request).await;
    (
        response.status(),
        serde_json::from_slice(response.body()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_challenge_flow_check_passes_through_the_edge_and_explains_failures() {
    let store = local_store("sanity");
    let stack = Stack::start(Arc::clone(&store), json!({})).await.unwrap();
    let to_edge = format!("::127.0.0.1:{}", stack.edge_http.port());

    assert_eq!(
        self_check(&stack, &to_edge, "wired.example.test").await,
        (
            StatusCode::OK,
            json!({"message": "sanity test for host wired.example.test passed"})
        )
    );
    let (status, body) = self_check(&stack, &to_edge, "elsewhere.other.test").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "problem found running sanity check for elsewhere.other.test: host is not included in the domains list"
    );

    // Nothing listens on the closed port: the check says it could not connect.
    let closed = format!("::127.0.0.1:{}", certbucket_tests::free_port());
    let (status, body) = self_check(&stack, &closed, "wired.example.test").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "problem found running sanity check for wired.example.test: could not connect"
        ),
        "{message}"
    );

    // The check cleans up after itself and never orders anything.
    assert!(
        store
            .list(&StorageKeys::everything())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(stack.pebble.new_order_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_issuances_succeed_while_the_ca_rejects_half_the_nonces() {
    let pebble = Pebble::options().env("PEBBLE_WFE_NONCEREJECT", "50");
    let stack = Stack::start_with(local_store("nonces"), json!({}), pebble)
        .await
        .unwrap();
    for i in 0..20 {
        let host = format!("n{i}.example.test");
        let (status, body) = stack.post_form(&host).await;
        assert_eq!(status, StatusCode::CREATED, "{host}: {body}");
    }
    let (_, listed) = stack.get("/acme/certificates").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 20);
    // Every order was resumed where a request failed, never placed again: one order a host.
    assert_eq!(stack.pebble.orders_created(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_issuers_lease_runs_out_and_the_next_issuance_finishes() {
    let store = local_store("crash");
    let stack = Stack::start(Arc::clone(&store), json!({})).await.unwrap();
    let host = certbucket_core::Host::parse("crashed.example.test").unwrap();
    // An issuer took the lease and died: the object stays, nobody extends or releases it.
    let now = time::OffsetDateTime::now_utc();
    let ttl = std::time::Duration::from_secs(3);
    match certbucket_core::Lease::try_take(Arc::clone(&store), &host, ttl, now)
        .await
        .unwrap()
    {
        certbucket_core::LeaseAttempt::Taken(lease) => lease.abandon(),
        busy => panic!("{busy:?}"),
    }
    let started = std::time::Instant::now();
    let (status, body) = stack.post_form("crashed.example.test").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "waited for the lease to run out"
    );
    assert_eq!(stack.pebble.orders_created(), 1);
}

/// Runs `certbucket apply --host HOST` against the stack's CA and store, with 3-second leases.
fn apply_process(stack: &Stack, store_dir: &std::path::Path, host: &str) -> std::process::Child {
    std::process::Command::new(certbucket_tests::workspace_bin("certbucket").unwrap())
        .args(["--config", &stack.config_json])
        .arg("--store")
        .arg(format!("file://{}", store_dir.display()))
        .arg("--acme-ca-bundle")
        .arg(stack.pebble.ca_bundle_path())
        .args(["apply", "--host", host])
        .env("CERTBUCKET_LEASE_TTL_SECS", "3")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_process_killed_mid_order_leaves_a_lease_that_runs_out() {
    let dir = temp_dir("sigkill");
    let store: Arc<dyn Storage> = Arc::new(LocalDirStorage::open(&dir).unwrap());
    // Pebble waits 1-2 s before validating, so the order is in flight when the issuer dies.
    let pebble = Pebble::options()
        .env("PEBBLE_VA_NOSLEEP", "0")
        .env("PEBBLE_VA_SLEEPTIME", "3");
    let stack = Stack::start_with(Arc::clone(&store), json!({}), pebble)
        .await
        .unwrap();

    // Pebble may pick no wait at all; a host whose issuer finished before the kill is retried
    // under a new name.
    let mut killed = None;
    for attempt in 0..6 {
        let host = format!("killed-{attempt}.example.test");
        let parsed = certbucket_core::Host::parse(&host).unwrap();
        let mut child = apply_process(&stack, &dir, &host);
        let published = async {
            loop {
                let challenges = stack.keys(&StorageKeys::challenge_prefix()).await.unwrap();
                if !challenges.is_empty() || child.try_wait().unwrap().is_some() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(30), published)
            .await
            .expect("the issuer published no challenge");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let cert = store.get(&StorageKeys::cert(&parsed)).await.unwrap();
        let lease = store.get(&StorageKeys::lock(&parsed)).await.unwrap();
        if cert.is_none() {
            assert!(lease.is_some(), "a killed issuer leaves its lease behind");
            killed = Some(host);
            break;
        }
        for key in store.list(&StorageKeys::challenge_prefix()).await.unwrap() {
            store.delete(&key).await.unwrap();
        }
    }
    let host = killed.expect("no issuer was caught mid-order in 6 tries");
    let orders_before = stack.pebble.orders_created();

    // The next run waits for the dead issuer's lease to run out, then finishes the job.
    let started = std::time::Instant::now();
    let out = apply_process(&stack, &dir, &host)
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout: Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = format!("certificate for host {host} is created");
    assert_eq!(stdout["message"], want.as_str(), "{stdout}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "the second run waited for the lease ({:?})",
        started.elapsed()
    );
    assert_eq!(stack.pebble.orders_created(), orders_before + 1);
    let parsed = certbucket_core::Host::parse(&host).unwrap();
    assert!(
        store
            .get(&StorageKeys::cert(&parsed))
            .await
            .unwrap()
            .is_some()
    );
    let now = time::OffsetDateTime::now_utc();
    let held = certbucket_core::Lease::is_held(&*store, &parsed, now)
        .await
        .unwrap();
    assert!(!held, "the second run released its lease");
}
