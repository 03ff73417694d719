//! LDS resources: HTTP (RDS or scoped RDS) and TCP proxy listeners.

use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier,
    http_filter,
    scoped_routes::{
        scope_key_builder::{
            fragment_builder::{self, header_value_extractor::ExtractType, HeaderValueExtractor},
            FragmentBuilder,
        },
        ConfigSpecifier, ScopeKeyBuilder,
    },
    HttpConnectionManager, HttpFilter, Rds, ScopedRds, ScopedRouteConfigurationsList, ScopedRoutes,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy::ClusterSpecifier, TcpProxy,
};
use envoy_types::util::pack_any;

use super::{config_source, make_scoped_route_config, socket_address, XdsMode, LOCALHOST};

/// Type URL of the `HttpConnectionManager` network filter config.
pub const HCM_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// Request header whose value is the scope key on scoped-route listeners.
pub const SCOPE_KEY_HEADER: &str = "addr";

/// Separator between elements of [`SCOPE_KEY_HEADER`]; the first element is the key.
const SCOPE_KEY_SEPARATOR: &str = ",";

/// An HTTP listener on `127.0.0.1:port` whose routes come by RDS, as
/// `route_name`, from `config_source(mode)`.
pub fn make_http_listener(mode: XdsMode, name: &str, port: u16, route_name: &str) -> Listener {
    let hcm = http_connection_manager(rds(mode, route_name), Vec::new());
    listener(name, port, vec![hcm_chain(hcm)])
}

/// Like [`make_http_listener`], but the connection manager sits in the
/// listener's `default_filter_chain` and `filter_chains` is empty.
pub fn make_http_listener_default_chain(
    mode: XdsMode,
    name: &str,
    port: u16,
    route_name: &str,
) -> Listener {
    let hcm = http_connection_manager(rds(mode, route_name), Vec::new());
    Listener {
        default_filter_chain: Some(hcm_chain(hcm)),
        ..listener(name, port, Vec::new())
    }
}

/// An HTTP listener using scoped routes fetched by SRDS from
/// `config_source(mode)`; the scope key is the first element of request
/// header [`SCOPE_KEY_HEADER`], and each scope's routes come by RDS.
pub fn make_scoped_route_http_listener(mode: XdsMode, name: &str, port: u16) -> Listener {
    let srds = ConfigSpecifier::ScopedRds(ScopedRds {
        scoped_rds_config_source: Some(config_source(mode)),
        ..Default::default()
    });
    let hcm = http_connection_manager(scoped_routes(mode, name, srds), Vec::new());
    listener(name, port, vec![hcm_chain(hcm)])
}

/// Like [`make_scoped_route_http_listener`], but with one inline scope
/// (key `scope_key`) naming route configuration `route_config_name`, so no
/// `ScopedRouteConfiguration` resource is needed, only the route by RDS.
pub fn make_scoped_route_http_listener_for_route(
    mode: XdsMode,
    name: &str,
    port: u16,
    route_config_name: &str,
    scope_key: &str,
) -> Listener {
    let scope = make_scoped_route_config(&format!("{name}-scope"), route_config_name, &[scope_key]);
    let inline = ConfigSpecifier::ScopedRouteConfigurationsList(ScopedRouteConfigurationsList {
        scoped_route_configurations: vec![scope],
    });
    let hcm = http_connection_manager(scoped_routes(mode, name, inline), Vec::new());
    listener(name, port, vec![hcm_chain(hcm)])
}

/// A listener on `127.0.0.1:port` proxying raw TCP to `cluster_name`.
pub fn make_tcp_listener(name: &str, port: u16, cluster_name: &str) -> Listener {
    let proxy = TcpProxy {
        stat_prefix: "tcp".to_string(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster_name.to_string())),
        ..Default::default()
    };
    let chain = FilterChain {
        filters: vec![Filter {
            name: "envoy.filters.network.tcp_proxy".to_string(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(proxy))),
        }],
        ..Default::default()
    };
    listener(name, port, vec![chain])
}

/// A connection manager with `route` and the router filter, preceded by
/// `filters`.
pub(crate) fn http_connection_manager(
    route: RouteSpecifier,
    mut filters: Vec<HttpFilter>,
) -> HttpConnectionManager {
    filters.push(HttpFilter {
        name: "envoy.filters.http.router".to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
            Router::default(),
        ))),
        ..Default::default()
    });
    HttpConnectionManager {
        stat_prefix: "http".to_string(),
        route_specifier: Some(route),
        http_filters: filters,
        ..Default::default()
    }
}

/// A filter chain holding only `hcm`.
pub(crate) fn hcm_chain(hcm: HttpConnectionManager) -> FilterChain {
    FilterChain {
        filters: vec![Filter {
            name: "envoy.filters.network.http_connection_manager".to_string(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
        }],
        ..Default::default()
    }
}

/// A listener on `127.0.0.1:port` with `filter_chains`.
pub(crate) fn listener(name: &str, port: u16, filter_chains: Vec<FilterChain>) -> Listener {
    Listener {
        name: name.to_string(),
        address: Some(socket_address(LOCALHOST, port)),
        filter_chains,
        ..Default::default()
    }
}

/// RDS route specifier for `route_name`.
pub(crate) fn rds(mode: XdsMode, route_name: &str) -> RouteSpecifier {
    RouteSpecifier::Rds(Rds {
        config_source: Some(config_source(mode)),
        route_config_name: route_name.to_string(),
    })
}

/// Scoped routes keyed by [`SCOPE_KEY_HEADER`], with scopes from `scopes`.
fn scoped_routes(mode: XdsMode, listener_name: &str, scopes: ConfigSpecifier) -> RouteSpecifier {
    let from_header = FragmentBuilder {
        r#type: Some(fragment_builder::Type::HeaderValueExtractor(
            HeaderValueExtractor {
                name: SCOPE_KEY_HEADER.to_string(),
                element_separator: SCOPE_KEY_SEPARATOR.to_string(),
                extract_type: Some(ExtractType::Index(0)),
            },
        )),
    };
    RouteSpecifier::ScopedRoutes(ScopedRoutes {
        name: format!("{listener_name}-scoped-routes"),
        scope_key_builder: Some(ScopeKeyBuilder {
            fragments: vec![from_header],
        }),
        rds_config_source: Some(config_source(mode)),
        config_specifier: Some(scopes),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
    use prost::Message;

    /// Decodes the connection manager of a listener's single filter chain.
    pub(crate) fn decode_hcm(chain: &FilterChain) -> HttpConnectionManager {
        assert_eq!(chain.filters.len(), 1);
        let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
            panic!("no typed config");
        };
        assert_eq!(any.type_url, HCM_TYPE_URL);
        HttpConnectionManager::decode(any.value.as_slice()).expect("decodes")
    }

    fn port_of(l: &Listener) -> u32 {
        let Some(address::Address::SocketAddress(sa)) =
            l.address.as_ref().and_then(|a| a.address.clone())
        else {
            panic!("no socket address");
        };
        assert_eq!(sa.address, LOCALHOST);
        match sa.port_specifier {
            Some(PortSpecifier::PortValue(p)) => p,
            other => panic!("no port: {other:?}"),
        }
    }

    #[test]
    fn http_listener_hcm_decodes_back() {
        let l = make_http_listener(XdsMode::Xds, "l0", 10000, "r0");
        assert_eq!(l.name, "l0");
        assert_eq!(port_of(&l), 10000);
        assert_eq!(l.filter_chains.len(), 1);
        let hcm = decode_hcm(&l.filter_chains[0]);
        let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
            panic!("not RDS");
        };
        assert_eq!(rds.route_config_name, "r0");
        assert_eq!(rds.config_source, Some(config_source(XdsMode::Xds)));
        assert_eq!(hcm.http_filters.len(), 1);
        let Some(http_filter::ConfigType::TypedConfig(router)) = &hcm.http_filters[0].config_type
        else {
            panic!("router has no typed config");
        };
        assert_eq!(
            router.type_url,
            "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        );
    }

    #[test]
    fn default_chain_variant() {
        let l = make_http_listener_default_chain(XdsMode::Ads, "l0", 10000, "r0");
        assert!(l.filter_chains.is_empty());
        let hcm = decode_hcm(l.default_filter_chain.as_ref().expect("default chain"));
        assert!(matches!(hcm.route_specifier, Some(RouteSpecifier::Rds(_))));
    }

    fn scoped(l: &Listener) -> ScopedRoutes {
        match decode_hcm(&l.filter_chains[0]).route_specifier {
            Some(RouteSpecifier::ScopedRoutes(s)) => s,
            other => panic!("not scoped routes: {other:?}"),
        }
    }

    #[test]
    fn scoped_listener_uses_srds_and_a_header_key() {
        let l = make_scoped_route_http_listener(XdsMode::Rest, "l1", 10001);
        let s = scoped(&l);
        assert_eq!(s.rds_config_source, Some(config_source(XdsMode::Rest)));
        let Some(ConfigSpecifier::ScopedRds(srds)) = s.config_specifier else {
            panic!("not SRDS");
        };
        assert_eq!(
            srds.scoped_rds_config_source,
            Some(config_source(XdsMode::Rest))
        );
        let builder = s.scope_key_builder.expect("key builder");
        let Some(fragment_builder::Type::HeaderValueExtractor(h)) = &builder.fragments[0].r#type
        else {
            panic!("no header extractor");
        };
        assert_eq!(h.name, SCOPE_KEY_HEADER);
    }

    #[test]
    fn scoped_listener_for_route_inlines_the_scope() {
        let l = make_scoped_route_http_listener_for_route(XdsMode::Ads, "l2", 1, "r2", "k");
        let Some(ConfigSpecifier::ScopedRouteConfigurationsList(list)) =
            scoped(&l).config_specifier
        else {
            panic!("not inline");
        };
        assert_eq!(
            list.scoped_route_configurations,
            vec![make_scoped_route_config("l2-scope", "r2", &["k"])]
        );
    }

    #[test]
    fn tcp_listener_proxies_to_the_cluster() {
        let l = make_tcp_listener("t", 10002, "c");
        assert_eq!(port_of(&l), 10002);
        let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
        else {
            panic!("no typed config");
        };
        let proxy = TcpProxy::decode(any.value.as_slice()).expect("decodes");
        assert_eq!(
            proxy.cluster_specifier,
            Some(ClusterSpecifier::Cluster("c".into()))
        );
    }
}
