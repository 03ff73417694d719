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
    /// REST polling (`/v3/discovery:*`).
    Rest,
    /// A separate incremental (delta) gRPC stream per resource type.
    Delta,
    /// One aggregated incremental (delta ADS) stream.
    DeltaAds,
}

/// Name of the static cluster through which Envoy reaches the control plane.
pub const XDS_CLUSTER: &str = "xds_cluster";

#[cfg(feature = "envoy-harness")]
pub mod envoy;
