//! `Config`: the config document, with Kong's field names and defaults.
//!
//! A Kong user can paste the `config:` block of their acme plugin. Unknown fields, bad values
//! and Kong storages that certbucket does not have are errors that name the field.

use std::{fmt, path::Path};

use serde::{Deserialize, Serialize};

use crate::{
    domains::{DomainPattern, DomainPolicy},
    error::{Error, Result},
    secret::Secret,
    storage::StoreUrl,
};

/// Let's Encrypt's production directory, Kong's default `api_uri`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The key type of issued certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertType {
    /// RSA with `rsa_key_size` bits.
    Rsa,
    /// ECDSA P-256.
    Ecc,
}

impl fmt::Display for CertType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rsa => "rsa",
            Self::Ecc => "ecc",
        })
    }
}

/// External account binding credentials (`eab_kid`, `eab_hmac_key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EabCredentials {
    /// The key identifier the CA gave.
    pub kid: String,
    /// The base64url HMAC key.
    pub hmac_key: Secret,
}

/// The validated config document.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// `account_email`: the ACME account's contact.
    pub account_email: String,
    /// `account_key`: a PKCS#8 PEM to use as the account key instead of a generated one.
    pub account_key: Option<Secret>,
    /// `api_uri`: the CA's directory URL.
    pub api_uri: String,
    /// `tos_accepted`: nothing is ordered until it is true.
    pub tos_accepted: bool,
    /// `eab_kid` and `eab_hmac_key`, both or neither.
    pub eab: Option<EabCredentials>,
    /// `cert_type`.
    pub cert_type: CertType,
    /// `rsa_key_size`: 2048, 3072 or 4096.
    pub rsa_key_size: u32,
    /// `renew_threshold_days`.
    pub renew_threshold_days: f64,
    /// `domains`, `allow_any_domain` and `enable_ipv4_common_name`.
    pub domains: DomainPolicy,
    /// `fail_backoff_minutes`: no new attempt for a host that long after a failure.
    pub fail_backoff_minutes: f64,
    /// `storage` and `storage_config`, when they name a store (`--store` wins over them).
    pub store: Option<StoreUrl>,
    /// `preferred_chain`: the top issuer CN of the chain to prefer.
    pub preferred_chain: Option<String>,
}

/// The document as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    account_email: Option<String>,
    account_key: Option<Secret>,
    api_uri: Option<String>,
    tos_accepted: Option<bool>,
    eab_kid: Option<String>,
    eab_hmac_key: Option<Secret>,
    cert_type: Option<String>,
    rsa_key_size: Option<u32>,
    renew_threshold_days: Option<f64>,
    domains: Option<Vec<String>>,
    allow_any_domain: Option<bool>,
    fail_backoff_minutes: Option<f64>,
    storage: Option<String>,
    storage_config: Option<RawStorageConfig>,
    preferred_chain: Option<String>,
    enable_ipv4_common_name: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorageConfig {
    s3: Option<RawS3>,
    file: Option<RawFile>,
    // Kong's own sections, accepted so a pasted block parses, and ignored.
    #[serde(rename = "shm")]
    _shm: Option<serde::de::IgnoredAny>,
    #[serde(rename = "kong")]
    _kong: Option<serde::de::IgnoredAny>,
    #[serde(rename = "redis")]
    _redis: Option<serde::de::IgnoredAny>,
    #[serde(rename = "consul")]
    _consul: Option<serde::de::IgnoredAny>,
    #[serde(rename = "vault")]
    _vault: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    bucket: String,
    #[serde(default)]
    prefix: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
}

const KONG_STORAGES: [&str; 5] = ["shm", "kong", "redis", "consul", "vault"];

impl Config {
    /// Reads the config from `--config`: inline JSON (starting with `{`) or a path to a JSON or
    /// YAML file. Secret references are resolved here, so an unresolvable one is a start-up
    /// error: `{vault://env/NAME}` from the environment, `{vault://aws/SECRET_ID[/FIELD]}` from
    /// AWS Secrets Manager.
    pub async fn load(arg: &str) -> Result<Self> {
        let mut raw = if arg.trim_start().starts_with('{') {
            RawConfig::from_json(arg)?
        } else {
            let path = Path::new(arg);
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::config("--config", format!("cannot read {arg}: {e}")))?;
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") => RawConfig::from_json(&text)?,
                _ => RawConfig::from_yaml(&text)?,
            }
        };
        raw.fetch_aws_secrets().await?;
        raw.validate(&|name| std::env::var(name).ok())
    }

    /// Parses a JSON document; secret references read the process environment.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_json_with(text, &|name| std::env::var(name).ok())
    }

    /// Parses a JSON document, resolving `{vault://env/NAME}` references with `env`.
    fn from_json_with(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        RawConfig::from_json(text)?.validate(env)
    }

    /// Parses a YAML document; secret references read the process environment.
    pub fn from_yaml(text: &str) -> Result<Self> {
        RawConfig::from_yaml(text)?.validate(&|name| std::env::var(name).ok())
    }
}

impl RawConfig {
    fn from_json(text: &str) -> Result<Self> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| Error::config(field_of(e.path()), e.inner().to_string()))
    }

    fn from_yaml(text: &str) -> Result<Self> {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| Error::config(field_of(e.path()), e.inner().to_string()))
    }

    /// Replaces `{vault://aws/...}` references with the secrets they name; the Secrets Manager
    /// client is only built when a reference needs it.
    async fn fetch_aws_secrets(&mut self) -> Result<()> {
        let mut client = None;
        for (field, value) in [
            ("account_key", &mut self.account_key),
            ("eab_hmac_key", &mut self.eab_hmac_key),
        ] {
            let Some(Ok(SecretReference::Aws { secret_id, key })) = value
                .as_ref()
                .and_then(|v| SecretReference::parse(v.expose()))
            else {
                continue;
            };
            if client.is_none() {
                let config = crate::aws::sdk_config().await;
                client = Some(aws_sdk_secretsmanager::Client::new(&config));
            }
            let Some(client) = &client else { continue };
            let reference = value.as_ref().map(|v| v.expose().trim().to_owned());
            let reference = reference.unwrap_or_default();
            let fetched = fetch_aws_secret(client, &secret_id, key.as_deref())
                .await
                .map_err(|m| Error::config(field, format!("references {reference}, but {m}")))?;
            *value = Some(fetched);
        }
        Ok(())
    }
}

/// Reads one secret (or one string field of a JSON secret) from Secrets Manager. The error
/// says what went wrong without any of the secret's text.
async fn fetch_aws_secret(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    key: Option<&str>,
) -> std::result::Result<Secret, String> {
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            let reason = e
                .as_service_error()
                .and_then(|s| s.meta().message().map(str::to_owned))
                .unwrap_or_else(|| {
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string()
                });
            format!("Secrets Manager could not read {secret_id}: {reason}")
        })?;
    let text = output.secret_string().ok_or_else(|| {
        format!("{secret_id} has no string value (binary secrets are not supported)")
    })?;
    let Some(key) = key else {
        return Ok(Secret::new(text.to_owned()));
    };
    let document: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|_| format!("{secret_id} is not a JSON object, so it has no field {key:?}"))?;
    match document.get(key) {
        Some(serde_json::Value::String(value)) => Ok(Secret::new(value.clone())),
        Some(_) => Err(format!("field {key:?} of {secret_id} is not a string")),
        None => Err(format!("{secret_id} has no field {key:?}")),
    }
}

fn field_of(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." {
        "(document)".to_owned()
    } else {
        text
    }
}

impl RawConfig {
    fn validate(mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        self.account_key = resolve("account_key", self.account_key, env)?;
        self.eab_hmac_key = resolve("eab_hmac_key", self.eab_hmac_key, env)?;
        let account_email = self
            .account_email
            .ok_or_else(|| Error::config("account_email", "is required"))?;
        if !looks_like_email(&account_email) {
            return Err(Error::config(
                "account_email",
                format!("{account_email:?} is not an e-mail address"),
            ));
        }
        let cert_type = match self.cert_type.as_deref() {
            None | Some("rsa") => CertType::Rsa,
            Some("ecc") => CertType::Ecc,
            Some(other) => {
                return Err(Error::config(
                    "cert_type",
                    format!("expected one of: rsa, ecc (got {other:?})"),
                ));
            }
        };
        let rsa_key_size = self.rsa_key_size.unwrap_or(4096);
        if ![2048, 3072, 4096].contains(&rsa_key_size) {
            return Err(Error::config(
                "rsa_key_size",
                format!("expected one of: 2048, 3072, 4096 (got {rsa_key_size})"),
            ));
        }
        let eab = match (self.eab_kid, self.eab_hmac_key) {
            (None, None) => None,
            (Some(kid), Some(hmac_key)) => {
                let base64url = hmac_key
                    .expose()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if kid.is_empty() || hmac_key.expose().is_empty() || !base64url {
                    return Err(Error::config(
                        "eab_hmac_key",
                        "must be a non-empty base64url string, with a non-empty eab_kid",
                    ));
                }
                Some(EabCredentials { kid, hmac_key })
            }
            (Some(_), None) => {
                return Err(Error::config("eab_hmac_key", "is required with eab_kid"));
            }
            (None, Some(_)) => {
                return Err(Error::config("eab_kid", "is required with eab_hmac_key"));
            }
        };
        let patterns = self
            .domains
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                DomainPattern::parse(entry)
                    .map_err(|m| Error::config(format!("domains[{i}]"), format!("{entry:?}: {m}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Config {
            account_email,
            account_key: self.account_key,
            api_uri: normalize_api_uri(self.api_uri.as_deref().unwrap_or(LETS_ENCRYPT))?,
            tos_accepted: self.tos_accepted.unwrap_or(false),
            eab,
            cert_type,
            rsa_key_size,
            renew_threshold_days: non_negative(
                "renew_threshold_days",
                self.renew_threshold_days.unwrap_or(14.0),
            )?,
            domains: DomainPolicy {
                patterns,
                allow_any_domain: self.allow_any_domain.unwrap_or(false),
                enable_ipv4_common_name: self.enable_ipv4_common_name.unwrap_or(true),
            },
            fail_backoff_minutes: non_negative(
                "fail_backoff_minutes",
                self.fail_backoff_minutes.unwrap_or(5.0),
            )?,
            store: store_of(self.storage.as_deref(), self.storage_config)?,
            preferred_chain: self.preferred_chain.filter(|c| !c.is_empty()),
        })
    }
}

/// A secret field's reference, as Kong writes them: `{vault://env/NAME}` or
/// `{vault://aws/SECRET_ID[/KEY]}` (KEY picks one field of a JSON secret).
#[derive(Debug, PartialEq, Eq)]
enum SecretReference {
    Env(String),
    Aws {
        secret_id: String,
        key: Option<String>,
    },
}

impl SecretReference {
    /// `None` for a plain value; `Some(Err)` for a `{vault://...}` certbucket cannot resolve.
    fn parse(text: &str) -> Option<std::result::Result<Self, String>> {
        let text = text.trim();
        let reference = text.strip_prefix("{vault://")?.strip_suffix('}')?;
        let unknown = || {
            Err(format!(
                "{text} is not a reference certbucket understands (expected \
                 {{vault://env/NAME}} or {{vault://aws/SECRET_ID[/FIELD]}})"
            ))
        };
        Some(match reference.split('/').collect::<Vec<_>>()[..] {
            ["env", name] if !name.is_empty() => Ok(Self::Env(name.to_owned())),
            ["aws", id] if !id.is_empty() => Ok(Self::Aws {
                secret_id: id.to_owned(),
                key: None,
            }),
            ["aws", id, key] if !id.is_empty() && !key.is_empty() => Ok(Self::Aws {
                secret_id: id.to_owned(),
                key: Some(key.to_owned()),
            }),
            _ => unknown(),
        })
    }
}

/// Resolves a referenceable secret field: `{vault://env/NAME}` reads the environment variable
/// NAME; a plain value is taken as it is. `{vault://aws/...}` references were fetched by
/// [`Config::load`] already. Errors name the field and the reference, never a value.
fn resolve(
    field: &str,
    value: Option<Secret>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.expose().trim();
    match SecretReference::parse(text) {
        None => Ok(Some(value)),
        Some(Ok(SecretReference::Env(name))) => env(&name)
            .filter(|v| !v.is_empty())
            .map(|v| Some(Secret::new(v)))
            .ok_or_else(|| {
                Error::config(field, format!("references {text}, but {name} is not set"))
            }),
        Some(Ok(SecretReference::Aws { .. })) => Err(Error::config(
            field,
            format!("{text}: AWS Secrets Manager references are resolved by Config::load"),
        )),
        Some(Err(message)) => Err(Error::config(field, message)),
    }
}

fn looks_like_email(text: &str) -> bool {
    match text.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !local.contains(char::is_whitespace)
                && domain.contains('.')
                && crate::host::Host::parse(domain).is_ok()
        }
        None => false,
    }
}

fn non_negative(field: &str, value: f64) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(Error::config(
            field,
            format!("must be a number >= 0 (got {value})"),
        ))
    }
}

/// Kong's rule: scheme and host required; `/directory` appended when the path is empty.
fn normalize_api_uri(uri: &str) -> Result<String> {
    let bad = |message: &str| Error::config("api_uri", format!("{uri:?} {message}"));
    let (scheme, rest) = uri.split_once("://").ok_or_else(|| bad("has no scheme"))?;
    if scheme != "https" && scheme != "http" {
        return Err(bad("must be an http or https URL"));
    }
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    if path.is_empty() {
        Ok(format!("{scheme}://{authority}/directory"))
    } else {
        Ok(uri.to_owned())
    }
}

fn store_of(storage: Option<&str>, config: Option<RawStorageConfig>) -> Result<Option<StoreUrl>> {
    // Kong's own sections (`shm`, `redis`, ...) may come along in a pasted block: they are
    // known and ignored; only `storage` naming one of them is an error.
    let config = config.unwrap_or_default();
    match storage {
        None => Ok(None),
        Some("s3") => {
            let s3 = config.s3.ok_or_else(|| {
                Error::config(
                    "storage_config.s3",
                    "is required when storage is s3 (bucket, prefix)",
                )
            })?;
            let url = if s3.prefix.is_empty() {
                format!("s3://{}", s3.bucket)
            } else {
                format!("s3://{}/{}", s3.bucket, s3.prefix)
            };
            StoreUrl::parse(&url)
                .map(Some)
                .map_err(|e| Error::config("storage_config.s3", e.to_string()))
        }
        Some("file") => {
            let file = config.file.ok_or_else(|| {
                Error::config(
                    "storage_config.file",
                    "is required when storage is file (path)",
                )
            })?;
            Ok(Some(StoreUrl::Dir(file.path.into())))
        }
        Some(name) if KONG_STORAGES.contains(&name) => Err(unsupported("storage")),
        Some(other) => Err(Error::config(
            "storage",
            format!("expected one of: s3, file (got {other:?})"),
        )),
    }
}

fn unsupported(field: &str) -> Error {
    Error::config(
        field,
        "certbucket keeps its state in object storage, not in Kong's shm, kong, redis, consul \
         or vault storages: use storage \"s3\" with storage_config.s3 {bucket, prefix}, \
         storage \"file\" with storage_config.file {path}, or the --store flag",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        match Config::from_json(json) {
            Ok(c) => panic!("accepted {json}: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn kong_defaults() {
        let c = Config::from_json(r#"{"account_email":"a@example.com"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.api_uri, LETS_ENCRYPT);
        assert!(!c.tos_accepted);
        assert_eq!(c.cert_type, CertType::Rsa);
        assert_eq!(c.rsa_key_size, 4096);
        assert!((c.renew_threshold_days - 14.0).abs() < f64::EPSILON);
        assert!((c.fail_backoff_minutes - 5.0).abs() < f64::EPSILON);
        assert!(c.domains.patterns.is_empty());
        assert!(!c.domains.allow_any_domain);
        assert!(c.domains.enable_ipv4_common_name);
        assert_eq!(c.store, None);
        assert_eq!(c.eab, None);
    }

    #[test]
    fn yaml_and_json_agree() {
        let yaml = "account_email: a@example.com\ntos_accepted: true\ncert_type: ecc\ndomains:\n  - '*.example.com'\n  - example.com\n";
        let json = r#"{"account_email":"a@example.com","tos_accepted":true,"cert_type":"ecc","domains":["*.example.com","example.com"]}"#;
        let a = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
        let b = Config::from_json(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b);
        assert_eq!(a.domains.patterns.len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"account_email":"a@example.com","bogus":1}"#, "bogus"),
            (
                r#"{"account_email":"a@example.com","cert_type":"dsa"}"#,
                "cert_type: expected one of: rsa, ecc",
            ),
            (
                r#"{"account_email":"a@example.com","rsa_key_size":1024}"#,
                "rsa_key_size",
            ),
            (r#"{}"#, "account_email: is required"),
            (r#"{"account_email":"nope"}"#, "account_email"),
            (
                r#"{"account_email":"a@example.com","api_uri":"ftp://x"}"#,
                "api_uri",
            ),
            (
                r#"{"account_email":"a@example.com","domains":["a..b"]}"#,
                "domains[0]",
            ),
            (
                r#"{"account_email":"a@example.com","domains":["*.*.x.com"]}"#,
                "domains[0]",
            ),
            (
                r#"{"account_email":"a@example.com","eab_kid":"k"}"#,
                "eab_hmac_key",
            ),
            (
                r#"{"account_email":"a@example.com","tos_accepted":"yes"}"#,
                "tos_accepted",
            ),
            (
                r#"{"account_email":"a@example.com","renew_threshold_days":-1}"#,
                "renew_threshold_days",
            ),
            (
                r#"{"account_email":"a@example.com","storage":"redis"}"#,
                "use storage \"s3\"",
            ),
            (
                r#"{"account_email":"a@example.com","storage":"s3"}"#,
                "storage_config.s3: is required",
            ),
            (
                r#"{"account_email":"a@example.com","storage_config":{"s3":{"bucket":"b","x":1}}}"#,
                "storage_config.s3",
            ),
        ];
        for (json, want) in cases {
            let got = err(json);
            assert!(got.contains(want), "{json}: {got}");
            assert!(got.starts_with("invalid config: "), "{got}");
        }
    }

    #[test]
    fn api_uri_and_storage() {
        let c = Config::from_json(
            r#"{"account_email":"a@example.com","api_uri":"https://ca.test:14000",
                "storage":"s3","storage_config":{"s3":{"bucket":"my-bucket","prefix":"p"},"shm":{"shm_name":"kong"}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.api_uri, "https://ca.test:14000/directory");
        assert_eq!(c.store, StoreUrl::parse("s3://my-bucket/p").ok());
        let pebble = Config::from_json(
            r#"{"account_email":"a@example.com","api_uri":"https://127.0.0.1:14000/dir"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pebble.api_uri, "https://127.0.0.1:14000/dir");
    }

    #[test]
    fn secret_references_resolve_from_the_environment() {
        let env = |name: &str| (name == "EAB_KEY").then(|| "c2VjcmV0LWhtYWMta2V5".to_owned());
        let c = Config::from_json_with(
            r#"{"account_email":"a@example.com","eab_kid":"kid","eab_hmac_key":"{vault://env/EAB_KEY}"}"#,
            &env,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let hmac = c.eab.map(|e| e.hmac_key.expose().to_owned());
        assert_eq!(hmac.as_deref(), Some("c2VjcmV0LWhtYWMta2V5"));

        let cases = [
            (
                r#"{vault://env/MISSING}"#,
                "eab_hmac_key: references {vault://env/MISSING}, but MISSING is not set",
            ),
            (r#"{vault://aws/prod/eab}"#, "resolved by Config::load"),
            (
                r#"{vault://aws/a/b/c}"#,
                "not a reference certbucket understands",
            ),
            (
                r#"{vault://hcv/x}"#,
                "is not a reference certbucket understands",
            ),
        ];
        for (reference, want) in cases {
            let json = format!(
                r#"{{"account_email":"a@example.com","eab_kid":"k","eab_hmac_key":"{reference}"}}"#
            );
            let got = match Config::from_json_with(&json, &env) {
                Ok(c) => panic!("accepted {reference}: {c:?}"),
                Err(e) => e.to_string(),
            };
            assert!(got.contains(want), "{reference}: {got}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = Config::from_json(
            r#"{"account_email":"a@example.com","eab_kid":"kid","eab_hmac_key":"c2VjcmV0LWhtYWMta2V5"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{c:?}").contains("c2VjcmV0LWhtYWMta2V5"));
    }
}
