//! `EdgeError`: the one error type of the edge crate.

use std::{io, net::SocketAddr};

/// Everything that can stop the edge from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeError {
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// Which listener: `http`, `https` or `admin`.
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// The upstream URL cannot be proxied to.
    #[error("invalid upstream {uri}: {message}")]
    Upstream {
        /// The URL given.
        uri: String,
        /// What is wrong with it.
        message: &'static str,
    },
    /// The host-to-upstream map is inconsistent.
    #[error("invalid upstream map: {message}")]
    UpstreamMap {
        /// What is wrong with it.
        message: String,
    },
    /// The default certificate, served for unknown names, could not be made.
    #[error("cannot make the default certificate: {message}")]
    DefaultCertificate {
        /// What failed.
        message: String,
    },
    /// A TLS server configuration could not be built.
    #[error("cannot configure TLS for {host}: {source}")]
    Tls {
        /// The host (or `default`) concerned.
        host: String,
        /// The underlying failure.
        #[source]
        source: rustls::Error,
    },
}
