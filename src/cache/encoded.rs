//! A resource serialized once, shared by every node and stream that gets it.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::Resource;
use envoy_types::pb::google::protobuf::{Any, Duration as ProtoDuration};
use prost::Message;

use crate::protowire;
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
    /// The encoded element of a state-of-the-world response, on first use.
    sotw_wire: OnceLock<Bytes>,
    /// The encoded element of a delta response, on first use.
    delta_wire: OnceLock<Bytes>,
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
            sotw_wire: OnceLock::new(),
            delta_wire: OnceLock::new(),
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
            sotw_wire: OnceLock::new(),
            delta_wire: OnceLock::new(),
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

    /// The resource as an element of a state-of-the-world response's
    /// `resources`: the encoding of [`to_sotw_any`](Self::to_sotw_any),
    /// computed on first use and shared by every stream that sends it.
    pub(crate) fn sotw_wire(&self) -> &Bytes {
        self.0.sotw_wire.get_or_init(|| self.encode_sotw())
    }

    /// The resource as an element of a delta response's `resources`: the
    /// encoding of [`to_delta_resource(false)`](Self::to_delta_resource),
    /// computed on first use and shared by every stream that sends it.
    pub(crate) fn delta_wire(&self) -> &Bytes {
        self.0
            .delta_wire
            .get_or_init(|| self.encode_resource(self.version(), false))
    }

    /// The heartbeat form of [`delta_wire`](Self::delta_wire), encoded per
    /// call: the encoding of [`to_delta_resource(true)`](Self::to_delta_resource).
    pub(crate) fn delta_heartbeat_wire(&self) -> Bytes {
        self.encode_resource(self.version(), true)
    }

    /// Size of the resource's own `Any` (type URL 1, value 2).
    fn any_len(&self) -> usize {
        protowire::string_len(1, self.0.type_url.as_bytes())
            + protowire::string_len(2, &self.0.bytes)
    }

    fn put_any(&self, buf: &mut BytesMut) {
        protowire::put_string(buf, 1, self.0.type_url.as_bytes());
        protowire::put_string(buf, 2, &self.0.bytes);
    }

    /// The `Any` a state-of-the-world response carries: the resource's own,
    /// or with a TTL, one holding the TTL wrapper.
    fn encode_sotw(&self) -> Bytes {
        if self.0.ttl.is_none() {
            let mut buf = BytesMut::with_capacity(self.any_len());
            self.put_any(&mut buf);
            return buf.freeze();
        }
        let wrapper = self.encode_resource("", false);
        let wrapper_type = type_url::RESOURCE_WRAPPER.as_bytes();
        let len = protowire::string_len(1, wrapper_type) + protowire::string_len(2, &wrapper);
        let mut buf = BytesMut::with_capacity(len);
        protowire::put_string(&mut buf, 1, wrapper_type);
        protowire::put_string(&mut buf, 2, &wrapper);
        buf.freeze()
    }

    /// A `discovery.v3.Resource` (version 1, resource 2, name 3, ttl 6) for
    /// this resource, without its body for a heartbeat.
    fn encode_resource(&self, version: &str, heartbeat: bool) -> Bytes {
        let any_len = self.any_len();
        let ttl = self.0.ttl.map(proto_duration);
        let ttl_len = ttl.as_ref().map(duration_len);
        let len = protowire::string_len(1, version.as_bytes())
            + if heartbeat {
                0
            } else {
                protowire::field_len(2, any_len)
            }
            + protowire::string_len(3, self.0.name.as_bytes())
            + ttl_len.map_or(0, |l| protowire::field_len(6, l));
        let mut buf = BytesMut::with_capacity(len);
        protowire::put_string(&mut buf, 1, version.as_bytes());
        if !heartbeat {
            protowire::put_field_header(&mut buf, 2, any_len);
            self.put_any(&mut buf);
        }
        protowire::put_string(&mut buf, 3, self.0.name.as_bytes());
        if let (Some(ttl), Some(ttl_len)) = (ttl, ttl_len) {
            protowire::put_field_header(&mut buf, 6, ttl_len);
            put_duration(&mut buf, &ttl);
        }
        debug_assert_eq!(buf.len(), len);
        buf.freeze()
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

/// Size of a `google.protobuf.Duration` (seconds 1, nanos 2); both are
/// never negative here.
fn duration_len(d: &ProtoDuration) -> usize {
    protowire::varint_field_len(1, d.seconds as u64)
        + protowire::varint_field_len(2, d.nanos as u64)
}

fn put_duration(buf: &mut BytesMut, d: &ProtoDuration) {
    protowire::put_varint_field(buf, 1, d.seconds as u64);
    protowire::put_varint_field(buf, 2, d.nanos as u64);
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

    #[test]
    fn wire_forms_are_the_encodings_of_the_messages() {
        let cluster = Cluster {
            name: "c1".into(),
            ..Default::default()
        };
        let plain = EncodedResource::from_message(&cluster);
        // An empty message and an empty name: fields left out as prost does.
        let empty = EncodedResource::from_bytes(type_url::ENDPOINT, "", Bytes::new());
        let mut all = vec![plain.clone(), empty.clone()];
        for ttl in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(30),
            Duration::from_nanos(7),
            Duration::from_secs(u64::MAX),
        ] {
            all.push(plain.with_ttl(ttl));
            all.push(empty.with_ttl(ttl));
        }
        for r in &all {
            assert_eq!(
                r.sotw_wire().clone(),
                r.to_sotw_any().encode_to_vec(),
                "{r:?}"
            );
            for heartbeat in [false, true] {
                let delta = if heartbeat {
                    r.delta_heartbeat_wire()
                } else {
                    r.delta_wire().clone()
                };
                assert_eq!(
                    delta,
                    r.to_delta_resource(heartbeat).encode_to_vec(),
                    "{r:?}"
                );
            }
        }
        // Encoded once, shared.
        assert_eq!(plain.sotw_wire().as_ptr(), plain.sotw_wire().as_ptr());
        assert_eq!(plain.delta_wire().as_ptr(), plain.delta_wire().as_ptr());
        assert_eq!(
            plain.sotw_wire().as_ptr(),
            plain.clone().sotw_wire().as_ptr()
        );
    }
}
