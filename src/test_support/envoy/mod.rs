//! A harness that runs a real Envoy against a control plane (feature
//! `envoy-harness`).

mod binary;
mod error;
mod port;

pub use binary::{envoy_binary, venv_envoy_path, ENVOY_BIN_ENV, INSTALL_SCRIPT};
pub use error::{HarnessError, Result};
pub use port::free_port;
