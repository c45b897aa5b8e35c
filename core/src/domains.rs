//! `DomainPolicy`: which hosts may get a certificate, from `domains`, `allow_any_domain` and
//! `enable_ipv4_common_name`, matched the way the reference plugin does.

use std::fmt;

use crate::host::Host;

/// One entry of `domains`: an exact host, `*.suffix` (any depth, never the apex) or `prefix.*`.
#[derive(Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// Matches exactly this host.
    Exact(Host),
    /// `*.example.com`: stored as `.example.com`, matched as a literal suffix.
    AnySubdomainOf(String),
    /// `example.*`: stored as `example.`, matched as a literal prefix.
    AnyTopLevelOf(String),
}

impl DomainPattern {
    /// Parses a `domains` entry; at most one `*`, only as the leftmost or rightmost label.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let stars = entry.matches('*').count();
        if stars == 0 {
            return Host::parse(entry)
                .map(Self::Exact)
                .map_err(|e| e.to_string());
        }
        if stars > 1 {
            return Err("at most one '*' is allowed".to_owned());
        }
        if let Some(rest) = entry.strip_prefix("*.") {
            let base = Host::parse(rest).map_err(|e| e.to_string())?;
            return Ok(Self::AnySubdomainOf(format!(".{base}")));
        }
        if let Some(rest) = entry.strip_suffix(".*") {
            let base = Host::parse(rest).map_err(|e| e.to_string())?;
            return Ok(Self::AnyTopLevelOf(format!("{base}.")));
        }
        Err("'*' is only allowed as the leftmost or rightmost label".to_owned())
    }

    /// Whether `host` matches this entry.
    pub fn matches(&self, host: &Host) -> bool {
        let name = host.as_str();
        match self {
            Self::Exact(exact) => exact == host,
            Self::AnySubdomainOf(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
            Self::AnyTopLevelOf(prefix) => name.len() > prefix.len() && name.starts_with(prefix),
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(host) => write!(f, "{host}"),
            Self::AnySubdomainOf(suffix) => write!(f, "*{suffix}"),
            Self::AnyTopLevelOf(prefix) => write!(f, "{prefix}*"),
        }
    }
}

impl fmt::Debug for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The allow-list for certificates requested from the proxy side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainPolicy {
    /// The `domains` entries.
    pub patterns: Vec<DomainPattern>,
    /// `allow_any_domain`: every valid host is allowed.
    pub allow_any_domain: bool,
    /// `enable_ipv4_common_name`: whether IPv4 literals may be allowed at all.
    pub enable_ipv4_common_name: bool,
}

impl DomainPolicy {
    /// Whether `host` may get a certificate without an admin asking for it.
    pub fn allows(&self, host: &Host) -> bool {
        if host.is_ipv4() && !self.enable_ipv4_common_name {
            return false;
        }
        self.allow_any_domain || self.patterns.iter().any(|p| p.matches(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> DomainPolicy {
        DomainPolicy {
            patterns: entries
                .iter()
                .map(|e| DomainPattern::parse(e).unwrap_or_else(|m| panic!("{e}: {m}")))
                .collect(),
            allow_any_domain: false,
            enable_ipv4_common_name: true,
        }
    }

    #[test]
    fn matches_like_the_reference() {
        let p = policy(&["example.com", "*.wild.test", "cdn.*"]);
        let cases = [
            ("example.com", true),
            ("EXAMPLE.com", true),
            ("www.example.com", false),
            ("a.wild.test", true),
            ("a.b.c.wild.test", true),
            ("wild.test", false),
            ("xwild.test", false),
            ("a.xwild.test", false),
            ("cdn.net", true),
            ("cdn.co.uk", true),
            ("cdnx.net", false),
            ("other.org", false),
        ];
        for (host, want) in cases {
            let host = Host::parse(host).unwrap_or_else(|e| panic!("{host}: {e}"));
            assert_eq!(p.allows(&host), want, "{host}");
        }
    }

    #[test]
    fn ipv4_and_allow_any() {
        let ip = Host::parse("192.0.2.7").unwrap_or_else(|e| panic!("{e}"));
        let name = Host::parse("anything.example").unwrap_or_else(|e| panic!("{e}"));
        let mut p = policy(&["192.0.2.7"]);
        assert!(p.allows(&ip));
        p.enable_ipv4_common_name = false;
        assert!(!p.allows(&ip));
        p.allow_any_domain = true;
        assert!(!p.allows(&ip), "IPv4 refusal comes before allow_any_domain");
        assert!(p.allows(&name));
    }

    #[test]
    fn refuses_bad_patterns() {
        for bad in [
            "*.*.example.com",
            "a.*.example.com",
            "*example.com",
            "*.",
            "a..b",
        ] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
