//! certbucket's core: everything the Lambda functions, the CLI and the edge share.
//!
//! # The model
//!
//! All state lives in one bucket ([`Storage`]), under keys that only [`StorageKeys`] builds.
//! Nothing else is stateful: a Lambda function or the CLI loads the [`Config`], opens the
//! store and runs one flow; an edge reads certificates and challenges from the same store.
//!
//! Issuing for a host ([`Issuer`]): take the host's [`Lease`] (a conditional create in the
//! store), load or create the ACME account ([`AcmeAccounts`]), order, publish each http-01 key
//! authorization under `challenges/` for the edges to answer, wait for the CA, finalize with a
//! fresh key, and store a [`CertificateRecord`] under `certs/`. Listing ([`CertificateInfo`])
//! reads those records back in the shape of Kong's admin API, which [`AdminApi`] serves as a
//! plain `http::Request -> http::Response` router, the same in Lambda and in a local server.
//!
//! Every write that can race is conditional (`If-None-Match: *` to create, `If-Match` to
//! replace), so any number of functions and edges can share one bucket without a database.
//!
//! # Glossary
//!
//! - [`Host`]: a validated, normalized host name; the only way a name reaches a key or a lookup.
//! - [`DomainPolicy`]: `domains`, `allow_any_domain`, `enable_ipv4_common_name` as one check.
//! - [`ChallengeToken`]: an http-01 token, checked to be base64url before it reaches the store.
//! - [`Storage`]: the bucket; [`S3Storage`] and [`LocalDirStorage`] implement it.
//! - [`StoreUrl`]: where the bucket is (`s3://...` or `file://...`).
//! - [`StorageKeys`]: the object layout, built in one place.
//! - [`Lease`]: a host's lock, with an expiry, taken by conditional writes.
//! - [`CertificateRecord`]: the stored chain, key and metadata of one host.
//! - [`LeafCertificate`]: the parsed fields of a chain's first certificate.
//! - [`CertificateInfo`]: one entry of the listing, with Kong's field names.
//! - [`AcmeAccounts`]: loads the stored ACME account or creates and stores one.
//! - [`Issuer`]: runs one issuance for one host, end to end.
//! - [`AdminApi`]: the admin routes (`/acme`, `/acme/certificates`).
//! - [`RenewalPolicy`]: when a certificate is due, from `renew_threshold_days` and its lifetime.
//! - [`RenewalRecord`]: a host's last attempts and its failure backoff.
//! - [`Renewer`]: one renew-all run; [`RenewalReport`] says what it did, host by host.
//! - [`Manifest`]: host -> certificate version, one object for edges to poll.
//! - [`Secret`]: key material that never prints.

mod account;
mod admin;
mod ari;
pub mod aws;
mod challenge;
mod config;
mod domains;
mod error;
mod host;
mod issuer;
mod lease;
mod listing;
mod manifest;
mod record;
mod renewal;
mod renewal_record;
mod renewer;
mod retry;
mod secret;
mod selfcheck;
pub mod storage;
pub mod tls;

pub use self::{
    account::{AcmeAccounts, AcmeHttpFactory},
    admin::{AdminApi, MAX_BODY_BYTES, RenewalTrigger, TriggerFuture, message as json_message},
    ari::{RATE_LIMIT_DEFAULT_BACKOFF, RenewalWindow, rate_limited_until},
    challenge::ChallengeToken,
    config::{CertType, Config, EabCredentials, LETS_ENCRYPT},
    domains::{DomainPattern, DomainPolicy},
    error::{BoxError, Error, Result},
    host::{Host, HostError},
    issuer::{Issuer, IssuerOptions},
    lease::{Lease, LeaseAttempt},
    listing::CertificateInfo,
    manifest::Manifest,
    record::{CertificateRecord, LeafCertificate},
    renewal::RenewalPolicy,
    renewal_record::RenewalRecord,
    renewer::{RenewalFailure, RenewalReport, Renewer, RequestOutcome},
    secret::Secret,
    selfcheck::ConnectTo,
    storage::{
        DEFAULT_STORE, ETag, Freshness, LocalDirStorage, S3Storage, Storage, StorageKey,
        StorageKeys, StoreUrl, StoredObject,
    },
};
