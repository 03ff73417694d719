//! Builders for Envoy resources and (with the `envoy-harness` feature) a
//! harness that runs a real Envoy against a control plane, used by this
//! crate's tests and examples and offered to users for theirs.

/// How an Envoy (or any xDS client) reaches the control plane; decides the
/// `ConfigSource` every dynamic resource points at and the bootstrap shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdsMode {
    /// One aggregated (ADS) state-of-the-world stream for every type.
    Ads,
    /// A separate state-of-the-world gRPC stream per resource type.
    Xds,
    /// REST polling (`POST /v3/discovery:*` every
    /// [`REST_REFRESH_DELAY`]), as `server::RestGateway` (feature `rest`)
    /// serves it.
    Rest,
    /// A separate incremental (delta) gRPC stream per resource type.
    Delta,
    /// One aggregated incremental (delta ADS) stream.
    DeltaAds,
}

/// Name of the static cluster through which Envoy reaches the control plane.
pub const XDS_CLUSTER: &str = "xds_cluster";

mod address;
mod cluster;
mod config_source;
mod endpoint;
mod expectation;
mod extension;
mod listener;
mod route;
mod runtime;
mod secret;
mod test_resources;

pub use address::{socket_address, LOCALHOST};
pub use cluster::make_cluster;
pub use config_source::{config_source, REST_REFRESH_DELAY};
pub use endpoint::make_endpoint;
pub use expectation::{ListenerExpectation, ListenerKind};
pub use extension::{make_extension_config, make_http_listener_with_ecds, ECDS_FILTER_TYPE_URL};
pub use listener::{
    make_http_listener, make_http_listener_default_chain, make_scoped_route_http_listener,
    make_scoped_route_http_listener_for_route, make_tcp_listener, HCM_TYPE_URL, SCOPE_KEY_HEADER,
};
pub use route::{make_route_config, make_scoped_route_config, make_virtual_host};
pub use runtime::make_runtime;
pub use secret::{add_downstream_tls, make_tls_secret, make_validation_secret};
pub use test_resources::{
    GeneratedResources, TestResources, TestResourcesError, TlsMaterial, ECDS_RESPONSE_HEADER,
    TLS_SECRET_NAME,
};
#[cfg(feature = "envoy-harness")]
pub mod envoy;
