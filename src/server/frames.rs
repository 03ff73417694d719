//! A stream's messages as HTTP/2 data frames: few and large.
//!
//! h2 writes every data frame larger than a few hundred bytes with a write
//! system call of its own, and on loopback a write costs more than copying
//! a few KiB. So the messages a stream sends together (the answers one
//! snapshot change brings) are joined into one frame, up to
//! [`JOIN_FRAME_LIMIT`]; a part over [`JOIN_PART_LIMIT`] (a large shared
//! resource list) goes as it is, without a copy.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::wire::WireMessage;

/// A part at most this large is copied into the frame being joined.
const JOIN_PART_LIMIT: usize = 16 * 1024;
/// A joined frame stops growing at this size.
const JOIN_FRAME_LIMIT: usize = 64 * 1024;

/// Data frames waiting to be sent, in order.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    ready: VecDeque<Bytes>,
    /// The frame being joined; empty (unallocated) between batches.
    joining: BytesMut,
}

impl Frames {
    /// Queues messages sent together, joined into as few frames as sensible.
    pub(crate) fn push(&mut self, messages: Vec<WireMessage>) {
        // One allocation for the frame rather than one per doubling.
        let joined: usize = messages
            .iter()
            .flat_map(WireMessage::part_lens)
            .filter(|len| *len <= JOIN_PART_LIMIT)
            .sum();
        self.joining.reserve(joined.min(JOIN_FRAME_LIMIT));
        for message in messages {
            let (head, body) = message.into_parts();
            self.push_part(head);
            self.push_part(body);
        }
        self.finish_joining();
    }

    /// The next frame to send.
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        self.ready.pop_front()
    }

    fn push_part(&mut self, part: Bytes) {
        if part.is_empty() {
            return;
        }
        if part.len() > JOIN_PART_LIMIT {
            self.finish_joining();
            self.ready.push_back(part);
            return;
        }
        if self.joining.len() + part.len() > JOIN_FRAME_LIMIT {
            self.finish_joining();
        }
        self.joining.extend_from_slice(&part);
    }

    fn finish_joining(&mut self) {
        if !self.joining.is_empty() {
            let joined = std::mem::take(&mut self.joining).freeze();
            self.ready.push_back(joined);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{EncodedList, EncodedResource};
    use crate::resource::type_url;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use prost::Message;

    fn message(nonce: &str, names: &[String]) -> WireMessage {
        let list = EncodedList::new(
            names
                .iter()
                .map(|n| {
                    EncodedResource::from_message(&Cluster {
                        name: n.clone(),
                        ..Default::default()
                    })
                })
                .collect(),
        );
        super::super::wire::sotw_message("v1", type_url::CLUSTER, nonce, &list).unwrap()
    }

    fn names(count: usize, len: usize) -> Vec<String> {
        (0..count).map(|i| format!("{i:0len$}")).collect()
    }

    fn drain(frames: &mut Frames) -> Vec<Bytes> {
        std::iter::from_fn(|| frames.pop()).collect()
    }

    /// Splits the frames' data back into gRPC messages.
    fn decode_all(frames: &[Bytes]) -> Vec<DiscoveryResponse> {
        let data: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let mut messages = Vec::new();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
            messages.push(DiscoveryResponse::decode(&rest[5..5 + len]).unwrap());
            rest = &rest[5 + len..];
        }
        messages
    }

    fn nonces(frames: &[Bytes]) -> Vec<String> {
        decode_all(frames).into_iter().map(|m| m.nonce).collect()
    }

    #[test]
    fn small_messages_sent_together_leave_as_one_frame() {
        let mut frames = Frames::default();
        frames.push(vec![message("1", &names(3, 4)), message("2", &names(2, 4))]);
        let sent = drain(&mut frames);
        assert_eq!(sent.len(), 1);
        assert_eq!(nonces(&sent), ["1", "2"]);
        // Nothing is kept allocated between batches.
        assert_eq!(frames.joining.capacity(), 0);
        frames.push(vec![message("3", &names(1, 4))]);
        assert_eq!(nonces(&drain(&mut frames)), ["3"]);
    }

    #[test]
    fn large_parts_go_uncopied_between_joined_frames() {
        let mut frames = Frames::default();
        let large = message("2", &names(1000, 40));
        let (_, shared) = large.clone().into_parts();
        assert!(shared.len() > JOIN_PART_LIMIT);
        frames.push(vec![
            message("1", &names(2, 4)),
            large,
            message("3", &names(2, 4)),
        ]);
        let sent = drain(&mut frames);
        // [message 1 + head of 2], [body of 2, shared], [message 3].
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[1].as_ptr(), shared.as_ptr());
        assert_eq!(nonces(&sent), ["1", "2", "3"]);
    }

    #[test]
    fn joined_frames_stay_under_the_limit() {
        let mut frames = Frames::default();
        let each = message("x", &names(100, 60));
        assert!(each.len() < JOIN_PART_LIMIT);
        frames.push(vec![each.clone(); 20]);
        let sent = drain(&mut frames);
        assert!(sent.len() > 1 && sent.iter().all(|f| f.len() <= JOIN_FRAME_LIMIT));
        assert_eq!(sent.iter().map(Bytes::len).sum::<usize>(), 20 * each.len());
        assert_eq!(decode_all(&sent).len(), 20);
    }
}
