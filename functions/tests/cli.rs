//! The `certbucket` binary as an operator runs it: bad input fails with one line and writes
//! nothing; `list` prints exactly what `GET /acme/certificates` answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn store_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("certbucket-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

const CONFIG: &str = r#"{"account_email":"ops@example.test","api_uri":"https://127.0.0.1:9/dir","tos_accepted":true}"#;

fn certbucket(store: &Path, config: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_certbucket"))
        .arg("--config")
        .arg(config)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.join("v1")];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn apply_refuses_bad_hosts_with_one_line_and_writes_nothing() {
    let store = store_dir("bad-host");
    let long = "a".repeat(300);
    for (host, reason) in [
        ("a..b", "invalid host: a host must not have empty labels"),
        ("x/y", "invalid host: a host must not contain '/'"),
        ("h:80", "port is not allowed in host"),
        (
            long.as_str(),
            "invalid host: a host must be at most 253 characters",
        ),
        ("", "host must be provided and containing a single domain"),
    ] {
        let (ok, stdout, stderr) = certbucket(&store, CONFIG, &["apply", "--host", host]);
        assert!(!ok, "{host}");
        assert!(stdout.is_empty(), "{host}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{host}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("certbucket: {reason} (HTTP 400)"),
            "{host}"
        );
    }
    assert!(files_under(&store).is_empty(), "{:?}", files_under(&store));
}

#[test]
fn apply_reports_an_unreachable_ca_in_one_line() {
    let store = store_dir("no-ca");
    let (ok, _, stderr) = certbucket(&store, CONFIG, &["apply", "--host", "a.example.test"]);
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("certbucket: failed to update certificate: "),
        "{stderr}"
    );
    assert!(stderr.trim_end().ends_with("(HTTP 500)"), "{stderr}");
    // Only the (released) lease and the failure record remain: no certificate, no account.
    let left: Vec<_> = files_under(&store)
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains("/v1/locks/"))
        .map(|p| p.strip_prefix(&store).unwrap().display().to_string())
        .collect();
    assert_eq!(left, ["v1/renewals/a.example.test.json"]);

    // The failure starts fail_backoff_minutes (5 by default): the next apply does not retry.
    let (ok, _, stderr) = certbucket(&store, CONFIG, &["apply", "--host", "a.example.test"]);
    assert!(!ok);
    assert!(
        stderr.contains("the last issuance for a.example.test failed; no new attempt before "),
        "{stderr}"
    );
    assert!(stderr.trim_end().ends_with("(HTTP 429)"), "{stderr}");
}

#[test]
fn bad_configs_fail_at_start_naming_the_field() {
    let store = store_dir("bad-config");
    for (config, field) in [
        (
            r#"{"account_email":"ops@example.test","cert_typ":"ecc"}"#,
            "invalid config: cert_typ: unknown field `cert_typ`",
        ),
        (
            r#"{"account_email":"ops@example.test","cert_type":"dsa"}"#,
            "invalid config: cert_type: expected one of: rsa, ecc",
        ),
        (
            r#"{"account_email":"ops@example.test","storage":"redis"}"#,
            "invalid config: storage: certbucket keeps its state in object storage",
        ),
    ] {
        let (ok, _, stderr) = certbucket(&store, config, &["list"]);
        assert!(!ok, "{config}");
        assert!(
            stderr.starts_with(&format!("certbucket: {field}")),
            "{config}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    assert!(
        !store.exists(),
        "a bad config must not even create the store"
    );
}

#[test]
fn list_prints_the_admin_api_answer() {
    let store = store_dir("list");
    let (ok, stdout, _) = certbucket(&store, CONFIG, &["list"]);
    assert!(ok);
    assert_eq!(stdout, "{\"data\":[]}\n");
    let (ok, stdout, stderr) = certbucket(&store, CONFIG, &["list", "none.example.test"]);
    assert!(!ok, "{stdout}");
    assert_eq!(
        stderr.trim_end(),
        "certbucket: certificate for host none.example.test not found in storage (HTTP 404)"
    );
}
