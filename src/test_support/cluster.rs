//! CDS resources: EDS clusters.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy},
    Cluster,
};

use super::config_source::pb_duration;
use super::{config_source, XdsMode};

/// How long Envoy waits to connect to an upstream of a generated cluster.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A round-robin EDS cluster whose endpoints come from the control plane
/// (under the same name) through `config_source(mode)`.
pub fn make_cluster(mode: XdsMode, name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(pb_duration(CONNECT_TIMEOUT)),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(config_source(mode)),
            ..Default::default()
        }),
        lb_policy: LbPolicy::RoundRobin as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eds_cluster_from_the_mode_config_source() {
        let c = make_cluster(XdsMode::Delta, "c0");
        assert_eq!(c.name, "c0");
        assert_eq!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        let eds = c.eds_cluster_config.expect("eds config");
        assert_eq!(eds.eds_config, Some(config_source(XdsMode::Delta)));
        assert!(eds.service_name.is_empty(), "EDS name is the cluster name");
        assert_eq!(c.connect_timeout.map(|d| d.seconds), Some(5));
        assert_eq!(c.lb_policy, LbPolicy::RoundRobin as i32);
    }
}
