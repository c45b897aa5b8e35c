//! The walking skeleton end to end, against real Pebble, real TLS and (for S3) real LocalStack:
//! the `apply` handler issues for two hosts while the edge answers Pebble's http-01
//! validation from the store; the edge then serves each certificate by SNI and proxies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use certbucket_core::{Host, LocalDirStorage, Manifest, Storage, StorageKeys};
use certbucket_tests::{
    S3Env,
    stack::{Stack, handshake_and_get},
    temp_dir,
};
use http::StatusCode;
use serde_json::json;

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
    let stack = Stack::start(store, json!({})).await.unwrap();
    let hosts = ["alpha.example.test", "beta.example.test"];

    assert_eq!(
        stack.post_form(hosts[0]).await,
        (
            StatusCode::CREATED,
            json!({"message": "certificate for host alpha.example.test is created"})
        )
    );
    assert_eq!(
        stack.post_lambda_json(hosts[1]).await.unwrap(),
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
            .unwrap()
            .is_empty(),
        "challenges cleaned up"
    );
    // Every certificate write is in the manifest, at the version the edge would read.
    let (manifest, _) = Manifest::load(&*stack.store).await.unwrap().unwrap();
    for host in hosts {
        let key = StorageKeys::cert(&Host::parse(host).unwrap());
        let version = stack.store.get(&key).await.unwrap().unwrap().etag;
        assert_eq!(
            manifest.certs.get(host).map(String::as_str),
            Some(version.as_str().trim_matches('"'))
        );
    }

    // Each SNI gets its own certificate, verified against Pebble's issuing root.
    let root = stack.pebble.issuing_root_pem().await.unwrap();
    let mut served = Vec::new();
    for host in hosts {
        let (leaf, body) = handshake_and_get(stack.edge_https, host, &root)
            .await
            .unwrap();
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
    let (renewed, _) = handshake_and_get(stack.edge_https, hosts[0], &root)
        .await
        .unwrap();
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
    let stack = Stack::start(store, json!({})).await.unwrap();
    // Register the account first so the callers race on the order, not on the account.
    assert_eq!(
        stack.post_form("warmup.example.test").await.0,
        StatusCode::CREATED
    );
    let orders_before = stack.pebble.new_order_count();

    // Ten callers at once, as ten API Gateway requests would be.
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let api = stack.api.clone();
        callers.spawn(async move {
            let request = http::Request::post("/acme")
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(bytes::Bytes::from_static(b"host=race.example.test"))
                .unwrap();
            let response = api.handle(request).await;
            let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
            (response.status(), body)
        });
    }
    let answers = callers.join_all().await;
    assert_eq!(
        stack.pebble.new_order_count() - orders_before,
        1,
        "exactly one ACME order"
    );
    // Every caller is told the truth: the certificate exists, and all say so.
    let created = json!({"message": "certificate for host race.example.test is created"});
    for answer in answers {
        assert_eq!(answer, (StatusCode::CREATED, created.clone()));
    }
    let (status, listed) = stack.get("/acme/certificates/race.example.test").await;
    assert_eq!(
        (status, &listed["data"]["valid"]),
        (StatusCode::OK, &json!(true))
    );
    assert!(
        stack
            .keys(&StorageKeys::challenge_prefix())
            .await
            .unwrap()
            .is_empty()
    );
}
