//! The messages a stream sends, encoded straight into gRPC frames.
//!
//! A response is assembled from pre-encoded resources ([`EncodedResource`]
//! encodes each once, for every stream). A state-of-the-world response is
//! two parts: a small head of its own (frame header, version, type URL,
//! nonce) and the `resources` field its [`EncodedList`] encoded once for
//! every stream sending the same answer, written without a copy. Protobuf
//! readers accept fields in any order. Nothing per stream outlives the
//! message.

use bytes::{BufMut, Bytes, BytesMut};
use tonic::Status;

use crate::cache::{EncodedList, EncodedResource};
use crate::protowire;

/// The gRPC length-prefixed message header: a compressed flag and a
/// big-endian u32 length.
pub(crate) const FRAME_HEADER: usize = 5;

// Field numbers of `discovery.v3.DiscoveryResponse`.
const VERSION_INFO: u32 = 1;
const RESOURCES: u32 = 2;
const TYPE_URL: u32 = 4;
const NONCE: u32 = 5;

// Field numbers of `discovery.v3.DeltaDiscoveryResponse` (resources, type
// URL and nonce are numbered as above).
const SYSTEM_VERSION_INFO: u32 = 1;
const REMOVED_RESOURCES: u32 = 6;

/// One gRPC message (frame header included) as it goes on the wire: a
/// head of its own, then a body shared with other streams (may be empty).
#[derive(Debug, Clone)]
pub struct WireMessage {
    head: Bytes,
    body: Bytes,
}

impl WireMessage {
    fn whole(message: Bytes) -> Self {
        WireMessage {
            head: message,
            body: Bytes::new(),
        }
    }

    /// Size in bytes, frame header included.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Whether the message has no bytes at all (never, once built).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sizes of the two parts, in wire order.
    pub(crate) fn part_lens(&self) -> [usize; 2] {
        [self.head.len(), self.body.len()]
    }

    /// The two parts, in wire order.
    pub fn into_parts(self) -> (Bytes, Bytes) {
        (self.head, self.body)
    }

    /// The message as one buffer (copies it).
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.len());
        buf.put_slice(&self.head);
        buf.put_slice(&self.body);
        buf.freeze()
    }
}

/// A `DiscoveryResponse` as one gRPC message: fields 1 (version), 4 (type
/// URL) and 5 (nonce) in its head, then the resources (field 2), shared.
///
/// Fails only for a message over gRPC's 4 GiB limit.
pub fn sotw_message(
    version: &str,
    type_url: &str,
    nonce: &str,
    resources: &EncodedList,
) -> Result<WireMessage, Status> {
    let body = resources.sotw_field().clone();
    let head_len = protowire::string_len(VERSION_INFO, version.as_bytes())
        + protowire::string_len(TYPE_URL, type_url.as_bytes())
        + protowire::string_len(NONCE, nonce.as_bytes());
    let mut head = frame(head_len + body.len(), head_len)?;
    protowire::put_string(&mut head, VERSION_INFO, version.as_bytes());
    protowire::put_string(&mut head, TYPE_URL, type_url.as_bytes());
    protowire::put_string(&mut head, NONCE, nonce.as_bytes());
    Ok(WireMessage {
        head: finish(head, head_len),
        body,
    })
}

/// A `DeltaDiscoveryResponse` as one gRPC message (frame header included):
/// the resources without body for a heartbeat.
///
/// Fails only for a message over gRPC's 4 GiB limit.
pub fn delta_message<'a, I, R>(
    system_version: &str,
    type_url: &str,
    nonce: &str,
    resources: I,
    removed: R,
    heartbeat: bool,
) -> Result<WireMessage, Status>
where
    I: IntoIterator<Item = &'a EncodedResource>,
    I::IntoIter: Clone,
    R: IntoIterator<Item = &'a String>,
    R::IntoIter: Clone,
{
    let resources = resources.into_iter();
    let removed = removed.into_iter().map(|name| name.as_bytes());
    if heartbeat {
        let beats: Vec<Bytes> = resources
            .map(EncodedResource::delta_heartbeat_wire)
            .collect();
        delta_frame(
            system_version,
            type_url,
            nonce,
            beats.iter().map(|b| &b[..]),
            removed,
        )
    } else {
        delta_frame(
            system_version,
            type_url,
            nonce,
            resources.map(|r| &r.delta_wire()[..]),
            removed,
        )
    }
    .map(WireMessage::whole)
}

/// Fields 1 (system version), 2 (each resource), 4 (type URL), 5 (nonce),
/// 6 (each removed name), in the order prost writes them.
fn delta_frame<'a>(
    system_version: &str,
    type_url: &str,
    nonce: &str,
    resources: impl Iterator<Item = &'a [u8]> + Clone,
    removed: impl Iterator<Item = &'a [u8]> + Clone,
) -> Result<Bytes, Status> {
    let len = protowire::string_len(SYSTEM_VERSION_INFO, system_version.as_bytes())
        + repeated_len(RESOURCES, resources.clone())
        + protowire::string_len(TYPE_URL, type_url.as_bytes())
        + protowire::string_len(NONCE, nonce.as_bytes())
        + repeated_len(REMOVED_RESOURCES, removed.clone());
    let mut buf = frame(len, len)?;
    protowire::put_string(&mut buf, SYSTEM_VERSION_INFO, system_version.as_bytes());
    for resource in resources {
        protowire::put_field(&mut buf, RESOURCES, resource);
    }
    protowire::put_string(&mut buf, TYPE_URL, type_url.as_bytes());
    protowire::put_string(&mut buf, NONCE, nonce.as_bytes());
    for name in removed {
        protowire::put_field(&mut buf, REMOVED_RESOURCES, name);
    }
    Ok(finish(buf, len))
}

fn repeated_len<'a>(tag: u32, elements: impl Iterator<Item = &'a [u8]>) -> usize {
    elements.map(|e| protowire::field_len(tag, e.len())).sum()
}

/// The buffer of a message of `len` bytes, its frame header written, with
/// room for the `own` bytes of it that go in this buffer.
fn frame(len: usize, own: usize) -> Result<BytesMut, Status> {
    let Ok(len32) = u32::try_from(len) else {
        return Err(Status::resource_exhausted(format!(
            "a response of {len} bytes is over gRPC's 4 GiB message limit"
        )));
    };
    let mut buf = BytesMut::with_capacity(FRAME_HEADER + own);
    buf.put_u8(0); // not compressed
    buf.put_u32(len32);
    Ok(buf)
}

fn finish(buf: BytesMut, own: usize) -> Bytes {
    debug_assert_eq!(buf.len(), FRAME_HEADER + own, "message size miscomputed");
    debug_assert_eq!(buf.capacity(), buf.len(), "message buffer not exact");
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::type_url;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse,
    };
    use prost::Message;
    use std::time::Duration;

    fn clusters(names: &[&str]) -> Vec<EncodedResource> {
        names
            .iter()
            .map(|n| {
                EncodedResource::from_message(&Cluster {
                    name: n.to_string(),
                    ..Default::default()
                })
            })
            .collect()
    }

    /// A mix: plain, TTL'd, an empty message, a large one.
    fn mixed() -> Vec<EncodedResource> {
        let mut resources = clusters(&["a", "b"]);
        resources.push(resources[1].with_ttl(Duration::from_millis(2500)));
        resources.push(EncodedResource::from_bytes(
            type_url::CLUSTER,
            "",
            Bytes::new(),
        ));
        resources.push(EncodedResource::from_message(&ClusterLoadAssignment {
            cluster_name: "x".repeat(100_000),
            ..Default::default()
        }));
        resources
    }

    /// The message after the frame header, checking the header.
    fn unframe(message: &WireMessage) -> Bytes {
        let message = message.to_bytes();
        assert_eq!(message[0], 0, "compressed flag");
        let len = u32::from_be_bytes(message[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, message.len() - FRAME_HEADER);
        message.slice(FRAME_HEADER..)
    }

    /// What the server sent before, built as a struct.
    fn old_sotw(
        version: &str,
        type_url: &str,
        nonce: &str,
        resources: &[EncodedResource],
    ) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.to_string(),
            resources: resources.iter().map(EncodedResource::to_sotw_any).collect(),
            type_url: type_url.to_string(),
            nonce: nonce.to_string(),
            ..Default::default()
        }
    }

    fn old_delta(
        version: &str,
        type_url: &str,
        nonce: &str,
        resources: &[EncodedResource],
        removed: &[String],
        heartbeat: bool,
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: version.to_string(),
            resources: resources
                .iter()
                .map(|r| r.to_delta_resource(heartbeat))
                .collect(),
            type_url: type_url.to_string(),
            removed_resources: removed.to_vec(),
            nonce: nonce.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn sotw_messages_decode_to_what_the_struct_path_built() {
        let cases: Vec<(&str, &str, Vec<EncodedResource>)> = vec![
            ("v1", "1", clusters(&["a", "b", "c"])),
            ("v2", "17", mixed()),
            // Empty response, empty version.
            ("", "3", vec![]),
            ("v3", "4", vec![]),
        ];
        for (version, nonce, resources) in cases {
            let list = EncodedList::new(resources.clone());
            let message = sotw_message(version, type_url::CLUSTER, nonce, &list).unwrap();
            let expected = old_sotw(version, type_url::CLUSTER, nonce, &resources);
            assert_eq!(message.len(), FRAME_HEADER + expected.encoded_len());
            assert_eq!(
                DiscoveryResponse::decode(unframe(&message)).unwrap(),
                expected
            );
            // The resources are the list's shared bytes, not a copy.
            let (_, body) = message.into_parts();
            assert_eq!(body.as_ptr(), list.sotw_field().as_ptr());
        }
    }

    #[test]
    fn ttl_resources_are_wrapped_and_delta_heartbeats_carry_no_body() {
        let ttl = clusters(&["a"])[0].with_ttl(Duration::from_secs(5));
        let list = EncodedList::new(vec![ttl.clone()]);
        let message = sotw_message("v1", type_url::CLUSTER, "1", &list).unwrap();
        let decoded = DiscoveryResponse::decode(unframe(&message)).unwrap();
        assert_eq!(decoded.resources[0].type_url, type_url::RESOURCE_WRAPPER);
        let wrapper = envoy_types::pb::envoy::service::discovery::v3::Resource::decode(
            decoded.resources[0].value.as_slice(),
        )
        .unwrap();
        assert!(wrapper.resource.is_some() && wrapper.ttl.is_some());
        assert_eq!(wrapper.name, "a");

        let message = delta_message("v1", type_url::CLUSTER, "1", [&ttl], &[], true).unwrap();
        let decoded = DeltaDiscoveryResponse::decode(unframe(&message)).unwrap();
        assert!(decoded.resources[0].resource.is_none());
        assert_eq!(decoded.resources[0].version, **ttl.version());
    }

    #[test]
    fn delta_messages_decode_to_what_the_struct_path_built() {
        let removed = vec!["gone".to_string(), String::new(), "z".repeat(300)];
        let cases: Vec<(&str, &str, Vec<EncodedResource>, Vec<String>)> = vec![
            ("s1", "1", clusters(&["a", "b"]), vec![]),
            ("s2", "2", mixed(), removed.clone()),
            // Only removals; an empty answer (first wildcard request).
            ("s3", "3", vec![], removed),
            ("", "4", vec![], vec![]),
        ];
        for (version, nonce, resources, removed) in cases {
            for heartbeat in [false, true] {
                let message = delta_message(
                    version,
                    type_url::CLUSTER,
                    nonce,
                    &resources,
                    &removed,
                    heartbeat,
                )
                .unwrap();
                let expected = old_delta(
                    version,
                    type_url::CLUSTER,
                    nonce,
                    &resources,
                    &removed,
                    heartbeat,
                );
                let body = unframe(&message);
                assert_eq!(
                    DeltaDiscoveryResponse::decode(body.clone()).unwrap(),
                    expected
                );
                assert_eq!(body, &expected.encode_to_vec()[..]);
            }
        }
    }
}
