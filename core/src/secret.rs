//! `Secret`: a private key, HMAC key or credential that must never be printed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Secret text; its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps secret text.
    pub fn new(text: String) -> Self {
        Self(text)
    }

    /// The secret itself; call only to hand it to the code that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn is_never_printed() {
        let secret = Secret::new("-----BEGIN PRIVATE KEY-----\nAAAA\n".to_owned());
        assert!(!format!("{secret:?} {secret}").contains("AAAA"));
    }
}
