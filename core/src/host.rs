//! `Host`: a DNS name (or IPv4 literal) parsed once, safe to use in object keys and SNI lookups.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};

const MAX_HOST_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A validated host: ASCII (IDNA applied), lowercase, LDH labels, no port, no empty labels.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Host(String);

/// Why a string is not a [`Host`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// Nothing was given.
    #[error("host must not be empty")]
    Empty,
    /// `host:port` was given.
    #[error("port is not allowed in host")]
    Port,
    /// A `/` (a path or URL) was given.
    #[error("a host must not contain '/'")]
    Slash,
    /// `a..b`, a leading or a trailing dot.
    #[error("a host must not have empty labels")]
    EmptyLabel,
    /// Longer than 253 characters once converted to ASCII.
    #[error("a host must be at most {MAX_HOST_LEN} characters")]
    TooLong,
    /// One label longer than 63 characters.
    #[error("each label of a host must be at most {MAX_LABEL_LEN} characters")]
    LabelTooLong,
    /// A character outside letters, digits and `-`, or a label starting or ending with `-`.
    #[error("a host may only hold letters, digits and inner hyphens")]
    Syntax,
    /// IDNA to ASCII conversion failed.
    #[error("not a valid internationalized domain name")]
    Idna,
}

impl Host {
    /// Parses and normalizes `input`: IDNA to ASCII, lowercase, then checks every rule.
    pub fn parse(input: &str) -> Result<Self, HostError> {
        if input.is_empty() {
            return Err(HostError::Empty);
        }
        if input.contains('/') {
            return Err(HostError::Slash);
        }
        if input.contains(':') {
            return Err(HostError::Port);
        }
        if input.split('.').any(str::is_empty) {
            return Err(HostError::EmptyLabel);
        }
        let ascii = if input.is_ascii() {
            input.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii_strict(input).map_err(|_| HostError::Idna)?
        };
        if ascii.len() > MAX_HOST_LEN {
            return Err(HostError::TooLong);
        }
        for label in ascii.split('.') {
            if label.is_empty() {
                return Err(HostError::EmptyLabel);
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(HostError::LabelTooLong);
            }
            let ldh = label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ldh || label.starts_with('-') || label.ends_with('-') {
                return Err(HostError::Syntax);
            }
        }
        Ok(Self(ascii))
    }

    /// The normalized ASCII form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this host is a dotted-quad IPv4 literal.
    pub fn is_ipv4(&self) -> bool {
        self.0.parse::<Ipv4Addr>().is_ok()
    }
}

impl FromStr for Host {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Host {
    type Error = HostError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Host> for String {
    fn from(host: Host) -> Self {
        host.0
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        let cases = [
            ("Example.COM", "example.com"),
            ("a-b.example.com", "a-b.example.com"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example", "xn--bcher-kva.example"),
            ("127.0.0.1", "127.0.0.1"),
            ("localhost", "localhost"),
        ];
        for (input, want) in cases {
            assert_eq!(
                Host::parse(input).map(|h| h.0),
                Ok(want.to_owned()),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_bad_hosts() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_host = vec!["a".repeat(60); 5].join(".");
        let cases: [(&str, HostError); 12] = [
            ("", HostError::Empty),
            ("a..b", HostError::EmptyLabel),
            (".a.b", HostError::EmptyLabel),
            ("a.b.", HostError::EmptyLabel),
            ("x/y", HostError::Slash),
            ("h:80", HostError::Port),
            ("[::1]", HostError::Port),
            (&long_label, HostError::LabelTooLong),
            (&long_host, HostError::TooLong),
            ("a_b.com", HostError::Syntax),
            ("-a.com", HostError::Syntax),
            ("*.example.com", HostError::Syntax),
        ];
        for (input, want) in cases {
            assert_eq!(Host::parse(input), Err(want), "{input}");
        }
        assert_eq!(Host::parse(&"a".repeat(300)), Err(HostError::TooLong));
        assert_eq!(Host::parse("a b.com"), Err(HostError::Syntax));
    }

    #[test]
    fn knows_ipv4_literals() {
        assert!(Host::parse("10.0.0.1").is_ok_and(|h| h.is_ipv4()));
        assert!(!Host::parse("10.0.0.1.example").is_ok_and(|h| h.is_ipv4()));
    }
}
