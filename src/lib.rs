//! Build Envoy xDS control planes in Rust.
//!
//! A port of go-control-plane: a [`cache::SnapshotCache`] holding versioned
//! snapshots of Envoy resources per node, and a tonic gRPC server speaking the
//! xDS protocol (ADS and every per-type discovery service).

/// The Envoy API message types and generated gRPC stubs this crate speaks.
pub use envoy_types;

pub mod cache;
pub mod resource;
pub mod test_support;
