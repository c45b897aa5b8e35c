//! The shared AWS SDK configuration: the standard chain (`AWS_ENDPOINT_URL*`, `AWS_REGION`,
//! credentials), with `us-east-1` when no region is set anywhere.

use aws_config::{BehaviorVersion, SdkConfig, meta::region::RegionProviderChain};

/// Loads the SDK configuration every AWS client of certbucket starts from.
pub async fn sdk_config() -> SdkConfig {
    let region = RegionProviderChain::default_provider().or_else("us-east-1");
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .load()
        .await
}
