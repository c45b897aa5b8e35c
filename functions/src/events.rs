//! The Lambda events the functions take, and the stable `error_type`s they fail with.
//!
//! `apply` takes API Gateway HTTP API (payload 2.0) events for the admin routes, and S3 events
//! for objects written under `requests/` (edges asking for certificates). Every failure maps
//! to one of three `error_type`s, so alarms and retries can key on them.

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use certbucket_core::{AdminApi, Host, Renewer, RequestOutcome};
use http::Request;
use lambda_http::{aws_lambda_events::apigw::ApiGatewayV2httpRequest, lambda_runtime::Diagnostic};
use serde_json::{Value, json};

/// Why an invocation failed, as Lambda reports it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FunctionError {
    /// The event is malformed or of a kind this function does not take: retrying cannot help.
    #[error("{0}")]
    InvalidRequest(String),
    /// Worth retrying (the CA or the store failed); async invocations are retried by Lambda.
    #[error("{0}")]
    Retryable(String),
    /// Failed for good.
    #[error("{0}")]
    NonRetryable(String),
}

impl FunctionError {
    /// The stable `error_type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "InvalidRequest",
            Self::Retryable(_) => "Retryable",
            Self::NonRetryable(_) => "NonRetryable",
        }
    }
}

impl From<FunctionError> for Diagnostic {
    fn from(error: FunctionError) -> Self {
        Self {
            error_type: error.error_type().to_owned(),
            error_message: error.to_string(),
        }
    }
}

/// Answers one `apply` invocation: an HTTP API event or an S3 event.
pub async fn handle_apply_event(api: &AdminApi, event: Value) -> Result<Value, FunctionError> {
    if event.get("Records").is_some() {
        return handle_s3_event(api, &event).await;
    }
    if event.get("requestContext").is_some() {
        return handle_http_event(api, event).await;
    }
    Err(FunctionError::InvalidRequest(
        "unsupported event: expected an API Gateway HTTP API event or an S3 event".to_owned(),
    ))
}

/// Answers an API Gateway HTTP API (payload format 2.0) event with the admin API.
pub async fn handle_http_event(api: &AdminApi, event: Value) -> Result<Value, FunctionError> {
    let event: ApiGatewayV2httpRequest = serde_json::from_value(event)
        .map_err(|e| FunctionError::InvalidRequest(format!("not an HTTP API event: {e}")))?;
    let body = match (event.body, event.is_base64_encoded) {
        (None, _) => Bytes::new(),
        (Some(text), false) => Bytes::from(text),
        (Some(text), true) => Bytes::from(STANDARD.decode(text).map_err(|_| {
            FunctionError::InvalidRequest("the body is marked base64 but is not".to_owned())
        })?),
    };
    let path = event.raw_path.unwrap_or_else(|| "/".to_owned());
    let uri = match event.raw_query_string.filter(|q| !q.is_empty()) {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut request = Request::builder()
        .method(event.request_context.http.method)
        .uri(uri)
        .body(body)
        .map_err(|e| FunctionError::InvalidRequest(format!("bad request line: {e}")))?;
    *request.headers_mut() = event.headers;

    let response = api.handle(request).await;
    let headers: serde_json::Map<String, Value> = response
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), json!(value.to_str().ok()?))))
        .collect();
    Ok(json!({
        "statusCode": response.status().as_u16(),
        "headers": headers,
        "body": String::from_utf8_lossy(response.body()),
        "isBase64Encoded": false,
    }))
}

/// Runs renew-all for a scheduled (EventBridge) event or an asynchronous invocation, starting
/// no new issuance after `deadline`; the report says what was done and what is left.
pub async fn handle_renew_all_event(
    renewer: &Renewer,
    event: &Value,
    deadline: Option<tokio::time::Instant>,
) -> Result<Value, FunctionError> {
    if !event.is_object() {
        return Err(FunctionError::InvalidRequest(
            "unsupported event: expected a scheduled event or a JSON object".to_owned(),
        ));
    }
    let report = renewer
        .run(time::OffsetDateTime::now_utc(), deadline)
        .await
        .map_err(|e| FunctionError::Retryable(format!("renew-all could not run: {e}")))?;
    serde_json::to_value(&report).map_err(|e| FunctionError::NonRetryable(e.to_string()))
}

/// Serves the on-demand requests named by an S3 event's records.
async fn handle_s3_event(api: &AdminApi, event: &Value) -> Result<Value, FunctionError> {
    let records = event["Records"]
        .as_array()
        .ok_or_else(|| FunctionError::InvalidRequest("Records is not a list".to_owned()))?;
    let renewer = Renewer::new(api.issuer().clone());
    let (mut issued, mut skipped, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for record in records {
        let key = record["s3"]["object"]["key"].as_str().ok_or_else(|| {
            FunctionError::InvalidRequest("an S3 record without s3.object.key".to_owned())
        })?;
        // S3 URL-encodes keys in events; hosts need no decoding, so anything encoded is refused.
        let Some(host) = key
            .rsplit_once("v1/requests/")
            .and_then(|(_, name)| Host::parse(name).ok())
        else {
            skipped
                .push(json!({"key": key, "reason": "not an on-demand request for a valid host"}));
            continue;
        };
        match renewer.serve_request(&host).await {
            Ok(RequestOutcome::Issued) => issued.push(host.to_string()),
            Ok(outcome) => {
                skipped.push(json!({"host": host.to_string(), "reason": outcome.to_string()}))
            }
            Err(e) => failed.push(format!("{host}: {e}")),
        }
    }
    if !failed.is_empty() {
        return Err(FunctionError::Retryable(format!(
            "could not issue for {}",
            failed.join("; ")
        )));
    }
    Ok(json!({"issued": issued, "skipped": skipped}))
}
