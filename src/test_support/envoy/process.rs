//! Running an Envoy process: start it, wait for its admin interface, read
//! its log, and kill it (by its own pid) when done.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

use super::binary::envoy_binary;
use super::bootstrap::Bootstrap;
use super::error::{HarnessError, Result};
use super::http::admin_get;

/// Lines of log put into error messages.
pub const ERROR_LOG_LINES: usize = 40;

/// How long `Drop` waits for a killed Envoy to be reaped.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// How Envoy is run. Start from `EnvoyOptions::default()`.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// The binary; `None` uses [`envoy_binary`].
    pub binary: Option<PathBuf>,
    /// `-l` log level (`trace`, `debug`, `info`, `warn`, `error`, ...).
    pub log_level: String,
    /// `--component-log-level`, e.g. `upstream:debug,config:trace`.
    pub component_log_level: Option<String>,
    /// `--concurrency` (worker threads); `None` lets Envoy use one per core.
    pub concurrency: Option<u32>,
    /// How long to wait for the admin interface to answer.
    pub startup_timeout: Duration,
    /// More command-line arguments, appended last.
    pub extra_args: Vec<String>,
    /// Keep the temporary directory (bootstrap, logs) after Envoy stops,
    /// for post-mortems; its path is [`EnvoyProcess::dir`].
    pub keep_files: bool,
}

impl Default for EnvoyOptions {
    /// Level `info`, one worker thread, 30 s to start, files removed.
    fn default() -> Self {
        EnvoyOptions {
            binary: None,
            log_level: "info".into(),
            component_log_level: None,
            concurrency: Some(1),
            startup_timeout: Duration::from_secs(30),
            extra_args: Vec::new(),
            keep_files: false,
        }
    }
}

/// A running Envoy. Killed (SIGKILL to its own pid, then reaped) on
/// [`stop`](EnvoyProcess::stop) or when dropped.
///
/// Its bootstrap, log (`envoy.log`, flushed every 100 ms) and stdout/stderr
/// (`stderr.log`) live in a temporary directory removed on drop unless
/// [`EnvoyOptions::keep_files`] is set.
#[derive(Debug)]
pub struct EnvoyProcess {
    child: Option<Child>,
    pid: u32,
    admin_port: u16,
    binary: PathBuf,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl EnvoyProcess {
    /// Starts Envoy with `bootstrap` and waits (at most
    /// `opts.startup_timeout`) until its admin interface answers.
    /// Must be called inside a tokio runtime.
    pub async fn start(bootstrap: &Bootstrap, opts: EnvoyOptions) -> Result<EnvoyProcess> {
        Self::start_json(&bootstrap.to_json(), opts).await
    }

    /// Like [`start`](Self::start) with a bootstrap given as JSON, for
    /// configurations the [`Bootstrap`] builder does not make. If it sets
    /// an admin port of 0 (or none), Envoy picks one and the harness reads it back.
    pub async fn start_json(bootstrap: &Value, opts: EnvoyOptions) -> Result<EnvoyProcess> {
        let binary = match &opts.binary {
            Some(b) => b.clone(),
            None => envoy_binary()?,
        };
        let temp = tempfile::Builder::new()
            .prefix("envoy-harness-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating Envoy's temporary directory", e))?;
        let dir = temp.path().to_path_buf();
        let config = dir.join("bootstrap.json");
        let text =
            serde_json::to_string_pretty(bootstrap).map_err(|source| HarnessError::Json {
                context: "serialising the bootstrap".into(),
                source,
            })?;
        std::fs::write(&config, text)
            .map_err(|e| HarnessError::io(format!("writing {}", config.display()), e))?;
        let admin_path = dir.join("admin.address");
        let stderr_file = File::create(dir.join("stderr.log"))
            .map_err(|e| HarnessError::io("creating stderr.log", e))?;
        let stdout_file = stderr_file
            .try_clone()
            .map_err(|e| HarnessError::io("duplicating stderr.log", e))?;

        let mut cmd = Command::new(&binary);
        cmd.arg("-c")
            .arg(&config)
            .args(["--disable-hot-restart", "--use-dynamic-base-id"])
            .args(["-l", &opts.log_level])
            .arg("--log-path")
            .arg(dir.join("envoy.log"))
            .args(["--file-flush-interval-msec", "100"])
            .arg("--admin-address-path")
            .arg(&admin_path);
        if let Some(levels) = &opts.component_log_level {
            cmd.args(["--component-log-level", levels]);
        }
        if let Some(n) = opts.concurrency {
            cmd.args(["--concurrency", &n.to_string()]);
        }
        cmd.args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(stdout_file)
            .stderr(stderr_file)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| HarnessError::EnvoyStart {
            binary: binary.clone(),
            reason: format!("spawn: {e}"),
            log_tail: String::new(),
        })?;
        let pid = child.id().unwrap_or_default();
        let mut process = EnvoyProcess {
            child: Some(child),
            pid,
            admin_port: 0,
            binary,
            dir,
            _temp: if opts.keep_files {
                let _ = temp.keep();
                None
            } else {
                Some(temp)
            },
        };
        process.admin_port = process
            .wait_for_admin(&admin_path, opts.startup_timeout)
            .await?;
        Ok(process)
    }

    /// Polls until Envoy writes its admin address and the admin interface
    /// answers any HTTP request; fails early if Envoy exits.
    async fn wait_for_admin(&mut self, admin_path: &Path, timeout: Duration) -> Result<u16> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no admin address written yet");
        loop {
            if let Some(status) = self.exit_status() {
                return Err(self.start_error(format!("Envoy exited with {status}")));
            }
            if let Some(port) = read_admin_port(admin_path) {
                match admin_get(port, "/ready").await {
                    Ok(_) => return Ok(port),
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(format!(
                    "admin interface did not answer within {timeout:?} ({last})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn start_error(&self, reason: String) -> HarnessError {
        HarnessError::EnvoyStart {
            binary: self.binary.clone(),
            reason,
            log_tail: self.log_tail(ERROR_LOG_LINES),
        }
    }

    /// Envoy's exit status, if it has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The admin interface's port on 127.0.0.1.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The binary that was run.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The directory holding `bootstrap.json`, `envoy.log` and `stderr.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last `n` lines of Envoy's log, followed by the last `n` lines of
    /// its stdout/stderr when there are any (crashes print there).
    pub fn log_tail(&self, n: usize) -> String {
        let mut out = tail_lines(&self.dir.join("envoy.log"), n);
        let stderr = tail_lines(&self.dir.join("stderr.log"), n);
        if !stderr.trim().is_empty() {
            out.push_str("\n--- stdout/stderr ---\n");
            out.push_str(&stderr);
        }
        out
    }

    /// Kills Envoy and waits (at most 5 s) for it to be reaped.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        child
            .start_kill()
            .map_err(|e| HarnessError::io(format!("killing Envoy (pid {})", self.pid), e))?;
        match tokio::time::timeout(REAP_TIMEOUT, child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(HarnessError::io(
                format!("waiting for Envoy (pid {})", self.pid),
                e,
            )),
            Err(_) => Err(HarnessError::Timeout {
                what: format!("killed Envoy (pid {}) to exit", self.pid),
                timeout: REAP_TIMEOUT,
                seen: "still running".into(),
                log_tail: String::new(),
            }),
        }
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        if child.start_kill().is_err() {
            return;
        }
        // Reap it so no zombie outlives the harness; SIGKILL makes this quick.
        let deadline = Instant::now() + REAP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Ok(Some(_)) | Err(_) => return,
            }
        }
    }
}

/// Parses the `ip:port` Envoy writes to `--admin-address-path`.
fn read_admin_port(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    let port = text.trim().rsplit(':').next()?.parse().ok()?;
    (port != 0).then_some(port)
}

/// The last `n` lines of a (possibly large) file, or a note if unreadable.
fn tail_lines(path: &Path, n: usize) -> String {
    const MAX_BYTES: u64 = 256 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
