//! `UpstreamMap`: which upstream a request goes to, by its host, besides the default upstream —
//! nginx's `server_name` choice: an exact name first, then the longest `*.suffix`, then the
//! longest `prefix.*`, else the default.

use std::{collections::HashMap, fmt, str::FromStr};

use certbucket_core::{DomainPattern, Host};
use http::Uri;

/// One `HOST=URL` entry of `--upstream-map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRoute {
    /// The names it applies to: `www.example.com`, `*.example.com` or `example.*`.
    pub pattern: DomainPattern,
    /// Where their requests go: `http://HOST[:PORT]`.
    pub upstream: Uri,
}

impl FromStr for UpstreamRoute {
    type Err = String;

    /// Parses `HOST=URL`, e.g. `api.example.com=http://10.0.0.5:8080`.
    fn from_str(entry: &str) -> Result<Self, String> {
        let (host, url) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry:?}: expected HOST=URL"))?;
        let pattern = DomainPattern::parse(host.trim())
            .map_err(|e| format!("{entry:?}: invalid host {host:?}: {e}"))?;
        let upstream: Uri = url
            .trim()
            .parse()
            .map_err(|e| format!("{entry:?}: invalid URL {url:?}: {e}"))?;
        Ok(Self { pattern, upstream })
    }
}

impl UpstreamRoute {
    /// The routes of an upstream map file: one `HOST=URL` (or `HOST URL`) per line; blank lines
    /// and `#` comments are skipped. An error names the line.
    pub fn parse_file(text: &str) -> Result<Vec<Self>, String> {
        let mut routes = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line
                .split_once('#')
                .map_or(line, |(before, _)| before)
                .trim();
            if line.is_empty() {
                continue;
            }
            let entry = match line.split_once(char::is_whitespace) {
                Some((host, url)) if !host.contains('=') => format!("{host}={}", url.trim()),
                _ => line.to_owned(),
            };
            routes.push(
                entry
                    .parse()
                    .map_err(|e| format!("line {}: {e}", index + 1))?,
            );
        }
        Ok(routes)
    }
}

impl fmt::Display for UpstreamRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.pattern, self.upstream)
    }
}

/// Routes by host to values of type `T` (an upstream's address), with no default of its own.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamMap<T> {
    exact: HashMap<Host, T>,
    /// `*.suffix` and `prefix.*` entries, most specific first.
    patterns: Vec<(DomainPattern, T)>,
}

impl<T> Default for UpstreamMap<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            patterns: Vec::new(),
        }
    }
}

impl<T> UpstreamMap<T> {
    /// A map of `routes`; a pattern given twice is an error naming it.
    pub(crate) fn new(
        routes: impl IntoIterator<Item = (DomainPattern, T)>,
    ) -> Result<Self, String> {
        let mut map = Self::default();
        for (pattern, value) in routes {
            let duplicate = match pattern {
                DomainPattern::Exact(host) => {
                    let name = host.to_string();
                    map.exact.insert(host, value).is_some().then_some(name)
                }
                other => {
                    let name = other.to_string();
                    if map.patterns.iter().any(|(p, _)| *p == other) {
                        Some(name)
                    } else {
                        map.patterns.push((other, value));
                        None
                    }
                }
            };
            if let Some(name) = duplicate {
                return Err(format!("{name} is mapped twice"));
            }
        }
        // Leading wildcards before trailing ones, longer (more specific) before shorter.
        map.patterns.sort_by_key(|(pattern, _)| match pattern {
            DomainPattern::AnySubdomainOf(suffix) => (0, usize::MAX - suffix.len()),
            DomainPattern::AnyTopLevelOf(prefix) => (1, usize::MAX - prefix.len()),
            DomainPattern::Exact(_) => (2, 0),
        });
        Ok(map)
    }

    /// Whether the map has no entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.patterns.is_empty()
    }

    /// The value for a request's host (a `Host` header or `:authority`, with or without a port);
    /// `None` for hosts the map does not name, and for anything that is not a valid host.
    pub(crate) fn route(&self, authority: &str) -> Option<&T> {
        if self.is_empty() {
            return None;
        }
        let host = Host::parse(strip_port(authority)).ok()?;
        self.exact.get(&host).or_else(|| {
            self.patterns
                .iter()
                .find(|(pattern, _)| pattern.matches(&host))
                .map(|(_, value)| value)
        })
    }
}

/// `host:port` -> `host`; `[v6]:port` and bare names are returned without the port too.
fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[&str]) -> UpstreamMap<String> {
        UpstreamMap::new(entries.iter().map(|e| {
            let route: UpstreamRoute = e.parse().unwrap_or_else(|e| panic!("{e}"));
            (route.pattern, route.upstream.to_string())
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn parses_entries() {
        let route: UpstreamRoute = " API.Example.com = http://10.0.0.5:8080 "
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(route.to_string(), "api.example.com=http://10.0.0.5:8080/");
        for bad in [
            "api.example.com",
            "=http://a:1",
            "a..b=http://a:1",
            "*.*.example.com=http://a:1",
            "api.example.com=not a url",
        ] {
            assert!(bad.parse::<UpstreamRoute>().is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_a_map_file() {
        let text = "# host upstream\n\napi.example.com http://api:9000  # the API\n*.shop.example.com=http://shop:9000\n";
        let routes = UpstreamRoute::parse_file(text).unwrap_or_else(|e| panic!("{e}"));
        let text: Vec<String> = routes.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "api.example.com=http://api:9000/",
                "*.shop.example.com=http://shop:9000/"
            ]
        );
        let error = UpstreamRoute::parse_file("ok.example.com http://a:1\nbad..host http://a:1\n")
            .err()
            .unwrap_or_default();
        assert!(error.starts_with("line 2: "), "{error}");
    }

    #[test]
    fn routes_exact_names_then_the_most_specific_wildcard() {
        let map = map(&[
            "www.example.com=http://www:1",
            "*.example.com=http://any:1",
            "*.api.example.com=http://api:1",
            "example.*=http://tld:1",
        ]);
        let cases = [
            ("www.example.com", Some("http://www:1/")),
            ("WWW.example.com:443", Some("http://www:1/")),
            ("shop.example.com", Some("http://any:1/")),
            ("v1.api.example.com", Some("http://api:1/")),
            ("api.example.com", Some("http://any:1/")),
            ("example.org", Some("http://tld:1/")),
            ("example.com", Some("http://tld:1/")),
            ("other.org", None),
            ("", None),
            ("bad host", None),
            ("[::1]:443", None),
        ];
        for (authority, want) in cases {
            assert_eq!(
                map.route(authority).map(String::as_str),
                want,
                "{authority}"
            );
        }
    }

    #[test]
    fn refuses_a_host_mapped_twice() {
        for entries in [
            ["a.example.com=http://a:1", "A.example.com=http://b:1"],
            ["*.example.com=http://a:1", "*.example.com=http://b:1"],
        ] {
            let routes = entries.iter().map(|e| {
                let route: UpstreamRoute = e.parse().unwrap_or_else(|e| panic!("{e}"));
                (route.pattern, ())
            });
            assert!(UpstreamMap::new(routes).is_err(), "{entries:?}");
        }
    }
}
