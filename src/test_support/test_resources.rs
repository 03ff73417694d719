//! A generator of consistent, versioned resource sets for end-to-end tests.

use std::fmt;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, ScopedRouteConfiguration, VirtualHost,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::runtime::v3::Runtime;

use super::{
    add_downstream_tls, make_cluster, make_endpoint, make_extension_config, make_http_listener,
    make_http_listener_with_ecds, make_route_config, make_runtime, make_scoped_route_config,
    make_scoped_route_http_listener, make_tcp_listener, make_tls_secret, ListenerExpectation,
    ListenerKind, XdsMode, LOCALHOST, SCOPE_KEY_HEADER,
};

/// Name of the SDS secret holding the listeners' certificate.
pub const TLS_SECRET_NAME: &str = "tls-server-cert";

/// Response header set by each generated ECDS filter.
pub const ECDS_RESPONSE_HEADER: &str = "x-ecds";

/// PEM certificate chain and key the TLS listeners serve.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsMaterial {
    /// Server certificate chain, PEM.
    pub cert_chain_pem: String,
    /// Server private key, PEM.
    pub private_key_pem: String,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert_chain_pem", &self.cert_chain_pem)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// Parameters of a synthetic resource set (go-control-plane's `TestSnapshot`).
///
/// Listeners get ports `base_port + index` on 127.0.0.1: HTTP listeners
/// first, then scoped-route listeners, then TCP listeners. Listener `i`
/// routes to cluster `(i + version) % num_clusters`, whose endpoint is
/// upstream `(cluster + version) % upstreams.len()`, and names of clusters,
/// routes and scope keys carry the version, so every version is new content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResources {
    /// How Envoy reaches the control plane.
    pub mode: XdsMode,
    /// Update sequence number; each value yields different resources.
    pub version: u64,
    /// Name and 127.0.0.1 port of HTTP servers that answer with their name.
    pub upstreams: Vec<(String, u16)>,
    /// Port of the first listener.
    pub base_port: u16,
    /// EDS clusters (each with its load assignment).
    pub num_clusters: usize,
    /// HTTP listeners using RDS.
    pub num_http_listeners: usize,
    /// HTTP listeners using scoped routes (SRDS).
    pub num_scoped_http_listeners: usize,
    /// TCP proxy listeners.
    pub num_tcp_listeners: usize,
    /// RTDS layers.
    pub num_runtimes: usize,
    /// ECDS filter configs, one on each of the first HTTP listeners.
    pub num_extension_configs: usize,
    /// When set, HTTP and scoped listeners terminate TLS with this certificate
    /// (delivered by SDS as [`TLS_SECRET_NAME`]).
    pub tls: Option<TlsMaterial>,
}

/// Resources produced by [`TestResources::generate`], ready for a snapshot,
/// and what a test should observe once Envoy applied them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeneratedResources {
    /// CDS.
    pub clusters: Vec<Cluster>,
    /// EDS, one per cluster, named like it.
    pub endpoints: Vec<ClusterLoadAssignment>,
    /// RDS, exactly those named by listeners and scoped routes.
    pub routes: Vec<RouteConfiguration>,
    /// LDS.
    pub listeners: Vec<Listener>,
    /// SRDS.
    pub scoped_routes: Vec<ScopedRouteConfiguration>,
    /// SDS.
    pub secrets: Vec<Secret>,
    /// RTDS.
    pub runtimes: Vec<Runtime>,
    /// ECDS.
    pub extension_configs: Vec<TypedExtensionConfig>,
    /// VHDS; the generator makes none.
    pub virtual_hosts: Vec<VirtualHost>,
    /// One per listener, in listener order.
    pub expectations: Vec<ListenerExpectation>,
    /// Runtime key and value Envoy should report once RTDS applied.
    pub runtime_expectations: Vec<(String, String)>,
    /// RTDS layer names, for the bootstrap's `layered_runtime`.
    pub runtime_layer_names: Vec<String>,
}

impl GeneratedResources {
    /// A snapshot holding every generated resource at `version`.
    pub fn snapshot(
        &self,
        version: &str,
    ) -> Result<crate::cache::Snapshot, crate::cache::SnapshotError> {
        crate::cache::Snapshot::builder(version)
            .clusters(self.clusters.iter().cloned())
            .endpoints(self.endpoints.iter().cloned())
            .routes(self.routes.iter().cloned())
            .listeners(self.listeners.iter().cloned())
            .scoped_routes(self.scoped_routes.iter().cloned())
            .secrets(self.secrets.iter().cloned())
            .runtimes(self.runtimes.iter().cloned())
            .extension_configs(self.extension_configs.iter().cloned())
            .virtual_hosts(self.virtual_hosts.iter().cloned())
            .build()
    }
}

/// Why a [`TestResources`] cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TestResourcesError {
    /// Listeners need at least one cluster to send traffic to.
    #[error("{listeners} listeners requested but no clusters to route them to")]
    NoClusters {
        /// Number of listeners requested.
        listeners: usize,
    },
    /// Clusters need at least one upstream server.
    #[error("{clusters} clusters requested but no upstream servers")]
    NoUpstreams {
        /// Number of clusters requested.
        clusters: usize,
    },
    /// Listener ports would go past 65535.
    #[error("{listeners} listeners from base port {base_port} exceed port 65535")]
    PortOverflow {
        /// First listener port.
        base_port: u16,
        /// Number of listeners requested.
        listeners: usize,
    },
    /// Each ECDS config sits on its own HTTP listener.
    #[error(
        "{extension_configs} extension configs need as many HTTP listeners, got {http_listeners}"
    )]
    TooFewHttpListeners {
        /// Number of extension configs requested.
        extension_configs: usize,
        /// Number of HTTP listeners requested.
        http_listeners: usize,
    },
}

impl TestResources {
    /// Parameters with no resources yet: version 0, all counts 0, no TLS.
    pub fn new(mode: XdsMode, upstreams: Vec<(String, u16)>, base_port: u16) -> Self {
        Self {
            mode,
            version: 0,
            upstreams,
            base_port,
            num_clusters: 0,
            num_http_listeners: 0,
            num_scoped_http_listeners: 0,
            num_tcp_listeners: 0,
            num_runtimes: 0,
            num_extension_configs: 0,
            tls: None,
        }
    }

    /// Builds the resources and expectations for these parameters.
    pub fn generate(&self) -> Result<GeneratedResources, TestResourcesError> {
        self.check()?;
        let mut out = GeneratedResources::default();
        self.add_clusters(&mut out);
        for i in 0..self.num_http_listeners {
            self.add_http_listener(&mut out, i);
        }
        for j in 0..self.num_scoped_http_listeners {
            self.add_scoped_listener(&mut out, j);
        }
        for t in 0..self.num_tcp_listeners {
            self.add_tcp_listener(&mut out, t);
        }
        self.add_runtimes(&mut out);
        if let Some(tls) = &self.tls {
            out.secrets.push(make_tls_secret(
                TLS_SECRET_NAME,
                &tls.cert_chain_pem,
                &tls.private_key_pem,
            ));
        }
        Ok(out)
    }

    fn num_listeners(&self) -> usize {
        self.num_http_listeners + self.num_scoped_http_listeners + self.num_tcp_listeners
    }

    fn check(&self) -> Result<(), TestResourcesError> {
        let listeners = self.num_listeners();
        if listeners > 0 && self.num_clusters == 0 {
            return Err(TestResourcesError::NoClusters { listeners });
        }
        if self.num_clusters > 0 && self.upstreams.is_empty() {
            return Err(TestResourcesError::NoUpstreams {
                clusters: self.num_clusters,
            });
        }
        if listeners > 0 && self.port(listeners - 1).is_none() {
            return Err(TestResourcesError::PortOverflow {
                base_port: self.base_port,
                listeners,
            });
        }
        if self.num_extension_configs > self.num_http_listeners {
            return Err(TestResourcesError::TooFewHttpListeners {
                extension_configs: self.num_extension_configs,
                http_listeners: self.num_http_listeners,
            });
        }
        Ok(())
    }

    fn port(&self, listener_index: usize) -> Option<u16> {
        u16::try_from(listener_index)
            .ok()
            .and_then(|i| self.base_port.checked_add(i))
    }

    /// `(index + version) % len`, without overflow. `len` must not be 0.
    fn rotate(&self, index: usize, len: usize) -> usize {
        let len64 = len as u64;
        ((index as u64 % len64 + self.version % len64) % len64) as usize
    }

    fn cluster_name(&self, k: usize) -> String {
        format!("cluster-v{}-{k}", self.version)
    }

    /// Cluster index a listener sends its traffic to.
    fn cluster_of_listener(&self, listener_index: usize) -> usize {
        self.rotate(listener_index, self.num_clusters)
    }

    /// Name of the upstream serving cluster `k`.
    fn upstream_of_cluster(&self, k: usize) -> &(String, u16) {
        &self.upstreams[self.rotate(k, self.upstreams.len())]
    }

    fn add_clusters(&self, out: &mut GeneratedResources) {
        for k in 0..self.num_clusters {
            let name = self.cluster_name(k);
            let (_, port) = self.upstream_of_cluster(k);
            out.clusters.push(make_cluster(self.mode, &name));
            out.endpoints.push(make_endpoint(&name, LOCALHOST, *port));
        }
    }

    /// Adds the route of listener `index` and returns its name and expected upstream.
    fn add_route(&self, out: &mut GeneratedResources, index: usize) -> (String, String) {
        let route_name = format!("route-v{}-{index}", self.version);
        let k = self.cluster_of_listener(index);
        out.routes
            .push(make_route_config(&route_name, &self.cluster_name(k)));
        (route_name, self.upstream_of_cluster(k).0.clone())
    }

    /// Finishes listener `index`: version-stamped stats prefix, optional TLS,
    /// and its expectation.
    fn push_listener(
        &self,
        out: &mut GeneratedResources,
        mut listener: Listener,
        expectation: ListenerExpectation,
    ) {
        listener.stat_prefix = format!("{}-v{}", listener.name, self.version);
        if expectation.tls {
            add_downstream_tls(&mut listener, self.mode, TLS_SECRET_NAME);
        }
        out.listeners.push(listener);
        out.expectations.push(expectation);
    }

    fn expectation(
        &self,
        index: usize,
        kind: ListenerKind,
        upstream: String,
    ) -> ListenerExpectation {
        ListenerExpectation {
            name: format!("listener-{index}"),
            port: self.port(index).unwrap_or(self.base_port),
            kind,
            tls: self.tls.is_some() && kind != ListenerKind::Tcp,
            request_headers: Vec::new(),
            expected_upstream: upstream,
            expected_response_headers: Vec::new(),
        }
    }

    fn add_http_listener(&self, out: &mut GeneratedResources, i: usize) {
        let (route, upstream) = self.add_route(out, i);
        let mut exp = self.expectation(i, ListenerKind::Http, upstream);
        let listener = if i < self.num_extension_configs {
            let ecds_name = format!("ecds-{i}");
            let value = format!("ecds-{i}-v{}", self.version);
            out.extension_configs.push(make_extension_config(
                &ecds_name,
                ECDS_RESPONSE_HEADER,
                &value,
            ));
            exp.expected_response_headers
                .push((ECDS_RESPONSE_HEADER.to_string(), value));
            make_http_listener_with_ecds(self.mode, &exp.name, exp.port, &route, &ecds_name)
        } else {
            make_http_listener(self.mode, &exp.name, exp.port, &route)
        };
        self.push_listener(out, listener, exp);
    }

    fn add_scoped_listener(&self, out: &mut GeneratedResources, j: usize) {
        let index = self.num_http_listeners + j;
        let (route, upstream) = self.add_route(out, index);
        let key = format!("scope-v{}-{j}", self.version);
        out.scoped_routes.push(make_scoped_route_config(
            &format!("scoped-route-{j}"),
            &route,
            &[&key],
        ));
        let mut exp = self.expectation(index, ListenerKind::ScopedHttp, upstream);
        exp.request_headers
            .push((SCOPE_KEY_HEADER.to_string(), key));
        let listener = make_scoped_route_http_listener(self.mode, &exp.name, exp.port);
        self.push_listener(out, listener, exp);
    }

    fn add_tcp_listener(&self, out: &mut GeneratedResources, t: usize) {
        let index = self.num_http_listeners + self.num_scoped_http_listeners + t;
        let k = self.cluster_of_listener(index);
        let upstream = self.upstream_of_cluster(k).0.clone();
        let exp = self.expectation(index, ListenerKind::Tcp, upstream);
        let listener = make_tcp_listener(&exp.name, exp.port, &self.cluster_name(k));
        self.push_listener(out, listener, exp);
    }

    fn add_runtimes(&self, out: &mut GeneratedResources) {
        for i in 0..self.num_runtimes {
            let name = format!("runtime-{i}");
            let key = format!("test.runtime_{i}");
            let value = format!("runtime-{i}-v{}", self.version);
            out.runtimes.push(make_runtime(&name, &[(&key, &value)]));
            out.runtime_expectations.push((key, value));
            out.runtime_layer_names.push(name);
        }
    }
}

#[cfg(test)]
#[path = "test_resources_tests.rs"]
mod tests;
