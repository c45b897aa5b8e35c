//! The one error type of the core crate.

use std::error::Error as StdError;

use crate::host::Host;

/// Boxed source error, for the variants that wrap foreign errors.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong in certbucket's core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A host name that cannot be used (see [`crate::HostError`]).
    #[error("invalid host {input:?}: {source}")]
    InvalidHost {
        /// What was given.
        input: String,
        /// Why it was refused.
        #[source]
        source: crate::host::HostError,
    },
    /// The config document is wrong; `field` names where.
    #[error("invalid config: {field}: {message}")]
    Config {
        /// The field path, e.g. `cert_type` or `storage_config.s3.bucket`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A store URL that is neither `s3://` nor `file://`.
    #[error("invalid store {url:?}: {message}")]
    StoreUrl {
        /// What was given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// The store failed to read or write `key`.
    #[error("store error on {key}: {source}")]
    Storage {
        /// The object key involved.
        key: String,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// An object in the store could not be understood.
    #[error("corrupt object {key}: {message}")]
    Corrupt {
        /// The object key involved.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The ACME CA refused or failed a step for `host`.
    #[error("ACME error for {host} while {step}: {source}")]
    Acme {
        /// The host being issued (or `-` for account-level steps).
        host: String,
        /// The step of the flow, e.g. `creating the order`.
        step: &'static str,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// Issuance is refused before any ACME call, e.g. `tos_accepted` is false.
    #[error("cannot issue for {host}: {message}")]
    Refused {
        /// The host concerned.
        host: Host,
        /// Why.
        message: String,
    },
    /// Another issuer holds the host's lock and did not finish in time.
    #[error("issuance for {host} is already in progress elsewhere")]
    InProgress {
        /// The host concerned.
        host: Host,
    },
    /// The last attempt for `host` failed and `fail_backoff_minutes` has not passed yet.
    #[error("the last issuance for {host} failed; no new attempt before {} (fail_backoff_minutes)", format_unix(*until))]
    BackingOff {
        /// The host concerned.
        host: Host,
        /// When a new attempt is allowed, Unix seconds.
        until: i64,
    },
    /// Key or certificate material could not be built or parsed.
    #[error("certificate material for {host}: {message}")]
    Crypto {
        /// The host concerned.
        host: String,
        /// What failed.
        message: String,
    },
    /// A TLS or HTTP client could not be set up.
    #[error("{what}: {source}")]
    Setup {
        /// What was being set up.
        what: String,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
}

impl Error {
    pub(crate) fn storage(key: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Storage {
            key: key.into(),
            source: source.into(),
        }
    }

    pub(crate) fn corrupt(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Corrupt {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            message: message.into(),
        }
    }
}

fn format_unix(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| at.to_string())
}

/// Result with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
