//! The storage conformance suite against S3 (LocalStack), with and without a prefix.

use std::sync::Arc;

use bytes::Bytes;
use certbucket_core::{Storage, StorageKeys, StoreUrl, storage::conformance};
use certbucket_tests::S3Env;

#[tokio::test]
async fn s3_conforms_without_prefix() -> anyhow::Result<()> {
    certbucket_tests::init_tracing();
    let store = S3Env::from_env()?.fresh_store().await?;
    conformance::run(store).await;
    Ok(())
}

#[tokio::test]
async fn s3_conforms_under_a_prefix() -> anyhow::Result<()> {
    certbucket_tests::init_tracing();
    let store = S3Env::from_env()?.fresh_store_with_prefix("team/a").await?;
    conformance::run(store).await;
    Ok(())
}

/// A store opened from an `s3://` URL reaches the same bucket, under its prefix.
#[tokio::test]
async fn store_url_opens_the_same_bucket() -> anyhow::Result<()> {
    certbucket_tests::init_tracing();
    let s3 = S3Env::from_env()?;
    let bucket = s3.fresh_bucket().await?;
    let key = StorageKeys::manifest();

    let plain = StoreUrl::parse(&format!("s3://{bucket}"))?.open().await?;
    let prefixed = StoreUrl::parse(&format!("s3://{bucket}/team/a/"))?
        .open()
        .await?;
    let direct: Arc<dyn Storage> =
        Arc::new(certbucket_core::S3Storage::from_env(bucket.clone(), "team/a".into()).await);

    let etag = prefixed.put(&key, Bytes::from_static(b"via url")).await?;
    let read = direct.get(&key).await?;
    anyhow::ensure!(
        read.as_ref().map(|o| (&o.bytes[..], &o.etag)) == Some((&b"via url"[..], &etag)),
        "the s3:// store and a direct S3Storage see different objects in {bucket}: {read:?}"
    );
    anyhow::ensure!(
        plain.get(&key).await?.is_none(),
        "a prefixed write must not land at the bucket root"
    );
    let listed = prefixed.list(&StorageKeys::everything()).await?;
    anyhow::ensure!(
        listed == [key],
        "the s3:// store lists its own keys: {listed:?}"
    );
    Ok(())
}
