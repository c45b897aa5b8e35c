//! `certbucket-edge`: flags and environment in, an [`Edge`] and its admin listener out.

use std::{io::IsTerminal, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context;
use certbucket_core::{
    AdminApi, Config, DEFAULT_STORE, Issuer, IssuerOptions, Renewer, StoreUrl, tls,
};
use certbucket_edge::{AdminServer, Edge, EdgeConfig, EdgeLimits, OnDemand, UpstreamRoute};
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
    /// Where to serve /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "CERTBUCKET_ADMIN_LISTEN",
        default_value = "127.0.0.1:8001"
    )]
    admin_listen: SocketAddr,
    /// Where to proxy TLS traffic: http://HOST[:PORT].
    #[arg(long, env = "CERTBUCKET_UPSTREAM")]
    upstream: http::Uri,
    /// Send a host's requests elsewhere than --upstream: HOST=URL (HOST may be *.example.com or
    /// example.*); repeatable, or comma-separated in the environment.
    #[arg(
        long = "upstream-map",
        env = "CERTBUCKET_UPSTREAM_MAP",
        value_name = "HOST=URL",
        value_delimiter = ','
    )]
    upstream_map: Vec<UpstreamRoute>,
    /// A file of more --upstream-map entries: one HOST=URL (or HOST URL) per line, # comments;
    /// read at start.
    #[arg(long, env = "CERTBUCKET_UPSTREAM_MAP_FILE", value_name = "PATH")]
    upstream_map_file: Option<std::path::PathBuf>,
    /// Answer 404 instead of redirecting plain-HTTP requests to https.
    #[arg(long, env = "CERTBUCKET_NO_REDIRECT")]
    no_redirect: bool,
    /// Log line format.
    #[arg(long, env = "CERTBUCKET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// How long a client may take to send a request's headers (e.g. 10s, 500ms).
    #[arg(long, env = "CERTBUCKET_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_read_timeout: Duration,
    /// The largest request head accepted, in bytes; larger ones get 431.
    #[arg(long, env = "CERTBUCKET_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    max_header_bytes: usize,
    /// How long a keep-alive connection may stay idle.
    #[arg(long, env = "CERTBUCKET_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// How many HTTP and TLS connections are held at once; more wait to be accepted.
    #[arg(long, env = "CERTBUCKET_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Single-box mode: issue in this process on the first handshake for an allowed name, run
    /// renew-all on a schedule, and serve the admin API (/acme...) on --admin-listen.
    #[arg(long, env = "CERTBUCKET_ISSUE_LOCALLY")]
    issue_locally: bool,
    /// Extra PEM roots trusted for the ACME directory's HTTPS (with --issue-locally).
    #[arg(long, env = "CERTBUCKET_ACME_CA_BUNDLE")]
    acme_ca_bundle: Option<std::path::PathBuf>,
    /// How often renew-all runs with --issue-locally.
    #[arg(long, env = "CERTBUCKET_RENEW_EVERY", default_value = "12h", value_parser = parse_duration)]
    renew_every: Duration,
    /// How often to poll the store's manifest for new and renewed certificates.
    #[arg(long, env = "CERTBUCKET_MANIFEST_POLL", default_value = "5s", value_parser = parse_duration)]
    manifest_poll: Duration,
    /// How many names the certificate cache holds; past it, the least recently used go first.
    #[arg(long, env = "CERTBUCKET_CACHE_SIZE", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    cache_size: u32,
    /// How long in-flight requests may finish after SIGTERM.
    #[arg(long, env = "CERTBUCKET_GRACE_PERIOD", default_value = "10s", value_parser = parse_duration)]
    grace_period: Duration,
}

/// Runs renew-all now and then every `period`, until shutdown.
async fn renew_on_schedule(issuer: Issuer, period: Duration, shutdown: CancellationToken) {
    let renewer = Renewer::new(issuer);
    loop {
        match renewer.run(time::OffsetDateTime::now_utc(), None).await {
            Ok(report) => info!(
                renewed = report.renewed.len(),
                failed = report.failed.len(),
                "scheduled renew-all done"
            ),
            Err(e) => warn!(error = %e, "scheduled renew-all failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// `250ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let per_unit = match unit {
        "ms" => Duration::from_millis(1),
        "" | "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    per_unit
        .checked_mul(u32::try_from(number).map_err(|_| format!("{text:?} is too long"))?)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    tls::install_crypto_provider();
    let args = Args::parse();
    init_logging(args.log_format);
    let outcome = runtime()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certbucket-edge: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The multi-thread scheduler, one worker per CPU this process may use; with a single CPU
/// (a small VM, or pinned with taskset) the current-thread scheduler, since work stealing has
/// nothing to steal there and only adds cross-thread bookkeeping to every wake-up.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = match args.config.as_deref() {
        Some(arg) => Some(Config::load(arg).await?),
        None => None,
    };
    let store_url = match (&args.store, config.as_ref().and_then(|c| c.store.clone())) {
        (Some(url), _) => StoreUrl::parse(url)?,
        (None, Some(url)) => url,
        (None, None) => StoreUrl::parse(DEFAULT_STORE)?,
    };
    let store = store_url.open().await?;
    let issuer = match (&config, args.issue_locally) {
        (Some(config), true) => Some(Issuer::new(
            Arc::clone(&store),
            Arc::new(config.clone()),
            tls::acme_http(args.acme_ca_bundle.as_deref())?,
            IssuerOptions::default(),
        )),
        (None, true) => {
            anyhow::bail!("--issue-locally needs --config (account_email, domains, ...)")
        }
        (_, false) => None,
    };
    // Ask for certificates only where the config names an allow-list.
    let on_demand = match (&issuer, &config) {
        (Some(issuer), _) => Some(OnDemand::Issue(issuer.clone())),
        (None, Some(config)) => Some(config.domains.clone())
            .filter(|d| !d.patterns.is_empty() || d.allow_any_domain)
            .map(OnDemand::Request),
        (None, None) => None,
    };
    let mut upstream_map = args.upstream_map.clone();
    if let Some(path) = &args.upstream_map_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the upstream map {}", path.display()))?;
        let routes = UpstreamRoute::parse_file(&text)
            .map_err(|e| anyhow::anyhow!("upstream map {}: {e}", path.display()))?;
        upstream_map.extend(routes);
    }
    let mut limits = EdgeLimits::default();
    limits.header_read_timeout = args.header_read_timeout;
    limits.max_header_bytes = args.max_header_bytes;
    limits.idle_timeout = args.idle_timeout;
    limits.max_connections = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
    limits.grace_period = args.grace_period;
    limits.manifest_poll = args.manifest_poll;
    limits.cache_size = usize::try_from(args.cache_size).unwrap_or(usize::MAX);
    let edge = Edge::bind_with(
        EdgeConfig {
            http_listen: args.http_listen,
            https_listen: args.https_listen,
            upstream: args.upstream.clone(),
            upstream_map,
            store,
            redirect_http: !args.no_redirect,
            on_demand,
        },
        limits,
    )
    .await?;
    let mut admin = AdminServer::bind(args.admin_listen).await?.observe(&edge);
    if let Some(issuer) = &issuer {
        let trigger = Renewer::background_trigger(issuer.clone());
        admin = admin.with_admin_api(AdminApi::new(issuer.clone()).with_renewal_trigger(trigger));
        tokio::spawn(renew_on_schedule(
            issuer.clone(),
            args.renew_every,
            edge.shutdown_token(),
        ));
    }
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

/// SIGTERM drains for the grace period; SIGINT, or a second SIGTERM, exits at once (the edge
/// writes nothing, so there is nothing to flush).
async fn stop_on_signal(mut term: Signal, mut int: Signal, shutdown: CancellationToken) {
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: draining connections"),
        _ = int.recv() => {
            warn!("SIGINT: exiting now");
            std::process::exit(130);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        let cases = [
            ("10s", Some(Duration::from_secs(10))),
            ("10", Some(Duration::from_secs(10))),
            ("250ms", Some(Duration::from_millis(250))),
            ("2m", Some(Duration::from_secs(120))),
            ("1h", Some(Duration::from_secs(3600))),
            ("", None),
            ("s", None),
            ("1.5s", None),
            ("10 days", None),
            ("99999999999s", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn upstream_map_is_repeatable_and_comma_separated() {
        let args = Args::try_parse_from([
            "certbucket-edge",
            "--upstream",
            "http://app:8080",
            "--upstream-map",
            "api.example.com=http://api:9000,*.shop.example.com=http://shop:9000",
            "--upstream-map",
            "www.example.com=http://www:9000",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let text: Vec<String> = args.upstream_map.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "api.example.com=http://api:9000/",
                "*.shop.example.com=http://shop:9000/",
                "www.example.com=http://www:9000/",
            ]
        );
        for bad in ["api.example.com", "bad..host=http://a:1"] {
            assert!(
                Args::try_parse_from([
                    "certbucket-edge",
                    "--upstream",
                    "http://app:8080",
                    "--upstream-map",
                    bad
                ])
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn flags_have_defaults() {
        let args = Args::try_parse_from(["certbucket-edge", "--upstream", "http://app:8080"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(args.header_read_timeout, Duration::from_secs(10));
        assert_eq!(args.max_header_bytes, 16 * 1024);
        assert_eq!(args.idle_timeout, Duration::from_secs(60));
        assert_eq!(args.max_connections, 10_000);
        assert_eq!(args.grace_period, Duration::from_secs(10));
        assert_eq!(args.cache_size, 10_000);
        assert!(
            Args::try_parse_from([
                "certbucket-edge",
                "--upstream",
                "http://app:8080",
                "--max-connections",
                "0"
            ])
            .is_err()
        );
    }
}
