//! The configuration each node group gets (used by `main.rs` and by
//! `tests/envoy_examples.rs`, which includes this file with `#[path]`).
//!
//! Every group gets the same resource names (listener `edge`, route `edge`,
//! cluster `backend`) with its own contents: the proxies of group "blue"
//! send `backend` traffic to one upstream, those of "green" to another. A
//! change for one group is one `set_snapshot` call under the group's name,
//! whatever the number of proxies in it.

use std::error::Error;

use xds_control_plane::test_support::{
    make_cluster, make_endpoint, make_http_listener, make_route_config, XdsMode,
};
use xds_control_plane::{ClusterHash, Snapshot};

/// The groups this example serves: an Envoy joins one by its `node.cluster`
/// (`--service-cluster`).
pub const GROUPS: [&str; 2] = ["blue", "green"];

/// Where clients that name no cluster go: the first ("stable") group. They
/// get a working configuration instead of waiting for a group of their own
/// that nobody configured; see [`ClusterHash`]. (Envoy always names one; a
/// gRPC xDS client may not.)
pub const FALLBACK_GROUP: &str = GROUPS[0];

/// The listener every group has.
pub const LISTENER: &str = "edge";
/// The route configuration of that listener.
pub const ROUTE: &str = "edge";
/// The cluster the route sends everything to.
pub const CLUSTER: &str = "backend";

/// The cache key of every node: its `node.cluster`, or [`FALLBACK_GROUP`].
pub fn node_hash() -> ClusterHash {
    ClusterHash::with_fallback(FALLBACK_GROUP)
}

/// Where one group's proxies listen and where their `backend` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPorts {
    /// The port of the group's listener (127.0.0.1).
    pub listener: u16,
    /// The port of the group's upstream (127.0.0.1).
    pub upstream: u16,
}

/// The snapshot of one group at `version`: listener `edge` on
/// `ports.listener` routing everything to cluster `backend`, whose single
/// endpoint is 127.0.0.1:`ports.upstream`.
///
/// In a fleet the groups' listeners would share a port, each proxy on its
/// own host; here every Envoy runs on one machine, so each group listens on
/// its own port.
pub fn group_snapshot(version: &str, ports: GroupPorts) -> Result<Snapshot, Box<dyn Error>> {
    let snapshot = Snapshot::builder(version)
        .clusters([make_cluster(XdsMode::Ads, CLUSTER)])
        .endpoints([make_endpoint(CLUSTER, "127.0.0.1", ports.upstream)])
        .routes([make_route_config(ROUTE, CLUSTER)])
        .listeners([make_http_listener(
            XdsMode::Ads,
            LISTENER,
            ports.listener,
            ROUTE,
        )])
        .build()?;
    // Every route and endpoint referenced exists: Envoy never waits for a
    // resource that will not come.
    snapshot.consistent()?;
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_control_plane::envoy_types::pb::envoy::config::core::v3::Node;
    use xds_control_plane::envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use xds_control_plane::envoy_types::pb::envoy::config::listener::v3::Listener;
    use xds_control_plane::resource::type_url;
    use xds_control_plane::NodeHash;

    #[test]
    fn nodes_are_grouped_by_cluster_with_a_fallback() {
        let node = |cluster: &str| Node {
            id: "envoy-1".into(),
            cluster: cluster.into(),
            ..Default::default()
        };
        assert_eq!(node_hash().id(Some(&node("green"))), "green");
        assert_eq!(node_hash().id(Some(&node(""))), "blue");
        assert_eq!(node_hash().id(None), "blue");
    }

    #[test]
    fn a_group_snapshot_listens_and_routes_where_its_ports_say() {
        let ports = GroupPorts {
            listener: 10001,
            upstream: 8081,
        };
        let snapshot = group_snapshot("v7", ports).unwrap();
        assert_eq!(snapshot.version(type_url::LISTENER), Some("v7"));
        let listener: Listener = snapshot.get(LISTENER).unwrap().unwrap();
        assert_eq!(
            listener,
            make_http_listener(XdsMode::Ads, LISTENER, 10001, ROUTE)
        );
        let endpoints: ClusterLoadAssignment = snapshot.get(CLUSTER).unwrap().unwrap();
        assert_eq!(endpoints, make_endpoint(CLUSTER, "127.0.0.1", 8081));
    }
}
