//! `S3Storage`: the store in an S3 bucket (AWS, LocalStack, or any S3-compatible endpoint).
//!
//! Conditional writes use `If-None-Match: *` and `If-Match: ETag`; a 412 (or a 409
//! `ConditionalRequestConflict` from a concurrent conditional write) means this writer lost.

use async_trait::async_trait;
use aws_sdk_s3::{
    Client,
    config::{RequestChecksumCalculation, http::HttpResponse},
    error::{ProvideErrorMetadata, SdkError},
    primitives::ByteStream,
};
use bytes::Bytes;

use super::{ETag, Freshness, Storage, StorageKey, StoredObject};
use crate::error::{Error, Result};

/// A store kept in an S3 bucket, under an optional namespace prefix.
#[derive(Debug, Clone)]
pub struct S3Storage {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Storage {
    /// Builds a client from the standard AWS chain (`AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`,
    /// `AWS_REGION`, credentials); path-style addressing when a custom endpoint is set.
    pub async fn from_env(bucket: String, prefix: String) -> Self {
        let shared = crate::aws::sdk_config().await;
        let custom_endpoint = shared.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some();
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(custom_endpoint)
            // Only checksum when S3 requires it: S3-compatible stores differ on trailers.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        Self::new(Client::from_conf(config), bucket, prefix)
    }

    /// Wraps an existing client.
    pub fn new(client: Client, bucket: String, prefix: String) -> Self {
        Self {
            client,
            bucket,
            prefix,
        }
    }

    /// The underlying client, e.g. to create the bucket in tests.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn object_key(&self, key: &StorageKey) -> String {
        if self.prefix.is_empty() {
            key.as_str().to_owned()
        } else {
            format!("{}/{}", self.prefix, key.as_str())
        }
    }

    fn strip_prefix<'a>(&self, object_key: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(object_key)
        } else {
            object_key
                .strip_prefix(self.prefix.as_str())?
                .strip_prefix('/')
        }
    }

    /// One GET, with `If-None-Match: known` when given (S3 answers 304 when unchanged).
    async fn fetch(&self, key: &StorageKey, known: Option<&ETag>) -> Result<Freshness> {
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .set_if_none_match(known.map(|tag| tag.as_str().to_owned()))
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(err) if known.is_some() && status(&err) == Some(304) => {
                return Ok(Freshness::Unchanged);
            }
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(Freshness::Missing);
            }
            Err(err) if status(&err) == Some(404) => return Ok(Freshness::Missing),
            Err(err) => return Err(Error::storage(key.as_str(), describe(err))),
        };
        let etag = etag_from(key, out.e_tag())?;
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| Error::storage(key.as_str(), e))?
            .into_bytes();
        Ok(Freshness::Changed(StoredObject { bytes, etag }))
    }

    async fn conditional_put(
        &self,
        key: &StorageKey,
        bytes: Bytes,
        condition: Condition<'_>,
    ) -> Result<Option<ETag>> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .body(ByteStream::from(bytes));
        let (request, replacing) = match condition {
            Condition::Absent => (request.if_none_match("*"), false),
            Condition::At(etag) => (request.if_match(etag.as_str()), true),
            Condition::None => (request, false),
        };
        match request.send().await {
            Ok(out) => Ok(Some(etag_from(key, out.e_tag())?)),
            Err(err) if lost_race(&err) => Ok(None),
            // S3 answers 404 to If-Match on a missing object: that too is a lost race.
            Err(err) if replacing && status(&err) == Some(404) => Ok(None),
            Err(err) => Err(Error::storage(key.as_str(), describe(err))),
        }
    }
}

enum Condition<'a> {
    None,
    Absent,
    At(&'a ETag),
}

fn etag_from(key: &StorageKey, etag: Option<&str>) -> Result<ETag> {
    etag.map(ETag::new)
        .ok_or_else(|| Error::corrupt(key.as_str(), "the store sent no ETag"))
}

fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

fn lost_race<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    let code = err.as_service_error().and_then(ProvideErrorMetadata::code);
    matches!(status(err), Some(412 | 409))
        || matches!(
            code,
            Some("PreconditionFailed" | "ConditionalRequestConflict")
        )
}

/// The SDK's `Display` is terse ("service error"); keep the code and message for operators.
fn describe<E>(err: SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = status(&err);
    match err.as_service_error() {
        Some(service) => format!(
            "{} (HTTP {}): {}",
            service.code().unwrap_or("error"),
            status.map_or_else(|| "?".to_owned(), |s| s.to_string()),
            service.message().unwrap_or("no message"),
        ),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

#[async_trait]
impl Storage for S3Storage {
    async fn get(&self, key: &StorageKey) -> Result<Option<StoredObject>> {
        Ok(match self.fetch(key, None).await? {
            Freshness::Changed(object) => Some(object),
            Freshness::Missing | Freshness::Unchanged => None,
        })
    }

    async fn get_if_changed(&self, key: &StorageKey, known: Option<&ETag>) -> Result<Freshness> {
        self.fetch(key, known).await
    }

    async fn put(&self, key: &StorageKey, bytes: Bytes) -> Result<ETag> {
        self.conditional_put(key, bytes, Condition::None)
            .await?
            .ok_or_else(|| Error::storage(key.as_str(), "unconditional write was refused"))
    }

    async fn create(&self, key: &StorageKey, bytes: Bytes) -> Result<Option<ETag>> {
        self.conditional_put(key, bytes, Condition::Absent).await
    }

    async fn replace(
        &self,
        key: &StorageKey,
        bytes: Bytes,
        expected: &ETag,
    ) -> Result<Option<ETag>> {
        self.conditional_put(key, bytes, Condition::At(expected))
            .await
    }

    async fn delete(&self, key: &StorageKey) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .send()
            .await
            .map(drop)
            .map_err(|err| Error::storage(key.as_str(), describe(err)))
    }

    async fn list(&self, prefix: &StorageKey) -> Result<Vec<StorageKey>> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.object_key(prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| Error::storage(prefix.as_str(), describe(err)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key())
                    .filter_map(|k| self.strip_prefix(k))
                    .filter_map(StorageKey::from_listing),
            );
        }
        keys.sort();
        Ok(keys)
    }
}
