//! Lambda `renew-all`: the scheduled (EventBridge) renewal run, also invoked by `PATCH /acme`.

use std::time::SystemTime;

use certbucket_core::Renewer;
use certbucket_functions::{Settings, handle_renew_all_event, init_logging};
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
    let api = Args::parse().settings.admin_api().await?;
    let renewer = &Renewer::new(api.issuer().clone());
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            // Stop starting new work before the invocation's deadline.
            let left = event
                .context
                .deadline()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let deadline = tokio::time::Instant::now() + left;
            handle_renew_all_event(renewer, &event.payload, Some(deadline)).await
        },
    ))
    .await
}
