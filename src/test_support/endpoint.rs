//! EDS resources: `ClusterLoadAssignment`.

use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};

use super::socket_address;

/// The load assignment for `cluster_name`: one locality holding one endpoint
/// at `host:port`.
pub fn make_endpoint(cluster_name: &str, host: &str, port: u16) -> ClusterLoadAssignment {
    let endpoint = LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(host, port)),
            ..Default::default()
        })),
        ..Default::default()
    };
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![endpoint],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_locality_one_endpoint() {
        let cla = make_endpoint("c", "127.0.0.1", 9000);
        assert_eq!(cla.cluster_name, "c");
        assert_eq!(cla.endpoints.len(), 1);
        let lb = &cla.endpoints[0].lb_endpoints;
        assert_eq!(lb.len(), 1);
        let Some(HostIdentifier::Endpoint(ep)) = &lb[0].host_identifier else {
            panic!("no endpoint");
        };
        assert_eq!(ep.address, Some(socket_address("127.0.0.1", 9000)));
    }
}
