use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::ConfigSource;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, scoped_route_configuration::key::fragment,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, scoped_routes::ConfigSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use prost::Message;

use super::*;
use crate::test_support::config_source;
use crate::test_support::listener::tests::decode_hcm;
use crate::test_support::secret::tests::sds_names;

const ALL_MODES: [XdsMode; 5] = [
    XdsMode::Ads,
    XdsMode::Xds,
    XdsMode::Rest,
    XdsMode::Delta,
    XdsMode::DeltaAds,
];

fn params(mode: XdsMode, version: u64, tls: bool) -> TestResources {
    TestResources {
        version,
        num_clusters: 3,
        num_http_listeners: 3,
        num_scoped_http_listeners: 2,
        num_tcp_listeners: 2,
        num_runtimes: 2,
        num_extension_configs: 2,
        tls: tls.then(|| TlsMaterial {
            cert_chain_pem: "CHAIN".into(),
            private_key_pem: "KEY".into(),
        }),
        ..TestResources::new(
            mode,
            vec![("up-a".into(), 9001), ("up-b".into(), 9002)],
            20000,
        )
    }
}

/// What a generated listener points at, read back from its protobufs.
#[derive(Debug, Default)]
struct ListenerRefs {
    rds: Option<(String, ConfigSource)>,
    scoped: Option<ConfigSource>,
    tcp_cluster: Option<String>,
    ecds: Vec<(String, ConfigSource)>,
    sds: Vec<(String, XdsMode)>,
}

fn refs(l: &Listener) -> ListenerRefs {
    assert_eq!(l.filter_chains.len(), 1, "{}", l.name);
    let chain = &l.filter_chains[0];
    let mut r = ListenerRefs {
        sds: sds_names(chain),
        ..Default::default()
    };
    let Some(filter::ConfigType::TypedConfig(any)) = &chain.filters[0].config_type else {
        panic!("no typed config");
    };
    if any.type_url.ends_with("TcpProxy") {
        let proxy = TcpProxy::decode(any.value.as_slice()).expect("decodes");
        let Some(tcp_proxy::ClusterSpecifier::Cluster(c)) = proxy.cluster_specifier else {
            panic!("no cluster");
        };
        r.tcp_cluster = Some(c);
        return r;
    }
    let hcm = decode_hcm(chain);
    match hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            r.rds = Some((rds.route_config_name, rds.config_source.expect("source")));
        }
        Some(RouteSpecifier::ScopedRoutes(s)) => {
            let Some(ConfigSpecifier::ScopedRds(srds)) = s.config_specifier else {
                panic!("not SRDS");
            };
            assert_eq!(s.rds_config_source, srds.scoped_rds_config_source);
            r.scoped = srds.scoped_rds_config_source;
        }
        other => panic!("unexpected route specifier {other:?}"),
    }
    for f in hcm.http_filters {
        if let Some(http_filter::ConfigType::ConfigDiscovery(src)) = f.config_type {
            r.ecds.push((f.name, src.config_source.expect("source")));
        }
    }
    r
}

fn route_cluster(rc: &RouteConfiguration) -> String {
    let Some(Action::Route(ra)) = &rc.virtual_hosts[0].routes[0].action else {
        panic!("no route action");
    };
    let Some(ClusterSpecifier::Cluster(c)) = &ra.cluster_specifier else {
        panic!("no cluster");
    };
    c.clone()
}

fn endpoint_port(cla: &ClusterLoadAssignment) -> u16 {
    let Some(HostIdentifier::Endpoint(ep)) = &cla.endpoints[0].lb_endpoints[0].host_identifier
    else {
        panic!("no endpoint");
    };
    let addr = ep.address.clone().expect("address");
    assert_eq!(
        addr,
        crate::test_support::socket_address(LOCALHOST, port_in(&addr))
    );
    port_in(&addr)
}

fn port_in(addr: &envoy_types::pb::envoy::config::core::v3::Address) -> u16 {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
    let Some(address::Address::SocketAddress(sa)) = &addr.address else {
        panic!("no socket address");
    };
    let Some(PortSpecifier::PortValue(p)) = sa.port_specifier else {
        panic!("no port");
    };
    u16::try_from(p).expect("u16 port")
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> BTreeSet<String> {
    items.iter().map(|i| name(i).to_string()).collect()
}

#[test]
fn references_line_up_in_every_mode() {
    for mode in ALL_MODES {
        let g = params(mode, 7, true).generate().expect("generates");
        let source = config_source(mode);

        let clusters = names(&g.clusters, |c| &c.name);
        assert_eq!(clusters.len(), 3);
        assert_eq!(names(&g.endpoints, |e| &e.cluster_name), clusters);
        for c in &g.clusters {
            let eds = c.eds_cluster_config.as_ref().expect("eds");
            assert_eq!(eds.eds_config.as_ref(), Some(&source));
        }

        let mut wanted_routes = BTreeSet::new();
        let mut ecds = BTreeSet::new();
        for l in &g.listeners {
            let r = refs(l);
            if let Some((route, src)) = r.rds {
                assert_eq!(src, source);
                wanted_routes.insert(route);
            }
            if let Some(src) = r.scoped {
                assert_eq!(src, source);
            }
            if let Some(c) = r.tcp_cluster {
                assert!(clusters.contains(&c), "{c}");
            }
            for (name, src) in r.ecds {
                assert_eq!(src, source);
                ecds.insert(name);
            }
            for (secret, sds_mode) in r.sds {
                assert!(g.secrets.iter().any(|s| s.name == secret));
                assert_eq!(config_source(sds_mode), source);
            }
        }
        wanted_routes.extend(
            g.scoped_routes
                .iter()
                .map(|s| s.route_configuration_name.clone()),
        );
        assert_eq!(names(&g.routes, |r| &r.name), wanted_routes);
        assert_eq!(g.routes.len(), wanted_routes.len(), "no duplicate routes");
        for rc in &g.routes {
            assert!(clusters.contains(&route_cluster(rc)));
        }
        assert_eq!(names(&g.extension_configs, |e| &e.name), ecds);
        assert_eq!(ecds.len(), 2);
        assert_eq!(
            g.runtime_layer_names,
            g.runtimes
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        );
        assert!(g.virtual_hosts.is_empty());
    }
}

#[test]
fn listeners_are_numbered_from_the_base_port() {
    let g = params(XdsMode::Ads, 0, false)
        .generate()
        .expect("generates");
    let kinds: Vec<_> = g.expectations.iter().map(|e| e.kind).collect();
    use ListenerKind::*;
    assert_eq!(
        kinds,
        vec![Http, Http, Http, ScopedHttp, ScopedHttp, Tcp, Tcp]
    );
    for (i, (l, e)) in g.listeners.iter().zip(&g.expectations).enumerate() {
        assert_eq!(l.name, format!("listener-{i}"));
        assert_eq!(e.name, l.name);
        assert_eq!(e.port, 20000 + i as u16);
        assert_eq!(port_in(l.address.as_ref().expect("address")), e.port);
    }
}

#[test]
fn expectations_follow_the_resources() {
    let p = params(XdsMode::Xds, 5, false);
    let g = p.generate().expect("generates");
    let routes: BTreeMap<_, _> = g.routes.iter().map(|r| (r.name.clone(), r)).collect();
    let ports: BTreeMap<_, _> = g
        .endpoints
        .iter()
        .map(|e| (e.cluster_name.clone(), endpoint_port(e)))
        .collect();
    let upstream_at = |cluster: &str| {
        let port = ports[cluster];
        p.upstreams
            .iter()
            .find(|u| u.1 == port)
            .expect("upstream")
            .0
            .clone()
    };
    let ext_values: BTreeMap<_, _> = g
        .extension_configs
        .iter()
        .map(|e| (e.name.clone(), e.clone()))
        .collect();
    for (l, e) in g.listeners.iter().zip(&g.expectations) {
        let r = refs(l);
        let cluster = match e.kind {
            ListenerKind::Http => route_cluster(routes[&r.rds.expect("rds").0]),
            ListenerKind::ScopedHttp => {
                let [(header, key)] = e.request_headers.as_slice() else {
                    panic!("one scope header expected");
                };
                assert_eq!(header, SCOPE_KEY_HEADER);
                let scope = g
                    .scoped_routes
                    .iter()
                    .find(|s| {
                        s.key.as_ref().expect("key").fragments[0].r#type
                            == Some(fragment::Type::StringKey(key.clone()))
                    })
                    .expect("a scope with the key");
                route_cluster(routes[&scope.route_configuration_name])
            }
            ListenerKind::Tcp => r.tcp_cluster.expect("tcp cluster"),
        };
        assert_eq!(upstream_at(&cluster), e.expected_upstream, "{}", e.name);
        for (name, _) in &r.ecds {
            let ext = make_extension_config(
                name,
                ECDS_RESPONSE_HEADER,
                &e.expected_response_headers[0].1,
            );
            assert_eq!(&ext, &ext_values[name]);
        }
        assert_eq!(r.ecds.len(), e.expected_response_headers.len());
    }
    assert_eq!(
        g.runtime_expectations,
        vec![
            ("test.runtime_0".to_string(), "runtime-0-v5".to_string()),
            ("test.runtime_1".to_string(), "runtime-1-v5".to_string()),
        ]
    );
    assert_eq!(
        g.runtimes[1],
        make_runtime("runtime-1", &[("test.runtime_1", "runtime-1-v5")])
    );
}

#[test]
fn each_version_differs_from_the_previous() {
    let mut previous = params(XdsMode::Delta, 0, true)
        .generate()
        .expect("generates");
    for version in 1..4 {
        let g = params(XdsMode::Delta, version, true)
            .generate()
            .expect("generates");
        fn all_differ<T: PartialEq + std::fmt::Debug>(a: &[T], b: &[T]) {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert_ne!(x, y);
            }
        }
        all_differ(&previous.clusters, &g.clusters);
        all_differ(&previous.endpoints, &g.endpoints);
        all_differ(&previous.routes, &g.routes);
        all_differ(&previous.listeners, &g.listeners);
        all_differ(&previous.scoped_routes, &g.scoped_routes);
        all_differ(&previous.runtimes, &g.runtimes);
        all_differ(&previous.extension_configs, &g.extension_configs);
        let upstreams = |r: &GeneratedResources| -> Vec<String> {
            r.expectations
                .iter()
                .map(|e| e.expected_upstream.clone())
                .collect()
        };
        assert_ne!(upstreams(&previous), upstreams(&g));
        // Stable names for the resources updated in place.
        assert_eq!(
            names(&previous.listeners, |l| &l.name),
            names(&g.listeners, |l| &l.name)
        );
        assert_eq!(previous.runtime_layer_names, g.runtime_layer_names);
        previous = g;
    }
}

#[test]
fn tls_only_when_asked() {
    let plain = params(XdsMode::Ads, 1, false)
        .generate()
        .expect("generates");
    assert!(plain.secrets.is_empty());
    assert!(plain.listeners.iter().all(|l| refs(l).sds.is_empty()));
    assert!(plain.expectations.iter().all(|e| !e.tls));

    let tls = params(XdsMode::Ads, 1, true).generate().expect("generates");
    assert_eq!(
        tls.secrets,
        vec![crate::test_support::make_tls_secret(
            TLS_SECRET_NAME,
            "CHAIN",
            "KEY"
        )]
    );
    for (l, e) in tls.listeners.iter().zip(&tls.expectations) {
        let sds = refs(l).sds;
        assert_eq!(e.tls, e.kind != ListenerKind::Tcp);
        if e.tls {
            assert_eq!(sds, vec![(TLS_SECRET_NAME.to_string(), XdsMode::Ads)]);
        } else {
            assert!(sds.is_empty());
        }
    }
}

#[test]
fn impossible_parameters_are_errors() {
    let base = TestResources::new(XdsMode::Ads, vec![("up".into(), 1)], 65534);
    let no_clusters = TestResources {
        num_tcp_listeners: 1,
        ..base.clone()
    };
    assert_eq!(
        no_clusters.generate(),
        Err(TestResourcesError::NoClusters { listeners: 1 })
    );
    let no_upstreams = TestResources {
        num_clusters: 1,
        upstreams: Vec::new(),
        ..base.clone()
    };
    assert_eq!(
        no_upstreams.generate(),
        Err(TestResourcesError::NoUpstreams { clusters: 1 })
    );
    let too_many_ports = TestResources {
        num_clusters: 1,
        num_tcp_listeners: 3,
        ..base.clone()
    };
    assert_eq!(
        too_many_ports.generate(),
        Err(TestResourcesError::PortOverflow {
            base_port: 65534,
            listeners: 3
        })
    );
    let two_fit = TestResources {
        num_tcp_listeners: 2,
        ..too_many_ports
    };
    assert!(two_fit.generate().is_ok());
    let lonely_ecds = TestResources {
        num_extension_configs: 1,
        ..base
    };
    assert_eq!(
        lonely_ecds.generate(),
        Err(TestResourcesError::TooFewHttpListeners {
            extension_configs: 1,
            http_listeners: 0
        })
    );
}

#[test]
fn empty_parameters_give_empty_resources() {
    let g = TestResources::new(XdsMode::Rest, Vec::new(), 1)
        .generate()
        .expect("generates");
    assert_eq!(g, GeneratedResources::default());
}

#[test]
fn generated_snapshots_are_consistent_in_every_mode() {
    for mode in ALL_MODES {
        for tls in [false, true] {
            let generated = params(mode, 4, tls).generate().unwrap();
            let snapshot = generated.snapshot("v4").unwrap();
            assert_eq!(snapshot.consistent(), Ok(()), "{mode:?} tls={tls}");
        }
    }
}
