//! `PackagedFunction`: one zip from `scripts/package-lambdas`, its `bootstrap` unpacked and run
//! as Lambda runs it (the Runtime API in `AWS_LAMBDA_RUNTIME_API`), under `qemu-aarch64` when
//! the zip is arm64 and this machine is not.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::{
    runtime_api::{Outcome, RuntimeApi},
    temp_dir,
};

/// Where `scripts/package-lambdas` wrote `apply.zip`, `list.zip` and `renew-all.zip`.
pub const PACKAGES_ENV: &str = "CERTBUCKET_PACKAGED_LAMBDAS";
const PACKAGES_HINT: &str = "run scripts/package-lambdas, then \
    CERTBUCKET_PACKAGED_LAMBDAS=$PWD/dist/lambda cargo test -p certbucket-tests --test packaged_lambdas \
    (scripts/test does both)";
const QEMU_HINT: &str = "apt-get install qemu-user-static libc6-arm64-cross \
    (scripts/install-services does), or set CERTBUCKET_QEMU_AARCH64 and CERTBUCKET_AARCH64_SYSROOT";

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// The directory of packaged zips named by `CERTBUCKET_PACKAGED_LAMBDAS`; an error saying how to
/// make them when it is not set or holds no zips.
pub fn packages_dir() -> anyhow::Result<PathBuf> {
    let Some(dir) = std::env::var_os(PACKAGES_ENV) else {
        bail!("{PACKAGES_ENV} is not set: {PACKAGES_HINT}");
    };
    let dir = PathBuf::from(dir);
    for name in ["apply", "list", "renew-all"] {
        let zip = dir.join(format!("{name}.zip"));
        if !zip.is_file() {
            bail!("{} is missing: {PACKAGES_HINT}", zip.display());
        }
    }
    Ok(dir)
}

/// A packaged function's `bootstrap`, running against its own [`RuntimeApi`].
#[derive(Debug)]
pub struct PackagedFunction {
    name: String,
    api: RuntimeApi,
    child: Child,
    log: PathBuf,
    /// The machine the bootstrap is built for, e.g. `aarch64`.
    pub machine: &'static str,
    /// How it runs here, e.g. `qemu-aarch64-static -L /usr/aarch64-linux-gnu bootstrap`.
    pub runner: String,
}

impl PackagedFunction {
    /// Unpacks `{dir}/{name}.zip` and starts its `bootstrap` with `env` added to the
    /// environment Lambda gives a function.
    pub async fn start(dir: &Path, name: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let zip = dir.join(format!("{name}.zip"));
        let work = temp_dir(&format!("packaged-{name}"));
        let bootstrap = unzip_bootstrap(&zip, &work)?;
        let machine = elf_machine(&bootstrap)?;
        let (emulator, machine) = runner_for(machine)?;
        let (program, args) = match emulator {
            Some(Emulator { program, mut args }) => {
                args.push(bootstrap.display().to_string());
                (program, args)
            }
            None => (bootstrap.display().to_string(), Vec::new()),
        };
        let runner = [program.as_str()]
            .into_iter()
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");

        let api = RuntimeApi::start(name).await?;
        let log = work.join("function.log");
        let log_file = fs::File::create(&log)?;
        let mut command = Command::new(&program);
        command
            .args(&args)
            .current_dir(&work)
            .env("AWS_LAMBDA_RUNTIME_API", api.endpoint())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/12/04/[$LATEST]0123456789abcdef",
            )
            .env("LAMBDA_TASK_ROOT", &work)
            .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {runner}"))?;
        Ok(Self {
            name: name.to_owned(),
            api,
            child,
            log,
            machine,
            runner,
        })
    }

    /// Invokes the function with `event`; its result, or an error carrying its error
    /// document (or its exit) and the tail of its log.
    pub async fn invoke(&mut self, event: Value) -> anyhow::Result<Value> {
        match self.invoke_raw(event).await? {
            Outcome::Response(value) => Ok(value),
            Outcome::Error(error) => bail!(
                "{} answered with an error: {error}\n--- its log:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    /// Invokes the function with `event` and returns what it posted, response or error.
    pub async fn invoke_raw(&mut self, event: Value) -> anyhow::Result<Outcome> {
        let timeout = Duration::from_secs(180);
        tokio::select! {
            outcome = self.api.invoke(event, timeout) => outcome.with_context(|| {
                format!("invoking {} ({})\n--- its log:\n{}", self.name, self.runner, self.log_tail())
            }),
            status = self.child.wait() => bail!(
                "{} exited ({:?}) instead of answering; init error: {:?}\n--- its log:\n{}",
                self.name,
                status.ok(),
                self.api.init_error(),
                self.log_tail()
            ),
        }
    }

    /// The function's emulated Lambda API (Runtime API, and Invoke for other functions).
    pub fn api(&self) -> &RuntimeApi {
        &self.api
    }

    /// The last lines the function printed (its logs never hold keys: STYLE.md).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Unpacks `bootstrap` from a Lambda zip (with Python's zipfile: no zip crate for one test).
fn unzip_bootstrap(zip: &Path, into: &Path) -> anyhow::Result<PathBuf> {
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract('bootstrap', sys.argv[2])",
        ])
        .arg(zip)
        .arg(into)
        .status()
        .context("running python3 to unzip (python3 is needed)")?;
    if !status.success() {
        bail!("{} has no bootstrap", zip.display());
    }
    let bootstrap = into.join("bootstrap");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&bootstrap, fs::Permissions::from_mode(0o755))?;
    }
    Ok(bootstrap)
}

fn elf_machine(path: &Path) -> anyhow::Result<u16> {
    let head = fs::read(path)?;
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        bail!("{} is not an ELF executable", path.display());
    }
    Ok(u16::from_le_bytes([head[18], head[19]]))
}

/// A program that runs a foreign bootstrap: `program args... bootstrap`.
struct Emulator {
    program: String,
    args: Vec<String>,
}

/// The emulator that runs a bootstrap built for `machine` here, if one is needed, and the
/// machine's name.
fn runner_for(machine: u16) -> anyhow::Result<(Option<Emulator>, &'static str)> {
    match (machine, std::env::consts::ARCH) {
        (EM_AARCH64, "aarch64") => Ok((None, "aarch64")),
        (EM_X86_64, "x86_64") => Ok((None, "x86_64")),
        (EM_AARCH64, _) => {
            let qemu = std::env::var("CERTBUCKET_QEMU_AARCH64")
                .unwrap_or_else(|_| "/usr/bin/qemu-aarch64-static".to_owned());
            let sysroot = std::env::var("CERTBUCKET_AARCH64_SYSROOT")
                .unwrap_or_else(|_| "/usr/aarch64-linux-gnu".to_owned());
            if !Path::new(&qemu).is_file() {
                bail!("the packages are arm64 and {qemu} is missing: {QEMU_HINT}");
            }
            if !Path::new(&sysroot)
                .join("lib/ld-linux-aarch64.so.1")
                .is_file()
            {
                bail!("the packages are arm64 and {sysroot} has no aarch64 glibc: {QEMU_HINT}");
            }
            let emulator = Emulator {
                program: qemu,
                args: vec!["-L".to_owned(), sysroot],
            };
            Ok((Some(emulator), "aarch64"))
        }
        (other, host) => bail!("a bootstrap for ELF machine {other} cannot run on {host}"),
    }
}
