//! `ChallengeToken`: an http-01 token, checked before it ever reaches the store.

use std::fmt;

/// ACME tokens carry at least 128 bits as base64url; anything longer than this is not a token.
const MAX_TOKEN_LEN: usize = 128;

/// A validated http-01 token: 16 to 128 characters of base64url (no padding).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ChallengeToken(String);

impl ChallengeToken {
    /// Accepts only base64url characters, so a token can never escape its object key.
    pub fn parse(input: &str) -> Option<Self> {
        let ok_len = (16..=MAX_TOKEN_LEN).contains(&input.len());
        let ok_chars = input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        (ok_len && ok_chars).then(|| Self(input.to_owned()))
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChallengeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChallengeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::ChallengeToken;

    #[test]
    fn only_base64url_tokens() {
        let good = [
            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0",
            "abcdefghijklmnop",
            "A-_0123456789abc",
        ];
        for token in good {
            assert!(ChallengeToken::parse(token).is_some(), "{token}");
        }
        let too_long = "a".repeat(129);
        let bad = [
            "",
            "short",
            "../../../etc/passwd",
            "abc.def.ghi.jkl.mno",
            "abcdefghijklmnop=",
            "abcdefghijklmno%2F",
            &too_long,
        ];
        for token in bad {
            assert!(ChallengeToken::parse(token).is_none(), "{token}");
        }
    }
}
