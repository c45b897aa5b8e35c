//! `StorageKeys`: the only place that builds object keys (the layout of ARCHITECTURE.md).

use std::fmt;

use aws_lc_rs::digest;

use crate::{challenge::ChallengeToken, host::Host};

const VERSION: &str = "v1";

/// An object key relative to the store's namespace prefix, e.g. `v1/certs/a.example.com.json`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageKey(String);

impl StorageKey {
    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a key read back from a listing; only keys under `v1/` with safe characters pass.
    pub(crate) fn from_listing(raw: &str) -> Option<Self> {
        let safe = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        (safe && raw.starts_with("v1/") && !raw.contains("..")).then(|| Self(raw.to_owned()))
    }
}

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Builds every key of the store layout.
#[derive(Debug, Clone, Copy)]
pub struct StorageKeys;

impl StorageKeys {
    /// `v1/accounts/{sha256(api_uri)}/{sha256(email)}.json`
    pub fn account(api_uri: &str, email: &str) -> StorageKey {
        StorageKey(format!(
            "{VERSION}/accounts/{}/{}.json",
            sha256_hex(api_uri),
            sha256_hex(email)
        ))
    }

    /// `v1/challenges/{token}`
    pub fn challenge(token: &ChallengeToken) -> StorageKey {
        StorageKey(format!("{VERSION}/challenges/{token}"))
    }

    /// `v1/challenges/`, to see what is published.
    pub fn challenge_prefix() -> StorageKey {
        StorageKey(format!("{VERSION}/challenges/"))
    }

    /// `v1/accounts/`, every stored ACME account.
    pub fn accounts_prefix() -> StorageKey {
        StorageKey(format!("{VERSION}/accounts/"))
    }

    /// `v1/certs/{host}.json`
    pub fn cert(host: &Host) -> StorageKey {
        StorageKey(format!("{VERSION}/certs/{host}.json"))
    }

    /// `v1/certs/`, to list every certificate.
    pub fn certs_prefix() -> StorageKey {
        StorageKey(format!("{VERSION}/certs/"))
    }

    /// The host a `v1/certs/{host}.json` key is for, or `None` for any other key.
    pub fn host_of_cert(key: &StorageKey) -> Option<Host> {
        let name = key
            .as_str()
            .strip_prefix(Self::certs_prefix().as_str())?
            .strip_suffix(".json")?;
        Host::parse(name).ok()
    }

    /// `v1/renewals/{host}.json`
    pub fn renewal(host: &Host) -> StorageKey {
        StorageKey(format!("{VERSION}/renewals/{host}.json"))
    }

    /// `v1/locks/{host}`
    pub fn lock(host: &Host) -> StorageKey {
        StorageKey(format!("{VERSION}/locks/{host}"))
    }

    /// `v1/requests/{host}`
    pub fn request(host: &Host) -> StorageKey {
        StorageKey(format!("{VERSION}/requests/{host}"))
    }

    /// `v1/requests/`, to list pending on-demand requests.
    pub fn requests_prefix() -> StorageKey {
        StorageKey(format!("{VERSION}/requests/"))
    }

    /// The host a `v1/requests/{host}` key is for.
    pub fn host_of_request(key: &StorageKey) -> Option<Host> {
        let name = key
            .as_str()
            .strip_prefix(Self::requests_prefix().as_str())?;
        Host::parse(name).ok()
    }

    /// `v1/manifest.json`
    pub fn manifest() -> StorageKey {
        StorageKey(format!("{VERSION}/manifest.json"))
    }

    /// `v1/`, everything the store holds; for tests and tools that walk the whole namespace.
    pub fn everything() -> StorageKey {
        StorageKey(format!("{VERSION}/"))
    }
}

fn sha256_hex(text: &str) -> String {
    digest::digest(&digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> Host {
        Host::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn builds_the_layout() {
        let h = host("a.example.com");
        let token = ChallengeToken::parse("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0");
        let token = token.unwrap_or_else(|| panic!("token"));
        let cases = [
            (StorageKeys::cert(&h), "v1/certs/a.example.com.json"),
            (StorageKeys::renewal(&h), "v1/renewals/a.example.com.json"),
            (StorageKeys::lock(&h), "v1/locks/a.example.com"),
            (StorageKeys::request(&h), "v1/requests/a.example.com"),
            (StorageKeys::manifest(), "v1/manifest.json"),
            (
                StorageKeys::challenge(&token),
                "v1/challenges/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
            ),
        ];
        for (key, want) in cases {
            assert_eq!(key.as_str(), want);
        }
        let account = StorageKeys::account("https://ca/dir", "a@b.c");
        assert!(account.as_str().starts_with("v1/accounts/"));
        assert_eq!(
            account.as_str().len(),
            "v1/accounts/".len() + 64 + 1 + 64 + 5
        );
        assert_ne!(account, StorageKeys::account("https://ca/dir", "x@b.c"));
    }

    #[test]
    fn reads_hosts_back() {
        let h = host("a.example.com");
        assert_eq!(
            StorageKeys::host_of_cert(&StorageKeys::cert(&h)),
            Some(h.clone())
        );
        assert_eq!(
            StorageKeys::host_of_request(&StorageKeys::request(&h)),
            Some(h.clone())
        );
        assert_eq!(StorageKeys::host_of_cert(&StorageKeys::renewal(&h)), None);
        assert_eq!(StorageKeys::host_of_cert(&StorageKeys::manifest()), None);
        assert!(StorageKey::from_listing("v1/../x").is_none());
        assert!(StorageKey::from_listing("other/x").is_none());
    }
}
