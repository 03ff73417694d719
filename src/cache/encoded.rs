//! A resource serialized once, shared by every node and stream that gets it.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::resource::XdsResource;

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
            version: OnceLock::new(),
        }))
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

    /// Decodes the message back.
    pub fn decode<T: Message + Default>(&self) -> Result<T, prost::DecodeError> {
        T::decode(self.0.bytes.clone())
    }

    /// Whether both handles share the same encoding (same snapshot entry).
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for EncodedResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodedResource")
            .field("name", &self.name())
            .field("type_url", &self.type_url())
            .field("len", &self.0.bytes.len())
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
        let any = encoded.to_any();
        assert_eq!(any.type_url, type_url::CLUSTER);
        assert_eq!(any.value, cluster.encode_to_vec());
    }
}
