//! RDS, SRDS and VHDS resources.

use envoy_types::pb::envoy::config::route::v3::{
    route::Action,
    route_action::ClusterSpecifier,
    route_match::PathSpecifier,
    scoped_route_configuration::{
        key::{fragment, Fragment},
        Key,
    },
    Route, RouteAction, RouteConfiguration, RouteMatch, ScopedRouteConfiguration, VirtualHost,
};

/// A route configuration with one catch-all virtual host sending every
/// request to `cluster_name`.
pub fn make_route_config(route_name: &str, cluster_name: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: route_name.to_string(),
        virtual_hosts: vec![make_virtual_host(route_name, cluster_name)],
        ..Default::default()
    }
}

/// A virtual host for every domain (`*`) routing prefix `/` to `cluster_name`.
pub fn make_virtual_host(name: &str, cluster_name: &str) -> VirtualHost {
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix("/".to_string())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster_name.to_string())),
            ..Default::default()
        })),
        ..Default::default()
    };
    VirtualHost {
        name: name.to_string(),
        domains: vec!["*".to_string()],
        routes: vec![route],
        ..Default::default()
    }
}

/// A scope selecting route configuration `route_configuration_name` (fetched
/// by RDS) for requests whose scope key is made of `key_fragments`, in order.
pub fn make_scoped_route_config(
    name: &str,
    route_configuration_name: &str,
    key_fragments: &[&str],
) -> ScopedRouteConfiguration {
    let fragments = key_fragments
        .iter()
        .map(|k| Fragment {
            r#type: Some(fragment::Type::StringKey((*k).to_string())),
        })
        .collect();
    ScopedRouteConfiguration {
        name: name.to_string(),
        route_configuration_name: route_configuration_name.to_string(),
        key: Some(Key { fragments }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_of(vh: &VirtualHost) -> &str {
        let Some(Action::Route(ra)) = &vh.routes[0].action else {
            panic!("not a route action");
        };
        let Some(ClusterSpecifier::Cluster(c)) = &ra.cluster_specifier else {
            panic!("not a single cluster");
        };
        c
    }

    #[test]
    fn route_config_sends_everything_to_the_cluster() {
        let rc = make_route_config("r", "c");
        assert_eq!(rc.name, "r");
        assert_eq!(rc.virtual_hosts.len(), 1);
        let vh = &rc.virtual_hosts[0];
        assert_eq!(vh.domains, vec!["*"]);
        assert_eq!(vh.routes.len(), 1);
        let m = vh.routes[0].r#match.as_ref().expect("match");
        assert_eq!(m.path_specifier, Some(PathSpecifier::Prefix("/".into())));
        assert_eq!(cluster_of(vh), "c");
    }

    #[test]
    fn scoped_route_keeps_fragment_order() {
        let s = make_scoped_route_config("s", "r", &["a", "b"]);
        assert_eq!(s.name, "s");
        assert_eq!(s.route_configuration_name, "r");
        assert!(!s.on_demand);
        let keys: Vec<_> = s
            .key
            .expect("key")
            .fragments
            .into_iter()
            .map(|f| f.r#type)
            .collect();
        assert_eq!(
            keys,
            vec![
                Some(fragment::Type::StringKey("a".into())),
                Some(fragment::Type::StringKey("b".into()))
            ]
        );
    }
}
