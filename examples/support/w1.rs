//! The resources of the reference workload "W1", shared by
//! `examples/bench_server.rs` and the benchmarks in `benches/` (included
//! with `#[path]`, so it is not an example of its own).
//!
//! For `clusters` C and `endpoints` E, update `seq` holds:
//! - C EDS clusters `cluster-<c>` (EDS over ADS, round robin, 5 s connect
//!   timeout);
//! - C load assignments `cluster-<c>`, one locality of E endpoints at
//!   `127.<(c+1)>>16>.<(c+1)>>8>.<c+1>` (each byte masked to 0..=255), port
//!   `10000 + ((seq*E + e) % 50000)`, so every update changes every endpoint;
//! - listener `listener_0` on 127.0.0.1:10000, an HTTP connection manager
//!   taking route `local_route` by RDS over ADS, with the router filter;
//! - route configuration `local_route`: virtual host `all_clusters`,
//!   domains `*`, a route per cluster, prefix `/cluster-<c>/` to `cluster-<c>`.
#![allow(dead_code)]

use bytes::Bytes;
use prost::Message;
use xds_control_plane::cache::{Snapshot, SnapshotError};
use xds_control_plane::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use xds_control_plane::envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use xds_control_plane::envoy_types::pb::envoy::config::listener::v3::Listener;
use xds_control_plane::envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost,
};
use xds_control_plane::resource::ResourceType;
use xds_control_plane::test_support::{make_cluster, make_http_listener, socket_address, XdsMode};

/// Name of the one listener.
pub const LISTENER_NAME: &str = "listener_0";
/// Name of the one route configuration.
pub const ROUTE_NAME: &str = "local_route";
/// Port of the one listener.
pub const LISTENER_PORT: u16 = 10000;

/// Name of cluster (and load assignment) number `c`.
pub fn cluster_name(c: usize) -> String {
    format!("cluster-{c}")
}

/// Cluster number `c`: EDS over ADS, round robin, 5 s connect timeout.
pub fn cluster(c: usize) -> Cluster {
    make_cluster(XdsMode::Ads, &cluster_name(c))
}

/// The endpoint host of cluster `c`: `127.x.y.z` from `c + 1`.
pub fn endpoint_host(c: usize) -> String {
    let n = c + 1;
    format!("127.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

/// The port of endpoint `e` of a `endpoints`-endpoint cluster in update `seq`.
pub fn endpoint_port(seq: u64, endpoints: usize, e: usize) -> u16 {
    let offset = (seq.wrapping_mul(endpoints as u64).wrapping_add(e as u64)) % 50_000;
    10_000 + offset as u16
}

/// The load assignment of cluster `c` in update `seq`: one locality, `endpoints` endpoints.
pub fn load_assignment(c: usize, seq: u64, endpoints: usize) -> ClusterLoadAssignment {
    let host = endpoint_host(c);
    let lb_endpoints = (0..endpoints)
        .map(|e| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(&host, endpoint_port(seq, endpoints, e))),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: cluster_name(c),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The one listener: HTTP on 127.0.0.1:10000, routes by RDS over ADS.
pub fn listener() -> Listener {
    make_http_listener(XdsMode::Ads, LISTENER_NAME, LISTENER_PORT, ROUTE_NAME)
}

/// The one route configuration: a route per cluster, `/cluster-<c>/` to `cluster-<c>`.
pub fn route_config(clusters: usize) -> RouteConfiguration {
    let routes = (0..clusters)
        .map(|c| Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix(format!("/{}/", cluster_name(c)))),
                ..Default::default()
            }),
            action: Some(Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(cluster_name(c))),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    RouteConfiguration {
        name: ROUTE_NAME.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: "all_clusters".to_string(),
            domains: vec!["*".to_string()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The snapshot of update `seq` with `version`, built with the typed
/// builder (every resource encoded here).
pub fn snapshot(
    version: &str,
    seq: u64,
    clusters: usize,
    endpoints: usize,
) -> Result<Snapshot, SnapshotError> {
    Snapshot::builder(version)
        .clusters((0..clusters).map(cluster))
        .endpoints((0..clusters).map(|c| load_assignment(c, seq, endpoints)))
        .listeners([listener()])
        .routes([route_config(clusters)])
        .build()
}

/// Every resource of update `seq`, already serialized: the expensive part of
/// building a snapshot, done before its version is known.
pub struct Encoded {
    resources: Vec<(ResourceType, String, Bytes)>,
}

impl Encoded {
    /// Serializes every resource of update `seq`.
    pub fn new(seq: u64, clusters: usize, endpoints: usize) -> Self {
        let mut resources = Vec::with_capacity(2 * clusters + 2);
        for c in 0..clusters {
            resources.push((
                ResourceType::Cluster,
                cluster_name(c),
                Bytes::from(cluster(c).encode_to_vec()),
            ));
        }
        for c in 0..clusters {
            resources.push((
                ResourceType::Endpoint,
                cluster_name(c),
                Bytes::from(load_assignment(c, seq, endpoints).encode_to_vec()),
            ));
        }
        resources.push((
            ResourceType::Listener,
            LISTENER_NAME.to_string(),
            Bytes::from(listener().encode_to_vec()),
        ));
        resources.push((
            ResourceType::Route,
            ROUTE_NAME.to_string(),
            Bytes::from(route_config(clusters).encode_to_vec()),
        ));
        Encoded { resources }
    }

    /// Total serialized size.
    pub fn byte_len(&self) -> usize {
        self.resources.iter().map(|(_, _, b)| b.len()).sum()
    }

    /// The snapshot with `version`: indexes the encoded resources (the bytes
    /// are shared, not copied).
    pub fn snapshot(&self, version: &str) -> Result<Snapshot, SnapshotError> {
        self.resources
            .iter()
            .fold(Snapshot::builder(version), |b, (t, name, bytes)| {
                b.encoded(*t, name, bytes.clone())
            })
            .build()
    }
}
