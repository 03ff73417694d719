//! Resource types served over xDS: their type URLs, the order an ADS stream
//! sends them in, their names, and the references between them.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::{cluster::ClusterDiscoveryType, Cluster};
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, ScopedRouteConfiguration, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, scoped_routes::ConfigSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::runtime::v3::Runtime;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

/// Type URLs of the resources this crate knows (xDS v3).
pub mod type_url {
    /// Marks an aggregated (ADS) stream, which carries every type.
    pub const ANY: &str = "";
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// LEDS (delta only): `envoy.config.endpoint.v3.LbEndpoint`.
    pub const LB_ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.LbEndpoint";
    /// LDS: `envoy.config.listener.v3.Listener`.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// SRDS: `envoy.config.route.v3.ScopedRouteConfiguration`.
    pub const SCOPED_ROUTE: &str =
        "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";
    /// VHDS (delta only): `envoy.config.route.v3.VirtualHost`.
    pub const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";
    /// SDS: `envoy.extensions.transport_sockets.tls.v3.Secret`.
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    /// RTDS: `envoy.service.runtime.v3.Runtime`.
    pub const RUNTIME: &str = "type.googleapis.com/envoy.service.runtime.v3.Runtime";
    /// ECDS: `envoy.config.core.v3.TypedExtensionConfig`.
    pub const EXTENSION_CONFIG: &str =
        "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
    /// The wrapper that carries a resource with a TTL.
    pub const RESOURCE_WRAPPER: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";
    /// The HTTP connection manager network filter, inspected for RDS references.
    pub const HTTP_CONNECTION_MANAGER: &str =
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
}

/// A resource type a [`Snapshot`](crate::cache::Snapshot) holds.
///
/// The declaration order is the order an ADS stream sends responses in, so
/// that a proxy learns of clusters before their endpoints and of listeners
/// before their routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// CDS.
    Cluster,
    /// EDS.
    Endpoint,
    /// LEDS (delta only).
    LbEndpoint,
    /// LDS.
    Listener,
    /// RDS.
    Route,
    /// SRDS.
    ScopedRoute,
    /// VHDS (delta only).
    VirtualHost,
    /// SDS.
    Secret,
    /// RTDS.
    Runtime,
    /// ECDS.
    ExtensionConfig,
}

impl ResourceType {
    /// Every type, in ADS response order.
    pub const ALL: [ResourceType; 10] = [
        ResourceType::Cluster,
        ResourceType::Endpoint,
        ResourceType::LbEndpoint,
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::ScopedRoute,
        ResourceType::VirtualHost,
        ResourceType::Secret,
        ResourceType::Runtime,
        ResourceType::ExtensionConfig,
    ];

    /// Number of known types.
    pub const COUNT: usize = Self::ALL.len();

    /// The type URL, e.g. `type.googleapis.com/envoy.config.cluster.v3.Cluster`.
    pub const fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => type_url::CLUSTER,
            ResourceType::Endpoint => type_url::ENDPOINT,
            ResourceType::LbEndpoint => type_url::LB_ENDPOINT,
            ResourceType::Listener => type_url::LISTENER,
            ResourceType::Route => type_url::ROUTE,
            ResourceType::ScopedRoute => type_url::SCOPED_ROUTE,
            ResourceType::VirtualHost => type_url::VIRTUAL_HOST,
            ResourceType::Secret => type_url::SECRET,
            ResourceType::Runtime => type_url::RUNTIME,
            ResourceType::ExtensionConfig => type_url::EXTENSION_CONFIG,
        }
    }

    /// The type a type URL names, if it is one of ours.
    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Position in [`ResourceType::ALL`], usable as an array index.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether a state-of-the-world response must carry every subscribed
    /// resource (CDS and LDS), so that an omitted one means "deleted".
    pub const fn requires_full_state_in_sotw(self) -> bool {
        matches!(self, ResourceType::Cluster | ResourceType::Listener)
    }

    /// Whether the type is served on state-of-the-world streams (LEDS and
    /// VHDS are delta only).
    pub const fn served_in_sotw(self) -> bool {
        !matches!(self, ResourceType::LbEndpoint | ResourceType::VirtualHost)
    }
}

/// Rank of a type URL in ADS response order; unknown types go last.
pub fn response_order(type_url: &str) -> usize {
    ResourceType::from_type_url(type_url).map_or(ResourceType::COUNT, ResourceType::index)
}

/// Whether a SotW response of this type URL must carry the full state.
pub fn requires_full_state_in_sotw(type_url: &str) -> bool {
    ResourceType::from_type_url(type_url).is_some_and(ResourceType::requires_full_state_in_sotw)
}

/// An Envoy message that can be put in a snapshot: it knows its type and
/// the name xDS identifies it by.
pub trait XdsResource: Message + Sized {
    /// The snapshot slot this message goes in.
    const TYPE: ResourceType;
    /// The resource name (`cluster_name` for a `ClusterLoadAssignment`).
    fn resource_name(&self) -> &str;
}

macro_rules! named_resource {
    ($($ty:ty => $kind:ident . $field:ident),* $(,)?) => {$(
        impl XdsResource for $ty {
            const TYPE: ResourceType = ResourceType::$kind;
            fn resource_name(&self) -> &str {
                &self.$field
            }
        }
    )*};
}

named_resource! {
    Cluster => Cluster.name,
    ClusterLoadAssignment => Endpoint.cluster_name,
    Listener => Listener.name,
    RouteConfiguration => Route.name,
    ScopedRouteConfiguration => ScopedRoute.name,
    VirtualHost => VirtualHost.name,
    Secret => Secret.name,
    Runtime => Runtime.name,
    TypedExtensionConfig => ExtensionConfig.name,
}

/// LEDS resources carry no name of their own: xDS names them by the
/// collection entry, which callers pass when adding them to a snapshot.
impl XdsResource for LbEndpoint {
    const TYPE: ResourceType = ResourceType::LbEndpoint;
    fn resource_name(&self) -> &str {
        ""
    }
}

/// The EDS resource name a cluster depends on, if it is an EDS cluster: the
/// `service_name` of its EDS config, or else the cluster's own name.
pub fn cluster_endpoint_name(cluster: &Cluster) -> Option<&str> {
    let eds = Some(ClusterDiscoveryType::Type(
        envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::Eds as i32,
    ));
    if cluster.cluster_discovery_type != eds {
        return None;
    }
    let service_name = cluster
        .eds_cluster_config
        .as_ref()
        .map(|c| c.service_name.as_str())
        .filter(|s| !s.is_empty());
    Some(service_name.unwrap_or(&cluster.name))
}

/// The RDS route configuration names a listener depends on: those of every
/// HTTP connection manager in its filter chains, its default filter chain and
/// its `api_listener` (gRPC clients), including the route configurations named
/// by inline scoped routes.
pub fn listener_route_names(listener: &Listener) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chains = listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.as_ref());
    for filter in chains.flat_map(|chain: &FilterChain| chain.filters.iter()) {
        if let Some(hcm) = filter_connection_manager(filter) {
            add_connection_manager_routes(&hcm, &mut names);
        }
    }
    let api_config = listener
        .api_listener
        .as_ref()
        .and_then(|api| api.api_listener.as_ref());
    if let Some(hcm) = api_config.and_then(decode_connection_manager) {
        add_connection_manager_routes(&hcm, &mut names);
    }
    names
}

/// The route configuration a scoped route points at.
pub fn scoped_route_route_name(scoped: &ScopedRouteConfiguration) -> &str {
    &scoped.route_configuration_name
}

fn filter_connection_manager(filter: &Filter) -> Option<HttpConnectionManager> {
    match &filter.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => decode_connection_manager(any),
        _ => None,
    }
}

fn decode_connection_manager(any: &Any) -> Option<HttpConnectionManager> {
    if any.type_url != type_url::HTTP_CONNECTION_MANAGER {
        return None;
    }
    HttpConnectionManager::decode(any.value.as_slice()).ok()
}

fn add_connection_manager_routes(hcm: &HttpConnectionManager, names: &mut BTreeSet<String>) {
    match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            names.insert(rds.route_config_name.clone());
        }
        Some(RouteSpecifier::ScopedRoutes(scoped)) => {
            if let Some(ConfigSpecifier::ScopedRouteConfigurationsList(list)) =
                &scoped.config_specifier
            {
                for config in &list.scoped_route_configurations {
                    names.insert(config.route_configuration_name.clone());
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{DiscoveryType, EdsClusterConfig};
    use envoy_types::pb::envoy::config::listener::v3::ApiListener;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        Rds, ScopedRouteConfigurationsList, ScopedRoutes,
    };

    fn hcm_any(route_specifier: RouteSpecifier) -> Any {
        let hcm = HttpConnectionManager {
            route_specifier: Some(route_specifier),
            ..Default::default()
        };
        Any {
            type_url: type_url::HTTP_CONNECTION_MANAGER.to_string(),
            value: hcm.encode_to_vec(),
        }
    }

    fn rds(name: &str) -> RouteSpecifier {
        RouteSpecifier::Rds(Rds {
            route_config_name: name.to_string(),
            ..Default::default()
        })
    }

    fn chain(any: Any) -> FilterChain {
        FilterChain {
            filters: vec![Filter {
                name: "hcm".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any)),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn type_urls_round_trip_in_ads_order() {
        for (i, t) in ResourceType::ALL.into_iter().enumerate() {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
            assert_eq!(t.index(), i);
            assert_eq!(response_order(t.type_url()), i);
        }
        assert_eq!(ResourceType::from_type_url("type.googleapis.com/x.Y"), None);
        assert_eq!(
            response_order("type.googleapis.com/x.Y"),
            ResourceType::COUNT
        );
        assert!(response_order(type_url::CLUSTER) < response_order(type_url::ENDPOINT));
        assert!(response_order(type_url::LISTENER) < response_order(type_url::ROUTE));
    }

    #[test]
    fn only_clusters_and_listeners_are_full_state() {
        let full: Vec<_> = ResourceType::ALL
            .into_iter()
            .filter(|t| t.requires_full_state_in_sotw())
            .collect();
        assert_eq!(full, vec![ResourceType::Cluster, ResourceType::Listener]);
        assert!(!requires_full_state_in_sotw("unknown"));
    }

    #[test]
    fn eds_cluster_references_service_name_or_own_name() {
        let mut cluster = Cluster {
            name: "c1".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            ..Default::default()
        };
        assert_eq!(cluster_endpoint_name(&cluster), Some("c1"));
        cluster.eds_cluster_config = Some(EdsClusterConfig {
            service_name: "svc".into(),
            ..Default::default()
        });
        assert_eq!(cluster_endpoint_name(&cluster), Some("svc"));
        cluster.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
        assert_eq!(cluster_endpoint_name(&cluster), None);
    }

    #[test]
    fn listener_routes_come_from_every_chain_and_api_listener() {
        let scoped = RouteSpecifier::ScopedRoutes(ScopedRoutes {
            config_specifier: Some(ConfigSpecifier::ScopedRouteConfigurationsList(
                ScopedRouteConfigurationsList {
                    scoped_route_configurations: vec![ScopedRouteConfiguration {
                        route_configuration_name: "scoped-target".into(),
                        ..Default::default()
                    }],
                },
            )),
            ..Default::default()
        });
        let listener = Listener {
            name: "l".into(),
            filter_chains: vec![chain(hcm_any(rds("r1"))), chain(hcm_any(scoped))],
            default_filter_chain: Some(chain(hcm_any(rds("r-default")))),
            api_listener: Some(ApiListener {
                api_listener: Some(hcm_any(rds("r-grpc"))),
            }),
            ..Default::default()
        };
        let names: Vec<_> = listener_route_names(&listener).into_iter().collect();
        assert_eq!(names, ["r-default", "r-grpc", "r1", "scoped-target"]);
    }

    #[test]
    fn resource_names_follow_the_protocol() {
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            ..Default::default()
        };
        assert_eq!(cla.resource_name(), "c");
        assert_eq!(
            <ClusterLoadAssignment as XdsResource>::TYPE,
            ResourceType::Endpoint
        );
    }
}
