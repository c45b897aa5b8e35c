//! The Lambda adapter: API Gateway HTTP API events in, [`AdminApi`] answers out.

use bytes::Bytes;
use certbucket_core::AdminApi;
use lambda_http::{Body, Request, Response};

/// Answers one HTTP API event with `api`; the Lambda `main`s hand this to `lambda_http::run`.
pub async fn handle_lambda(
    api: &AdminApi,
    event: Request,
) -> Result<Response<Body>, lambda_http::Error> {
    let (parts, body) = event.into_parts();
    let body = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bytes) => Bytes::from(bytes),
        _ => Bytes::new(),
    };
    let response = api.handle(http::Request::from_parts(parts, body)).await;
    let (parts, body) = response.into_parts();
    let text = String::from_utf8(body.to_vec())?;
    Ok(Response::from_parts(parts, Body::Text(text)))
}
