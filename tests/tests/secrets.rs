//! Secret references resolved from AWS Secrets Manager (LocalStack), end to end: an EAB key
//! kept in a JSON secret registers an account with a Pebble that requires EAB.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use certbucket_core::{Config, LocalDirStorage, Storage};
use certbucket_tests::{Pebble, S3Env, stack::Stack, temp_dir};
use http::StatusCode;
use serde_json::json;

// base64url of 48 bytes; generated for this test, it protects nothing.
const EAB_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

/// Creates a secret with a name unique to this run and returns the name.
async fn secret(tag: &str, value: &str) -> String {
    S3Env::from_env().unwrap_or_else(|e| panic!("{e}"));
    let config = certbucket_core::aws::sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let name = format!("certbucket-test-{tag}-{}", std::process::id());
    client
        .create_secret()
        .name(&name)
        .secret_string(value)
        .send()
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e:?}"));
    name
}

fn config_with_hmac_reference(reference: &str) -> String {
    json!({"account_email": "a@example.com", "eab_kid": "kid-1", "eab_hmac_key": reference})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eab_key_from_secrets_manager_registers_the_account() {
    let name = secret(
        "eab-json",
        &json!({"kid": "kid-1", "hmac": EAB_KEY}).to_string(),
    )
    .await;
    let store: Arc<dyn Storage> = Arc::new(LocalDirStorage::open(&temp_dir("secret-eab")).unwrap());
    let config =
        json!({"eab_kid": "kid-1", "eab_hmac_key": format!("{{vault://aws/{name}/hmac}}")});
    let stack = Stack::start_with(store, config, Pebble::options().eab_key("kid-1", EAB_KEY))
        .await
        .unwrap();
    let (status, body) = stack.post_form("secret.example.test").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn plain_secrets_resolve_and_bad_references_are_start_up_errors_without_the_secret() {
    let plain = secret("eab-plain", EAB_KEY).await;
    let config = Config::load(&config_with_hmac_reference(&format!(
        "{{vault://aws/{plain}}}"
    )))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let hmac = config.eab.map(|e| e.hmac_key.expose().to_owned());
    assert_eq!(hmac.as_deref(), Some(EAB_KEY));

    let json = secret("eab-doc", &json!({"hmac": EAB_KEY, "n": 1}).to_string()).await;
    let cases = [
        (
            "{vault://aws/certbucket-test-absent}".to_owned(),
            "eab_hmac_key: references {vault://aws/certbucket-test-absent}, but Secrets Manager \
             could not read certbucket-test-absent",
        ),
        (
            format!("{{vault://aws/{json}/other}}"),
            "has no field \"other\"",
        ),
        (format!("{{vault://aws/{json}/n}}"), "field \"n\" of"),
        (
            format!("{{vault://aws/{plain}/hmac}}"),
            "is not a JSON object",
        ),
    ];
    for (reference, want) in cases {
        let error = match Config::load(&config_with_hmac_reference(&reference)).await {
            Ok(c) => panic!("{reference} resolved: {c:?}"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains(want), "{reference}: {error}");
        assert!(!error.contains(EAB_KEY), "the secret leaked: {error}");
    }
}
