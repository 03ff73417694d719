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

/// A shared part at most this large is copied into the frame being joined.
const JOIN_PART_LIMIT: usize = 16 * 1024;
/// A joined frame stops growing at this size.
const JOIN_FRAME_LIMIT: usize = 64 * 1024;

/// Data frames waiting to be sent, in order. Messages are written into the
/// frame being joined (see [`super::wire`]); [`Frames::finish`] ends a
/// batch.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    ready: VecDeque<Bytes>,
    /// The frame being joined; empty (unallocated) between batches.
    joining: BytesMut,
}

impl Frames {
    /// Makes room for a batch of about `bytes`, so that its frame is
    /// allocated once rather than once per doubling.
    pub(crate) fn reserve(&mut self, bytes: usize) {
        self.joining.reserve(bytes.min(JOIN_FRAME_LIMIT));
    }

    /// Appends one message: `own_len` bytes of its own, which `write_own`
    /// writes, then `shared` bytes (possibly empty), sent as they are when
    /// large and copied into the joined frame otherwise.
    pub(crate) fn push_message(
        &mut self,
        own_len: usize,
        write_own: impl FnOnce(&mut BytesMut),
        shared: &Bytes,
    ) {
        let alone = own_len > JOIN_PART_LIMIT;
        if alone || self.joining.len() + own_len > JOIN_FRAME_LIMIT {
            self.finish();
        }
        self.joining.reserve(own_len);
        let start = self.joining.len();
        write_own(&mut self.joining);
        debug_assert_eq!(
            self.joining.len() - start,
            own_len,
            "message size miscomputed"
        );
        if alone {
            self.finish();
        }
        self.push_shared(shared);
    }

    /// Ends a batch: what was joined becomes a frame.
    pub(crate) fn finish(&mut self) {
        if !self.joining.is_empty() {
            let joined = std::mem::take(&mut self.joining).freeze();
            self.ready.push_back(joined);
        }
    }

    /// The next frame to send.
    pub(crate) fn pop(&mut self) -> Option<Bytes> {
        self.ready.pop_front()
    }

    /// Everything written, as one buffer (copied if in several frames).
    pub(crate) fn into_bytes(mut self) -> Bytes {
        self.finish();
        match self.ready.len() {
            0 => Bytes::new(),
            1 => self.ready.pop_front().unwrap_or_default(),
            _ => {
                let mut joined = BytesMut::with_capacity(self.ready.iter().map(Bytes::len).sum());
                for frame in &self.ready {
                    joined.extend_from_slice(frame);
                }
                joined.freeze()
            }
        }
    }

    fn push_shared(&mut self, part: &Bytes) {
        if part.is_empty() {
            return;
        }
        if part.len() > JOIN_PART_LIMIT {
            self.finish();
            self.ready.push_back(part.clone());
            return;
        }
        if self.joining.len() + part.len() > JOIN_FRAME_LIMIT {
            self.finish();
        }
        self.joining.extend_from_slice(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{EncodedList, EncodedResource};
    use crate::resource::type_url;
    use crate::server::wire::write_sotw;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use prost::Message;

    fn list(names: &[String]) -> EncodedList {
        EncodedList::new(
            names
                .iter()
                .map(|n| {
                    EncodedResource::from_message(&Cluster {
                        name: n.clone(),
                        ..Default::default()
                    })
                })
                .collect(),
        )
    }

    /// Writes one batch of messages, each with its nonce and resources.
    fn batch(frames: &mut Frames, messages: &[(&str, &EncodedList)]) {
        for (nonce, list) in messages {
            write_sotw(frames, "v1", type_url::CLUSTER, nonce, list).unwrap();
        }
        frames.finish();
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
        let (three, two) = (list(&names(3, 4)), list(&names(2, 4)));
        frames.reserve(64);
        batch(&mut frames, &[("1", &three), ("2", &two)]);
        let sent = drain(&mut frames);
        assert_eq!(sent.len(), 1);
        assert_eq!(nonces(&sent), ["1", "2"]);
        // Nothing is kept allocated between batches.
        assert_eq!(frames.joining.capacity(), 0);
        batch(&mut frames, &[("3", &list(&names(1, 4)))]);
        assert_eq!(nonces(&drain(&mut frames)), ["3"]);
    }

    #[test]
    fn large_parts_go_uncopied_between_joined_frames() {
        let mut frames = Frames::default();
        let (small, large) = (list(&names(2, 4)), list(&names(1000, 40)));
        let shared = large.sotw_field().clone();
        assert!(shared.len() > JOIN_PART_LIMIT);
        batch(&mut frames, &[("1", &small), ("2", &large), ("3", &small)]);
        let sent = drain(&mut frames);
        // [message 1 + head of 2], [body of 2, shared], [message 3].
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[1].as_ptr(), shared.as_ptr());
        assert_eq!(nonces(&sent), ["1", "2", "3"]);
    }

    #[test]
    fn joined_frames_stay_under_the_limit() {
        let mut frames = Frames::default();
        let each = list(&names(100, 60));
        let one = write_sotw(&mut frames, "v1", type_url::CLUSTER, "x", &each).unwrap();
        assert!(one < JOIN_PART_LIMIT);
        batch(&mut frames, &vec![("x", &each); 19]);
        let sent = drain(&mut frames);
        assert!(sent.len() > 1 && sent.iter().all(|f| f.len() <= JOIN_FRAME_LIMIT));
        assert_eq!(sent.iter().map(Bytes::len).sum::<usize>(), 20 * one);
        assert_eq!(decode_all(&sent).len(), 20);
    }

    #[test]
    fn a_large_message_of_its_own_is_a_frame_of_its_own() {
        let mut frames = Frames::default();
        let small = list(&names(2, 4));
        write_sotw(&mut frames, "v1", type_url::CLUSTER, "1", &small).unwrap();
        let own = JOIN_PART_LIMIT + 1;
        frames.push_message(
            own,
            |buf| buf.extend_from_slice(&vec![7; own]),
            &Bytes::new(),
        );
        frames.finish();
        let sent = drain(&mut frames);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].len(), own);
    }
}
