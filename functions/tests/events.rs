//! The Lambda handlers called with JSON fixtures of the real event shapes (API Gateway HTTP API
//! payload 2.0, S3 ObjectCreated, EventBridge scheduled), on a local-directory store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, sync::Arc};

use bytes::Bytes;
use certbucket_core::{AdminApi, Host, Renewer, Storage, StorageKeys};
use certbucket_functions::{FunctionError, Settings, handle_apply_event, handle_renew_all_event};
use serde_json::{Value, json};

async fn api(tag: &str) -> (AdminApi, Arc<dyn Storage>) {
    certbucket_core::tls::install_crypto_provider();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("certbucket-events-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let settings = Settings {
        // Nothing listens on port 9: any request that reached the CA would fail.
        config: Some(
            json!({"account_email": "ops@example.test", "api_uri": "https://127.0.0.1:9/dir",
                   "tos_accepted": true, "domains": ["*.example.test"]})
            .to_string(),
        ),
        store: Some(format!("file://{}", dir.display())),
        ..Settings::default()
    };
    let api = settings.admin_api().await.unwrap();
    let store = Arc::clone(api.issuer().store());
    (api, store)
}

/// An HTTP API (payload format 2.0) event, as API Gateway sends it.
fn http_event(method: &str, path: &str, query: &str, body: Option<(&str, &str)>) -> Value {
    let mut event = json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"accept": "*/*", "host": "abc123.execute-api.us-east-1.amazonaws.com", "user-agent": "curl/8.5.0"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123", "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.10", "userAgent": "curl/8.5.0"},
            "requestId": "JKJaXmPLvHcESHA=", "routeKey": format!("{method} {path}"), "stage": "$default",
            "time": "04/Dec/2026:17:00:00 +0000", "timeEpoch": 1_796_403_600_000_u64
        },
        "isBase64Encoded": false
    });
    if let Some((content_type, text)) = body {
        event["headers"]["content-type"] = json!(content_type);
        event["body"] = json!(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            text
        ));
        event["isBase64Encoded"] = json!(true);
    }
    event
}

/// An S3 ObjectCreated event for `key`, as an S3 notification delivers it.
fn s3_event(key: &str) -> Value {
    json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-04T17:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "requests",
               "bucket": {"name": "certbucket-state", "arn": "arn:aws:s3:::certbucket-state"},
               "object": {"key": key, "size": 2, "eTag": "99914b932bd37a50b983c5e7c90ae93b", "sequencer": "0A1B2C3D4E5F678901"}}
    }]})
}

#[tokio::test]
async fn http_api_events_answer_like_the_admin_api() {
    let (api, _) = api("http").await;
    let answer = handle_apply_event(
        &api,
        http_event("GET", "/acme/certificates", "invalid_only", None),
    )
    .await
    .unwrap();
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(answer["headers"]["content-type"], "application/json");
    assert_eq!(answer["body"], r#"{"data":[]}"#);

    let post = http_event(
        "POST",
        "/acme",
        "",
        Some(("application/x-www-form-urlencoded", "host=a..b")),
    );
    let answer = handle_apply_event(&api, post).await.unwrap();
    assert_eq!(answer["statusCode"], 400);
    let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["message"],
        "invalid host: a host must not have empty labels"
    );
}

#[tokio::test]
async fn s3_events_serve_allowed_requests_and_drop_refused_ones() {
    let (api, store) = api("s3").await;
    let refused = Host::parse("evil.other.test").unwrap();
    store
        .put(&StorageKeys::request(&refused), Bytes::from_static(b"{}"))
        .await
        .unwrap();

    let answer = handle_apply_event(&api, s3_event("team/v1/requests/evil.other.test"))
        .await
        .unwrap();
    assert_eq!(answer["issued"], json!([]));
    assert_eq!(answer["skipped"][0]["reason"], "not allowed by domains");
    assert!(
        store
            .get(&StorageKeys::request(&refused))
            .await
            .unwrap()
            .is_none(),
        "refused request removed"
    );

    let answer = handle_apply_event(&api, s3_event("v1/requests/a%2F..%2Fb"))
        .await
        .unwrap();
    assert_eq!(
        answer["skipped"][0]["reason"],
        "not an on-demand request for a valid host"
    );
    assert!(
        store
            .list(&StorageKeys::everything())
            .await
            .unwrap()
            .is_empty(),
        "nothing written"
    );
}

#[tokio::test]
async fn failures_carry_a_stable_error_type() {
    let (api, store) = api("errors").await;
    let error = handle_apply_event(&api, json!({"hello": "world"}))
        .await
        .unwrap_err();
    assert!(
        matches!(error, FunctionError::InvalidRequest(_)),
        "{error:?}"
    );
    assert_eq!(
        lambda_http::lambda_runtime::Diagnostic::from(error).error_type,
        "InvalidRequest"
    );

    // An allowed request whose issuance fails (no CA answers) is retryable and is kept.
    let wanted = Host::parse("wanted.example.test").unwrap();
    store
        .put(&StorageKeys::request(&wanted), Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let error = handle_apply_event(&api, s3_event("v1/requests/wanted.example.test"))
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "Retryable", "{error}");
    assert!(
        error
            .to_string()
            .starts_with("could not issue for wanted.example.test: "),
        "{error}"
    );
    assert!(
        store
            .get(&StorageKeys::request(&wanted))
            .await
            .unwrap()
            .is_some(),
        "kept for a retry"
    );
}

#[tokio::test]
async fn scheduled_events_run_renew_all() {
    let (api, _) = api("renew").await;
    let renewer = Renewer::new(api.issuer().clone());
    let scheduled = json!({
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-12-04T12:00:00Z",
        "region": "us-east-1", "resources": ["arn:aws:events:us-east-1:123456789012:rule/certbucket-renew-all"],
        "detail": {}
    });
    let report = handle_renew_all_event(&renewer, &scheduled, None)
        .await
        .unwrap();
    assert_eq!(report["renewed"], json!([]));
    assert_eq!(report["failed"], json!([]));
    let error = handle_renew_all_event(&renewer, &json!("renew"), None)
        .await
        .unwrap_err();
    assert_eq!(error.error_type(), "InvalidRequest");
}
