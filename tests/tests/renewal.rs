//! renew-all against real Pebble and LocalStack, with the renewal clock injected (Pebble issues
//! 5-year certificates; stored certificates are never edited to make them due).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use certbucket_core::{
    CertificateRecord, Host, RenewalPolicy, RenewalRecord, Renewer, Storage, StorageKeys,
};
use certbucket_tests::{S3Env, stack::Stack};
use http::{Method, StatusCode};
use serde_json::json;
use time::OffsetDateTime;

async fn stored(store: &dyn Storage, name: &str) -> (CertificateRecord, certbucket_core::ETag) {
    let host = Host::parse(name).unwrap();
    let object = store.get(&StorageKeys::cert(&host)).await.unwrap().unwrap();
    (
        CertificateRecord::from_json(&host, &object.bytes).unwrap(),
        object.etag,
    )
}

fn due_at(record: &CertificateRecord) -> OffsetDateTime {
    let at = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
    RenewalPolicy::new(30.0).due_at(at(record.not_before), at(record.not_after))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_what_is_due_with_fresh_keys_and_leaves_the_rest() {
    let s3 = S3Env::from_env().unwrap();
    let store: Arc<dyn Storage> = s3.fresh_store().await.unwrap();
    let stack = Stack::start(Arc::clone(&store), json!({"renew_threshold_days": 30}))
        .await
        .unwrap();
    for host in ["a.example.test", "b.example.test"] {
        assert_eq!(stack.post_form(host).await.0, StatusCode::CREATED);
    }
    // Issued a few seconds later, so its renewal falls due later than the first two.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        stack.post_form("c.example.test").await.0,
        StatusCode::CREATED
    );

    let (a, a_tag) = stored(&*store, "a.example.test").await;
    let (b, _) = stored(&*store, "b.example.test").await;
    let (c, c_tag) = stored(&*store, "c.example.test").await;
    let renewer = Renewer::new(stack.api.issuer().clone());

    // Today nothing is due: a run changes nothing.
    let report = renewer.run(OffsetDateTime::now_utc(), None).await.unwrap();
    assert_eq!(report.not_due.len(), 3, "{report:?}");
    assert!(
        report.renewed.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    assert_eq!(stored(&*store, "a.example.test").await.1, a_tag);

    // On the day a and b fall due (c falls due at least a second later).
    let clock = due_at(&a).max(due_at(&b));
    assert!(clock < due_at(&c), "c must fall due later than a and b");
    let orders_before = stack.pebble.new_order_count();
    let report = renewer.run(clock, None).await.unwrap();
    assert_eq!(
        report.renewed,
        ["a.example.test", "b.example.test"],
        "{report:?}"
    );
    assert_eq!(report.not_due, ["c.example.test"]);
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(stack.pebble.new_order_count() - orders_before, 2);

    for (old, name) in [(&a, "a.example.test"), (&b, "b.example.test")] {
        let (new, _) = stored(&*store, name).await;
        assert_ne!(new.serial_number, old.serial_number, "{name} re-issued");
        assert_ne!(new.key_pem, old.key_pem, "{name} got a fresh private key");
        let history = RenewalRecord::load(&*store, &new.host)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((history.failures, history.next_retry), (0, None));
    }
    assert_eq!(
        stored(&*store, "c.example.test").await.1,
        c_tag,
        "c untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_no_longer_allowed_stop_renewing_and_patch_needs_a_trigger() {
    let s3 = S3Env::from_env().unwrap();
    let store: Arc<dyn Storage> = s3.fresh_store().await.unwrap();
    let stack = Stack::start(Arc::clone(&store), json!({})).await.unwrap();
    assert_eq!(
        stack.post_form("kept.example.test").await.0,
        StatusCode::CREATED
    );
    // An admin may issue outside `domains`; such a host is not renewed while a list exists.
    assert_eq!(
        stack.post_form("outside.other.test").await.0,
        StatusCode::CREATED
    );
    let (outside, tag) = stored(&*store, "outside.other.test").await;

    // Edges asked for two names: one the allow-list takes, one it refuses.
    for name in ["asked.example.test", "asked.other.test"] {
        let key = StorageKeys::request(&Host::parse(name).unwrap());
        store.put(&key, Bytes::from_static(b"{}")).await.unwrap();
    }

    let renewer = Renewer::new(stack.api.issuer().clone());
    let far_future = OffsetDateTime::from_unix_timestamp(outside.not_after).unwrap();
    let report = renewer.run(far_future, None).await.unwrap();
    assert_eq!(
        report.no_longer_allowed,
        ["outside.other.test"],
        "{report:?}"
    );
    assert_eq!(
        report.renewed,
        ["asked.example.test", "kept.example.test"],
        "{report:?}"
    );
    assert_eq!(report.refused_requests, ["asked.other.test"], "{report:?}");
    let pending = store.list(&StorageKeys::requests_prefix()).await.unwrap();
    assert!(
        pending.is_empty(),
        "served and refused requests are removed: {pending:?}"
    );
    assert_eq!(
        stored(&*store, "asked.example.test").await.0.host.as_str(),
        "asked.example.test"
    );
    assert_eq!(stored(&*store, "outside.other.test").await.1, tag);
    // Still served and listed, and marked invalid once it has expired.
    let (status, listed) = stack.get("/acme/certificates/outside.other.test").await;
    assert_eq!(
        (status, &listed["data"]["valid"]),
        (StatusCode::OK, &json!(true))
    );

    // This API was built without a background trigger: PATCH says what to run instead.
    let (status, body) = stack.call(Method::PATCH, "/acme").await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("certbucket renew-all"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_stops_half_way_fails_the_rest_records_why_and_loses_nothing() {
    let s3 = S3Env::from_env().unwrap();
    let store: Arc<dyn Storage> = s3.fresh_store().await.unwrap();
    let stack = Stack::start(Arc::clone(&store), json!({})).await.unwrap();
    let names = ["h1.example.test", "h2.example.test", "h3.example.test"];
    for host in names {
        assert_eq!(stack.post_form(host).await.0, StatusCode::CREATED);
    }
    let mut before = Vec::new();
    for host in names {
        before.push(stored(&*store, host).await);
    }
    let far_future = OffsetDateTime::from_unix_timestamp(before[0].0.not_after).unwrap();

    // One at a time, and the CA goes away as soon as the first renewal is stored.
    let renewer = Renewer::new(stack.api.issuer().clone()).with_concurrency(1);
    let run = tokio::spawn(async move { renewer.run(far_future, None).await });
    let pids = stack.pebble.pids();
    'watch: loop {
        for (host, (_, tag)) in names.iter().zip(&before) {
            if stored(&*store, host).await.1 != *tag {
                break 'watch;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status();
    }
    let report = run.await.unwrap().unwrap();

    assert_eq!(report.renewed.len(), 1, "{report:?}");
    assert_eq!(report.failed.len(), 2, "{report:?}");
    for failure in &report.failed {
        let host = Host::parse(&failure.host).unwrap();
        let history = RenewalRecord::load(&*store, &host).await.unwrap().unwrap();
        assert_eq!(history.failures, 1);
        assert!(
            history
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("ACME error")),
            "{history:?}"
        );
        assert!(history.next_retry.is_some(), "backing off");
        // Nothing already stored is lost: the old certificate is still there, unchanged.
        let index = names.iter().position(|n| *n == failure.host).unwrap();
        assert_eq!(stored(&*store, &failure.host).await.1, before[index].1);
    }
}
