//! Lambda `list`: `GET /acme/certificates[/{host}]` through API Gateway.

use certbucket_functions::{Settings, handle_lambda, init_logging};
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    settings: Settings,
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    certbucket_core::tls::install_crypto_provider();
    init_logging();
    let api = Args::parse().settings.admin_api().await?;
    let api = &api;
    lambda_http::run(lambda_http::service_fn(move |event| {
        handle_lambda(api, event)
    }))
    .await
}
