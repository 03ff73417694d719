//! A harness that runs a real Envoy against a control plane (feature
//! `envoy-harness`).

mod binary;
mod bootstrap;
mod certs;
mod error;
mod http;
mod port;
mod upstream;

pub use binary::{envoy_binary, venv_envoy_path, ENVOY_BIN_ENV, INSTALL_SCRIPT};
pub use bootstrap::{
    Bootstrap, ADMIN_RUNTIME_LAYER, DEFAULT_NODE_CLUSTER, DEFAULT_NODE_ID, REST_REFRESH_DELAY,
    STATIC_RUNTIME_LAYER,
};
pub use certs::TestCerts;
pub use error::{HarnessError, Result};
pub use http::{
    admin_get, admin_post, http_get, http_request, https_get, HttpResponse, DEFAULT_HTTP_TIMEOUT,
};
pub use port::free_port;
pub use upstream::Upstream;
