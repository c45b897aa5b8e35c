//! `PATCH /acme` in Lambda: the `apply` function starts renew-all by invoking the renew-all
//! function asynchronously (`InvocationType: Event`), so the API answers 202 at once and the
//! renewal runs with renew-all's own timeout, schedule-independent.

use std::sync::Arc;

use aws_sdk_lambda::{error::DisplayErrorContext, primitives::Blob, types::InvocationType};
use certbucket_core::RenewalTrigger;
use serde_json::json;

/// The payload renew-all receives from `PATCH /acme`, shaped like a scheduled event's
/// `source`/`detail-type` so its logs say who asked.
pub fn patch_payload() -> serde_json::Value {
    json!({"source": "certbucket", "detail-type": "PATCH /acme", "detail": {}})
}

/// A trigger that invokes `function` (a name or ARN) asynchronously through the Lambda API
/// (`AWS_ENDPOINT_URL_LAMBDA`/`AWS_ENDPOINT_URL` point it elsewhere, as for S3).
pub async fn lambda_renewal_trigger(function: String) -> RenewalTrigger {
    let client = aws_sdk_lambda::Client::new(&certbucket_core::aws::sdk_config().await);
    let payload = Blob::new(patch_payload().to_string());
    Arc::new(move || {
        let request = client
            .invoke()
            .function_name(&function)
            .invocation_type(InvocationType::Event)
            .payload(payload.clone());
        let function = function.clone();
        Box::pin(async move {
            match request.send().await {
                Ok(_) => Ok(true),
                Err(e) => Err(format!(
                    "could not invoke {function}: {}",
                    DisplayErrorContext(&e)
                )),
            }
        })
    })
}
