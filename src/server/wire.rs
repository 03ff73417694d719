//! The messages a stream sends, encoded straight into the data frames
//! that carry them.
//!
//! A response is assembled from pre-encoded resources ([`EncodedResource`]
//! encodes each once, for every stream). A state-of-the-world response is
//! two parts: a small head of its own (frame header, version, type URL,
//! nonce), written where the frame is being joined, and the `resources`
//! field its [`EncodedList`] encoded once for every stream sending the same
//! answer. Protobuf readers accept fields in any order. Nothing per stream
//! outlives the frame.

use bytes::{BufMut, Bytes, BytesMut};
use tonic::Status;

use super::frames::Frames;
use crate::cache::{EncodedList, EncodedResource};
use crate::protowire;

/// The gRPC length-prefixed message header: a compressed flag and a
/// big-endian u32 length.
pub(crate) const FRAME_HEADER: usize = 5;

/// Room for a state-of-the-world head besides its strings: the frame
/// header, three field tags and their lengths, and a nonce.
const SOTW_HEAD_SLACK: usize = FRAME_HEADER + 3 * 6 + 20;

// Field numbers of `discovery.v3.DiscoveryResponse`.
const VERSION_INFO: u32 = 1;
const RESOURCES: u32 = 2;
const TYPE_URL: u32 = 4;
const NONCE: u32 = 5;

// Field numbers of `discovery.v3.DeltaDiscoveryResponse` (resources, type
// URL and nonce are numbered as above).
const SYSTEM_VERSION_INFO: u32 = 1;
const REMOVED_RESOURCES: u32 = 6;

/// About how many bytes [`write_sotw`] adds for this version, type URL and
/// resources, to reserve a batch's frame once.
pub(crate) fn sotw_size_hint(version: &str, type_url: &str, resources: &EncodedList) -> usize {
    SOTW_HEAD_SLACK + version.len() + type_url.len() + resources.sotw_field().len()
}

/// About how many bytes [`write_delta`] adds for this version, type URL,
/// resources and removed names: each field's tag and length take a few
/// bytes on top of its content. A heartbeat's resources are estimated from
/// their name and version, not encoded in full only to be measured.
pub(crate) fn delta_size_hint<'a>(
    system_version: &str,
    type_url: &str,
    resources: impl Iterator<Item = &'a EncodedResource>,
    removed: impl Iterator<Item = &'a String>,
    heartbeat: bool,
) -> usize {
    let resources: usize = resources
        .map(|r| {
            if heartbeat {
                // Name, version, TTL and their tags.
                r.name().len() + r.version().len() + 24
            } else {
                r.delta_wire().len() + 4
            }
        })
        .sum();
    let removed: usize = removed.map(|name| name.len() + 3).sum();
    resources + removed + system_version.len() + type_url.len() + 48
}

/// Writes a `DiscoveryResponse` as one gRPC message: fields 1 (version), 4
/// (type URL) and 5 (nonce) in its head, then the resources (field 2),
/// shared. Returns the message's size, frame header included.
///
/// Fails, writing nothing, only for a message over gRPC's 4 GiB limit.
pub(crate) fn write_sotw(
    out: &mut Frames,
    version: &str,
    type_url: &str,
    nonce: &str,
    resources: &EncodedList,
) -> Result<usize, Status> {
    let body = resources.sotw_field();
    let head_len = protowire::string_len(VERSION_INFO, version.as_bytes())
        + protowire::string_len(TYPE_URL, type_url.as_bytes())
        + protowire::string_len(NONCE, nonce.as_bytes());
    let len = message_len(head_len + body.len())?;
    out.push_message(
        FRAME_HEADER + head_len,
        |buf| {
            put_frame_header(buf, len);
            protowire::put_string(buf, VERSION_INFO, version.as_bytes());
            protowire::put_string(buf, TYPE_URL, type_url.as_bytes());
            protowire::put_string(buf, NONCE, nonce.as_bytes());
        },
        body,
    );
    Ok(FRAME_HEADER + head_len + body.len())
}

/// Writes a `DeltaDiscoveryResponse` as one gRPC message, the resources
/// without body for a heartbeat. Returns the message's size, frame header
/// included.
///
/// Fails, writing nothing, only for a message over gRPC's 4 GiB limit.
pub(crate) fn write_delta<'a, I, R>(
    out: &mut Frames,
    system_version: &str,
    type_url: &str,
    nonce: &str,
    resources: I,
    removed: R,
    heartbeat: bool,
) -> Result<usize, Status>
where
    I: IntoIterator<Item = &'a EncodedResource>,
    I::IntoIter: Clone,
    R: IntoIterator<Item = &'a String>,
    R::IntoIter: Clone,
{
    let resources = resources.into_iter();
    let removed = removed.into_iter().map(|name| name.as_bytes());
    let fields = DeltaFields {
        system_version,
        type_url,
        nonce,
    };
    if heartbeat {
        let beats: Vec<Bytes> = resources
            .map(EncodedResource::delta_heartbeat_wire)
            .collect();
        fields.write(out, beats.iter().map(|b| &b[..]), removed)
    } else {
        fields.write(out, resources.map(|r| &r.delta_wire()[..]), removed)
    }
}

/// The single fields of a delta response.
struct DeltaFields<'s> {
    system_version: &'s str,
    type_url: &'s str,
    nonce: &'s str,
}

impl DeltaFields<'_> {
    /// Fields 1 (system version), 2 (each resource), 4 (type URL), 5
    /// (nonce), 6 (each removed name), in the order prost writes them.
    fn write<'a>(
        &self,
        out: &mut Frames,
        resources: impl Iterator<Item = &'a [u8]> + Clone,
        removed: impl Iterator<Item = &'a [u8]> + Clone,
    ) -> Result<usize, Status> {
        let own = protowire::string_len(SYSTEM_VERSION_INFO, self.system_version.as_bytes())
            + repeated_len(RESOURCES, resources.clone())
            + protowire::string_len(TYPE_URL, self.type_url.as_bytes())
            + protowire::string_len(NONCE, self.nonce.as_bytes())
            + repeated_len(REMOVED_RESOURCES, removed.clone());
        let len = message_len(own)?;
        out.push_message(
            FRAME_HEADER + own,
            |buf| {
                put_frame_header(buf, len);
                protowire::put_string(buf, SYSTEM_VERSION_INFO, self.system_version.as_bytes());
                for resource in resources {
                    protowire::put_field(buf, RESOURCES, resource);
                }
                protowire::put_string(buf, TYPE_URL, self.type_url.as_bytes());
                protowire::put_string(buf, NONCE, self.nonce.as_bytes());
                for name in removed {
                    protowire::put_field(buf, REMOVED_RESOURCES, name);
                }
            },
            &Bytes::new(),
        );
        Ok(FRAME_HEADER + own)
    }
}

fn repeated_len<'a>(tag: u32, elements: impl Iterator<Item = &'a [u8]>) -> usize {
    elements.map(|e| protowire::field_len(tag, e.len())).sum()
}

/// A message's length as its frame header spells it, if gRPC allows it.
fn message_len(len: usize) -> Result<u32, Status> {
    u32::try_from(len).map_err(|_| {
        Status::resource_exhausted(format!(
            "a response of {len} bytes is over gRPC's 4 GiB message limit"
        ))
    })
}

fn put_frame_header(buf: &mut BytesMut, len: u32) {
    buf.put_u8(0); // not compressed
    buf.put_u32(len);
}

/// A `DiscoveryResponse` as one gRPC message, in one buffer: what
/// `write_sotw` writes, for benchmarks and tests.
pub fn sotw_message(
    version: &str,
    type_url: &str,
    nonce: &str,
    resources: &EncodedList,
) -> Result<Bytes, Status> {
    let mut frames = Frames::default();
    write_sotw(&mut frames, version, type_url, nonce, resources)?;
    Ok(frames.into_bytes())
}

/// A `DeltaDiscoveryResponse` as one gRPC message, in one buffer: what
/// `write_delta` writes, for benchmarks and tests.
pub fn delta_message<'a, I, R>(
    system_version: &str,
    type_url: &str,
    nonce: &str,
    resources: I,
    removed: R,
    heartbeat: bool,
) -> Result<Bytes, Status>
where
    I: IntoIterator<Item = &'a EncodedResource>,
    I::IntoIter: Clone,
    R: IntoIterator<Item = &'a String>,
    R::IntoIter: Clone,
{
    let mut frames = Frames::default();
    write_delta(
        &mut frames,
        system_version,
        type_url,
        nonce,
        resources,
        removed,
        heartbeat,
    )?;
    Ok(frames.into_bytes())
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
    fn unframe(message: &Bytes) -> Bytes {
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
