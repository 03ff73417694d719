//! The Envoy bootstrap the harness starts Envoy with.
//!
//! Only what it takes to reach the control plane is here: the node, the
//! admin interface, the static `xds_cluster`, `dynamic_resources` (CDS and
//! LDS) and a layered runtime with RTDS layers. Every listener, route,
//! cluster, endpoint and secret comes from the control plane.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::error::{HarnessError, Result};
use crate::test_support::{XdsMode, XDS_CLUSTER};

/// Node id used when none is set.
pub const DEFAULT_NODE_ID: &str = "test-id";
/// Node cluster used when none is set.
pub const DEFAULT_NODE_CLUSTER: &str = "test-cluster";
/// Name of the static (bootstrap) runtime layer.
pub const STATIC_RUNTIME_LAYER: &str = "static_layer";
/// Name of the admin runtime layer (writable through `/runtime_modify`).
pub const ADMIN_RUNTIME_LAYER: &str = "admin_layer";
/// REST polling interval used in [`XdsMode::Rest`].
pub const REST_REFRESH_DELAY: Duration = Duration::from_millis(500);

/// Builder of an Envoy bootstrap (as JSON) for one [`XdsMode`].
///
/// ```
/// use xds_control_plane::test_support::XdsMode;
/// use xds_control_plane::test_support::envoy::Bootstrap;
///
/// let bootstrap = Bootstrap::new(XdsMode::Ads, 18000)
///     .node_id("node-1")
///     .rtds_layer("runtime-0")
///     .initial_fetch_timeout(std::time::Duration::from_secs(1));
/// let json = bootstrap.to_json();
/// assert_eq!(json["node"]["id"], "node-1");
/// ```
#[derive(Debug, Clone)]
pub struct Bootstrap {
    mode: XdsMode,
    xds_port: u16,
    node_id: String,
    node_cluster: String,
    admin_port: u16,
    rtds_layers: Vec<String>,
    static_runtime: Map<String, Value>,
    initial_fetch_timeout: Option<Duration>,
    xds_http2: Option<bool>,
    xds_retry_backoff: Option<(Duration, Duration)>,
}

impl Bootstrap {
    /// A bootstrap for an Envoy that reaches its control plane on
    /// `127.0.0.1:xds_port` in `mode`, with node `test-id`/`test-cluster`,
    /// an admin port Envoy picks itself, no RTDS layer, and xDS stream
    /// reconnects retried after 100 ms backing off to at most 1 s.
    pub fn new(mode: XdsMode, xds_port: u16) -> Self {
        Bootstrap {
            mode,
            xds_port,
            node_id: DEFAULT_NODE_ID.to_owned(),
            node_cluster: DEFAULT_NODE_CLUSTER.to_owned(),
            admin_port: 0,
            rtds_layers: Vec::new(),
            static_runtime: Map::new(),
            initial_fetch_timeout: None,
            xds_http2: None,
            xds_retry_backoff: Some((Duration::from_millis(100), Duration::from_secs(1))),
        }
    }

    /// Sets the node id (what the control plane keys snapshots by).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = id.into();
        self
    }

    /// Sets the node cluster.
    pub fn node_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.node_cluster = cluster.into();
        self
    }

    /// Sets the admin port on 127.0.0.1. The default, 0, lets Envoy pick a
    /// free port, which [`EnvoyProcess`](super::EnvoyProcess) then reads
    /// back; that avoids racing other processes for a port.
    pub fn admin_port(mut self, port: u16) -> Self {
        self.admin_port = port;
        self
    }

    /// Adds an RTDS runtime layer fetching the `Runtime` resource `name`
    /// from the control plane (layers keep the order they are added in,
    /// between the static layer and the admin layer).
    pub fn rtds_layer(mut self, name: impl Into<String>) -> Self {
        self.rtds_layers.push(name.into());
        self
    }

    /// Sets a key of the static (bootstrap) runtime layer.
    pub fn static_runtime(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.static_runtime.insert(key.into(), value.into());
        self
    }

    /// Sets `initial_fetch_timeout` on the CDS, LDS and RTDS config
    /// sources (Envoy's default is 15 s; zero waits forever).
    pub fn initial_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.initial_fetch_timeout = Some(timeout);
        self
    }

    /// Chooses whether `xds_cluster` speaks HTTP/2 (prior knowledge) to the
    /// control plane. Defaults: HTTP/2 for every gRPC mode, HTTP/1.1 for
    /// [`XdsMode::Rest`] (any HTTP server speaks it; set `true` if the REST
    /// endpoint serves h2c).
    pub fn xds_http2(mut self, http2: bool) -> Self {
        self.xds_http2 = Some(http2);
        self
    }

    /// Sets how Envoy backs off between attempts to re-open a broken xDS
    /// gRPC stream (`EnvoyGrpc.retry_policy`); `None` leaves Envoy's
    /// default (which backs off to 30 s, slow for tests).
    pub fn xds_retry_backoff(mut self, base_and_max: Option<(Duration, Duration)>) -> Self {
        self.xds_retry_backoff = base_and_max;
        self
    }

    /// The xDS mode.
    pub fn mode(&self) -> XdsMode {
        self.mode
    }

    /// The control plane's port.
    pub fn xds_port(&self) -> u16 {
        self.xds_port
    }

    /// The bootstrap as a JSON value (an `envoy.config.bootstrap.v3.Bootstrap`).
    pub fn to_json(&self) -> Value {
        let mut dynamic = Map::new();
        if let Some(ads) = self.ads_api_config_source() {
            dynamic.insert("ads_config".into(), ads);
        }
        dynamic.insert("cds_config".into(), self.config_source());
        dynamic.insert("lds_config".into(), self.config_source());

        let mut layers = vec![json!({
            "name": STATIC_RUNTIME_LAYER,
            "static_layer": Value::Object(self.static_runtime.clone()),
        })];
        for name in &self.rtds_layers {
            layers.push(json!({
                "name": name,
                "rtds_layer": { "name": name, "rtds_config": self.config_source() },
            }));
        }
        layers.push(json!({ "name": ADMIN_RUNTIME_LAYER, "admin_layer": {} }));

        json!({
            "node": { "id": self.node_id, "cluster": self.node_cluster },
            "admin": { "address": socket_address(self.admin_port) },
            "static_resources": { "clusters": [self.xds_cluster()] },
            "dynamic_resources": Value::Object(dynamic),
            "layered_runtime": { "layers": layers },
        })
    }

    /// The bootstrap as pretty-printed JSON text.
    pub fn to_json_string(&self) -> Result<String> {
        serde_json::to_string_pretty(&self.to_json()).map_err(|source| HarnessError::Json {
            context: "serialising the bootstrap".into(),
            source,
        })
    }

    /// Writes the bootstrap as `bootstrap.json` into `dir` and returns its path.
    pub fn write_to(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("bootstrap.json");
        std::fs::write(&path, self.to_json_string()?)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }

    /// Writes the bootstrap to a new temporary `.json` file, deleted when
    /// the returned handle is dropped.
    pub fn write_temp(&self) -> Result<tempfile::NamedTempFile> {
        let file = tempfile::Builder::new()
            .prefix("envoy-bootstrap-")
            .suffix(".json")
            .tempfile()
            .map_err(|e| HarnessError::io("creating a temporary bootstrap file", e))?;
        std::fs::write(file.path(), self.to_json_string()?)
            .map_err(|e| HarnessError::io("writing the temporary bootstrap file", e))?;
        Ok(file)
    }

    fn http2(&self) -> bool {
        self.xds_http2.unwrap_or(self.mode != XdsMode::Rest)
    }

    /// The static cluster through which Envoy reaches the control plane.
    fn xds_cluster(&self) -> Value {
        let mut cluster = json!({
            "name": XDS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": XDS_CLUSTER,
                "endpoints": [{ "lb_endpoints": [{
                    "endpoint": { "address": socket_address(self.xds_port) }
                }]}],
            },
        });
        if self.http2() {
            cluster["typed_extension_protocol_options"] = json!({
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": { "http2_protocol_options": {} },
                }
            });
        }
        cluster
    }

    /// `ApiConfigSource` of the aggregated stream, in the ADS modes.
    fn ads_api_config_source(&self) -> Option<Value> {
        match self.mode {
            XdsMode::Ads => Some(self.grpc_api_config_source("GRPC")),
            XdsMode::DeltaAds => Some(self.grpc_api_config_source("DELTA_GRPC")),
            XdsMode::Xds | XdsMode::Delta | XdsMode::Rest => None,
        }
    }

    /// `ConfigSource` of a bootstrap-level subscription (CDS, LDS, RTDS).
    fn config_source(&self) -> Value {
        let mut source = match self.mode {
            XdsMode::Ads | XdsMode::DeltaAds => json!({ "ads": {} }),
            XdsMode::Xds => json!({ "api_config_source": self.grpc_api_config_source("GRPC") }),
            XdsMode::Delta => {
                json!({ "api_config_source": self.grpc_api_config_source("DELTA_GRPC") })
            }
            XdsMode::Rest => json!({ "api_config_source": {
                "api_type": "REST",
                "transport_api_version": "V3",
                "refresh_delay": duration_json(REST_REFRESH_DELAY),
                "cluster_names": [XDS_CLUSTER],
            }}),
        };
        source["resource_api_version"] = json!("V3");
        if let Some(timeout) = self.initial_fetch_timeout {
            source["initial_fetch_timeout"] = json!(duration_json(timeout));
        }
        source
    }

    fn grpc_api_config_source(&self, api_type: &str) -> Value {
        let mut envoy_grpc = json!({ "cluster_name": XDS_CLUSTER });
        if let Some((base, max)) = self.xds_retry_backoff {
            envoy_grpc["retry_policy"] = json!({ "retry_back_off": {
                "base_interval": duration_json(base),
                "max_interval": duration_json(max),
            }});
        }
        json!({
            "api_type": api_type,
            "transport_api_version": "V3",
            "grpc_services": [{ "envoy_grpc": envoy_grpc }],
            "set_node_on_first_message_only": true,
        })
    }
}

fn socket_address(port: u16) -> Value {
    json!({ "socket_address": { "address": "127.0.0.1", "port_value": port } })
}

/// A protobuf JSON `Duration` ("1.500000000s").
pub(crate) fn duration_json(d: Duration) -> String {
    format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_format() {
        assert_eq!(duration_json(Duration::from_millis(500)), "0.500000000s");
        assert_eq!(duration_json(Duration::from_secs(2)), "2.000000000s");
    }

    #[test]
    fn ads_shape() {
        let b = Bootstrap::new(XdsMode::DeltaAds, 1234).rtds_layer("rt");
        let j = b.to_json();
        assert_eq!(
            j["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
        assert_eq!(j["dynamic_resources"]["cds_config"]["ads"], json!({}));
        assert_eq!(j["layered_runtime"]["layers"][1]["name"], "rt");
        assert_eq!(
            j["layered_runtime"]["layers"][1]["rtds_layer"]["rtds_config"]["ads"],
            json!({})
        );
    }

    #[test]
    fn rest_shape() {
        let j = Bootstrap::new(XdsMode::Rest, 1234).to_json();
        let src = &j["dynamic_resources"]["lds_config"]["api_config_source"];
        assert_eq!(src["api_type"], "REST");
        assert_eq!(src["cluster_names"][0], XDS_CLUSTER);
        assert!(j["dynamic_resources"].get("ads_config").is_none());
        let cluster = &j["static_resources"]["clusters"][0];
        assert!(cluster.get("typed_extension_protocol_options").is_none());
    }
}
