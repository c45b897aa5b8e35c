//! `RuntimeApi`: the AWS Lambda Runtime API (2018-06-01), served on 127.0.0.1 for a packaged
//! `bootstrap` to poll, as the Lambda service serves it to a `provided.al2023` function.
//!
//! The bootstrap long-polls `GET /2018-06-01/runtime/invocation/next`, gets one event with its
//! request id and deadline headers, and answers with `POST .../invocation/{id}/response` or
//! `.../invocation/{id}/error`; a failed start is `POST /2018-06-01/runtime/init/error`.
//!
//! The same port also answers the Lambda service's `Invoke` call for this function
//! (`POST /2015-03-31/functions/{name}/invocations`), so another function can invoke it through
//! aws-sdk-lambda (`AWS_ENDPOINT_URL_LAMBDA`): `X-Amz-Invocation-Type: Event` queues the event
//! and answers 202 at once, as Lambda does; the outcome is kept for [`RuntimeApi::next_async`].

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::{
    sync::{Notify, oneshot},
    task::JoinHandle,
};

const PREFIX: &str = "/2018-06-01/runtime";
const INVOKE_PREFIX: &str = "/2015-03-31/functions/";

/// What an invocation came back with.
#[derive(Debug)]
pub enum Outcome {
    /// `POST .../response`: the function's result.
    Response(Value),
    /// `POST .../error`: the `errorType` / `errorMessage` document.
    Error(Value),
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<(String, Value)>,
    /// Events invoked asynchronously through the Invoke API, with their outcome to come.
    invoked: VecDeque<(Value, oneshot::Receiver<Outcome>)>,
    waiting: HashMap<String, oneshot::Sender<Outcome>>,
    init_error: Option<Value>,
    next_id: u64,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    queued: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `event` for the function's next poll; the receiver gets its outcome.
    fn enqueue(&self, event: Value) -> anyhow::Result<oneshot::Receiver<Outcome>> {
        let (sender, receiver) = oneshot::channel();
        {
            let mut state = self.lock();
            if let Some(error) = &state.init_error {
                bail!("the function failed to start: {error}");
            }
            state.next_id += 1;
            let id = format!("8476a536-e9f4-11e8-9739-{:012x}", state.next_id);
            state.waiting.insert(id.clone(), sender);
            state.queue.push_back((id, event));
        }
        self.queued.notify_waiters();
        self.queued.notify_one();
        Ok(receiver)
    }
}

/// The Lambda service's `Invoke` for this function: asynchronous (`Event`) invocations only,
/// which is what certbucket makes.
fn invoke_api(
    shared: &Shared,
    function_arn: &str,
    name: &str,
    invocation_type: Option<&str>,
    body: &Bytes,
) -> Response<Full<Bytes>> {
    let own_name = function_arn.rsplit(':').next().unwrap_or_default();
    if name != own_name && name != function_arn {
        return reply(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException: no such function",
        );
    }
    if invocation_type != Some("Event") {
        return reply(
            StatusCode::BAD_REQUEST,
            "only Event invocations are emulated",
        );
    }
    let Ok(event) = serde_json::from_slice::<Value>(body) else {
        return reply(StatusCode::BAD_REQUEST, "InvalidRequestContentException");
    };
    match shared.enqueue(event.clone()) {
        Ok(receiver) => {
            shared.lock().invoked.push_back((event, receiver));
            reply(StatusCode::ACCEPTED, "")
        }
        Err(_) => reply(StatusCode::BAD_GATEWAY, "the function failed to start"),
    }
}

/// The Runtime API for one function, on 127.0.0.1 (a free port).
#[derive(Debug)]
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    function_arn: String,
    server: JoinHandle<()>,
}

impl RuntimeApi {
    /// Serves the API for a function named `name`.
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let function_arn = format!("arn:aws:lambda:us-east-1:123456789012:function:{name}");
        let server = {
            let shared = Arc::clone(&shared);
            let function_arn = function_arn.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let shared = Arc::clone(&shared);
                    let function_arn = function_arn.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            answer(Arc::clone(&shared), function_arn.clone(), req)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Ok(Self {
            addr,
            shared,
            function_arn,
            server,
        })
    }

    /// `HOST:PORT`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// The ARN the invocations carry.
    pub fn function_arn(&self) -> &str {
        &self.function_arn
    }

    /// Queues `event` for the function and waits up to `timeout` for its answer.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> anyhow::Result<Outcome> {
        let receiver = self.shared.enqueue(event)?;
        tokio::time::timeout(timeout, receiver)
            .await
            .with_context(|| format!("no answer within {} s", timeout.as_secs()))?
            .context("the runtime API dropped the invocation")
    }

    /// The next event another function invoked asynchronously through the Invoke API, and
    /// what the function answered to it, waiting up to `timeout` for both.
    pub async fn next_async(&self, timeout: Duration) -> anyhow::Result<(Value, Outcome)> {
        let waited = async {
            loop {
                if let Some(found) = self.shared.lock().invoked.pop_front() {
                    return found;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let (event, receiver) = tokio::time::timeout(timeout, waited)
            .await
            .context("nothing invoked the function asynchronously")?;
        let outcome = tokio::time::timeout(timeout, receiver)
            .await
            .context("the asynchronous invocation got no answer")?
            .context("the runtime API dropped the invocation")?;
        Ok((event, outcome))
    }

    /// The document of a `POST /runtime/init/error`, if the function reported one.
    pub fn init_error(&self) -> Option<Value> {
        self.shared.lock().init_error.clone()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    shared: Arc<Shared>,
    function_arn: String,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let invocation_type = req
        .headers()
        .get("x-amz-invocation-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    if let Some(name) = path
        .strip_prefix(INVOKE_PREFIX)
        .and_then(|rest| rest.strip_suffix("/invocations"))
    {
        let name = name.replace("%3A", ":");
        let invoked = invoke_api(
            &shared,
            &function_arn,
            &name,
            invocation_type.as_deref(),
            &body,
        );
        return Ok(invoked);
    }
    let Some(route) = path.strip_prefix(PREFIX) else {
        return Ok(reply(StatusCode::NOT_FOUND, "not a runtime API path"));
    };
    let parts: Vec<&str> = route.trim_start_matches('/').split('/').collect();
    Ok(match (method.as_str(), parts.as_slice()) {
        ("GET", ["invocation", "next"]) => next(&shared, &function_arn).await,
        ("POST", ["invocation", id, kind @ ("response" | "error")]) => {
            let document = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            let outcome = if *kind == "response" {
                Outcome::Response(document)
            } else {
                Outcome::Error(document)
            };
            match shared.lock().waiting.remove(*id) {
                Some(sender) => {
                    let _ = sender.send(outcome);
                    reply(StatusCode::ACCEPTED, "")
                }
                None => reply(StatusCode::BAD_REQUEST, "unknown request id"),
            }
        }
        ("POST", ["init", "error"]) => {
            let document = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            let mut state = shared.lock();
            state.init_error = Some(document.clone());
            for (_, sender) in state.waiting.drain() {
                let _ = sender.send(Outcome::Error(document.clone()));
            }
            reply(StatusCode::ACCEPTED, "")
        }
        _ => reply(StatusCode::NOT_FOUND, "unknown runtime API route"),
    })
}

/// Long-polls for the next queued event, as the real API does.
async fn next(shared: &Shared, function_arn: &str) -> Response<Full<Bytes>> {
    loop {
        let notified = shared.queued.notified();
        if let Some((id, event)) = shared.lock().queue.pop_front() {
            let deadline = SystemTime::now() + Duration::from_secs(900);
            let deadline_ms = deadline
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let mut response = Response::new(Full::new(Bytes::from(event.to_string())));
            let headers = response.headers_mut();
            let pairs = [
                ("content-type", "application/json".to_owned()),
                ("lambda-runtime-aws-request-id", id),
                ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
                (
                    "lambda-runtime-invoked-function-arn",
                    function_arn.to_owned(),
                ),
                (
                    "lambda-runtime-trace-id",
                    "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"
                        .to_owned(),
                ),
            ];
            for (name, value) in pairs {
                if let Ok(value) = value.parse() {
                    headers.insert(name, value);
                }
            }
            return response;
        }
        notified.await;
    }
}

fn reply(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}
