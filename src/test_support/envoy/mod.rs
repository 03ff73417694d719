//! A harness that runs a real Envoy against a control plane (feature
//! `envoy-harness`).

mod binary;
mod bootstrap;
mod error;
mod port;

pub use binary::{envoy_binary, venv_envoy_path, ENVOY_BIN_ENV, INSTALL_SCRIPT};
pub use bootstrap::{
    Bootstrap, ADMIN_RUNTIME_LAYER, DEFAULT_NODE_CLUSTER, DEFAULT_NODE_ID, REST_REFRESH_DELAY,
    STATIC_RUNTIME_LAYER,
};
pub use error::{HarnessError, Result};
pub use port::free_port;
