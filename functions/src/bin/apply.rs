//! Lambda `apply`: the admin routes through API Gateway (HTTP API), and on-demand requests
//! through S3 events for `requests/`.

use certbucket_functions::{Settings, handle_apply_event, init_logging};
use clap::Parser;
use lambda_http::{LambdaEvent, lambda_runtime};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    settings: Settings,
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    certbucket_core::tls::install_crypto_provider();
    init_logging();
    let api = &Args::parse().settings.admin_api().await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<serde_json::Value>| handle_apply_event(api, event.payload),
    ))
    .await
}
