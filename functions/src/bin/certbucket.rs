//! `certbucket`: the operator CLI, running the functions' handlers in-process.

use std::{net::SocketAddr, process::ExitCode};

use bytes::Bytes;
use certbucket_core::Renewer;
use certbucket_functions::{Settings, init_logging, serve_admin};
use clap::{Parser, Subcommand};
use http::{Method, Request, StatusCode, header};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// certbucket: automatic TLS certificates for a fleet of edges, state in one bucket.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Issue (or re-issue) a certificate for one host, as `POST /acme` does.
    Apply {
        /// The host to issue for.
        #[arg(long)]
        host: String,
        /// Only check the http-01 wiring, as `test_http_challenge_flow=true` does.
        #[arg(long)]
        test_http_challenge_flow: bool,
    },
    /// Print the stored certificates as `GET /acme/certificates[/{host}]` answers.
    List {
        /// Only this host.
        host: Option<String>,
    },
    /// Renew every stored certificate that is due; prints what was done as JSON.
    RenewAll,
    /// Serve the admin API on a local address.
    ServeAdmin {
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8001")]
        listen: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    certbucket_core::tls::install_crypto_provider();
    init_logging();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("certbucket: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let api = cli.settings.admin_api().await?;
    let request = match cli.command {
        Command::Apply {
            host,
            test_http_challenge_flow,
        } => {
            let mut form = vec![("host", host)];
            if test_http_challenge_flow {
                form.push(("test_http_challenge_flow", "true".to_owned()));
            }
            Request::builder()
                .method(Method::POST)
                .uri("/acme")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Bytes::from(serde_urlencoded::to_string(&form)?))?
        }
        Command::List { host } => {
            let uri = match host {
                Some(host) => format!("/acme/certificates/{}", urlencode(&host)),
                None => "/acme/certificates".to_owned(),
            };
            Request::get(uri).body(Bytes::new())?
        }
        Command::RenewAll => {
            let report = Renewer::new(api.issuer().clone())
                .run(OffsetDateTime::now_utc(), None)
                .await?;
            println!("{}", serde_json::to_string(&report)?);
            return Ok(if report.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::ServeAdmin { listen } => {
            let trigger = Renewer::background_trigger(api.issuer().clone());
            let api = api.with_renewal_trigger(trigger);
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let shutdown = CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                on_signal.cancel();
            });
            serve_admin(api, listener, shutdown).await?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let response = api.handle(request).await;
    let body = String::from_utf8_lossy(response.body()).into_owned();
    if response.status().is_success() {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    // One line: the API's message when it sent one, else the body as it is.
    let reason = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or(body);
    eprintln!(
        "certbucket: {} ({})",
        reason.replace('\n', " "),
        status_text(response.status())
    );
    Ok(ExitCode::FAILURE)
}

fn status_text(status: StatusCode) -> String {
    format!("HTTP {}", status.as_u16())
}

/// Percent-encodes a path segment, so any input reaches the router (which validates it) intact.
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
