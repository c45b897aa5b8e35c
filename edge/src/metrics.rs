//! `Metrics`: the edge's counters, shared by its services and written out in the Prometheus text
//! format by the admin listener.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use http::StatusCode;

/// How a TLS handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// With a certificate from the store.
    Known,
    /// With the default certificate.
    Default,
    /// Not at all: garbage, a timeout, or a client that gave up.
    Failed,
}

/// What an http-01 challenge request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// The key authorization was in the store.
    Found,
    /// A well-formed token the store has nothing for.
    Missing,
    /// A token that could not be one.
    Invalid,
}

/// Why a store read gave nothing to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreError {
    /// The store did not answer, or answered with an error.
    Unreachable,
    /// The object was there but is not usable: unparsable, for another host, a key that does
    /// not match the certificate, expired.
    Unusable,
}

/// What the certificate cache holds at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CacheSummary {
    /// Certificates held, fresh or due for a re-read.
    pub(crate) certificates: u64,
    /// The earliest notAfter among them, Unix seconds.
    pub(crate) earliest_not_after: Option<i64>,
}

/// Counters of the edge, all monotonic.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    handshakes: [AtomicU64; 3],
    store_errors: [AtomicU64; 2],
    proxy_responses: [AtomicU64; 4],
    challenges: [AtomicU64; 3],
    requests_written: AtomicU64,
    manifest_polls: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// An SNI answered from the cache (a certificate or a known absence).
    pub(crate) fn cache_hit(&self) {
        bump(&self.cache_hits);
    }

    /// An SNI that needed a store read.
    pub(crate) fn cache_miss(&self) {
        bump(&self.cache_misses);
    }

    /// A store read that failed or brought garbage (not a missing object).
    pub(crate) fn store_error(&self, cause: StoreError) {
        bump(&self.store_errors[cause as usize]);
    }

    pub(crate) fn handshake(&self, outcome: Handshake) {
        bump(&self.handshakes[outcome as usize]);
    }

    pub(crate) fn challenge(&self, outcome: Challenge) {
        bump(&self.challenges[outcome as usize]);
    }

    /// A response sent back for a proxied request; informational ones are not counted.
    pub(crate) fn proxy_response(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100);
        if let Some(counter) = class
            .checked_sub(2)
            .and_then(|i| self.proxy_responses.get(i))
        {
            bump(counter);
        }
    }

    /// One conditional read of the manifest.
    pub(crate) fn manifest_poll(&self) {
        bump(&self.manifest_polls);
    }

    /// Manifest polls so far.
    #[cfg(test)]
    pub(crate) fn manifest_polls(&self) -> u64 {
        self.manifest_polls.load(Ordering::Relaxed)
    }

    /// An on-demand request object written to the store.
    pub(crate) fn request_written(&self) {
        bump(&self.requests_written);
    }

    /// Everything in the Prometheus text exposition format, `now` in Unix seconds.
    pub(crate) fn render(&self, cache: CacheSummary, now: i64) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        family(
            "certbucket_edge_certificates_cached",
            "gauge",
            "Certificates held in memory.",
            &[("", cache.certificates)],
        );
        family(
            "certbucket_edge_cert_cache_hits_total",
            "counter",
            "SNI lookups answered from memory.",
            &[("", get(&self.cache_hits))],
        );
        family(
            "certbucket_edge_cert_cache_misses_total",
            "counter",
            "SNI lookups that read the store.",
            &[("", get(&self.cache_misses))],
        );
        let [known, default, failed] = &self.handshakes;
        family(
            "certbucket_edge_handshakes_total",
            "counter",
            "TLS handshakes by outcome.",
            &[
                ("{outcome=\"known\"}", get(known)),
                ("{outcome=\"default\"}", get(default)),
                ("{outcome=\"failed\"}", get(failed)),
            ],
        );
        family(
            "certbucket_edge_manifest_polls_total",
            "counter",
            "Conditional reads of the manifest.",
            &[("", get(&self.manifest_polls))],
        );
        family(
            "certbucket_edge_requests_written_total",
            "counter",
            "On-demand certificate requests written to the store.",
            &[("", get(&self.requests_written))],
        );
        let [unreachable, unusable] = &self.store_errors;
        family(
            "certbucket_edge_store_errors_total",
            "counter",
            "Store reads that failed, by cause: no answer, or an object that is not usable.",
            &[
                ("{cause=\"unreachable\"}", get(unreachable)),
                ("{cause=\"unusable\"}", get(unusable)),
            ],
        );
        let [c2, c3, c4, c5] = &self.proxy_responses;
        family(
            "certbucket_edge_proxy_responses_total",
            "counter",
            "Responses to proxied requests by status class.",
            &[
                ("{class=\"2xx\"}", get(c2)),
                ("{class=\"3xx\"}", get(c3)),
                ("{class=\"4xx\"}", get(c4)),
                ("{class=\"5xx\"}", get(c5)),
            ],
        );
        let [found, missing, invalid] = &self.challenges;
        family(
            "certbucket_edge_challenge_requests_total",
            "counter",
            "http-01 challenge requests by outcome.",
            &[
                ("{outcome=\"found\"}", get(found)),
                ("{outcome=\"missing\"}", get(missing)),
                ("{outcome=\"invalid\"}", get(invalid)),
            ],
        );
        // With no certificate cached there is no earliest expiry: the sample is left out.
        let name = "certbucket_edge_seconds_until_earliest_expiry";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds until the first cached certificate expires.\n# TYPE {name} gauge"
        );
        if let Some(not_after) = cache.earliest_not_after {
            let _ = writeln!(out, "{name} {}", not_after.saturating_sub(now));
        }
        out
    }
}

/// The `certbucket_edge_store_up` gauge: 1 while the store answers, 0 during an outage.
pub(crate) fn render_store_up(up: bool) -> String {
    let name = "certbucket_edge_store_up";
    format!(
        "# HELP {name} Whether the last store read succeeded.\n# TYPE {name} gauge\n{name} {}\n",
        u8::from(up)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_its_labels() {
        let metrics = Metrics::default();
        metrics.handshake(Handshake::Default);
        metrics.proxy_response(StatusCode::BAD_GATEWAY);
        metrics.proxy_response(StatusCode::CONTINUE);
        metrics.challenge(Challenge::Invalid);
        metrics.store_error(StoreError::Unusable);
        let text = metrics.render(
            CacheSummary {
                certificates: 2,
                earliest_not_after: Some(1_000),
            },
            400,
        );
        for line in [
            "certbucket_edge_certificates_cached 2",
            "certbucket_edge_handshakes_total{outcome=\"default\"} 1",
            "certbucket_edge_handshakes_total{outcome=\"known\"} 0",
            "certbucket_edge_proxy_responses_total{class=\"5xx\"} 1",
            "certbucket_edge_proxy_responses_total{class=\"2xx\"} 0",
            "certbucket_edge_challenge_requests_total{outcome=\"invalid\"} 1",
            "certbucket_edge_seconds_until_earliest_expiry 600",
            "# TYPE certbucket_edge_store_errors_total counter",
            "certbucket_edge_store_errors_total{cause=\"unusable\"} 1",
            "certbucket_edge_store_errors_total{cause=\"unreachable\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        let empty = Metrics::default().render(CacheSummary::default(), 0);
        assert!(
            !empty
                .lines()
                .any(|l| l.starts_with("certbucket_edge_seconds_until_earliest_expiry"))
        );
    }
}
