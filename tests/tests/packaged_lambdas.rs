//! The packaged Lambda functions, as deployed: each `bootstrap` from `scripts/package-lambdas`
//! (arm64, run under qemu-aarch64 on an x86_64 machine) polls an emulated Lambda Runtime API
//! and is invoked with the events AWS sends it — API Gateway HTTP API (IAM auth), S3
//! ObjectCreated for `requests/`, EventBridge scheduled — against LocalStack S3 and Pebble,
//! with an in-process edge answering the http-01 challenges from the same bucket.
//!
//! Needs `CERTBUCKET_PACKAGED_LAMBDAS` (the zips' directory); `scripts/test` packages them and
//! sets it. Fails, never skips, when the zips, qemu, LocalStack or Pebble are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use base64::Engine as _;
use certbucket_core::{Host, S3Storage, Storage, StorageKeys};
use certbucket_tests::{
    S3Env,
    packaged::{PackagedFunction, packages_dir},
    runtime_api::Outcome,
    stack::Stack,
};
use serde_json::{Value, json};

const PREFIX: &str = "deploy/test";

/// An HTTP API (payload 2.0) event for a route with IAM authorization, as API Gateway sends it.
fn http_event(method: &str, route: &str, path: &str, body: Option<&str>) -> Value {
    let mut event = json!({
        "version": "2.0",
        "routeKey": format!("{method} {route}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "accept": "*/*", "content-length": "0", "host": "abc123.execute-api.us-east-1.amazonaws.com",
            "user-agent": "curl/8.5.0", "x-amz-date": "20261204T170000Z",
            "x-amzn-trace-id": "Root=1-6750a1f0-0123456789abcdef01234567",
            "x-forwarded-for": "192.0.2.10", "x-forwarded-port": "443", "x-forwarded-proto": "https"
        },
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123",
            "authorizer": {"iam": {
                "accessKey": "AKIAIOSFODNN7EXAMPLE", "accountId": "123456789012",
                "callerId": "AIDAJQABLZS4A3QDU576Q", "cognitoIdentity": null,
                "principalOrgId": null, "userArn": "arn:aws:iam::123456789012:user/ops",
                "userId": "AIDAJQABLZS4A3QDU576Q"
            }},
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com", "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "192.0.2.10", "userAgent": "curl/8.5.0"},
            "requestId": "JKJaXmPLvHcESHA=", "routeKey": format!("{method} {route}"),
            "stage": "$default", "time": "04/Dec/2026:17:00:00 +0000", "timeEpoch": 1_796_403_600_000_u64
        },
        "isBase64Encoded": false
    });
    if route.contains("{host}") {
        let host = path.rsplit('/').next().unwrap_or_default();
        event["pathParameters"] = json!({ "host": host });
    }
    if let Some(text) = body {
        // curl -d sends a form; API Gateway hands a form body over base64-encoded.
        event["headers"]["content-type"] = json!("application/x-www-form-urlencoded");
        event["headers"]["content-length"] = json!(text.len().to_string());
        event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        event["isBase64Encoded"] = json!(true);
    }
    event
}

/// An S3 notification for an object created under `requests/`.
fn s3_event(bucket: &str, key: &str) -> Value {
    json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-04T17:00:00.000Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AROAEXAMPLE:i-0123456789abcdef0"},
        "requestParameters": {"sourceIPAddress": "192.0.2.20"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "requests",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                          "arn": format!("arn:aws:s3:::{bucket}")},
               "object": {"key": key, "size": 2, "eTag": "99914b932bd37a50b983c5e7c90ae93b",
                          "sequencer": "0A1B2C3D4E5F678901"}}
    }]})
}

/// The EventBridge scheduled event renew-all gets every 12 hours.
fn scheduled_event() -> Value {
    json!({
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-12-04T12:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/certbucket-renew-all"],
        "detail": {}
    })
}

fn body_of(answer: &Value) -> Value {
    let text = answer["body"].as_str().unwrap_or_default();
    let text = if answer["isBase64Encoded"] == json!(true) {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap_or_default(),
        )
        .unwrap_or_default()
    } else {
        text.to_owned()
    };
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn host(name: &str) -> Host {
    Host::parse(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn packaged_functions_answer_real_events() {
    let dir = packages_dir().unwrap_or_else(|e| panic!("{e}"));
    let s3 = S3Env::from_env().unwrap_or_else(|e| panic!("{e}"));
    let bucket = s3.fresh_bucket().await.unwrap();
    let store = Arc::new(S3Storage::from_env(bucket.clone(), PREFIX.to_owned()).await);
    // The edge and Pebble; the edge answers http-01 from the bucket the functions write to.
    let stack = Stack::start(Arc::clone(&store) as Arc<dyn Storage>, json!({}))
        .await
        .unwrap();

    let config = json!({
        "account_email": "ops@example.test",
        "api_uri": stack.pebble.directory_url(),
        "tos_accepted": true,
        "cert_type": "ecc",
        "domains": ["*.example.test"],
    });
    let mut env: Vec<(&str, String)> = vec![
        ("CERTBUCKET_CONFIG", config.to_string()),
        ("CERTBUCKET_STORE", format!("s3://{bucket}/{PREFIX}")),
        (
            "CERTBUCKET_ACME_CA_BUNDLE",
            stack.pebble.ca_bundle_path().display().to_string(),
        ),
        ("RUST_LOG", "info".to_owned()),
    ];
    for key in [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
    ] {
        if let Ok(value) = std::env::var(key) {
            env.push((key, value));
        }
    }

    // apply: POST /acme through the HTTP API.
    let mut apply = PackagedFunction::start(&dir, "apply", &env).await.unwrap();
    eprintln!(
        "apply: {} bootstrap, run as: {}",
        apply.machine, apply.runner
    );
    let answer = apply
        .invoke(http_event(
            "POST",
            "/acme",
            "/acme",
            Some("host=a.example.test"),
        ))
        .await
        .unwrap();
    assert!(
        matches!(answer["statusCode"].as_u64(), Some(200 | 201)),
        "POST /acme: {answer}\n{}",
        apply.log_tail()
    );
    assert!(
        store
            .get(&StorageKeys::cert(&host("a.example.test")))
            .await
            .unwrap()
            .is_some(),
        "POST /acme stored no certificate"
    );

    // apply: an edge's on-demand request, through the S3 notification.
    store
        .create(
            &StorageKeys::request(&host("b.example.test")),
            bytes::Bytes::from_static(b"{}"),
        )
        .await
        .unwrap();
    let answer = apply
        .invoke(s3_event(
            &bucket,
            &format!("{PREFIX}/v1/requests/b.example.test"),
        ))
        .await
        .unwrap();
    assert_eq!(answer["issued"], json!(["b.example.test"]), "{answer}");

    // apply refuses what it does not take, with the stable error type.
    match apply.invoke_raw(json!({"hello": "world"})).await.unwrap() {
        Outcome::Error(error) => assert_eq!(error["errorType"], "InvalidRequest", "{error}"),
        Outcome::Response(value) => panic!("apply answered an unknown event: {value}"),
    }

    // list: GET /acme/certificates and GET /acme/certificates/{host}.
    let mut list = PackagedFunction::start(&dir, "list", &env).await.unwrap();
    let answer = list
        .invoke(http_event(
            "GET",
            "/acme/certificates",
            "/acme/certificates",
            None,
        ))
        .await
        .unwrap();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let all = body_of(&answer);
    let mut hosts: Vec<&str> = all["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {all}"))
        .iter()
        .filter_map(|entry| entry["host"].as_str())
        .collect();
    hosts.sort_unstable();
    assert_eq!(hosts, ["a.example.test", "b.example.test"], "{all}");
    assert!(
        !answer.to_string().contains("PRIVATE KEY"),
        "list leaked a key"
    );
    let answer = list
        .invoke(http_event(
            "GET",
            "/acme/certificates/{host}",
            "/acme/certificates/a.example.test",
            None,
        ))
        .await
        .unwrap();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(
        body_of(&answer)["data"]["host"],
        "a.example.test",
        "{answer}"
    );

    // renew-all: the scheduled event serves pending requests (one allowed, one refused) and
    // finds the fresh certificates not due.
    for name in ["c.example.test", "evil.other.test"] {
        store
            .create(
                &StorageKeys::request(&host(name)),
                bytes::Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
    }
    let mut renew_all = PackagedFunction::start(&dir, "renew-all", &env)
        .await
        .unwrap();
    let report = renew_all.invoke(scheduled_event()).await.unwrap();
    assert_eq!(report["failed"], json!([]), "{report}");
    assert_eq!(report["renewed"], json!(["c.example.test"]), "{report}");
    assert_eq!(
        report["refused_requests"],
        json!(["evil.other.test"]),
        "{report}"
    );
    let mut not_due: Vec<&str> = report["not_due"]
        .as_array()
        .unwrap_or_else(|| panic!("no not_due in {report}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    not_due.sort_unstable();
    assert_eq!(not_due, ["a.example.test", "b.example.test"], "{report}");
    // PATCH /acme's background invocation payload is a JSON object too.
    let report = renew_all
        .invoke(json!({"source": "certbucket", "detail-type": "PATCH /acme"}))
        .await
        .unwrap();
    assert_eq!(report["failed"], json!([]), "{report}");

    // PATCH /acme through apply: 202 at once, and renew-all invoked asynchronously through
    // the Lambda Invoke API (aws-sdk-lambda, CERTBUCKET_RENEW_FUNCTION) runs and reports.
    let mut patch_env = env.clone();
    patch_env.push(("CERTBUCKET_RENEW_FUNCTION", "renew-all".to_owned()));
    patch_env.push((
        "AWS_ENDPOINT_URL_LAMBDA",
        format!("http://{}", renew_all.api().endpoint()),
    ));
    let mut apply_patch = PackagedFunction::start(&dir, "apply", &patch_env)
        .await
        .unwrap();
    let answer = apply_patch
        .invoke(http_event("PATCH", "/acme", "/acme", None))
        .await
        .unwrap();
    assert_eq!(answer["statusCode"], 202, "{answer}");
    assert_eq!(
        body_of(&answer)["message"],
        "Renewal process started successfully",
        "{answer}"
    );
    let (event, outcome) = renew_all
        .api()
        .next_async(std::time::Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(event["detail-type"], "PATCH /acme", "{event}");
    match outcome {
        Outcome::Response(report) => assert_eq!(report["failed"], json!([]), "{report}"),
        Outcome::Error(error) => panic!("renew-all failed after PATCH: {error}"),
    }

    let leftover = stack.keys(&StorageKeys::requests_prefix()).await.unwrap();
    assert!(leftover.is_empty(), "requests left behind: {leftover:?}");
    for function in [&apply, &list, &renew_all, &apply_patch] {
        let log = function.log_tail();
        assert!(!log.contains("PRIVATE KEY"), "a function logged a key");
    }
}
