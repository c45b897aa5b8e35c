//! `LocalStack`: a LocalStack process of a test's own (S3 only), on a port picked at run time,
//! that the test may kill and start again without disturbing the shared one other tests use.
//!
//! It runs from the venv `scripts/install-services` builds, started the way `scripts/services`
//! starts the shared one, in its own session so that killing it ends everything it spawned.
//! Its state is in memory: after a restart the bucket is gone and must be created again.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use aws_sdk_s3::{
    Client,
    config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation},
    error::DisplayErrorContext,
};
use certbucket_core::S3Storage;

use crate::{free_port, temp_dir};

/// How long LocalStack may take to report S3 available (about 2 s on an idle machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A LocalStack (S3) process owned by one test; killed on drop.
#[derive(Debug)]
pub struct LocalStack {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    starts: usize,
}

impl LocalStack {
    /// The venv `scripts/install-services` builds.
    fn python() -> anyhow::Result<PathBuf> {
        let venv = std::env::var_os("CERTBUCKET_LOCALSTACK_VENV")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|home| PathBuf::from(home).join(".cache/certbucket/localstack-venv"))
            })
            .context("neither CERTBUCKET_LOCALSTACK_VENV nor HOME is set")?;
        let python = venv.join("bin/python");
        if !python.exists() {
            bail!(
                "no LocalStack venv at {} (this test starts a LocalStack of its own): run scripts/install-services",
                venv.display()
            );
        }
        Ok(python)
    }

    /// Starts LocalStack on a free port and waits until S3 is available.
    pub async fn start() -> anyhow::Result<Self> {
        let mut this = Self {
            port: free_port(),
            dir: temp_dir("localstack"),
            child: None,
            starts: 0,
        };
        this.launch().await?;
        Ok(this)
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let python = Self::python()?;
        self.starts += 1;
        let log_path = self.dir.join(format!("localstack-{}.log", self.starts));
        let log = fs::File::create(&log_path)?;
        let tmp = self.dir.join("tmp");
        fs::create_dir_all(&tmp)?;
        // `setsid` makes LocalStack a session (and group) leader: `kill -- -PID` ends it all.
        let child = Command::new("setsid")
            .arg(&python)
            .args(["-m", "localstack.runtime.main"])
            .env("SERVICES", "s3")
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("EAGER_SERVICE_LOADING", "1")
            .env("DNS_ADDRESS", "0")
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .env("DISABLE_EVENTS", "1")
            .env("LOCALSTACK_TELEMETRY_DISABLED", "1")
            .env("TMPDIR", &tmp)
            .env("LOCALSTACK_VOLUME_DIR", &tmp)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting LocalStack with setsid")?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "LocalStack exited during startup ({status}); log: {}",
                    log_path.display()
                );
            }
            if self.s3_available().await {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                self.kill();
                bail!(
                    "LocalStack S3 not available on port {} after {} s; log: {}",
                    self.port,
                    START_TIMEOUT.as_secs(),
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether `/_localstack/health` reports S3 available.
    async fn s3_available(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let exchange = async {
            let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            tcp.write_all(
                b"GET /_localstack/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            )
            .await?;
            let mut answer = Vec::new();
            tcp.read_to_end(&mut answer).await?;
            std::io::Result::Ok(String::from_utf8_lossy(&answer).into_owned())
        };
        match tokio::time::timeout(Duration::from_secs(2), exchange).await {
            Ok(Ok(answer)) => {
                answer.contains("\"s3\": \"available\"") || answer.contains("\"s3\": \"running\"")
            }
            _ => false,
        }
    }

    /// The endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id of LocalStack (its process group's too).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An S3 client for this LocalStack (path-style, test credentials).
    pub fn client(&self) -> Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        Client::from_conf(config)
    }

    /// Creates `bucket` (again, after a restart).
    pub async fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        self.client()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|err| anyhow::anyhow!("{}", DisplayErrorContext(err)))
            .with_context(|| format!("creating bucket {bucket} at {}", self.endpoint()))?;
        Ok(())
    }

    /// A store over `bucket` (which [`Self::create_bucket`] made), without a prefix.
    pub fn store(&self, bucket: &str) -> Arc<S3Storage> {
        Arc::new(S3Storage::new(
            self.client(),
            bucket.to_owned(),
            String::new(),
        ))
    }

    /// Kills LocalStack and everything it spawned at once (SIGKILL to its process group), as a
    /// crash or a lost network would end it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = format!("-{}", child.id());
            let _ = Command::new("kill")
                .args(["-KILL", "--", &group])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts LocalStack again on the same port (empty: state is in memory).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().await
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("LocalStack logs kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
