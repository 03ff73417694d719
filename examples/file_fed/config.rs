//! The services file: its schema, parsing with validation, and the
//! snapshot it becomes (used by `main.rs` and `watch.rs`, and by
//! `tests/envoy_examples.rs`, which includes this file with `#[path]`).
//!
//! See `main.rs` for the schema as users read it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU16;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use xds_control_plane::envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use xds_control_plane::envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost,
};
use xds_control_plane::test_support::{make_cluster, make_http_listener, socket_address, XdsMode};
use xds_control_plane::Snapshot;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Sorted by name once validated, so that the order of the file does
    /// not change the version.
    pub services: Vec<Service>,
}

/// One service: a cluster, its endpoints, and a route to it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Also the name of its cluster.
    pub name: Name,
    /// The port of the listener (on 127.0.0.1) serving its route.
    pub port: NonZeroU16,
    /// The path prefix routed to it.
    #[serde(default)]
    pub prefix: Prefix,
    /// Its endpoints; none is allowed (requests then get `503`).
    pub endpoints: Vec<HostPort>,
}

/// A service name: 1 to 64 characters out of `A-Z a-z 0-9 . _ -`. It
/// names Envoy resources and shows in Envoy's stats, so it is kept plain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// A path prefix: starts with `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix(String);

/// An endpoint, `IP:port` (`[IPv6]:port`). Envoy takes only IP addresses
/// for EDS endpoints, so host names are refused here rather than by Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort(SocketAddr);

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(name: String) -> Result<Self, String> {
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if (1..=64).contains(&name.len()) && name.chars().all(plain) {
            Ok(Name(name))
        } else {
            Err(format!(
                "service name {name:?} must be 1 to 64 characters out of A-Z a-z 0-9 . _ -"
            ))
        }
    }
}

impl TryFrom<String> for Prefix {
    type Error = String;
    fn try_from(prefix: String) -> Result<Self, String> {
        if prefix.starts_with('/') {
            Ok(Prefix(prefix))
        } else {
            Err(format!("prefix {prefix:?} must start with '/'"))
        }
    }
}

impl Default for Prefix {
    /// `/`: everything.
    fn default() -> Self {
        Prefix("/".into())
    }
}

impl TryFrom<String> for HostPort {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Ok(HostPort(addr)),
            _ => Err(format!(
                "endpoint {text:?} must be IP:port with a port from 1 to 65535 \
                 (Envoy needs IP addresses, not host names)"
            )),
        }
    }
}

impl From<Name> for String {
    fn from(name: Name) -> String {
        name.0
    }
}

impl From<Prefix> for String {
    fn from(prefix: Prefix) -> String {
        prefix.0
    }
}

impl From<HostPort> for String {
    fn from(endpoint: HostPort) -> String {
        endpoint.0.to_string()
    }
}

impl Name {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Prefix {
    /// The prefix as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl HostPort {
    /// The endpoint's address.
    pub fn addr(&self) -> SocketAddr {
        self.0
    }
}

/// Why a file was refused.
#[derive(Debug)]
pub enum ConfigError {
    /// Not JSON, or not this schema: serde_json's message, which ends with
    /// the line and column (`... at line 4 column 17`).
    Syntax(serde_json::Error),
    /// Well-formed, but inconsistent (duplicate names, clashing routes, no
    /// service at all).
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Syntax(e) => write!(f, "{e}"),
            ConfigError::Invalid(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates a file's text. Field-level mistakes (unknown
    /// field, bad name, prefix or endpoint) come with their line and column;
    /// checks across services name the services involved.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = serde_json::from_str(text).map_err(ConfigError::Syntax)?;
        config.validate()?;
        config.services.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // An empty list is far likelier a mistake than a wish to remove
        // every listener of every proxy at once.
        if self.services.is_empty() {
            return Err(ConfigError::Invalid(
                "no services: refusing to remove every listener".into(),
            ));
        }
        let mut names = BTreeSet::new();
        let mut routes = BTreeMap::new();
        for service in &self.services {
            let name = service.name.as_str();
            if !names.insert(name) {
                return Err(ConfigError::Invalid(format!(
                    "two services are named {name:?}"
                )));
            }
            let route = (service.port, service.prefix.as_str());
            if let Some(other) = routes.insert(route, name) {
                return Err(ConfigError::Invalid(format!(
                    "services {other:?} and {name:?} both route prefix {:?} on port {}",
                    service.prefix.as_str(),
                    service.port
                )));
            }
            for (i, endpoint) in service.endpoints.iter().enumerate() {
                if service.endpoints[..i].contains(endpoint) {
                    return Err(ConfigError::Invalid(format!(
                        "service {name:?} lists endpoint {} twice",
                        endpoint.addr()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The version of this configuration: a digest of its content, so the
    /// same services give the same version across restarts and replicas,
    /// and a file rewritten with the same content is not pushed again.
    pub fn version(&self) -> String {
        // Serialising our own plain structs cannot fail; an empty input
        // would still give a (constant) version.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        digest[..6].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The distinct listener ports, in order.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.services.iter().map(|s| s.port.get()).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// The snapshot serving this configuration at [`version`](Self::version):
    /// per service an EDS cluster and its endpoints; per port a listener on
    /// 127.0.0.1 and a route configuration sending each prefix to its
    /// service, longest prefix first (Envoy takes the first route that
    /// matches, so `/api/` must come before `/`).
    pub fn snapshot(&self) -> Result<Snapshot, Box<dyn std::error::Error>> {
        let clusters = self
            .services
            .iter()
            .map(|s| make_cluster(XdsMode::Ads, s.name.as_str()));
        let endpoints = self.services.iter().map(load_assignment);
        let mut routes = Vec::new();
        let mut listeners = Vec::new();
        for port in self.ports() {
            let route_name = format!("port-{port}");
            routes.push(self.route_config(&route_name, port));
            listeners.push(make_http_listener(
                XdsMode::Ads,
                &format!("listener-{port}"),
                port,
                &route_name,
            ));
        }
        let snapshot = Snapshot::builder(self.version())
            .clusters(clusters)
            .endpoints(endpoints)
            .routes(routes)
            .listeners(listeners)
            .build()?;
        snapshot.consistent()?;
        Ok(snapshot)
    }

    /// The routes of the listener on `port`.
    fn route_config(&self, name: &str, port: u16) -> RouteConfiguration {
        let mut services: Vec<&Service> = self
            .services
            .iter()
            .filter(|s| s.port.get() == port)
            .collect();
        services.sort_by(|a, b| {
            let (a, b) = (a.prefix.as_str(), b.prefix.as_str());
            b.len().cmp(&a.len()).then(a.cmp(b))
        });
        let routes = services
            .into_iter()
            .map(|s| Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix(s.prefix.as_str().into())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(s.name.as_str().into())),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .collect();
        RouteConfiguration {
            name: name.into(),
            virtual_hosts: vec![VirtualHost {
                name: name.into(),
                domains: vec!["*".into()],
                routes,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

/// A service's endpoints, all in one locality.
fn load_assignment(service: &Service) -> ClusterLoadAssignment {
    let lb_endpoints = service
        .endpoints
        .iter()
        .map(|e| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(&e.addr().ip().to_string(), e.addr().port())),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: service.name.as_str().into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_control_plane::envoy_types::pb::envoy::config::listener::v3::Listener;

    const SAMPLE: &str = include_str!("../file_fed.json");

    #[test]
    fn the_sample_file_is_valid() {
        let config = Config::parse(SAMPLE).unwrap();
        let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "web"], "sorted by name");
        assert_eq!(config.ports(), [10000]);
        config.snapshot().unwrap();
    }

    #[test]
    fn routes_go_longest_prefix_first_and_every_endpoint_is_served() {
        let config = Config::parse(
            r#"{"services": [
                {"name": "web", "port": 10000, "endpoints": ["127.0.0.1:8080"]},
                {"name": "api", "port": 10000, "prefix": "/api/",
                 "endpoints": ["127.0.0.1:8081", "[::1]:8082"]},
                {"name": "admin", "port": 10001, "prefix": "/", "endpoints": []}
            ]}"#,
        )
        .unwrap();
        let snapshot = config.snapshot().unwrap();
        let routes: RouteConfiguration = snapshot.get("port-10000").unwrap().unwrap();
        let order: Vec<(String, String)> = routes.virtual_hosts[0]
            .routes
            .iter()
            .map(|r| {
                let Some(PathSpecifier::Prefix(p)) = &r.r#match.as_ref().unwrap().path_specifier
                else {
                    panic!("not a prefix")
                };
                let Some(Action::Route(a)) = &r.action else {
                    panic!("not a route")
                };
                let Some(ClusterSpecifier::Cluster(c)) = &a.cluster_specifier else {
                    panic!("not a cluster")
                };
                (p.clone(), c.clone())
            })
            .collect();
        assert_eq!(
            order,
            [("/api/".into(), "api".into()), ("/".into(), "web".into())]
        );
        let api: ClusterLoadAssignment = snapshot.get("api").unwrap().unwrap();
        assert_eq!(api.endpoints[0].lb_endpoints.len(), 2);
        let listener: Listener = snapshot.get("listener-10001").unwrap().unwrap();
        assert_eq!(
            listener,
            make_http_listener(XdsMode::Ads, "listener-10001", 10001, "port-10001")
        );
    }

    #[test]
    fn the_version_follows_content_not_layout() {
        let one = r#"{"services": [
            {"name": "a", "port": 1, "endpoints": ["127.0.0.1:1"]},
            {"name": "b", "port": 1, "prefix": "/b", "endpoints": []}]}"#;
        // Same services, other order and spacing, default prefix spelled out.
        let same = r#"{"services":[{"name":"b","port":1,"prefix":"/b","endpoints":[]},
            {"name":"a","port":1,"prefix":"/","endpoints":["127.0.0.1:1"]}]}"#;
        let other = one.replace("127.0.0.1:1", "127.0.0.1:2");
        let version = |text: &str| Config::parse(text).unwrap().version();
        assert_eq!(version(one), version(same));
        assert_ne!(version(one), version(&other));
        assert_eq!(version(one).len(), 12);
    }

    /// Each mistake, and a piece of the message that must say what it is.
    #[test]
    fn mistakes_are_reported_with_where_they_are() {
        let cases = [
            ("{\"services\": [\n  {\"name\": \"a\",", "EOF while parsing"),
            (
                "{\"services\": [{\"name\": \"a\", \"port\": 1, \"endpoints\": [], \"weight\": 2}]}",
                "unknown field `weight`",
            ),
            (
                "{\"services\": [\n{\"name\": \"a\", \"port\": 1}]}",
                "missing field `endpoints` at line 2",
            ),
            (
                "{\"services\": [{\"name\": \"a b\", \"port\": 1, \"endpoints\": []}]}",
                "service name \"a b\" must be",
            ),
            (
                "{\"services\": [{\"name\": \"a\", \"port\": 0, \"endpoints\": []}]}",
                "expected a nonzero u16 at line 1",
            ),
            (
                "{\"services\": [{\"name\": \"a\", \"port\": 1, \"prefix\": \"api\", \"endpoints\": []}]}",
                "prefix \"api\" must start with '/'",
            ),
            (
                "{\"services\": [{\"name\": \"a\", \"port\": 1,\n \"endpoints\": [\"localhost:80\"]}]}",
                "(Envoy needs IP addresses, not host names) at line 2 column",
            ),
            ("{\"services\": []}", "no services"),
            (
                "{\"services\": [{\"name\": \"a\", \"port\": 1, \"endpoints\": []},
                                 {\"name\": \"a\", \"port\": 2, \"endpoints\": []}]}",
                "two services are named \"a\"",
            ),
            (
                "{\"services\": [{\"name\": \"a\", \"port\": 1, \"endpoints\": []},
                                 {\"name\": \"b\", \"port\": 1, \"prefix\": \"/\", \"endpoints\": []}]}",
                "services \"a\" and \"b\" both route prefix \"/\" on port 1",
            ),
            (
                "{\"services\": [{\"name\": \"a\", \"port\": 1,
                                  \"endpoints\": [\"127.0.0.1:5\", \"127.0.0.1:5\"]}]}",
                "lists endpoint 127.0.0.1:5 twice",
            ),
        ];
        for (text, needle) in cases {
            let error = Config::parse(text).expect_err(text).to_string();
            assert!(error.contains(needle), "{text}\n=> {error}");
        }
    }
}
