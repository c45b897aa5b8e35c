//! `retrying!`: repeats one ACME call while the CA's answer is transient.
//!
//! instant-acme retries `badNonce` three times on its own; a CA that rejects nonces often (Pebble
//! with `PEBBLE_WFE_NONCEREJECT`, a busy production CA) or answers 5xx exhausts that. Each call
//! is retried where it failed, so an order is resumed, never started again.

use std::time::Duration;

/// Tries per call, on top of instant-acme's own `badNonce` retries.
pub(crate) const MAX_ATTEMPTS: u32 = 8;

/// Whether another try of the same request may succeed.
pub(crate) fn is_transient(error: &instant_acme::Error) -> bool {
    match error {
        instant_acme::Error::Api(problem) => {
            problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:badNonce")
                || problem.status.is_some_and(|status| status >= 500)
        }
        // Connection-level failures: the request may not have reached the CA.
        instant_acme::Error::Hyper(_) | instant_acme::Error::Other(_) => true,
        _ => false,
    }
}

/// The pause before try `attempt` (1-based): 100 ms doubling, at most 3 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(5)).min(3_000))
}

/// Evaluates `$call` (an `.await`ed ACME call) until it succeeds, fails for good, or has been
/// tried [`MAX_ATTEMPTS`] times; yields `Result<T, instant_acme::Error>`.
macro_rules! retrying {
    ($what:expr, $call:expr) => {{
        let mut attempt = 1;
        loop {
            match $call {
                Err(e) if attempt < $crate::retry::MAX_ATTEMPTS && $crate::retry::is_transient(&e) => {
                    tracing::debug!(step = $what, attempt, error = %e, "transient ACME error; retrying");
                    tokio::time::sleep($crate::retry::backoff(attempt)).await;
                    attempt += 1;
                }
                outcome => break outcome,
            }
        }
    }};
}

pub(crate) use retrying;

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: &str, status: u16) -> instant_acme::Error {
        let json = serde_json::json!({"type": kind, "status": status, "detail": "x"});
        match serde_json::from_value::<instant_acme::Problem>(json) {
            Ok(problem) => instant_acme::Error::Api(problem),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn retries_only_what_may_pass() {
        assert!(is_transient(&problem(
            "urn:ietf:params:acme:error:badNonce",
            400
        )));
        assert!(is_transient(&problem(
            "urn:ietf:params:acme:error:serverInternal",
            500
        )));
        assert!(!is_transient(&problem(
            "urn:ietf:params:acme:error:rateLimited",
            429
        )));
        assert!(!is_transient(&problem(
            "urn:ietf:params:acme:error:unauthorized",
            403
        )));
        assert!(!is_transient(&instant_acme::Error::Str(
            "no certificate URL"
        )));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(30), Duration::from_millis(3_000));
    }
}
