//! certbucket's edge: answers http-01 challenges from the store on port 80 (and redirects the
//! rest to https), terminates TLS on port 443 with the certificate the store holds for the
//! ClientHello's SNI, and reverse-proxies every request to one plain-HTTP upstream.
//!
//! The edge reads the store, and writes only on-demand requests. Names the store has no
//! certificate for get a self-signed default certificate (`certbucket.invalid`), and those the
//! allow-list takes get one `requests/{host}` object for the functions to issue; certificates
//! are cached in memory and re-read every few minutes, and a failed re-read keeps the last
//! good one.
//!
//! Nouns: [`Edge`] (the listeners and their shutdown), `Http01Service` (port-80 answers),
//! `CertResolver` (SNI to TLS configuration, the only rustls-specific code), `CertCache`
//! (positive and negative cache, least recently used out first), `Proxy` (the upstream client), `UpstreamMap` (host to upstream, besides the default), [`EdgeLimits`] (timeouts and
//! bounds of the public listeners), `ConnectionWatch` (idle and slow-header detection per
//! connection), `Metrics` (counters), `OnDemandRequests` (one request object per unknown
//! allowed name), `StoreHealth` (outage detection, logging and back-off shared by store
//! readers), `ManifestPoller` (new and renewed certificates within one poll),
//! [`AdminServer`] (`/healthz`, `/readyz`, `/metrics`).

mod admin;
mod cache;
mod challenge;
mod error;
mod limits;
mod manifest_poller;
mod metrics;
mod ondemand;
mod proxy;
mod resolver;
mod server;
mod store_health;
#[cfg(test)]
mod testing;
mod upstream_map;
mod watch;

pub use self::{
    admin::AdminServer,
    error::EdgeError,
    limits::EdgeLimits,
    ondemand::OnDemand,
    server::{Edge, EdgeConfig},
    upstream_map::UpstreamRoute,
};
