//! The harness itself: Pebble starts, serves its issuing root, counts no orders, and stops.

use certbucket_tests::{Pebble, free_port, https_get};
use rustls_pki_types::{CertificateDer, pem::PemObject};

#[tokio::test]
async fn pebble_starts_serves_its_root_and_stops() -> anyhow::Result<()> {
    certbucket_tests::init_tracing();
    let pebble = Pebble::start(free_port()).await?;

    let root = pebble.issuing_root_pem().await?;
    let certs = CertificateDer::pem_slice_iter(root.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(
        certs.len() == 1,
        "one root certificate, got {}: {root}",
        certs.len()
    );
    anyhow::ensure!(pebble.new_order_count() == 0, "{}", pebble.log_tail());
    anyhow::ensure!(pebble.ca_bundle_path().is_file());

    let pids = pebble.pids();
    drop(pebble);
    for pid in pids {
        anyhow::ensure!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still exists after drop"
        );
    }
    Ok(())
}

#[tokio::test]
async fn pebble_options_reach_pebble() -> anyhow::Result<()> {
    let pebble = Pebble::options()
        .env("PEBBLE_WFE_NONCEREJECT", "50")
        .eab_key(
            "kid-1",
            "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
        )
        .start(free_port())
        .await?;
    let (status, body) = https_get(pebble.ca_bundle_pem(), &pebble.directory_url()).await?;
    let directory: serde_json::Value = serde_json::from_slice(&body)?;
    anyhow::ensure!(status == 200, "{status}");
    anyhow::ensure!(
        directory["meta"]["externalAccountRequired"] == true,
        "EAB is required: {directory}"
    );
    anyhow::ensure!(
        pebble.log_tail().contains("reject 50% of good nonces"),
        "{}",
        pebble.log_tail()
    );
    Ok(())
}
