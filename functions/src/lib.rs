//! certbucket's functions: the start-up that the Lambda binaries (`apply`, `list`, `renew-all`) and the
//! `certbucket` operator CLI share, and the adapters from Lambda and hyper to [`AdminApi`].
//!
//! Every entry point builds one [`AdminApi`] from [`Settings`] and answers requests with it,
//! so `certbucket serve-admin`, the Lambda functions and `certbucket apply`/`list` give the
//! same answers to the same requests.

mod events;
mod invoke;
mod lambda;
mod serve;
mod settings;

pub use self::{
    events::{FunctionError, handle_apply_event, handle_http_event, handle_renew_all_event},
    invoke::{lambda_renewal_trigger, patch_payload},
    lambda::handle_lambda,
    serve::serve_admin,
    settings::Settings,
};
pub use certbucket_core::AdminApi;

/// Sets up logging to stderr; `RUST_LOG` overrides the default `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
