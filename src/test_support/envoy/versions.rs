//! Which resource versions Envoy has applied, read from its admin
//! interface (`/config_dump?include_eds` and the `version_text` stats).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

/// The kinds of xDS resources whose applied versions the harness reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// `envoy.config.cluster.v3.Cluster` (CDS).
    Cluster,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
    Endpoint,
    /// `envoy.config.listener.v3.Listener` (LDS).
    Listener,
    /// `envoy.config.route.v3.RouteConfiguration` (RDS).
    Route,
    /// `envoy.config.route.v3.ScopedRouteConfiguration` (SRDS).
    ScopedRoute,
    /// `envoy.extensions.transport_sockets.tls.v3.Secret` (SDS).
    Secret,
    /// `envoy.config.core.v3.TypedExtensionConfig` (ECDS).
    ExtensionConfig,
    /// `envoy.service.runtime.v3.Runtime` (RTDS).
    Runtime,
}

impl ResourceKind {
    /// Every kind.
    pub const ALL: [ResourceKind; 8] = [
        ResourceKind::Cluster,
        ResourceKind::Endpoint,
        ResourceKind::Listener,
        ResourceKind::Route,
        ResourceKind::ScopedRoute,
        ResourceKind::Secret,
        ResourceKind::ExtensionConfig,
        ResourceKind::Runtime,
    ];

    /// The xDS type URL of this kind.
    pub fn type_url(self) -> &'static str {
        match self {
            ResourceKind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceKind::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceKind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceKind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            ResourceKind::ScopedRoute => {
                "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration"
            }
            ResourceKind::Secret => {
                "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
            }
            ResourceKind::ExtensionConfig => {
                "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"
            }
            ResourceKind::Runtime => "type.googleapis.com/envoy.service.runtime.v3.Runtime",
        }
    }

    /// The kind whose type URL is `type_url`, if any.
    pub fn from_type_url(type_url: &str) -> Option<ResourceKind> {
        ResourceKind::ALL
            .into_iter()
            .find(|k| k.type_url() == type_url)
    }
}

/// The versions Envoy reports for each resource kind, seen two ways.
///
/// **Accepted** ([`accepted`](Self::accepted), used by
/// [`all_at`](Self::all_at) and so by
/// [`EnvoyProcess::wait_for_version`](super::EnvoyProcess::wait_for_version)):
/// the `version_info` of the last response each xDS subscription accepted
/// (ACKed), from the `*.version_text` stats of Envoy 1.40:
/// - Cluster: `cluster_manager.cds.version_text`
/// - Listener: `listener_manager.lds.version_text`
/// - Route: `http.<stat_prefix>.rds.<route_config>.version_text`
/// - ScopedRoute: `http.<stat_prefix>.scoped_rds.<name>.version_text`
/// - Endpoint: `cluster.<cluster>.version_text` (one per EDS cluster)
/// - Secret: `sds.<secret>.version_text`
/// - ExtensionConfig: `extension_config_discovery.<prefix>.<name>.version_text`
/// - Runtime: `runtime.version_text` (shared by all RTDS layers)
///
/// A subscription's version moves on with every accepted response, even
/// when its resources did not change; a rejected (NACKed) response leaves
/// it. A cluster or listener accepted this way may still be warming.
///
/// **Per resource** ([`resources`](Self::resources)): the `version_info`
/// of each active dynamic resource in `/config_dump?include_eds`:
/// - Cluster: `ClustersConfigDump.dynamic_active_clusters[].version_info`
/// - Listener: `ListenersConfigDump.dynamic_listeners[].active_state.version_info`
/// - Route: `RoutesConfigDump.dynamic_route_configs[].version_info`
/// - ScopedRoute: `ScopedRoutesConfigDump.dynamic_scoped_route_configs[].version_info`
/// - Secret: `SecretsConfigDump.dynamic_active_secrets[].version_info`
/// - ExtensionConfig: `EcdsConfigDump.ecds_filters[].version_info`
/// - Endpoint: `EndpointsConfigDump.dynamic_endpoint_configs[].version_info`,
///   which Envoy 1.40 leaves empty; Runtime has no config-dump entry.
///
/// Envoy keeps a resource's old version when a newer response carries it
/// unchanged (it logs "skipped N unmodified cluster(s)"), so after a
/// snapshot bump the per-resource versions of untouched resources lag;
/// that is why waiting uses the accepted versions. In the delta modes the
/// per-resource versions are each resource's own `Resource.version` and
/// the accepted ones the responses' `system_version_info`.
///
/// Warming, draining and rejected resources are not counted; empty versions
/// are left out; a kind with nothing to report is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedVersions {
    accepted: BTreeMap<ResourceKind, BTreeSet<String>>,
    resources: BTreeMap<ResourceKind, BTreeSet<String>>,
}

impl AppliedVersions {
    /// Extracts the versions from a `/config_dump?include_eds` document and
    /// the stats map of [`EnvoyProcess::stats`](super::EnvoyProcess::stats)
    /// (name → value; only `*.version_text` entries are read).
    pub fn from_admin(config_dump: &Value, stats: &BTreeMap<String, Value>) -> AppliedVersions {
        let mut out = AppliedVersions::default();
        for (name, value) in stats {
            let Some(subscription) = name.strip_suffix(".version_text") else {
                continue;
            };
            if let (Some(kind), Some(version)) = (stat_kind(subscription), non_empty(Some(value))) {
                insert(&mut out.accepted, kind, version);
            }
        }
        let configs = config_dump
            .get("configs")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for config in configs {
            let type_name = config
                .get("@type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim_start_matches("type.googleapis.com/envoy.admin.v3.");
            let (kind, field) = match type_name {
                "ClustersConfigDump" => (ResourceKind::Cluster, "dynamic_active_clusters"),
                "ListenersConfigDump" => (ResourceKind::Listener, "dynamic_listeners"),
                "RoutesConfigDump" => (ResourceKind::Route, "dynamic_route_configs"),
                "ScopedRoutesConfigDump" => {
                    (ResourceKind::ScopedRoute, "dynamic_scoped_route_configs")
                }
                "SecretsConfigDump" => (ResourceKind::Secret, "dynamic_active_secrets"),
                "EcdsConfigDump" => (ResourceKind::ExtensionConfig, "ecds_filters"),
                "EndpointsConfigDump" => (ResourceKind::Endpoint, "dynamic_endpoint_configs"),
                _ => continue,
            };
            for item in items(config, field) {
                let item = match kind {
                    ResourceKind::Listener => match item.get("active_state") {
                        Some(active) => active,
                        None => continue,
                    },
                    _ => item,
                };
                if let Some(version) = non_empty(item.get("version_info")) {
                    insert(&mut out.resources, kind, version);
                }
            }
        }
        out
    }

    /// The versions of the responses Envoy's subscriptions for `kind` last
    /// accepted (empty if none).
    pub fn accepted(&self, kind: ResourceKind) -> BTreeSet<String> {
        self.accepted.get(&kind).cloned().unwrap_or_default()
    }

    /// The versions of the active `kind` resources in the config dump
    /// (empty if none).
    pub fn resources(&self, kind: ResourceKind) -> BTreeSet<String> {
        self.resources.get(&kind).cloned().unwrap_or_default()
    }

    /// Whether Envoy has at least one subscription for `kind` and every one
    /// of them last accepted `version`.
    pub fn all_at(&self, kind: ResourceKind, version: &str) -> bool {
        self.accepted
            .get(&kind)
            .is_some_and(|set| set.len() == 1 && set.contains(version))
    }

    /// Whether Envoy reports no version of anything.
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty() && self.resources.is_empty()
    }
}

impl fmt::Display for AppliedVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |map: &BTreeMap<ResourceKind, BTreeSet<String>>| {
            let parts: Vec<String> = map.iter().map(|(k, v)| format!("{k:?}: {v:?}")).collect();
            format!("{{{}}}", parts.join(", "))
        };
        write!(
            f,
            "accepted {}, per resource {}",
            show(&self.accepted),
            show(&self.resources)
        )
    }
}

/// The kind of the subscription whose stats prefix is `prefix`.
fn stat_kind(prefix: &str) -> Option<ResourceKind> {
    if prefix == "cluster_manager.cds" {
        Some(ResourceKind::Cluster)
    } else if prefix == "listener_manager.lds" {
        Some(ResourceKind::Listener)
    } else if prefix == "runtime" {
        Some(ResourceKind::Runtime)
    } else if prefix.starts_with("sds.") {
        Some(ResourceKind::Secret)
    } else if prefix.starts_with("extension_config_discovery.") {
        Some(ResourceKind::ExtensionConfig)
    } else if prefix.starts_with("cluster.") {
        Some(ResourceKind::Endpoint)
    } else if prefix.starts_with("http.") && prefix.contains(".scoped_rds.") {
        Some(ResourceKind::ScopedRoute)
    } else if prefix.starts_with("http.") && prefix.contains(".rds.") {
        Some(ResourceKind::Route)
    } else {
        None
    }
}

fn insert(map: &mut BTreeMap<ResourceKind, BTreeSet<String>>, kind: ResourceKind, version: &str) {
    map.entry(kind).or_default().insert(version.to_owned());
}

fn items<'a>(config: &'a Value, field: &str) -> &'a [Value] {
    config
        .get(field)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn non_empty(value: Option<&Value>) -> Option<&str> {
    value.and_then(Value::as_str).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_config_dump_and_stats() {
        let dump = json!({ "configs": [
            { "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
              "version_info": "v2",
              "static_clusters": [{ "cluster": { "name": "xds_cluster" } }],
              "dynamic_active_clusters": [
                { "version_info": "v1", "cluster": { "name": "a", "type": "EDS" } },
                { "version_info": "v2", "cluster": { "name": "b" } }],
              "dynamic_warming_clusters": [{ "version_info": "v3" }] },
            { "@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
              "dynamic_endpoint_configs": [{ "endpoint_config": { "cluster_name": "a" } }] },
            { "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
              "dynamic_listeners": [
                { "name": "l", "active_state": { "version_info": "v1" } },
                { "name": "w", "warming_state": { "version_info": "v9" } }] },
            { "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
              "dynamic_route_configs": [{ "version_info": "v1" }] },
            { "@type": "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump" },
            { "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
              "dynamic_active_secrets": [{ "name": "s", "version_info": "s1" }] },
            { "@type": "type.googleapis.com/envoy.admin.v3.EcdsConfigDump",
              "ecds_filters": [{ "version_info": "e1" }] }
        ]});
        let stats: BTreeMap<String, Value> = [
            ("cluster_manager.cds.version_text", json!("v2")),
            ("listener_manager.lds.version_text", json!("v2")),
            ("http.ingress.rds.routes.version_text", json!("v2")),
            ("http.ingress.scoped_rds.s.version_text", json!("")),
            ("cluster.a.version_text", json!("v2")),
            ("sds.s.version_text", json!("v2")),
            (
                "extension_config_discovery.http_filter.f.version_text",
                json!("v2"),
            ),
            ("runtime.version_text", json!("v2")),
            ("server.version", json!(1)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let av = AppliedVersions::from_admin(&dump, &stats);
        for kind in ResourceKind::ALL {
            assert_eq!(
                kind != ResourceKind::ScopedRoute,
                av.all_at(kind, "v2"),
                "{kind:?}"
            );
        }
        assert_eq!(av.resources(ResourceKind::Cluster).len(), 2);
        assert_eq!(av.resources(ResourceKind::Listener).len(), 1);
        assert!(av.resources(ResourceKind::Secret).contains("s1"));
        assert!(av.resources(ResourceKind::ExtensionConfig).contains("e1"));
        assert!(av.resources(ResourceKind::Endpoint).is_empty());
        assert!(av.accepted(ResourceKind::ScopedRoute).is_empty());
        assert!(!av.is_empty());
        assert!(AppliedVersions::from_admin(&json!({}), &BTreeMap::new()).is_empty());
    }

    #[test]
    fn type_urls_round_trip() {
        for k in ResourceKind::ALL {
            assert_eq!(ResourceKind::from_type_url(k.type_url()), Some(k));
        }
    }
}
