//! The requests of one xDS stream, decoded from the HTTP/2 request body.
//!
//! This replaces tonic's `Streaming` for the streaming RPCs for two reasons
//! that matter with thousands of long-lived streams:
//!
//! - Memory: `Streaming` keeps an 8 KiB buffer per stream, grown to the
//!   largest request seen (an Envoy with a thousand EDS names sends 30 KiB)
//!   and never shrunk. Here a buffer exists only while a message is
//!   incomplete; between messages a stream holds no buffer at all.
//! - CPU: Envoy repeats its node (often kilobytes: metadata, extensions) in
//!   every request. A node whose bytes equal the previous one's is not
//!   decoded again; it is left out, and the stream fills in the node it
//!   already has (which it does anyway for clients that send the node only
//!   once).

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::Stream;
use http_body::Body;
use prost::encoding::{decode_key, decode_varint, DecodeContext, WireType};
use prost::Message;
use tonic::Status;

use super::wire::FRAME_HEADER;

/// A request message with a node.
pub(crate) trait NodeRequest: Message + Default + Send + 'static {
    /// The field number of `node`.
    const NODE_FIELD: u32;
    fn node_slot(&mut self) -> &mut Option<Node>;
}

impl NodeRequest for DiscoveryRequest {
    const NODE_FIELD: u32 = 2;
    fn node_slot(&mut self) -> &mut Option<Node> {
        &mut self.node
    }
}

impl NodeRequest for DeltaDiscoveryRequest {
    const NODE_FIELD: u32 = 1;
    fn node_slot(&mut self) -> &mut Option<Node> {
        &mut self.node
    }
}

/// The decoded requests of a stream; ends when the client half-closes.
pub(crate) struct RequestStream<R> {
    body: tonic::body::Body,
    /// Bytes of an incomplete message; empty, without capacity, otherwise.
    pending: BytesMut,
    limit: usize,
    /// The encoded node of the last request that carried one.
    last_node: Option<Bytes>,
    ended: bool,
    _request: PhantomData<fn() -> R>,
}

impl<R: NodeRequest> RequestStream<R> {
    /// Requests from `body`, each at most `limit` bytes.
    pub(crate) fn new(body: tonic::body::Body, limit: usize) -> Self {
        RequestStream {
            body,
            pending: BytesMut::new(),
            limit,
            last_node: None,
            ended: false,
            _request: PhantomData,
        }
    }

    /// Takes the next whole message out of the pending bytes, if there is
    /// one.
    fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.pending.len() < FRAME_HEADER {
            return Ok(None);
        }
        if self.pending[0] != 0 {
            return Err(Status::unimplemented(
                "compressed requests are not supported: no grpc-encoding is accepted",
            ));
        }
        let mut len = [0; 4];
        len.copy_from_slice(&self.pending[1..FRAME_HEADER]);
        let len = u32::from_be_bytes(len) as usize;
        if len > self.limit {
            return Err(Status::out_of_range(format!(
                "request of {len} bytes exceeds the limit of {} bytes",
                self.limit
            )));
        }
        let whole = FRAME_HEADER + len;
        if self.pending.len() < whole {
            // Grow once, to the size the header announced.
            self.pending.reserve(whole - self.pending.len());
            return Ok(None);
        }
        self.pending.advance(FRAME_HEADER);
        let message = self.pending.split_to(len).freeze();
        if self.pending.is_empty() {
            // Let the message's buffer go with the message.
            self.pending = BytesMut::new();
        } else if self.pending.capacity() > 4 * self.pending.len().max(1024) {
            // The start of the next message must not pin a large buffer.
            self.pending = BytesMut::from(&self.pending[..]);
        }
        Ok(Some(message))
    }

    /// Decodes a request, leaving out a node equal to the last one.
    fn decode(&mut self, mut buf: Bytes) -> Result<R, Status> {
        let invalid = |e: prost::DecodeError| Status::internal(format!("invalid request: {e}"));
        let mut request = R::default();
        let mut nodes = 0;
        while buf.has_remaining() {
            let (tag, wire_type) = decode_key(&mut buf).map_err(invalid)?;
            if tag != R::NODE_FIELD || wire_type != WireType::LengthDelimited {
                request
                    .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                    .map_err(invalid)?;
                continue;
            }
            let len = decode_varint(&mut buf).map_err(invalid)?;
            let len = usize::try_from(len)
                .ok()
                .filter(|len| *len <= buf.remaining())
                .ok_or_else(|| Status::internal("invalid request: node overruns the message"))?;
            let raw = buf.split_to(len);
            nodes += 1;
            if nodes == 1 && self.last_node.as_ref() == Some(&raw) {
                continue;
            }
            // A repeated node field merges into the first, as protobuf says.
            let slot = request.node_slot();
            let node = slot.get_or_insert_with(Node::default);
            node.merge(raw.clone()).map_err(invalid)?;
            self.last_node = (nodes == 1).then_some(raw);
        }
        if nodes > 1 {
            self.last_node = None;
        }
        Ok(request)
    }
}

impl<R: NodeRequest> Stream for RequestStream<R> {
    type Item = Result<R, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match this.next_message() {
                Ok(Some(message)) => return Poll::Ready(Some(this.decode(message))),
                Ok(None) => {}
                Err(status) => {
                    this.ended = true;
                    this.pending = BytesMut::new();
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
                        this.pending.extend_from_slice(&data);
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
        assert_eq!(s.next().await.unwrap().unwrap(), first);
        let got = s.next().await.unwrap().unwrap();
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
        assert_eq!(s.next().await.unwrap().unwrap(), big);
        assert!(s.pending.capacity() < 1024);
        // A truncated message at the end is an error, not a hang.
        let status = s.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(s.next().await.is_none() || s.ended);
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
    }
}
