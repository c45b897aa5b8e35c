//! `RenewalPolicy`: when a stored certificate is due for renewal.
//!
//! Kong renews when fewer than `renew_threshold_days` are left. That rule misfires for
//! short-lived certificates (a 6-day certificate with the default 14 would be renewed on every
//! run), so when the threshold is not smaller than half the lifetime, a third of the lifetime
//! is used instead, and half of it for certificates that live less than 10 days.

use time::{Duration, OffsetDateTime};

/// Decides renewal times from `renew_threshold_days`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalPolicy {
    threshold: Duration,
}

impl RenewalPolicy {
    /// A policy for `renew_threshold_days`.
    pub fn new(renew_threshold_days: f64) -> Self {
        Self {
            threshold: Duration::seconds_f64(renew_threshold_days * 86_400.0),
        }
    }

    /// How long before `not_after` a certificate of this lifetime should be renewed.
    pub fn window(&self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Duration {
        let lifetime = not_after - not_before;
        if self.threshold < lifetime / 2 {
            self.threshold
        } else if lifetime < Duration::days(10) {
            lifetime / 2
        } else {
            lifetime / 3
        }
    }

    /// When renewal becomes due.
    pub fn due_at(&self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> OffsetDateTime {
        not_after - self.window(not_before, not_after)
    }

    /// Whether a certificate valid from `not_before` to `not_after` is due at `now`.
    pub fn is_due(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> bool {
        now >= self.due_at(not_before, not_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_by_lifetime() {
        let start = OffsetDateTime::UNIX_EPOCH;
        let days = Duration::days;
        let hours = Duration::hours;
        // (threshold days, lifetime, expected window)
        let cases = [
            (14.0, days(90), days(14)),      // Let's Encrypt's 90 days: Kong's rule
            (14.0, days(30), days(14)),      // 14 < 15: still Kong's rule
            (14.0, days(28), days(28) / 3),  // 14 >= 14: a third
            (14.0, days(20), days(20) / 3),  // a third
            (14.0, days(6), days(3)),        // short-lived: half
            (14.0, hours(160), hours(80)),   // LE's 6.67-day certificates: half
            (30.0, days(5 * 365), days(30)), // Pebble's 5-year certificates
            (0.0, days(90), days(0)),        // never early
        ];
        for (threshold, lifetime, want) in cases {
            let policy = RenewalPolicy::new(threshold);
            assert_eq!(
                policy.window(start, start + lifetime),
                want,
                "{threshold} {lifetime}"
            );
        }
    }

    #[test]
    fn due_only_inside_the_window() {
        let policy = RenewalPolicy::new(14.0);
        let not_before = OffsetDateTime::UNIX_EPOCH;
        let not_after = not_before + Duration::days(90);
        let due = not_after - Duration::days(14);
        assert!(!policy.is_due(not_before, not_after, due - Duration::seconds(1)));
        assert!(policy.is_due(not_before, not_after, due));
        assert!(policy.is_due(not_before, not_after, not_after + Duration::days(1)));
    }
}
