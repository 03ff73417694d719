//! A resource serialized once, shared by every node and stream that gets it.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::Resource;
use envoy_types::pb::google::protobuf::{Any, Duration as ProtoDuration};
use prost::Message;

use crate::resource::{type_url, XdsResource};

/// One xDS resource, encoded when the snapshot is built.
///
/// Cloning is a reference-count bump: a snapshot set for a thousand nodes
/// and sent on a thousand streams still holds each resource's bytes once.
#[derive(Clone)]
pub struct EncodedResource(Arc<Inner>);

struct Inner {
    name: Arc<str>,
    type_url: Arc<str>,
    bytes: Bytes,
    /// How long a client may keep the resource without hearing of it again.
    ttl: Option<Duration>,
    /// Delta version, computed on first use: SotW-only servers never pay.
    version: OnceLock<Arc<str>>,
}

impl EncodedResource {
    /// Encodes a typed Envoy message under its own name and type URL.
    pub fn from_message<T: XdsResource>(resource: &T) -> Self {
        Self::from_bytes(
            T::TYPE.type_url(),
            resource.resource_name(),
            Bytes::from(resource.encode_to_vec()),
        )
    }

    /// Wraps bytes that already hold the serialized message of `type_url`.
    pub fn from_bytes(type_url: &str, name: &str, bytes: Bytes) -> Self {
        EncodedResource(Arc::new(Inner {
            name: Arc::from(name),
            type_url: Arc::from(type_url),
            bytes,
            ttl: None,
            version: OnceLock::new(),
        }))
    }

    /// The same resource with a time to live: clients drop it unless they
    /// hear of it again (a new version or a heartbeat) within `ttl`.
    pub fn with_ttl(&self, ttl: Duration) -> Self {
        EncodedResource(Arc::new(Inner {
            name: Arc::clone(&self.0.name),
            type_url: Arc::clone(&self.0.type_url),
            bytes: self.0.bytes.clone(),
            ttl: Some(ttl),
            version: self.0.version.clone(),
        }))
    }

    /// The time to live, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.0.ttl
    }

    /// The resource name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The resource name as a shared string (no copy).
    pub fn shared_name(&self) -> &Arc<str> {
        &self.0.name
    }

    /// The type URL of the serialized message.
    pub fn type_url(&self) -> &str {
        &self.0.type_url
    }

    /// The serialized message.
    pub fn bytes(&self) -> &Bytes {
        &self.0.bytes
    }

    /// The per-resource version incremental (delta) xDS uses: a digest of
    /// the content, equal for equal content in every process. Computed once.
    pub fn version(&self) -> &Arc<str> {
        self.0.version.get_or_init(|| {
            Arc::from(super::version_hash::resource_version(
                &self.0.type_url,
                &self.0.bytes,
            ))
        })
    }

    /// The resource as a protobuf `Any`, as it goes into a response.
    pub fn to_any(&self) -> Any {
        Any {
            type_url: self.type_url().to_string(),
            value: self.0.bytes.to_vec(),
        }
    }

    /// The resource as it goes into a state-of-the-world response: its `Any`,
    /// or with a TTL, wrapped in a `discovery.v3.Resource` carrying the TTL.
    pub fn to_sotw_any(&self) -> Any {
        let Some(ttl) = self.0.ttl else {
            return self.to_any();
        };
        let wrapper = Resource {
            name: self.name().to_string(),
            ttl: Some(proto_duration(ttl)),
            resource: Some(self.to_any()),
            ..Default::default()
        };
        Any {
            type_url: type_url::RESOURCE_WRAPPER.to_string(),
            value: wrapper.encode_to_vec(),
        }
    }

    /// The resource as it goes into a delta response: name, version, TTL,
    /// and the body unless this is a heartbeat.
    pub fn to_delta_resource(&self, heartbeat: bool) -> Resource {
        Resource {
            name: self.name().to_string(),
            version: self.version().to_string(),
            resource: (!heartbeat).then(|| self.to_any()),
            ttl: self.0.ttl.map(proto_duration),
            ..Default::default()
        }
    }

    /// Decodes the message back.
    pub fn decode<T: Message + Default>(&self) -> Result<T, prost::DecodeError> {
        T::decode(self.0.bytes.clone())
    }

    /// Whether both handles share the same encoding (same snapshot entry).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

fn proto_duration(d: Duration) -> ProtoDuration {
    ProtoDuration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

impl fmt::Debug for EncodedResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedResource")
            .field("name", &self.name())
            .field("type_url", &self.type_url())
            .field("len", &self.0.bytes.len())
            .field("ttl", &self.0.ttl)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::type_url;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    #[test]
    fn encodes_once_and_decodes_back() {
        let cluster = Cluster {
            name: "c1".into(),
            ..Default::default()
        };
        let encoded = EncodedResource::from_message(&cluster);
        assert_eq!(encoded.name(), "c1");
        assert_eq!(encoded.type_url(), type_url::CLUSTER);
        assert_eq!(encoded.decode::<Cluster>().unwrap(), cluster);
        let copy = encoded.clone();
        assert!(copy.ptr_eq(&encoded));
        assert!(Arc::ptr_eq(copy.version(), encoded.version()));
        let same = EncodedResource::from_message(&cluster);
        assert_eq!(same.version(), encoded.version());
        assert_eq!(encoded.to_sotw_any(), encoded.to_any());
        let any = encoded.to_any();
        assert_eq!(any.type_url, type_url::CLUSTER);
        assert_eq!(any.value, cluster.encode_to_vec());
    }

    #[test]
    fn ttl_wraps_sotw_resources_and_delta_heartbeats_drop_the_body() {
        let cluster = Cluster {
            name: "c1".into(),
            ..Default::default()
        };
        let plain = EncodedResource::from_message(&cluster);
        let ttl = plain.with_ttl(Duration::from_millis(1500));
        assert_eq!(ttl.ttl(), Some(Duration::from_millis(1500)));
        assert_eq!(ttl.version(), plain.version());
        let wrapped = ttl.to_sotw_any();
        assert_eq!(wrapped.type_url, type_url::RESOURCE_WRAPPER);
        let resource = Resource::decode(wrapped.value.as_slice()).unwrap();
        assert_eq!(resource.name, "c1");
        assert_eq!(
            resource.ttl,
            Some(ProtoDuration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        assert_eq!(resource.resource, Some(plain.to_any()));

        let delta = ttl.to_delta_resource(false);
        assert_eq!(
            (delta.name.as_str(), delta.version.as_str()),
            ("c1", &**plain.version())
        );
        assert!(delta.resource.is_some() && delta.ttl.is_some());
        assert!(ttl.to_delta_resource(true).resource.is_none());
        assert!(plain.to_delta_resource(false).ttl.is_none());
    }
}
