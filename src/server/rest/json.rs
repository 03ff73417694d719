//! The proto3 JSON mapping of `DiscoveryRequest` and `DiscoveryResponse`,
//! as Envoy's REST subscriptions speak it.
//!
//! The prost types of envoy-types have no serde support, and a response's
//! resources are `Any`s that may hold any Envoy message (and those hold more
//! `Any`s: a listener's `HttpConnectionManager`, a TLS context, ...). So the
//! messages are mapped by reflection, with prost-reflect, over the
//! descriptors of every Envoy API file that envoy-types ships; build.rs
//! copies them in at build time.

use std::sync::OnceLock;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};

/// The FileDescriptorSet of envoy-types (its `src/generated/types.bin`).
static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types_descriptor.bin"));

const REQUEST: &str = "envoy.service.discovery.v3.DiscoveryRequest";
const RESPONSE: &str = "envoy.service.discovery.v3.DiscoveryResponse";

/// Why a message could not be mapped to or from JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The built-in descriptors are unusable (they do not decode, or lack
    /// the discovery messages): a build problem, not the client's.
    #[error("Envoy API descriptors unusable: {0}")]
    Descriptors(String),
    /// The JSON text is not a valid message of the expected type.
    #[error("invalid {message} JSON: {reason}")]
    Parse {
        /// The protobuf message expected.
        message: &'static str,
        /// What the parser objected to.
        reason: String,
    },
    /// A message could not be rendered: typically an `Any` naming a type
    /// that is not among Envoy's API types (a custom extension), or bytes
    /// that do not decode as the type they claim.
    #[error("cannot render {message} as JSON: {reason}")]
    Render {
        /// The protobuf message rendered.
        message: &'static str,
        /// Why it failed.
        reason: String,
    },
}

/// The descriptors of every Envoy API message (and the well-known types
/// they use), decoded on first use.
///
/// Use it to map other Envoy messages to or from JSON with prost-reflect.
///
/// ```
/// let pool = xds_control_plane::server::rest::descriptor_pool()?;
/// assert!(pool.get_message_by_name("envoy.config.cluster.v3.Cluster").is_some());
/// # Ok::<(), xds_control_plane::server::rest::JsonError>(())
/// ```
pub fn descriptor_pool() -> Result<&'static DescriptorPool, JsonError> {
    static POOL: OnceLock<Result<DescriptorPool, JsonError>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTORS).map_err(|e| JsonError::Descriptors(e.to_string()))
    })
    .as_ref()
    .map_err(Clone::clone)
}

fn descriptor(name: &'static str) -> Result<MessageDescriptor, JsonError> {
    descriptor_pool()?
        .get_message_by_name(name)
        .ok_or_else(|| JsonError::Descriptors(format!("no message {name}")))
}

/// Renders a `DiscoveryResponse` as proto3 JSON, with the proto field names
/// (`version_info`, `type_url`, as go-control-plane writes them; JSON
/// parsers accept both spellings) and fields at their default value left
/// out; each resource shows its fields next to its `@type`.
///
/// ```
/// use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
/// use xds_control_plane::server::rest::discovery_response_to_json;
///
/// let json = discovery_response_to_json(&DiscoveryResponse {
///     version_info: "v1".into(),
///     ..Default::default()
/// })?;
/// assert_eq!(json, r#"{"version_info":"v1"}"#);
/// # Ok::<(), xds_control_plane::server::rest::JsonError>(())
/// ```
pub fn discovery_response_to_json(response: &DiscoveryResponse) -> Result<String, JsonError> {
    to_json(RESPONSE, &response.encode_to_vec())
}

/// Parses a proto3 JSON `DiscoveryResponse` (either field-name spelling).
pub fn discovery_response_from_json(json: &str) -> Result<DiscoveryResponse, JsonError> {
    from_json(RESPONSE, json)
}

/// Renders a `DiscoveryRequest` as proto3 JSON (as Envoy sends it to a REST
/// endpoint, give or take the field-name spelling).
pub fn discovery_request_to_json(request: &DiscoveryRequest) -> Result<String, JsonError> {
    to_json(REQUEST, &request.encode_to_vec())
}

/// Parses a proto3 JSON `DiscoveryRequest`, as Envoy POSTs it. Fields this
/// crate's Envoy API does not know are ignored, so a newer Envoy's node
/// description does not make its requests fail.
///
/// ```
/// use xds_control_plane::server::rest::discovery_request_from_json;
///
/// let request = discovery_request_from_json(
///     r#"{"versionInfo": "v1", "node": {"id": "n1"}, "resource_names": ["a"]}"#,
/// )?;
/// assert_eq!(request.version_info, "v1");
/// assert_eq!(request.node.unwrap().id, "n1");
/// assert_eq!(request.resource_names, ["a"]);
/// # Ok::<(), xds_control_plane::server::rest::JsonError>(())
/// ```
pub fn discovery_request_from_json(json: &str) -> Result<DiscoveryRequest, JsonError> {
    from_json(REQUEST, json)
}

/// Renders the binary message `encoded` of type `name` as JSON.
fn to_json(name: &'static str, encoded: &[u8]) -> Result<String, JsonError> {
    let render = |reason: String| JsonError::Render {
        message: name,
        reason,
    };
    let message =
        DynamicMessage::decode(descriptor(name)?, encoded).map_err(|e| render(e.to_string()))?;
    let options = SerializeOptions::new().use_proto_field_name(true);
    let mut out = serde_json::Serializer::new(Vec::with_capacity(encoded.len() * 2));
    message
        .serialize_with_options(&mut out, &options)
        .map_err(|e| render(e.to_string()))?;
    // serde_json writes UTF-8 only.
    String::from_utf8(out.into_inner()).map_err(|e| render(e.to_string()))
}

/// Parses JSON of message type `name` into its prost type.
fn from_json<M: Message + Default>(name: &'static str, json: &str) -> Result<M, JsonError> {
    let parse = |reason: String| JsonError::Parse {
        message: name,
        reason,
    };
    let mut deserializer = serde_json::Deserializer::from_str(json);
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let message =
        DynamicMessage::deserialize_with_options(descriptor(name)?, &mut deserializer, &options)
            .map_err(|e| parse(e.to_string()))?;
    deserializer.end().map_err(|e| parse(e.to_string()))?;
    message.transcode_to().map_err(|e| parse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::google::protobuf::Any;

    #[test]
    fn descriptors_know_the_discovery_messages() {
        assert!(descriptor(REQUEST).is_ok());
        assert!(descriptor(RESPONSE).is_ok());
    }

    #[test]
    fn response_with_an_any_round_trips() {
        let cluster = Cluster {
            name: "c1".into(),
            ..Default::default()
        };
        let response = DiscoveryResponse {
            version_info: "v1".into(),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            resources: vec![Any {
                type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
                value: cluster.encode_to_vec(),
            }],
            ..Default::default()
        };
        let json = discovery_response_to_json(&response).expect("render");
        let value: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(value["resources"][0]["name"], "c1");
        assert_eq!(
            value["resources"][0]["@type"],
            "type.googleapis.com/envoy.config.cluster.v3.Cluster"
        );
        assert_eq!(discovery_response_from_json(&json), Ok(response));
    }

    #[test]
    fn an_any_of_an_unknown_type_is_a_render_error() {
        let response = DiscoveryResponse {
            resources: vec![Any {
                type_url: "type.googleapis.com/example.Unknown".into(),
                value: vec![],
            }],
            ..Default::default()
        };
        let err = discovery_response_to_json(&response).expect_err("unknown type");
        assert!(
            matches!(&err, JsonError::Render { reason, .. } if reason.contains("example.Unknown")),
            "{err}"
        );
    }

    #[test]
    fn bad_request_json_is_a_parse_error() {
        for bad in ["", "{", "[]", r#"{"version_info": 5}"#, "{} {}"] {
            assert!(
                matches!(
                    discovery_request_from_json(bad),
                    Err(JsonError::Parse { .. })
                ),
                "{bad:?} parsed"
            );
        }
    }

    #[test]
    fn unknown_request_fields_are_ignored() {
        let request = discovery_request_from_json(r#"{"node": {"id": "n", "fromTheFuture": 1}}"#)
            .expect("parse");
        assert_eq!(request.node.map(|n| n.id).as_deref(), Some("n"));
    }
}
