//! `EdgeLimits`: how long and how much a client may take before the edge lets go of it.

use std::time::Duration;

/// Timeouts and bounds of the public listeners; [`Default`] holds values an nginx or Caddy
/// operator would expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EdgeLimits {
    /// How long a client may take to send a request's headers, from its first byte (or from the
    /// connection's start), and to finish its TLS handshake; a slower client is disconnected
    /// (slowloris).
    pub header_read_timeout: Duration,
    /// The largest request head (request line and headers) accepted; HTTP/1.1 gets `431`.
    pub max_header_bytes: usize,
    /// How long a keep-alive connection may sit with no request and nothing read before it is
    /// closed.
    pub idle_timeout: Duration,
    /// How many connections the HTTP and TLS listeners hold at once, together; past it new
    /// connections wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long in-flight requests may run on once shutdown starts.
    pub grace_period: Duration,
    /// How often `v1/manifest.json` is polled for new and renewed certificates.
    pub manifest_poll: Duration,
    /// How many names the certificate cache holds (certificates and known absences); past it,
    /// absences go first, then the least recently used certificates.
    pub cache_size: usize,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            grace_period: Duration::from_secs(10),
            manifest_poll: Duration::from_secs(5),
            cache_size: crate::cache::DEFAULT_CAPACITY,
        }
    }
}
