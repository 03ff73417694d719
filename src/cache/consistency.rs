//! `Snapshot::consistent`: do the EDS and RDS resources exactly match what
//! clusters, listeners and scoped routes reference?

use std::collections::BTreeSet;
use std::fmt;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::ScopedRouteConfiguration;

use super::{EncodedResource, Snapshot};
use crate::resource::{self, ResourceType};

/// One way a snapshot's references and resources disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inconsistency {
    /// Referenced names with no resource of that type.
    Missing {
        /// The referenced type's URL.
        type_url: &'static str,
        /// Names referenced but absent.
        names: Vec<String>,
    },
    /// Resources that nothing references.
    Unreferenced {
        /// The type's URL.
        type_url: &'static str,
        /// Names present but not referenced.
        names: Vec<String>,
    },
    /// A resource whose references could not be read.
    Undecodable {
        /// The type's URL.
        type_url: &'static str,
        /// The resource name.
        name: String,
        /// What the decoder said.
        error: String,
    },
}

impl fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Inconsistency::Missing { type_url, names } => {
                write!(
                    f,
                    "{type_url}: referenced but missing: {}",
                    names.join(", ")
                )
            }
            Inconsistency::Unreferenced { type_url, names } => {
                write!(
                    f,
                    "{type_url}: present but not referenced: {}",
                    names.join(", ")
                )
            }
            Inconsistency::Undecodable {
                type_url,
                name,
                error,
            } => write!(f, "{type_url} {name:?} cannot be decoded: {error}"),
        }
    }
}

/// What [`Snapshot::consistent`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent snapshot: {}", self.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ConsistencyError {
    /// Every problem found.
    pub problems: Vec<Inconsistency>,
}

impl Snapshot {
    /// Checks that the EDS resources are exactly those the EDS clusters name,
    /// and the RDS resources exactly those named by listeners (every filter
    /// chain, the default chain, `api_listener`, inline scoped routes) and by
    /// scoped route configurations.
    ///
    /// Partial snapshots are allowed by the cache; call this when yours are
    /// meant to be complete.
    pub fn consistent(&self) -> Result<(), ConsistencyError> {
        let mut problems = Vec::new();
        let mut endpoints = BTreeSet::new();
        let mut routes = BTreeSet::new();
        for cluster in decode_all::<Cluster>(self, ResourceType::Cluster, &mut problems) {
            if let Some(name) = resource::cluster_endpoint_name(&cluster) {
                endpoints.insert(name.to_string());
            }
        }
        for listener in decode_all::<Listener>(self, ResourceType::Listener, &mut problems) {
            routes.extend(resource::listener_route_names(&listener));
        }
        let scoped =
            decode_all::<ScopedRouteConfiguration>(self, ResourceType::ScopedRoute, &mut problems);
        for scoped_route in scoped {
            routes.insert(resource::scoped_route_route_name(&scoped_route).to_string());
        }
        compare(self, ResourceType::Endpoint, &endpoints, &mut problems);
        compare(self, ResourceType::Route, &routes, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConsistencyError { problems })
        }
    }
}

fn decode_all<T: prost::Message + Default>(
    snapshot: &Snapshot,
    resource_type: ResourceType,
    problems: &mut Vec<Inconsistency>,
) -> Vec<T> {
    let resources = snapshot.of_type(resource_type).resources();
    let decode = |r: &EncodedResource| match r.decode::<T>() {
        Ok(message) => Some(message),
        Err(error) => {
            problems.push(Inconsistency::Undecodable {
                type_url: resource_type.type_url(),
                name: r.name().to_string(),
                error: error.to_string(),
            });
            None
        }
    };
    resources.iter().filter_map(decode).collect()
}

fn compare(
    snapshot: &Snapshot,
    resource_type: ResourceType,
    referenced: &BTreeSet<String>,
    problems: &mut Vec<Inconsistency>,
) {
    let present = snapshot.of_type(resource_type);
    let missing: Vec<String> = referenced
        .iter()
        .filter(|n| !present.contains(n))
        .cloned()
        .collect();
    let unreferenced: Vec<String> = present
        .resources()
        .iter()
        .filter(|r| !referenced.contains(r.name()))
        .map(|r| r.name().to_string())
        .collect();
    let type_url = resource_type.type_url();
    if !missing.is_empty() {
        problems.push(Inconsistency::Missing {
            type_url,
            names: missing,
        });
    }
    if !unreferenced.is_empty() {
        problems.push(Inconsistency::Unreferenced {
            type_url,
            names: unreferenced,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::type_url;
    use bytes::Bytes;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType,
    };
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

    fn eds_cluster(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            ..Default::default()
        }
    }

    fn cla(name: &str) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: name.into(),
            ..Default::default()
        }
    }

    fn scoped(name: &str, route: &str) -> ScopedRouteConfiguration {
        ScopedRouteConfiguration {
            name: name.into(),
            route_configuration_name: route.into(),
            ..Default::default()
        }
    }

    fn route(name: &str) -> RouteConfiguration {
        RouteConfiguration {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn matching_references_are_consistent() {
        let snapshot = Snapshot::builder("v")
            .clusters([eds_cluster("a")])
            .endpoints([cla("a")])
            .scoped_routes([scoped("s", "r")])
            .routes([route("r")])
            .build()
            .unwrap();
        assert_eq!(snapshot.consistent(), Ok(()));
    }

    #[test]
    fn lists_missing_and_extra_names() {
        let snapshot = Snapshot::builder("v")
            .clusters([eds_cluster("a"), eds_cluster("b")])
            .endpoints([cla("a"), cla("extra")])
            .scoped_routes([scoped("s", "r-missing")])
            .build()
            .unwrap();
        let err = snapshot.consistent().unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                Inconsistency::Missing {
                    type_url: type_url::ENDPOINT,
                    names: vec!["b".into()]
                },
                Inconsistency::Unreferenced {
                    type_url: type_url::ENDPOINT,
                    names: vec!["extra".into()]
                },
                Inconsistency::Missing {
                    type_url: type_url::ROUTE,
                    names: vec!["r-missing".into()]
                },
            ]
        );
        let text = err.to_string();
        assert!(text.contains("referenced but missing: b"), "{text}");
        assert!(text.contains("not referenced: extra"), "{text}");
    }

    #[test]
    fn reports_undecodable_listeners() {
        let snapshot = Snapshot::builder("v")
            .encoded(
                ResourceType::Listener,
                "bad",
                Bytes::from_static(&[0xff, 0xff, 0xff]),
            )
            .build()
            .unwrap();
        let err = snapshot.consistent().unwrap_err();
        assert!(
            matches!(&err.problems[0], Inconsistency::Undecodable { name, .. } if name == "bad")
        );
    }
}
