//! `certbucket-bench`: helpers for `bench/run`.
//!
//! - `fill-store` writes N certificates into a local-directory store, so the benchmark can
//!   measure handshakes with 10, 1,000 or 100,000 certificates in the store;
//! - `load` opens one new TLS 1.3 connection per request, with or without session resumption.

mod load;
mod store_filler;

use std::{
    net::SocketAddr, num::NonZeroUsize, path::PathBuf, thread, time::Duration, time::Instant,
};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{load::NewConnectionLoad, store_filler::LocalCa};

#[derive(Debug, Parser)]
#[command(name = "certbucket-bench")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes COUNT certificates for n0.DOMAIN .. n{COUNT-1}.DOMAIN into the store at DIR.
    FillStore {
        /// The store's directory (what `--store file:///DIR` names).
        #[arg(long)]
        dir: PathBuf,
        /// How many certificates to write.
        #[arg(long)]
        count: usize,
        /// The parent domain of the generated names.
        #[arg(long, default_value = "store.bench.test")]
        domain: String,
        /// Where to write the local CA's certificate (PEM), to verify what the edge serves.
        #[arg(long)]
        ca_out: Option<PathBuf>,
        /// Worker threads [default: the number of CPUs].
        #[arg(long)]
        threads: Option<NonZeroUsize>,
    },
    /// Opens a new TCP + TLS 1.3 connection for every HTTP/1.1 request, CONNECTIONS at a time,
    /// for SECONDS; prints `ok=N other_status=N errors=N resumed=N seconds=S`.
    Load {
        /// The server's address.
        #[arg(long)]
        connect: SocketAddr,
        /// The name sent as SNI and Host.
        #[arg(long)]
        host: String,
        /// Connections open at once.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Resume the sessions the server hands out (default: every handshake is a full one).
        #[arg(long)]
        resume: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::FillStore {
            dir,
            count,
            domain,
            ca_out,
            threads,
        } => {
            let threads = threads
                .or_else(|| thread::available_parallelism().ok())
                .map_or(1, NonZeroUsize::get);
            let started = Instant::now();
            let ca = LocalCa::new()?;
            if let Some(path) = ca_out {
                std::fs::write(&path, ca.pem())
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            store_filler::fill_store(&dir, count, &domain, &ca, threads)?;
            println!(
                "wrote {count} certificates to {} in {:.1} s",
                dir.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Command::Load {
            connect,
            host,
            connections,
            seconds,
            resume,
        } => {
            let report = NewConnectionLoad {
                connect,
                host,
                connections,
                duration: Duration::from_secs(seconds),
                resume,
            }
            .run()?;
            println!(
                "ok={} other_status={} errors={} resumed={} seconds={:.2}",
                report.ok,
                report.other_status,
                report.errors,
                report.resumed,
                report.elapsed.as_secs_f64()
            );
        }
    }
    Ok(())
}
