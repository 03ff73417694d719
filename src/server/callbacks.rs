//! Hooks into the life of every stream and fetch, for logging, metrics,
//! authorization and NACK handling.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tonic::Status;

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
    fn on_stream_response(
        &self,
        stream: StreamId,
        request: &DiscoveryRequest,
        response: &DiscoveryResponse,
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
    fn on_stream_delta_response(
        &self,
        stream: StreamId,
        request: &DeltaDiscoveryRequest,
        response: &DeltaDiscoveryResponse,
    ) {
        let _ = (stream, request, response);
    }

    /// A unary or REST fetch arrived. An error fails it with that status.
    fn on_fetch_request(&self, request: &DiscoveryRequest) -> Result<(), Status> {
        let _ = request;
        Ok(())
    }

    /// A fetch is answered.
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
        response: &DiscoveryResponse,
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
        response: &DeltaDiscoveryResponse,
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
