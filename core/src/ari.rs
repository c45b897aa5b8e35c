//! ACME Renewal Information (RFC 9773) and rate-limit backoff: when the CA, not a fixed
//! threshold, says when to renew or when to try again.
//!
//! A CA with ARI suggests a renewal window per certificate; renew-all renews once the
//! current time passes a point inside that window, spread by the certificate's serial so a
//! fleet's renewals do not all land at the window's start, and names the certificate it
//! replaces in the new order. A CA that answers `rateLimited` gets left alone until the time
//! its message names (Let's Encrypt writes `retry after 2025-01-22 21:22:07 UTC`), or an hour.

use time::{Duration, OffsetDateTime, PrimitiveDateTime, macros::format_description};

use crate::error::Error;

/// The CA's suggested renewal window for one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalWindow {
    /// The window opens.
    pub start: OffsetDateTime,
    /// The window closes; renewing after it risks the certificate being revoked or expired.
    pub end: OffsetDateTime,
}

impl RenewalWindow {
    /// The moment inside the window this certificate renews at: `start` plus a fraction of
    /// the window's length taken from the serial number (stable across runs).
    pub fn renew_at(&self, serial_hex: &str) -> OffsetDateTime {
        let length = self.end - self.start;
        if length <= Duration::ZERO {
            return self.start;
        }
        let spread = serial_hex
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        self.start + length * (f64::from(spread % 1000) / 1000.0)
    }

    /// Whether to renew at `now`.
    pub fn is_due(&self, serial_hex: &str, now: OffsetDateTime) -> bool {
        now >= self.renew_at(serial_hex)
    }
}

const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";

/// How long to leave a host alone after a rate-limited failure when the CA names no time.
pub const RATE_LIMIT_DEFAULT_BACKOFF: Duration = Duration::hours(1);

/// When `error` is the CA's `rateLimited` problem: the time it says to retry after, or `now`
/// plus an hour when it names none.
pub fn rate_limited_until(error: &Error, now: OffsetDateTime) -> Option<OffsetDateTime> {
    let Error::Acme { source, .. } = error else {
        return None;
    };
    let instant_acme::Error::Api(problem) = source.downcast_ref::<instant_acme::Error>()? else {
        return None;
    };
    if problem.r#type.as_deref() != Some(RATE_LIMITED) {
        return None;
    }
    let named = problem.detail.as_deref().and_then(retry_after_in);
    Some(
        named
            .filter(|t| *t > now)
            .unwrap_or(now + RATE_LIMIT_DEFAULT_BACKOFF),
    )
}

/// The `retry after YYYY-MM-DD HH:MM:SS UTC` time in a problem's detail, if any.
fn retry_after_in(detail: &str) -> Option<OffsetDateTime> {
    let (_, rest) = detail.split_once("retry after ")?;
    let text = rest.get(..19)?;
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let parsed = PrimitiveDateTime::parse(text, &format).ok()?;
    rest[19..].starts_with(" UTC").then(|| parsed.assume_utc())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn renews_inside_the_window_spread_by_serial() {
        let window = RenewalWindow {
            start: datetime!(2026-03-01 0:00 UTC),
            end: datetime!(2026-03-03 0:00 UTC),
        };
        let serials = ["01", "7f3a", "deadbeef", "0a1b2c3d4e5f"];
        let points: Vec<_> = serials.iter().map(|s| window.renew_at(s)).collect();
        for (serial, at) in serials.iter().zip(&points) {
            assert!(window.start <= *at && *at < window.end, "{serial}: {at}");
            assert_eq!(window.renew_at(serial), *at, "stable for {serial}");
            assert!(!window.is_due(serial, window.start - Duration::seconds(1)));
            assert!(window.is_due(serial, window.end));
        }
        points
            .windows(2)
            .for_each(|p| assert_ne!(p[0], p[1], "spread"));
        // A window already past (the CA wants the certificate replaced now) is due at once.
        let urgent = RenewalWindow {
            start: datetime!(2026-01-01 0:00 UTC),
            end: datetime!(2026-01-01 0:00 UTC),
        };
        assert!(urgent.is_due("01", datetime!(2026-01-01 0:00 UTC)));
    }

    fn acme_error(problem: serde_json::Value) -> Error {
        let problem: instant_acme::Problem =
            serde_json::from_value(problem).unwrap_or_else(|e| panic!("{e}"));
        Error::Acme {
            host: "a.example".to_owned(),
            step: "creating the order",
            source: Box::new(instant_acme::Error::Api(problem)),
        }
    }

    #[test]
    fn rate_limits_back_off_until_the_time_the_ca_names() {
        let now = datetime!(2025-01-22 20:00 UTC);
        let named = acme_error(serde_json::json!({
            "type": RATE_LIMITED,
            "status": 429,
            "detail": "too many certificates (5) already issued for this exact set of \
                       identifiers in the last 168h0m0s, retry after 2025-01-22 21:22:07 UTC: \
                       see https://letsencrypt.org/docs/rate-limits/",
        }));
        assert_eq!(
            rate_limited_until(&named, now),
            Some(datetime!(2025-01-22 21:22:07 UTC))
        );
        let unnamed = acme_error(serde_json::json!({"type": RATE_LIMITED, "detail": "slow down"}));
        assert_eq!(
            rate_limited_until(&unnamed, now),
            Some(now + Duration::hours(1))
        );
        let other = acme_error(serde_json::json!({
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "retry after 2025-01-22 21:22:07 UTC",
        }));
        assert_eq!(rate_limited_until(&other, now), None);
    }
}
