//! The requests of one xDS stream, decoded from the HTTP/2 request body.
//!
//! This replaces tonic's `Streaming` for the streaming RPCs for reasons
//! that matter with thousands of long-lived streams:
//!
//! - Memory: `Streaming` keeps an 8 KiB buffer per stream, grown to the
//!   largest request seen (an Envoy with a thousand EDS names sends 30 KiB)
//!   and never shrunk. Here a message that arrives whole in one data frame
//!   is decoded where it lies, and a buffer exists only while a message is
//!   split across frames; between messages a stream holds no buffer at all.
//! - CPU: Envoy repeats its node (often kilobytes: metadata, extensions) in
//!   every request. A node whose bytes equal the previous one's is not
//!   decoded again; it is left out, and the stream fills in the node it
//!   already has (which it does anyway for clients that send the node only
//!   once).
//! - CPU again: every ACK carries the type, version, nonce and names its
//!   client sent before. A request is decoded into one the stream is done
//!   with ([`SparePool`]), its strings and names overwritten in place, so
//!   an ACK costs no allocation and its predecessor no free.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::Stream;
use http_body::Body;
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::Message;
use tonic::Status;

use super::wire::FRAME_HEADER;

/// A request message with a node.
pub(crate) trait NodeRequest: Message + Default + Clone + Send + Sync + 'static {
    /// The field number of `node`.
    const NODE_FIELD: u32;
    /// The field number of the repeated names decoded in place into a
    /// reused request ([`NodeRequest::names_mut`]).
    const NAMES_FIELD: u32;
    /// The field number of `type_url`.
    const TYPE_URL_FIELD: u32;
    fn node_slot(&mut self) -> &mut Option<Node>;
    fn type_url(&self) -> &str;
    /// The names field.
    fn names_mut(&mut self) -> &mut Vec<String>;
}

impl NodeRequest for DiscoveryRequest {
    const NODE_FIELD: u32 = 2;
    const NAMES_FIELD: u32 = 3;
    const TYPE_URL_FIELD: u32 = 4;
    fn node_slot(&mut self) -> &mut Option<Node> {
        &mut self.node
    }
    fn type_url(&self) -> &str {
        &self.type_url
    }
    fn names_mut(&mut self) -> &mut Vec<String> {
        &mut self.resource_names
    }
}

impl NodeRequest for DeltaDiscoveryRequest {
    const NODE_FIELD: u32 = 1;
    const NAMES_FIELD: u32 = 3;
    const TYPE_URL_FIELD: u32 = 2;
    fn node_slot(&mut self) -> &mut Option<Node> {
        &mut self.node
    }
    fn type_url(&self) -> &str {
        &self.type_url
    }
    fn names_mut(&mut self) -> &mut Vec<String> {
        &mut self.resource_names_subscribe
    }
}

/// Requests a stream is done with (their watches answered), kept to decode
/// later requests into.
pub(crate) struct SparePool<R>(Vec<Arc<R>>);

impl<R: NodeRequest> SparePool<R> {
    /// More than the types a stream usually watches: one per answer of an
    /// update comes back before its ACK is decoded.
    const MAX: usize = 8;

    /// Keeps `request` for reuse if nothing else holds it and there is room.
    pub(crate) fn put(&mut self, mut request: Arc<R>) {
        if self.0.len() < Self::MAX && Arc::get_mut(&mut request).is_some() {
            self.0.push(request);
        }
    }

    /// A spare for a request of `type_url`: preferably one of the same
    /// type, whose names are most likely the new request's and whose
    /// capacities fit it.
    fn take(&mut self, type_url: Option<&[u8]>) -> Option<Arc<R>> {
        let same = type_url.and_then(|url| {
            let same = |spare: &Arc<R>| spare.type_url().as_bytes() == url;
            self.0.iter().rposition(same)
        });
        match same {
            Some(at) => Some(self.0.swap_remove(at)),
            None => self.0.pop(),
        }
    }
}

impl<R> Default for SparePool<R> {
    fn default() -> Self {
        SparePool(Vec::new())
    }
}

/// The decoded requests of a stream; ends when the client half-closes.
pub(crate) struct RequestStream<R> {
    body: tonic::body::Body,
    /// The unread rest of the latest data frame; empty whenever the stream
    /// waits, so it never pins the connection's read buffer.
    current: Bytes,
    /// Bytes of a message split across frames; empty, without capacity,
    /// otherwise.
    pending: BytesMut,
    limit: usize,
    decoder: Decoder<R>,
    ended: bool,
}

/// Where [`RequestStream::next_message`] found a whole message (its length
/// with the gRPC header).
enum Whole {
    /// At the start of `current`: decoded there, not copied.
    InCurrent(usize),
    /// Gathered in `pending`.
    InPending,
}

/// What decoding a stream's requests keeps from one to the next.
struct Decoder<R> {
    /// The encoded node of the last request that carried one.
    last_node: Option<Bytes>,
    spares: SparePool<R>,
}

impl<R: NodeRequest> RequestStream<R> {
    /// Requests from `body`, each at most `limit` bytes.
    pub(crate) fn new(body: tonic::body::Body, limit: usize) -> Self {
        RequestStream {
            body,
            current: Bytes::new(),
            pending: BytesMut::new(),
            limit,
            decoder: Decoder {
                last_node: None,
                spares: SparePool::default(),
            },
            ended: false,
        }
    }

    /// Where requests the stream is done with go, to be decoded into again.
    pub(crate) fn spares(&mut self) -> &mut SparePool<R> {
        &mut self.decoder.spares
    }

    /// The size of the gRPC message starting `bytes`, header included,
    /// once its header is there.
    fn framed_len(&self, bytes: &[u8]) -> Result<Option<usize>, Status> {
        if bytes.len() < FRAME_HEADER {
            return Ok(None);
        }
        if bytes[0] != 0 {
            return Err(Status::unimplemented(
                "compressed requests are not supported: no grpc-encoding is accepted",
            ));
        }
        let mut len = [0; 4];
        len.copy_from_slice(&bytes[1..FRAME_HEADER]);
        let len = u32::from_be_bytes(len) as usize;
        if len > self.limit {
            return Err(Status::out_of_range(format!(
                "request of {len} bytes exceeds the limit of {} bytes",
                self.limit
            )));
        }
        Ok(Some(FRAME_HEADER + len))
    }

    /// Decodes the next whole message of the received bytes, if there is
    /// one. Returns `None` only once `current` is used up.
    fn decode_next(&mut self) -> Result<Option<Arc<R>>, Status> {
        let request = match self.next_message()? {
            None => return Ok(None),
            Some(Whole::InCurrent(whole)) => {
                let request = self.decoder.decode(&self.current[FRAME_HEADER..whole]);
                self.consume_current(whole);
                request
            }
            Some(Whole::InPending) => {
                let request = self.decoder.decode(&self.pending[FRAME_HEADER..]);
                // The message's buffer goes with the message.
                self.pending = BytesMut::new();
                request
            }
        };
        request.map(Some)
    }

    /// Drops the first `n` bytes of `current`, and the frame once it is
    /// used up: an empty view still holds the connection's buffer.
    fn consume_current(&mut self, n: usize) {
        self.current.advance(n);
        if self.current.is_empty() {
            self.current = Bytes::new();
        }
    }

    /// Finds the next whole message in the received bytes, gathering one
    /// split across frames.
    fn next_message(&mut self) -> Result<Option<Whole>, Status> {
        loop {
            if self.pending.is_empty() {
                let whole = self.framed_len(&self.current)?;
                if let Some(whole) = whole.filter(|whole| *whole <= self.current.len()) {
                    return Ok(Some(Whole::InCurrent(whole)));
                }
                if self.current.is_empty() {
                    return Ok(None);
                }
                // The message goes on in later frames: gather it, growing
                // once to the size its header announces.
                self.pending.reserve(whole.unwrap_or(FRAME_HEADER));
            }
            let whole = self.framed_len(&self.pending)?;
            let goal = whole.unwrap_or(FRAME_HEADER);
            let take = (goal - self.pending.len()).min(self.current.len());
            self.pending.extend_from_slice(&self.current[..take]);
            self.consume_current(take);
            if self.pending.len() < goal {
                return Ok(None);
            }
            if whole.is_some() {
                return Ok(Some(Whole::InPending));
            }
            // The header just completed: loop to read the length.
        }
    }
}

impl<R: NodeRequest> Decoder<R> {
    /// Decodes a request, into a spare one when there is one, leaving out
    /// a node equal to the last one.
    fn decode(&mut self, buf: &[u8]) -> Result<Arc<R>, Status> {
        let type_url = peek_field(buf, R::TYPE_URL_FIELD);
        let mut request = self.spares.take(type_url).unwrap_or_default();
        // A spare is unique (the pool takes no other), so this never copies.
        self.decode_into(buf, Arc::make_mut(&mut request))?;
        Ok(request)
    }

    fn decode_into(&mut self, mut buf: &[u8], request: &mut R) -> Result<(), Status> {
        // Strings keep their buffers through `clear`; the names are set
        // aside first, so that each one is overwritten, not dropped.
        let mut names = std::mem::take(request.names_mut());
        request.clear();
        let mut names_used = 0;
        let mut nodes = 0;
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf).map_err(invalid)?;
            let delimited = wire_type == WireType::LengthDelimited;
            if tag == R::NAMES_FIELD && delimited {
                let raw = length_delimited(&mut buf)?;
                match names.get_mut(names_used) {
                    // An ACK repeats the names of the request this spare
                    // held: bytes equal to a valid name need no checking
                    // and no copy.
                    Some(slot) if slot.as_bytes() == raw => {}
                    slot => {
                        let name = std::str::from_utf8(raw).map_err(|_| {
                            Status::internal("invalid request: a resource name is not valid UTF-8")
                        })?;
                        match slot {
                            Some(slot) => {
                                slot.clear();
                                slot.push_str(name);
                            }
                            None => names.push(name.to_owned()),
                        }
                    }
                }
                names_used += 1;
                continue;
            }
            if tag != R::NODE_FIELD || !delimited {
                request
                    .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                    .map_err(invalid)?;
                continue;
            }
            let raw = length_delimited(&mut buf)?;
            nodes += 1;
            if nodes == 1 && self.last_node.as_deref() == Some(raw) {
                continue;
            }
            // A repeated node field merges into the first, as protobuf says.
            let slot = request.node_slot();
            let node = slot.get_or_insert_with(Node::default);
            node.merge(raw).map_err(invalid)?;
            self.last_node = (nodes == 1).then(|| Bytes::copy_from_slice(raw));
        }
        if nodes > 1 {
            self.last_node = None;
        }
        names.truncate(names_used);
        if names.capacity() > 2 * names.len() + 64 {
            // The client subscribes to far fewer names than it did.
            names.shrink_to_fit();
        }
        *request.names_mut() = names;
        Ok(())
    }
}

/// The content of the first length-delimited field `tag` in an encoded
/// message, found without decoding the rest; `None` if it has none or is
/// malformed (decoding then says why).
fn peek_field(mut message: &[u8], tag: u32) -> Option<&[u8]> {
    while !message.is_empty() {
        let (field, wire_type) = decode_key(&mut message).ok()?;
        if field == tag && wire_type == WireType::LengthDelimited {
            return length_delimited(&mut message).ok();
        }
        skip_field(wire_type, field, &mut message, DecodeContext::default()).ok()?;
    }
    None
}

/// A request that does not decode.
fn invalid(error: prost::DecodeError) -> Status {
    Status::internal(format!("invalid request: {error}"))
}

/// Splits off a length-delimited field's content.
fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], Status> {
    let len = decode_varint(buf).map_err(invalid)?;
    let len = usize::try_from(len)
        .ok()
        .filter(|len| *len <= buf.remaining())
        .ok_or_else(|| Status::internal("invalid request: a field overruns the message"))?;
    let (content, rest) = buf.split_at(len);
    *buf = rest;
    Ok(content)
}

impl<R: NodeRequest> Stream for RequestStream<R> {
    type Item = Result<Arc<R>, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match this.decode_next() {
                Ok(Some(request)) => return Poll::Ready(Some(Ok(request))),
                Ok(None) => {}
                Err(status) => {
                    this.ended = true;
                    this.pending = BytesMut::new();
                    this.current = Bytes::new();
                    return Poll::Ready(Some(Err(status)));
                }
            }
            if this.ended {
                if this.pending.is_empty() {
                    return Poll::Ready(None);
                }
                this.pending = BytesMut::new();
                return Poll::Ready(Some(Err(Status::internal(
                    "the request stream ended inside a message",
                ))));
            }
            match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.current = data;
                    }
                }
                Some(Err(status)) => {
                    this.ended = true;
                    this.pending = BytesMut::new();
                    return Poll::Ready(Some(Err(status)));
                }
                None => this.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use http_body::Frame;
    use std::convert::Infallible;
    use std::sync::Mutex;

    /// A body yielding the given chunks.
    struct Chunks(Mutex<Vec<Bytes>>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let mut chunks = self.0.lock().unwrap();
            Poll::Ready((!chunks.is_empty()).then(|| Ok(Frame::data(chunks.remove(0)))))
        }
    }

    fn framed(message: &impl Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn stream(chunks: Vec<Vec<u8>>, limit: usize) -> RequestStream<DiscoveryRequest> {
        let chunks = chunks.into_iter().map(Bytes::from).collect();
        RequestStream::new(tonic::body::Body::new(Chunks(Mutex::new(chunks))), limit)
    }

    fn request(version: &str, node_id: Option<&str>) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: version.into(),
            node: node_id.map(|id| Node {
                id: id.into(),
                cluster: "c".into(),
                ..Default::default()
            }),
            resource_names: vec!["a".into(), "b".into()],
            type_url: "t".into(),
            ..Default::default()
        }
    }

    async fn all(mut s: RequestStream<DiscoveryRequest>) -> Vec<Result<DiscoveryRequest, Status>> {
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            let item = item.map(Arc::unwrap_or_clone);
            let failed = item.is_err();
            out.push(item);
            if failed {
                break;
            }
        }
        out
    }

    #[tokio::test]
    async fn messages_split_and_joined_across_chunks() {
        let (a, b, c) = (
            request("1", Some("n")),
            request("2", None),
            request("3", Some("m")),
        );
        let mut bytes = framed(&a);
        bytes.extend(framed(&b));
        bytes.extend(framed(&c));
        // Every split point, including inside headers.
        for cut in [1, 3, 5, 9, bytes.len() - 2] {
            let chunks = vec![bytes[..cut].to_vec(), bytes[cut..].to_vec()];
            let got: Vec<_> = all(stream(chunks, 1 << 20))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(got, [a.clone(), b.clone(), c.clone()], "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn a_repeated_node_is_left_out_and_a_changed_one_decoded() {
        let first = request("1", Some("n"));
        let again = request("2", Some("n"));
        let changed = request("3", Some("m"));
        let back = request("4", Some("n"));
        let chunks = [&first, &again, &changed, &back]
            .iter()
            .map(|r| framed(*r))
            .collect();
        let got: Vec<_> = all(stream(chunks, 1 << 20))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got[0], first);
        assert_eq!(got[1].node, None);
        assert_eq!(got[1].version_info, "2");
        assert_eq!(got[2], changed);
        assert_eq!(got[3], back);
    }

    #[tokio::test]
    async fn delta_requests_keep_their_fields_and_skip_a_repeated_node() {
        let first = DeltaDiscoveryRequest {
            node: Some(Node {
                id: "n".into(),
                ..Default::default()
            }),
            type_url: "t".into(),
            resource_names_subscribe: vec!["a".into()],
            initial_resource_versions: [("a".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        let again = DeltaDiscoveryRequest {
            response_nonce: "1".into(),
            ..first.clone()
        };
        let chunks = vec![Bytes::from(framed(&first)), Bytes::from(framed(&again))];
        let mut s: RequestStream<DeltaDiscoveryRequest> =
            RequestStream::new(tonic::body::Body::new(Chunks(Mutex::new(chunks))), 1 << 20);
        assert_eq!(*s.next().await.unwrap().unwrap(), first);
        let got = Arc::unwrap_or_clone(s.next().await.unwrap().unwrap());
        assert_eq!(got.node, None);
        assert_eq!(
            DeltaDiscoveryRequest {
                node: first.node.clone(),
                ..got
            },
            again
        );
    }

    #[tokio::test]
    async fn no_buffer_is_kept_between_messages() {
        let big = DiscoveryRequest {
            resource_names: (0..2000).map(|i| format!("cluster-{i}")).collect(),
            ..Default::default()
        };
        let mut s = stream(vec![framed(&big), framed(&big)[..3].to_vec()], 1 << 20);
        assert_eq!(*s.next().await.unwrap().unwrap(), big);
        assert!(s.pending.capacity() < 1024);
        // A truncated message at the end is an error, not a hang.
        let status = s.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(s.next().await.is_none() || s.ended);
    }

    #[tokio::test]
    async fn a_spare_request_is_decoded_into_in_place() {
        let first = DiscoveryRequest {
            resource_names: vec!["cluster-a".into(), "cluster-b".into(), "c".into()],
            ..request("1", Some("n"))
        };
        let second = DiscoveryRequest {
            resource_names: vec!["cluster-b".into(), "d".into()],
            response_nonce: "7".into(),
            ..request("2", None)
        };
        let third = request("3", None);
        let chunks = [&first, &second, &third].map(framed).to_vec();
        let mut s = stream(chunks, 1 << 20);
        let got = s.next().await.unwrap().unwrap();
        assert_eq!(*got, first);
        let (at, name_at) = (Arc::as_ptr(&got), got.resource_names[0].as_ptr());
        s.spares().put(got);
        let got = s.next().await.unwrap().unwrap();
        // Every field is the new request's, nothing left of the old one...
        assert_eq!(*got, second);
        // ...written over the spare's allocations.
        assert_eq!(Arc::as_ptr(&got), at);
        assert_eq!(got.resource_names[0].as_ptr(), name_at);
        // A request still shared elsewhere is not reused.
        let kept = Arc::clone(&got);
        s.spares().put(got);
        let got = s.next().await.unwrap().unwrap();
        assert_eq!(*got, third);
        assert_ne!(Arc::as_ptr(&got), Arc::as_ptr(&kept));
        assert_eq!(*kept, second);
    }

    #[tokio::test]
    async fn a_request_is_decoded_into_a_spare_of_its_own_type() {
        let typed = |t: &str| DiscoveryRequest {
            type_url: t.into(),
            ..request("1", None)
        };
        let chunks = ["a", "b", "b"].map(|t| framed(&typed(t))).to_vec();
        let mut s = stream(chunks, 1 << 20);
        let a = s.next().await.unwrap().unwrap();
        let b = s.next().await.unwrap().unwrap();
        let (a_at, b_at) = (Arc::as_ptr(&a), Arc::as_ptr(&b));
        // "a" is the newer spare, but the next request is of type "b".
        s.spares().put(b);
        s.spares().put(a);
        let got = s.next().await.unwrap().unwrap();
        assert_eq!(*got, typed("b"));
        assert_eq!(Arc::as_ptr(&got), b_at);
        assert_ne!(Arc::as_ptr(&got), a_at);
    }

    #[test]
    fn peeking_a_field_skips_the_others_and_gives_up_on_garbage() {
        let message = DiscoveryRequest {
            version_info: "v".into(),
            resource_names: vec!["x".into()],
            type_url: "t".into(),
            error_detail: Some(Default::default()),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(peek_field(&message, 4), Some(&b"t"[..]));
        assert_eq!(peek_field(&message, 5), None);
        assert_eq!(peek_field(&message[..message.len() - 1], 9), None);
        assert_eq!(peek_field(&[0x22, 0x05, b't'], 4), None);
    }

    #[tokio::test]
    async fn whole_messages_are_decoded_where_they_arrived() {
        let (a, b) = (request("1", Some("n")), request("2", None));
        let mut both = framed(&a);
        both.extend(framed(&b));
        let mut s = stream(vec![both], 1 << 20);
        assert_eq!(*s.next().await.unwrap().unwrap(), a);
        assert!(s.pending.capacity() == 0 && !s.current.is_empty());
        assert_eq!(*s.next().await.unwrap().unwrap(), b);
        // Nothing of the frame is held once it is read.
        assert!(s.pending.capacity() == 0 && s.current.is_empty());
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn a_message_gathered_across_frames_lets_the_frames_go() {
        let (a, b) = (request("1", Some("n")), request("2", None));
        let mut bytes = framed(&a);
        let cut = bytes.len() + 4;
        bytes.extend(framed(&b));
        let last = Bytes::from(bytes[cut..].to_vec());
        let held = last.clone();
        let chunks = vec![Bytes::from(bytes[..cut].to_vec()), last];
        let mut s: RequestStream<DiscoveryRequest> =
            RequestStream::new(tonic::body::Body::new(Chunks(Mutex::new(chunks))), 1 << 20);
        assert_eq!(*s.next().await.unwrap().unwrap(), a);
        assert_eq!(*s.next().await.unwrap().unwrap(), b);
        // The connection's buffer is free to be reused.
        assert!(held.is_unique());
    }

    #[tokio::test]
    async fn oversized_compressed_and_garbage_requests_fail_clearly() {
        let mut bytes = framed(&request("1", None));
        let status = all(stream(vec![bytes.clone()], 4)).await.pop().unwrap();
        assert_eq!(status.unwrap_err().code(), tonic::Code::OutOfRange);
        bytes[0] = 1;
        let status = all(stream(vec![bytes], 1 << 20)).await.pop().unwrap();
        assert_eq!(status.unwrap_err().code(), tonic::Code::Unimplemented);
        let garbage = vec![0, 0, 0, 0, 3, 0x12, 0xff, 0xff];
        let status = all(stream(vec![garbage], 1 << 20)).await.pop().unwrap();
        assert_eq!(status.unwrap_err().code(), tonic::Code::Internal);
        // A resource name (field 3) that is not UTF-8.
        let garbage = vec![0, 0, 0, 0, 3, 0x1a, 0x01, 0xff];
        let status = all(stream(vec![garbage], 1 << 20)).await.pop().unwrap();
        assert!(status.unwrap_err().message().contains("UTF-8"));
    }

    /// Names equal to the spare's are kept as they are; any other is
    /// checked, also when it replaces one of the spare's.
    #[tokio::test]
    async fn names_decoded_into_a_spare_are_checked_unless_unchanged() {
        let first = framed(&request("1", None)); // names "a", "b"
        let mut second = framed(&DiscoveryRequest {
            resource_names: vec!["a".into(), "x".into()],
            ..request("2", None)
        });
        // "x" becomes a byte that is not UTF-8.
        let at = second.iter().rposition(|b| *b == b'x').unwrap();
        second[at] = 0xff;
        let mut s = stream(vec![first, second], 1 << 20);
        let got = s.next().await.unwrap().unwrap();
        s.spares().put(got);
        let status = s.next().await.unwrap().unwrap_err();
        assert!(status.message().contains("UTF-8"), "{status:?}");

        let again = [request("1", None), request("2", None)].map(|r| framed(&r));
        let mut s = stream(again.to_vec(), 1 << 20);
        let got = s.next().await.unwrap().unwrap();
        let a_at = got.resource_names[0].as_ptr();
        s.spares().put(got);
        let got = s.next().await.unwrap().unwrap();
        assert_eq!(got.resource_names, ["a", "b"]);
        assert_eq!(got.resource_names[0].as_ptr(), a_at);
    }
}
