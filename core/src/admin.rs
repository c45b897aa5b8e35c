//! `AdminApi`: Kong's acme admin routes as a plain `http::Request -> http::Response` router,
//! so the same code answers in Lambda (lambda_http) and in a local server (hyper).

use std::{pin::Pin, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tracing::{error, info};

use crate::{
    error::Error,
    host::{Host, HostError},
    issuer::Issuer,
    listing::CertificateInfo,
    selfcheck::{ConnectTo, Http01SelfCheck},
};

/// Bodies larger than this are refused: a host and a flag fit in far less.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const MISSING_HOST: &str = "host must be provided and containing a single domain";

/// Starts a renew-all run in the background: a task in a local server, an asynchronous
/// invocation in Lambda. `Ok(false)` means one was already running.
pub type RenewalTrigger = Arc<dyn Fn() -> TriggerFuture + Send + Sync>;

/// What a [`RenewalTrigger`] returns: resolves once the run has been started (not finished).
pub type TriggerFuture = Pin<Box<dyn Future<Output = Result<bool, String>> + Send>>;

/// The admin API: `POST /acme`, `PATCH /acme`, `GET /acme/certificates[/{host}]`.
#[derive(Clone)]
pub struct AdminApi {
    issuer: Issuer,
    connect_to: Vec<ConnectTo>,
    renewal: Option<RenewalTrigger>,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi")
            .field("issuer", &self.issuer)
            .field("connect_to", &self.connect_to)
            .field("renewal", &self.renewal.is_some())
            .finish()
    }
}

impl AdminApi {
    /// Routes over `issuer` (and its store and config).
    pub fn new(issuer: Issuer) -> Self {
        Self {
            issuer,
            connect_to: Vec::new(),
            renewal: None,
        }
    }

    /// The issuer behind the routes.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// Lets `PATCH /acme` start renewals through `trigger`.
    pub fn with_renewal_trigger(mut self, trigger: RenewalTrigger) -> Self {
        self.renewal = Some(trigger);
        self
    }

    /// Applies `CERTBUCKET_CONNECT_TO` (curl `--connect-to` syntax, comma-separated) to the
    /// http-01 self-check.
    pub fn with_connect_to(mut self, spec: &str) -> Result<Self, Error> {
        self.connect_to = ConnectTo::parse_list(spec)?;
        Ok(self)
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request<Bytes>) -> Response<Bytes> {
        let path = request.uri().path().trim_end_matches('/').to_owned();
        let method = request.method().clone();
        match (method, path.as_str()) {
            (Method::POST, "/acme") => self.post_acme(request).await,
            (Method::PATCH, "/acme") => self.patch_acme().await,
            (Method::GET, "/acme/certificates") => self.list(&request).await,
            (Method::GET, p) if p.starts_with("/acme/certificates/") => {
                self.get_one(&p["/acme/certificates/".len()..]).await
            }
            (_, "/acme" | "/acme/certificates") => {
                message(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => message(StatusCode::NOT_FOUND, "Not found"),
        }
    }

    async fn post_acme(&self, request: Request<Bytes>) -> Response<Bytes> {
        let params = match Params::from_request(&request) {
            Ok(params) => params,
            Err((status, text)) => return message(status, &text),
        };
        let Some(raw_host) = params.host.filter(|h| !h.is_empty()) else {
            return message(StatusCode::BAD_REQUEST, MISSING_HOST);
        };
        let host = match Host::parse(&raw_host) {
            Ok(host) => host,
            Err(HostError::Port) => {
                return message(StatusCode::BAD_REQUEST, "port is not allowed in host");
            }
            Err(e) => return message(StatusCode::BAD_REQUEST, &format!("invalid host: {e}")),
        };

        if params.test_http_challenge_flow {
            let check = Http01SelfCheck::new(self.issuer.store(), &self.connect_to);
            let policy = &self.issuer.config().domains;
            return match check.run(&host, policy).await {
                Ok(()) => message(
                    StatusCode::OK,
                    &format!("sanity test for host {host} passed"),
                ),
                Err(problem) => message(
                    StatusCode::BAD_REQUEST,
                    &format!("problem found running sanity check for {host}: {problem}"),
                ),
            };
        }

        match self.issuer.issue(&host).await {
            Ok(_) => {
                info!(%host, "certificate created through the admin API");
                message(
                    StatusCode::CREATED,
                    &format!("certificate for host {host} is created"),
                )
            }
            Err(e @ Error::BackingOff { .. }) => message(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("failed to update certificate: {e}"),
            ),
            Err(Error::InProgress { host }) => message(
                StatusCode::CONFLICT,
                &format!("issuance for host {host} is in progress; try again shortly"),
            ),
            Err(e) => {
                error!(%host, error = %e, "issuance failed");
                message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("failed to update certificate: {e}"),
                )
            }
        }
    }

    async fn patch_acme(&self) -> Response<Bytes> {
        let Some(trigger) = &self.renewal else {
            return message(
                StatusCode::NOT_IMPLEMENTED,
                "background renewal is not configured here: run `certbucket renew-all` or the \
                 renew-all function",
            );
        };
        match trigger().await {
            Ok(true) => message(StatusCode::ACCEPTED, "Renewal process started successfully"),
            Ok(false) => message(StatusCode::ACCEPTED, "Renewal process is already running"),
            Err(e) => {
                error!(error = %e, "could not start the renewal");
                message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("failed to start the renewal process: {e}"),
                )
            }
        }
    }

    async fn list(&self, request: &Request<Bytes>) -> Response<Bytes> {
        let invalid_only = request
            .uri()
            .query()
            .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
            .is_some_and(|pairs| {
                pairs
                    .iter()
                    .any(|(k, v)| k == "invalid_only" && (v.is_empty() || truthy(v)))
            });
        match CertificateInfo::all(&**self.issuer.store(), OffsetDateTime::now_utc()).await {
            Ok(mut all) => {
                if invalid_only {
                    all.retain(|c| !c.valid);
                }
                json_response(StatusCode::OK, &json!({ "data": all }))
            }
            Err(e) => store_failure(&e),
        }
    }

    async fn get_one(&self, raw_host: &str) -> Response<Bytes> {
        let host = match Host::parse(raw_host) {
            Ok(host) => host,
            Err(e) => return message(StatusCode::BAD_REQUEST, &format!("invalid host: {e}")),
        };
        let store = &**self.issuer.store();
        match CertificateInfo::of_host(store, &host, OffsetDateTime::now_utc()).await {
            Ok(Some(info)) => json_response(StatusCode::OK, &json!({ "data": info })),
            Ok(None) => message(
                StatusCode::NOT_FOUND,
                &format!("certificate for host {host} not found in storage"),
            ),
            Err(e) => store_failure(&e),
        }
    }
}

/// The parameters of `POST /acme`, from a form or JSON body and the query string.
#[derive(Debug, Default)]
struct Params {
    host: Option<String>,
    test_http_challenge_flow: bool,
}

impl Params {
    /// The parameters, or the status and message that refuse the request.
    fn from_request(request: &Request<Bytes>) -> Result<Self, (StatusCode, String)> {
        let body = request.body();
        if body.len() > MAX_BODY_BYTES {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
        let mut pairs: Vec<(String, Value)> = request
            .uri()
            .query()
            .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if !body.is_empty() {
            match content_type.as_str() {
                "application/json" => {
                    let Ok(Value::Object(object)) = serde_json::from_slice(body) else {
                        return Err(bad_request("request body is not a JSON object"));
                    };
                    pairs.extend(object);
                }
                "application/x-www-form-urlencoded" | "" => {
                    let form = serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
                        .map_err(|_| bad_request("request body is not a valid form"))?;
                    pairs.extend(form.into_iter().map(|(k, v)| (k, Value::String(v))));
                }
                other => {
                    return Err((
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        format!("content type {other} is not supported: send a form or JSON body"),
                    ));
                }
            }
        }
        let mut params = Self::default();
        for (key, value) in pairs {
            match (key.as_str(), value) {
                ("host", Value::String(host)) => {
                    if params.host.is_some() {
                        return Err(bad_request(MISSING_HOST));
                    }
                    params.host = Some(host);
                }
                ("host", _) => return Err(bad_request(MISSING_HOST)),
                ("test_http_challenge_flow", Value::Bool(b)) => params.test_http_challenge_flow = b,
                ("test_http_challenge_flow", Value::String(s)) => {
                    params.test_http_challenge_flow = truthy(&s);
                }
                _ => {}
            }
        }
        Ok(params)
    }
}

fn bad_request(text: &str) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, text.to_owned())
}

fn truthy(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "on"
    )
}

fn store_failure(error: &Error) -> Response<Bytes> {
    error!(error = %error, "listing failed");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("could not read the certificate store: {error}"),
    )
}

/// `{"message": text}` with `status`: the shape of every admin API answer that is not data.
pub fn message(status: StatusCode, text: &str) -> Response<Bytes> {
    json_response(status, &json!({ "message": text }))
}

fn json_response(status: StatusCode, body: &Value) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Config,
        issuer::IssuerOptions,
        storage::{LocalDirStorage, Storage, StorageKeys},
        tls,
    };

    async fn api(tag: &str) -> (AdminApi, Arc<dyn Storage>) {
        let dir =
            std::env::temp_dir().join(format!("certbucket-admin-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn Storage> =
            Arc::new(LocalDirStorage::open(&dir).unwrap_or_else(|e| panic!("{e}")));
        // Nothing listens here: a request that got as far as the CA would fail loudly.
        let config = Config::from_json(
            r#"{"account_email":"a@example.com","api_uri":"https://127.0.0.1:9/dir","tos_accepted":true}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let http = tls::acme_http(None).unwrap_or_else(|e| panic!("{e}"));
        let issuer = Issuer::new(
            Arc::clone(&store),
            Arc::new(config),
            http,
            IssuerOptions::default(),
        );
        (AdminApi::new(issuer), store)
    }

    fn post(content_type: &str, body: &str) -> Request<Bytes> {
        Request::post("/acme")
            .header(header::CONTENT_TYPE, content_type)
            .body(Bytes::from(body.to_owned()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn answer(api: &AdminApi, request: Request<Bytes>) -> (StatusCode, String) {
        let response = api.handle(request).await;
        let body: Value = serde_json::from_slice(response.body()).unwrap_or_else(|e| panic!("{e}"));
        (
            response.status(),
            body["message"].as_str().unwrap_or_default().to_owned(),
        )
    }

    #[tokio::test]
    async fn bad_requests_get_clear_errors_and_write_nothing() {
        tls::install_crypto_provider();
        let (api, store) = api("bad").await;
        let form = "application/x-www-form-urlencoded";
        let long = "a".repeat(300);
        let cases: Vec<(Request<Bytes>, StatusCode, &str)> = vec![
            (post(form, ""), StatusCode::BAD_REQUEST, MISSING_HOST),
            (post(form, "host="), StatusCode::BAD_REQUEST, MISSING_HOST),
            (
                post(form, "host=a&host=b"),
                StatusCode::BAD_REQUEST,
                MISSING_HOST,
            ),
            (
                post(form, "host=h:80"),
                StatusCode::BAD_REQUEST,
                "port is not allowed in host",
            ),
            (
                post(form, "host=a..b"),
                StatusCode::BAD_REQUEST,
                "invalid host: a host must not have empty labels",
            ),
            (
                post(form, "host=x/y"),
                StatusCode::BAD_REQUEST,
                "invalid host: a host must not contain '/'",
            ),
            (
                post(form, &format!("host={long}")),
                StatusCode::BAD_REQUEST,
                "invalid host: a host must be at most 253",
            ),
            (
                post("application/json", r#"{"host": 7}"#),
                StatusCode::BAD_REQUEST,
                MISSING_HOST,
            ),
            (
                post("application/json", "{not json"),
                StatusCode::BAD_REQUEST,
                "request body is not a JSON object",
            ),
            (
                post("text/plain", "host=a.example"),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content type text/plain",
            ),
            (
                post(form, &"x".repeat(MAX_BODY_BYTES + 1)),
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body is larger",
            ),
            (
                Request::get("/acme/certificates/a..b")
                    .body(Bytes::new())
                    .unwrap_or_default(),
                StatusCode::BAD_REQUEST,
                "invalid host",
            ),
            (
                Request::get("/acme/certificates/none.example")
                    .body(Bytes::new())
                    .unwrap_or_default(),
                StatusCode::NOT_FOUND,
                "certificate for host none.example not found",
            ),
            (
                Request::delete("/acme")
                    .body(Bytes::new())
                    .unwrap_or_default(),
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed",
            ),
            (
                Request::get("/elsewhere")
                    .body(Bytes::new())
                    .unwrap_or_default(),
                StatusCode::NOT_FOUND,
                "Not found",
            ),
        ];
        for (request, status, text) in cases {
            let what = format!("{} {}", request.method(), request.uri());
            let (got_status, got_text) = answer(&api, request).await;
            assert_eq!(got_status, status, "{what}: {got_text}");
            assert!(got_text.starts_with(text), "{what}: {got_text}");
        }
        let written = store
            .list(&StorageKeys::everything())
            .await
            .unwrap_or_default();
        assert!(written.is_empty(), "bad requests wrote {written:?}");
    }

    #[tokio::test]
    async fn empty_listing_and_refusal_without_tos() {
        tls::install_crypto_provider();
        let (api, _) = api("empty").await;
        let response = api
            .handle(
                Request::get("/acme/certificates")
                    .body(Bytes::new())
                    .unwrap_or_default(),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body().as_ref(), br#"{"data":[]}"#);
    }

    #[tokio::test]
    async fn patch_starts_one_background_renewal() {
        tls::install_crypto_provider();
        let (api, _) = api("patch").await;
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&started);
        let api = api.with_renewal_trigger(Arc::new(move || {
            // The first call starts a run; later ones find it still running.
            let first = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            Box::pin(async move { Ok(first) })
        }));
        let patch = || {
            Request::patch("/acme")
                .body(Bytes::new())
                .unwrap_or_default()
        };
        let first = answer(&api, patch()).await;
        assert_eq!(
            first,
            (
                StatusCode::ACCEPTED,
                "Renewal process started successfully".to_owned()
            )
        );
        let second = answer(&api, patch()).await;
        assert_eq!(
            second,
            (
                StatusCode::ACCEPTED,
                "Renewal process is already running".to_owned()
            )
        );
        assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
