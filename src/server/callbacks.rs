//! Hooks into the life of every stream and fetch, for logging, metrics,
//! authorization and NACK handling.

use std::fmt;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tonic::Status;

use super::wire::FRAME_HEADER;
use crate::cache::{DeltaResponse, EncodedResource, SotwResponse};

/// Identifies one stream for the life of a server (counting from 1).
pub type StreamId = u64;

/// A client's rejection (NACK) of a response it was sent.
#[derive(Debug, Clone, Copy)]
pub struct Nack<'a> {
    /// The node that rejected it.
    pub node: Option<&'a Node>,
    /// The type of the rejected response.
    pub type_url: &'a str,
    /// The version the client rejected.
    pub rejected_version: &'a str,
    /// The version the client still runs (state of the world; empty on
    /// delta streams, whose versions are per resource).
    pub current_version: &'a str,
    /// The nonce of the rejected response.
    pub nonce: &'a str,
    /// Why the client rejected it.
    pub error: &'a RpcStatus,
}

/// A state-of-the-world response as it is sent, for
/// [`Callbacks::on_stream_response`].
///
/// The server writes responses straight from each resource's shared
/// encoding, without building a `DiscoveryResponse`; this view exposes what
/// was sent cheaply, and [`to_message`](Self::to_message) builds the full
/// message when a callback really needs it (it copies every resource).
#[derive(Clone, Copy)]
pub struct SentResponse<'a> {
    response: &'a SotwResponse,
    nonce: &'a str,
    encoded_len: usize,
}

impl<'a> SentResponse<'a> {
    pub(crate) fn new(response: &'a SotwResponse, nonce: &'a str, message_len: usize) -> Self {
        SentResponse {
            response,
            nonce,
            encoded_len: message_len - FRAME_HEADER,
        }
    }

    /// `version_info`.
    pub fn version(&self) -> &'a str {
        &self.response.version
    }

    /// `type_url`.
    pub fn type_url(&self) -> &'a str {
        self.response.type_url()
    }

    /// `nonce`.
    pub fn nonce(&self) -> &'a str {
        self.nonce
    }

    /// The resources sent, in order.
    pub fn resources(&self) -> impl ExactSizeIterator<Item = &'a EncodedResource> + 'a {
        self.response.resources.iter()
    }

    /// Names of the resources sent, in order.
    pub fn resource_names(&self) -> impl ExactSizeIterator<Item = &'a str> + 'a {
        self.resources().map(EncodedResource::name)
    }

    /// How many resources were sent.
    pub fn len(&self) -> usize {
        self.resources().len()
    }

    /// Whether no resource was sent (e.g. a type with none).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size in bytes of the encoded `DiscoveryResponse` (without gRPC's
    /// 5-byte message header).
    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    /// The full message as it went on the wire. Copies every resource.
    pub fn to_message(&self) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: self.version().to_string(),
            resources: self.resources().map(EncodedResource::to_sotw_any).collect(),
            type_url: self.type_url().to_string(),
            nonce: self.nonce.to_string(),
            ..Default::default()
        }
    }
}

impl fmt::Debug for SentResponse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentResponse")
            .field("version", &self.version())
            .field("type_url", &self.type_url())
            .field("nonce", &self.nonce)
            .field("resources", &self.len())
            .field("encoded_len", &self.encoded_len)
            .finish()
    }
}

/// An incremental (delta) response as it is sent, for
/// [`Callbacks::on_stream_delta_response`]: like [`SentResponse`], a cheap
/// view, with [`to_message`](Self::to_message) to build the full message.
#[derive(Clone, Copy)]
pub struct SentDeltaResponse<'a> {
    response: &'a DeltaResponse,
    nonce: &'a str,
    encoded_len: usize,
}

impl<'a> SentDeltaResponse<'a> {
    pub(crate) fn new(response: &'a DeltaResponse, nonce: &'a str, message_len: usize) -> Self {
        SentDeltaResponse {
            response,
            nonce,
            encoded_len: message_len - FRAME_HEADER,
        }
    }

    /// `system_version_info`.
    pub fn system_version(&self) -> &'a str {
        &self.response.system_version
    }

    /// `type_url`.
    pub fn type_url(&self) -> &'a str {
        self.response.type_url()
    }

    /// `nonce`.
    pub fn nonce(&self) -> &'a str {
        self.nonce
    }

    /// The new or changed resources sent, in order; each carries its own
    /// version ([`EncodedResource::version`]).
    pub fn resources(&self) -> impl ExactSizeIterator<Item = &'a EncodedResource> + 'a {
        self.response.resources.iter()
    }

    /// Names of the resources sent, in order.
    pub fn resource_names(&self) -> impl ExactSizeIterator<Item = &'a str> + 'a {
        self.resources().map(EncodedResource::name)
    }

    /// How many resources were sent.
    pub fn len(&self) -> usize {
        self.resources().len()
    }

    /// Whether no resource was sent (there may still be removals).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `removed_resources`: names the client must forget.
    pub fn removed(&self) -> &'a [String] {
        &self.response.removed[..]
    }

    /// Whether this is a heartbeat: TTL'd resources re-sent without body.
    pub fn is_heartbeat(&self) -> bool {
        self.response.heartbeat
    }

    /// Size in bytes of the encoded `DeltaDiscoveryResponse` (without
    /// gRPC's 5-byte message header).
    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    /// The full message as it went on the wire. Copies every resource.
    pub fn to_message(&self) -> DeltaDiscoveryResponse {
        let heartbeat = self.is_heartbeat();
        DeltaDiscoveryResponse {
            system_version_info: self.system_version().to_string(),
            resources: self
                .resources()
                .map(|r| r.to_delta_resource(heartbeat))
                .collect(),
            type_url: self.type_url().to_string(),
            removed_resources: self.removed().to_vec(),
            nonce: self.nonce.to_string(),
            ..Default::default()
        }
    }
}

impl fmt::Debug for SentDeltaResponse<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentDeltaResponse")
            .field("system_version", &self.system_version())
            .field("type_url", &self.type_url())
            .field("nonce", &self.nonce)
            .field("resources", &self.len())
            .field("removed", &self.removed().len())
            .field("heartbeat", &self.is_heartbeat())
            .field("encoded_len", &self.encoded_len)
            .finish()
    }
}

/// Called by the server, synchronously on the stream's task, at each step of
/// a stream or fetch. Every method has a no-op default; `()` implements the
/// trait with no hooks at all.
///
/// ```
/// use xds_control_plane::server::{Callbacks, Nack, StreamId};
///
/// struct LogNacks;
/// impl Callbacks for LogNacks {
///     fn on_stream_nack(&self, stream: StreamId, nack: &Nack<'_>) {
///         eprintln!("stream {stream} rejected {} {}: {}", nack.type_url, nack.rejected_version, nack.error.message);
///     }
/// }
/// ```
pub trait Callbacks: Send + Sync + 'static {
    /// A stream opened; `type_url` is empty for ADS. An error ends it with
    /// that status (`on_stream_closed` still runs).
    fn on_stream_open(&self, stream: StreamId, type_url: &str) -> Result<(), Status> {
        let _ = (stream, type_url);
        Ok(())
    }

    /// A stream ended, after its watches were cancelled; `node` is the last
    /// node it sent.
    fn on_stream_closed(&self, stream: StreamId, node: Option<&Node>) {
        let _ = (stream, node);
    }

    /// A request arrived (node already filled in from earlier requests),
    /// before the stale-nonce check. An error ends the stream with it.
    fn on_stream_request(
        &self,
        stream: StreamId,
        request: &DiscoveryRequest,
    ) -> Result<(), Status> {
        let _ = (stream, request);
        Ok(())
    }

    /// A response is about to be sent for the watch `request` opened.
    ///
    /// `response` is a view of what is sent (version, nonce, resources,
    /// size); [`SentResponse::to_message`] builds the `DiscoveryResponse`,
    /// at the cost of copying every resource.
    fn on_stream_response(
        &self,
        stream: StreamId,
        request: &DiscoveryRequest,
        response: &SentResponse<'_>,
    ) {
        let _ = (stream, request, response);
    }

    /// A client rejected a response. The server will not send that version
    /// again on this stream; the next snapshot change is sent.
    fn on_stream_nack(&self, stream: StreamId, nack: &Nack<'_>) {
        let _ = (stream, nack);
    }

    /// An incremental (delta) stream opened; `type_url` is empty for delta
    /// ADS. An error ends it with that status.
    fn on_delta_stream_open(&self, stream: StreamId, type_url: &str) -> Result<(), Status> {
        let _ = (stream, type_url);
        Ok(())
    }

    /// An incremental (delta) stream ended, after its watches were cancelled.
    fn on_delta_stream_closed(&self, stream: StreamId, node: Option<&Node>) {
        let _ = (stream, node);
    }

    /// A delta request arrived (node already filled in). An error ends the
    /// stream with it.
    fn on_stream_delta_request(
        &self,
        stream: StreamId,
        request: &DeltaDiscoveryRequest,
    ) -> Result<(), Status> {
        let _ = (stream, request);
        Ok(())
    }

    /// A delta response is about to be sent for the watch `request` opened.
    ///
    /// `response` is a view of what is sent; [`SentDeltaResponse::to_message`]
    /// builds the `DeltaDiscoveryResponse`, copying every resource.
    fn on_stream_delta_response(
        &self,
        stream: StreamId,
        request: &DeltaDiscoveryRequest,
        response: &SentDeltaResponse<'_>,
    ) {
        let _ = (stream, request, response);
    }

    /// A unary or REST fetch arrived. An error fails it with that status
    /// (over REST, the status's HTTP equivalent: `PERMISSION_DENIED` is
    /// 403, ...).
    fn on_fetch_request(&self, request: &DiscoveryRequest) -> Result<(), Status> {
        let _ = request;
        Ok(())
    }

    /// A fetch is answered. Unlike stream responses, a fetch builds its
    /// `DiscoveryResponse` anyway, so it is passed whole.
    fn on_fetch_response(&self, request: &DiscoveryRequest, response: &DiscoveryResponse) {
        let _ = (request, response);
    }
}

/// No hooks.
impl Callbacks for () {}

impl<C: Callbacks + ?Sized> Callbacks for std::sync::Arc<C> {
    fn on_stream_open(&self, stream: StreamId, type_url: &str) -> Result<(), Status> {
        (**self).on_stream_open(stream, type_url)
    }
    fn on_stream_closed(&self, stream: StreamId, node: Option<&Node>) {
        (**self).on_stream_closed(stream, node)
    }
    fn on_stream_request(
        &self,
        stream: StreamId,
        request: &DiscoveryRequest,
    ) -> Result<(), Status> {
        (**self).on_stream_request(stream, request)
    }
    fn on_stream_response(
        &self,
        stream: StreamId,
        request: &DiscoveryRequest,
        response: &SentResponse<'_>,
    ) {
        (**self).on_stream_response(stream, request, response)
    }
    fn on_stream_nack(&self, stream: StreamId, nack: &Nack<'_>) {
        (**self).on_stream_nack(stream, nack)
    }
    fn on_delta_stream_open(&self, stream: StreamId, type_url: &str) -> Result<(), Status> {
        (**self).on_delta_stream_open(stream, type_url)
    }
    fn on_delta_stream_closed(&self, stream: StreamId, node: Option<&Node>) {
        (**self).on_delta_stream_closed(stream, node)
    }
    fn on_stream_delta_request(
        &self,
        stream: StreamId,
        request: &DeltaDiscoveryRequest,
    ) -> Result<(), Status> {
        (**self).on_stream_delta_request(stream, request)
    }
    fn on_stream_delta_response(
        &self,
        stream: StreamId,
        request: &DeltaDiscoveryRequest,
        response: &SentDeltaResponse<'_>,
    ) {
        (**self).on_stream_delta_response(stream, request, response)
    }
    fn on_fetch_request(&self, request: &DiscoveryRequest) -> Result<(), Status> {
        (**self).on_fetch_request(request)
    }
    fn on_fetch_response(&self, request: &DiscoveryRequest, response: &DiscoveryResponse) {
        (**self).on_fetch_response(request, response)
    }
}
