//! Build Envoy xDS control planes in Rust.
//!
//! A port of Envoy's go-control-plane: a [`SnapshotCache`] holding a
//! versioned [`Snapshot`] of Envoy resources per node, and a tonic gRPC
//! [`Server`] speaking the xDS protocol (ADS and every per-type discovery
//! service) to Envoy proxies and gRPC xDS clients; with the `rest`
//! feature, also the REST-JSON gateway Envoy can poll instead
//! (`server::rest`).
//!
//! ```no_run
//! use xds_control_plane::{IdHash, Server, Snapshot, SnapshotCache};
//! use xds_control_plane::envoy_types::pb::envoy::config::cluster::v3::Cluster;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = SnapshotCache::new(false, IdHash);
//! let server = Server::new(cache.clone(), ());
//! let snapshot = Snapshot::builder("v1")
//!     .clusters([Cluster { name: "backend".into(), ..Default::default() }])
//!     .build()?;
//! cache.set_snapshot("node1", snapshot);
//! tonic::transport::Server::builder()
//!     .add_service(server.ads_service())
//!     .add_service(server.cds_service())
//!     .serve("127.0.0.1:18000".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Serving follows go-control-plane's v3 semantics, with its known
//! weaknesses fixed: NACKed versions are not re-sent, locks are never held
//! across a send, and each resource is encoded once per snapshot.

/// The Envoy API message types and generated gRPC stubs this crate speaks.
pub use envoy_types;

pub mod cache;
pub mod metrics;
mod protowire;
pub mod resource;
pub mod server;
pub mod test_support;

pub use cache::{Cache, ClusterHash, IdHash, NodeHash, Snapshot, SnapshotCache};
pub use server::{Callbacks, Server};

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
