//! LocalStack killed under load: an edge serving a few hundred TLS requests per second over
//! cached hosts fails none of them while its store is gone, answers unknown names with the
//! default certificate meanwhile, logs the outage once, and once LocalStack is back takes a
//! newly issued and a renewed certificate through its manifest poll. Real LocalStack (a process
//! of this test's own, so killing it disturbs no other test), real Pebble, real TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use certbucket_core::{Storage, tls};
use certbucket_tests::{
    edge::{PATIENCE, TestEdge, fetch, looking_client, verifying_client},
    localstack::LocalStack,
    stack::Stack,
};
use http::StatusCode;
use serde_json::json;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::{Level, field::Field};
use tracing_subscriber::{
    EnvFilter, Layer,
    field::Visit,
    layer::{Context, SubscriberExt},
    util::SubscriberInitExt,
};

const CACHED: [&str; 3] = ["one.example.test", "two.example.test", "three.example.test"];
const FRESH: &str = "fresh.example.test";
/// Load workers and the rate each aims at: 8 x 40 = 320 requests per second.
const WORKERS: usize = 8;
const PER_WORKER_RATE: f64 = 40.0;

/// Warnings logged by this process, and how many said the store cannot be read.
static WARNINGS: AtomicUsize = AtomicUsize::new(0);
static OUTAGE_WARNINGS: AtomicUsize = AtomicUsize::new(0);

/// Counts warnings as they are logged.
struct CountWarnings;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for CountWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::WARN {
            return;
        }
        WARNINGS.fetch_add(1, Ordering::Relaxed);
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0.contains("the store cannot be read") {
            OUTAGE_WARNINGS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    first_failures: Mutex<Vec<String>>,
}

/// One load worker: a new verified TLS connection and a `GET /` per request, over the cached
/// hosts in turn, at `rate` per second, until `stop`.
async fn worker(
    connector: TlsConnector,
    edge: SocketAddr,
    offset: usize,
    rate: f64,
    tally: Arc<Tally>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = offset;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let host = CACHED[n % CACHED.len()];
        n += 1;
        let outcome = match tokio::time::timeout(PATIENCE, fetch(&connector, edge, host)).await {
            Ok(Ok((leaf, body))) if leaf.dns_names == [host] && body.contains(host) => Ok(()),
            Ok(Ok((leaf, body))) => Err(format!("{host}: served {:?}: {body}", leaf.dns_names)),
            Ok(Err(e)) => Err(format!("{host}: {e:#}")),
            Err(_) => Err(format!("{host}: no answer within {PATIENCE:?}")),
        };
        match outcome {
            Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                let mut first = tally.first_failures.lock().unwrap();
                if first.len() < 10 {
                    first.push(e);
                }
                tally.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Waits until `series` on `edge` equals `want`; panics after [`PATIENCE`].
async fn wait_for_metric(edge: &TestEdge, series: &str, want: f64) {
    let deadline = Instant::now() + PATIENCE;
    while edge.metric(series).await.unwrap() != want {
        assert!(Instant::now() < deadline, "{series} never became {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_hosts_survive_localstack_killed_under_load() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .with(CountWarnings)
        .with(filter)
        .init();
    tls::install_crypto_provider();

    let mut localstack = LocalStack::start().await.unwrap();
    let bucket = "outage";
    localstack.create_bucket(bucket).await.unwrap();
    let store: Arc<dyn Storage> = localstack.store(bucket);
    let stack = Stack::start(Arc::clone(&store), json!({})).await.unwrap();
    for host in CACHED {
        assert_eq!(stack.post_form(host).await.0, StatusCode::CREATED, "{host}");
    }
    let root = stack.pebble.issuing_root_pem().await.unwrap();
    let edge = TestEdge::start(Arc::clone(&store), Duration::from_millis(500))
        .await
        .unwrap();
    let connector = verifying_client(&root).unwrap();
    let mut before = Vec::new();
    for host in CACHED {
        before.push(fetch(&connector, edge.https, host).await.unwrap().0);
    }

    // Load over the cached hosts.
    let tally = Arc::new(Tally::default());
    let stop_load = CancellationToken::new();
    let load_started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            tokio::spawn(worker(
                connector.clone(),
                edge.https,
                i,
                PER_WORKER_RATE,
                Arc::clone(&tally),
                stop_load.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill = tally.ok.load(Ordering::Relaxed);

    // The store goes away.
    let killed_at = Instant::now();
    localstack.kill();
    wait_for_metric(&edge, "certbucket_edge_store_up", 0.0).await;
    println!(
        "outage noticed by the manifest poll {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    // Unknown names meanwhile: the default certificate, at once (the first may wait for one
    // failed store read; the next ones not at all).
    let looking = looking_client().unwrap();
    for sni in [FRESH, "other.example.test", "third.example.test"] {
        let asked = Instant::now();
        let (leaf, _) = fetch(&looking, edge.https, sni).await.unwrap();
        assert_eq!(leaf.dns_names, ["certbucket.invalid"], "{sni}");
        println!(
            "unknown {sni} during the outage: default certificate in {:.0} ms",
            asked.elapsed().as_secs_f64() * 1000.0
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Back, empty (LocalStack keeps its state in memory): the bucket is created again.
    localstack.restart().await.unwrap();
    localstack.create_bucket(bucket).await.unwrap();
    let outage = killed_at.elapsed();
    let during_outage = tally.ok.load(Ordering::Relaxed) - before_kill;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_load.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = load_started.elapsed().as_secs_f64();
    let (ok, failed) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    println!(
        "load: {ok} requests ok, {failed} failed in {elapsed:.1} s ({:.0}/s); {during_outage} ok during the {:.1} s outage",
        (ok + failed) as f64 / elapsed,
        outage.as_secs_f64()
    );
    assert_eq!(
        failed,
        0,
        "requests to cached hosts failed: {:?}",
        tally.first_failures.lock().unwrap()
    );
    assert!(during_outage > 0, "requests were served during the outage");

    // A new certificate and a renewed one after the store's return reach the edge through its
    // manifest poll. The new name is asked for just before it is issued, so the edge remembers
    // it as missing: only the manifest tells the edge to look again before that runs out.
    let (leaf, _) = fetch(&looking, edge.https, FRESH).await.unwrap();
    assert_eq!(leaf.dns_names, ["certbucket.invalid"]);
    assert_eq!(stack.post_form(FRESH).await.0, StatusCode::CREATED);
    let issued_at = Instant::now();
    loop {
        match fetch(&connector, edge.https, FRESH).await {
            Ok((leaf, _)) => {
                assert_eq!(leaf.dns_names, [FRESH]);
                break;
            }
            Err(e) => assert!(
                issued_at.elapsed() < PATIENCE,
                "{FRESH} not served within {PATIENCE:?}: {e:#}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "new certificate for {FRESH} served {:.2} s after it was stored",
        issued_at.elapsed().as_secs_f64()
    );
    assert_eq!(stack.post_form(CACHED[0]).await.0, StatusCode::CREATED);
    let renewed_at = Instant::now();
    loop {
        let (leaf, _) = fetch(&connector, edge.https, CACHED[0]).await.unwrap();
        if leaf.serial_number != before[0].serial_number {
            break;
        }
        assert!(
            renewed_at.elapsed() < PATIENCE,
            "renewed {} not served within {PATIENCE:?}",
            CACHED[0]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "renewed certificate for {} served {:.2} s after it was stored",
        CACHED[0],
        renewed_at.elapsed().as_secs_f64()
    );
    // The others are still served from memory (their objects went with the old bucket).
    for (host, old) in CACHED.iter().zip(&before).skip(1) {
        let (leaf, _) = fetch(&connector, edge.https, host).await.unwrap();
        assert_eq!(leaf.serial_number, old.serial_number, "{host}");
    }

    assert_eq!(edge.metric("certbucket_edge_store_up").await.unwrap(), 1.0);
    let store_errors = edge
        .metric("certbucket_edge_store_errors_total{cause=\"unreachable\"}")
        .await
        .unwrap();
    let (outage_warnings, warnings) = (
        OUTAGE_WARNINGS.load(Ordering::Relaxed),
        WARNINGS.load(Ordering::Relaxed),
    );
    println!(
        "{store_errors} failed store reads counted by the edge; {outage_warnings} outage warnings logged (two edges), {warnings} warnings in all"
    );
    assert!(store_errors >= 2.0);
    // Once per outage and edge (this one and the Stack's), not once per failed read.
    assert!(
        (1..=2).contains(&outage_warnings),
        "{outage_warnings} outage warnings"
    );
    assert!(!edge.task.is_finished());
}
