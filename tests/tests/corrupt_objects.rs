//! Garbage in the bucket (real LocalStack S3, real Pebble, real TLS): a certificate object replaced
//! by truncated JSON, a key that does not match, an expired certificate, bytes that are not
//! UTF-8, or nothing at all never replaces the certificate an edge serves, and never stops it;
//! the edge counts each as a store error, and takes the next usable certificate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use bytes::Bytes;
use certbucket_core::{CertType, CertificateRecord, Host, Manifest, Secret, Storage, StorageKeys};
use certbucket_tests::{
    S3Env,
    edge::{PATIENCE, TestEdge, fetch, verifying_client},
    stack::Stack,
};
use http::StatusCode;
use rcgen::{CertificateParams, KeyPair};
use serde_json::json;
use time::OffsetDateTime;
use tokio::time::Instant;

const UNUSABLE: &str = "certbucket_edge_store_errors_total{cause=\"unusable\"}";

/// The stored record with its key swapped for another one.
fn with_other_key(record_json: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut record: serde_json::Value = serde_json::from_slice(record_json)?;
    record["key_pem"] = KeyPair::generate()?.serialize_pem().into();
    Ok(serde_json::to_vec(&record)?)
}

/// A well-formed record for `host` whose certificate expired yesterday (rcgen, self-signed).
fn expired_record(host: &str) -> anyhow::Result<Vec<u8>> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![host.to_owned()])?;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(90);
    params.not_after = now - time::Duration::days(1);
    let cert = params.self_signed(&key)?;
    let record = CertificateRecord::new(
        Host::parse(host)?,
        cert.pem(),
        Secret::new(key.serialize_pem()),
        CertType::Ecc,
        now,
    )?;
    Ok(record.to_json()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_the_bucket_never_replaces_a_served_certificate() -> anyhow::Result<()> {
    let store: Arc<dyn Storage> = S3Env::from_env()?.fresh_store().await?;
    let stack = Stack::start(Arc::clone(&store), json!({})).await?;
    let name = "garbage.example.test";
    let host = Host::parse(name)?;
    let key = StorageKeys::cert(&host);
    assert_eq!(stack.post_form(name).await.0, StatusCode::CREATED);
    let root = stack.pebble.issuing_root_pem().await?;
    let edge = TestEdge::start(Arc::clone(&store), Duration::from_millis(200)).await?;
    let client = verifying_client(&root)?;
    let (good, _) = fetch(&client, edge.https, name).await?;
    let good_json = store.get(&key).await?.context("the issued record")?.bytes;

    let cases: [(&str, Vec<u8>); 5] = [
        ("truncated JSON", good_json[..good_json.len() / 2].to_vec()),
        ("a key that does not match", with_other_key(&good_json)?),
        ("an expired certificate", expired_record(name)?),
        (
            "bytes that are not UTF-8",
            vec![0xc3, 0x28, 0xff, 0xfe, 0x00],
        ),
        ("an empty object", Vec::new()),
    ];
    for (what, bytes) in cases {
        let before = edge.metric(UNUSABLE).await?;
        // Written as a renewal would be: the object, then its version in the manifest.
        let version = store.put(&key, Bytes::from(bytes)).await?;
        Manifest::record(store.as_ref(), &host, &version).await?;
        let deadline = Instant::now() + PATIENCE;
        while edge.metric(UNUSABLE).await? <= before {
            assert!(
                Instant::now() < deadline,
                "the edge did not read {what} within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (leaf, body) = fetch(&client, edge.https, name)
            .await
            .with_context(|| format!("after {what}"))?;
        assert_eq!(
            leaf.serial_number, good.serial_number,
            "the good certificate is still served after {what}"
        );
        assert!(body.starts_with("hello from upstream host=garbage.example.test"));
        assert!(!edge.task.is_finished(), "the edge still runs after {what}");
        assert_eq!(edge.admin_get("/healthz").await?.0, 200);
        println!("{what}: refused, {} still served", good.serial_number);
    }
    assert!(edge.metric(UNUSABLE).await? >= 5.0);
    assert_eq!(
        edge.metric("certbucket_edge_certificates_cached").await?,
        1.0
    );

    // A usable certificate again (issued over the garbage): served within a poll or so.
    assert_eq!(stack.post_form(name).await.0, StatusCode::CREATED);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (leaf, _) = fetch(&client, edge.https, name).await?;
        if leaf.serial_number != good.serial_number {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate is served within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
