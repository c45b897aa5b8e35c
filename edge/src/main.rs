//! `certbucket-edge`: flags and environment in, an [`Edge`] and its admin listener out.

use std::{io::IsTerminal, net::SocketAddr, process::ExitCode};

use anyhow::Context;
use certbucket_core::{Config, DEFAULT_STORE, StoreUrl};
use certbucket_edge::{AdminServer, Edge, EdgeConfig};
use clap::{Parser, ValueEnum};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// Answers http-01 challenges and terminates TLS with certificates from the certbucket store.
#[derive(Debug, Parser)]
#[command(name = "certbucket-edge", version)]
struct Args {
    /// The config document (a path, or inline JSON); checked at start.
    #[arg(long, env = "CERTBUCKET_CONFIG")]
    config: Option<String>,
    /// The store: s3://BUCKET[/PREFIX] or file:///DIR [default: the config's, else file://./.certbucket].
    #[arg(long, env = "CERTBUCKET_STORE")]
    store: Option<String>,
    /// Where to answer http-01 challenges and redirect to https.
    #[arg(long, env = "CERTBUCKET_HTTP_LISTEN", default_value = "0.0.0.0:80")]
    http_listen: SocketAddr,
    /// Where to terminate TLS.
    #[arg(long, env = "CERTBUCKET_HTTPS_LISTEN", default_value = "0.0.0.0:443")]
    https_listen: SocketAddr,
    /// Where to serve /healthz.
    #[arg(
        long,
        env = "CERTBUCKET_ADMIN_LISTEN",
        default_value = "127.0.0.1:8001"
    )]
    admin_listen: SocketAddr,
    /// Where to proxy TLS traffic: http://HOST[:PORT].
    #[arg(long, env = "CERTBUCKET_UPSTREAM")]
    upstream: http::Uri,
    /// Answer 404 instead of redirecting plain-HTTP requests to https.
    #[arg(long, env = "CERTBUCKET_NO_REDIRECT")]
    no_redirect: bool,
    /// Log line format.
    #[arg(long, env = "CERTBUCKET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    certbucket_core::tls::install_crypto_provider();
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certbucket-edge: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let store_url = match (&args.store, config.and_then(|c| c.store)) {
        (Some(url), _) => StoreUrl::parse(url)?,
        (None, Some(url)) => url,
        (None, None) => StoreUrl::parse(DEFAULT_STORE)?,
    };
    let store = store_url.open().await?;
    let edge = Edge::bind(EdgeConfig {
        http_listen: args.http_listen,
        https_listen: args.https_listen,
        upstream: args.upstream.clone(),
        store,
        redirect_http: !args.no_redirect,
    })
    .await?;
    let admin = AdminServer::bind(args.admin_listen).await?;
    let shutdown = edge.shutdown_token();
    let term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::spawn(stop_on_signal(term, int, shutdown.clone()));

    info!(
        http = %edge.http_addr(),
        https = %edge.https_addr(),
        admin = %admin.local_addr(),
        upstream = %args.upstream,
        store = %store_url,
        "certbucket-edge listening"
    );
    let (edge_done, admin_done) = tokio::join!(edge.run(), admin.run(shutdown));
    edge_done?;
    admin_done?;
    info!("certbucket-edge stopped");
    Ok(())
}

/// The first SIGTERM or SIGINT drains; a second one exits at once.
async fn stop_on_signal(mut term: Signal, mut int: Signal, shutdown: CancellationToken) {
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: exiting now");
    std::process::exit(130);
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// The error and its causes on one line, skipping a cause its parent already quotes.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
