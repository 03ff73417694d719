//! The xDS gRPC server: ADS and every per-type discovery service, served
//! from any [`Cache`].
//!
//! ```no_run
//! use xds_control_plane::cache::{IdHash, Snapshot, SnapshotCache};
//! use xds_control_plane::server::Server;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = SnapshotCache::new(false, IdHash);
//! let server = Server::new(cache.clone(), ());
//! cache.set_snapshot("node1", Snapshot::builder("v1").build()?);
//! tonic::transport::Server::builder()
//!     .add_service(server.ads_service())
//!     .add_service(server.cds_service())
//!     .add_service(server.eds_service())
//!     .serve("127.0.0.1:18000".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Each `*_service()` method returns a tonic-compatible service
//! ([`AdsService`], [`CdsService`], ...) for `add_service`; a request larger
//! than [`max_decoding_message_size`](CdsService::max_decoding_message_size)
//! (4 MiB by default) ends its stream with `OUT_OF_RANGE`. Compression is
//! not offered.
//!
//! What each client was sent and acknowledged is reported by
//! [`Server::client_status`], and over gRPC by the Client Status Discovery
//! Service (CSDS, [`Server::csds_service`]) for tools that ask the control
//! plane which configuration each proxy runs; see
//! [`Server::csds_response`] for what it fills in.
//!
//! Stream responses are not built as `DiscoveryResponse` structs: each
//! resource is encoded once, as it goes on the wire, and shared by every
//! stream that sends it; a state-of-the-world response is a small head of
//! its own followed by the answer's resources, encoded once for every
//! stream that gets the same answer and written without a copy. So [`Callbacks::on_stream_response`] gets a
//! [`SentResponse`] view rather than the message (its
//! [`to_message`](SentResponse::to_message) builds it when needed).
//!
//! With the `rest` feature, `Server::rest_gateway` also serves Envoy's
//! REST-JSON polling (`POST /v3/discovery:clusters`, ...): see the `rest`
//! module.

mod callbacks;
mod client_status;
mod csds;
mod delta;
mod fetch;
mod frames;
mod node_matcher;
mod request_stream;
#[cfg(feature = "rest")]
pub mod rest;
mod services;
mod shutdown;
mod sotw;
mod stream;
mod stream_body;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tonic::Status;

pub use callbacks::{Callbacks, Nack, SentDeltaResponse, SentResponse, StreamId};
pub use client_status::{RejectedVersion, StreamStatus, TypeStatus};
pub use csds::{CsdsResponseStream, CsdsService};
#[cfg(feature = "rest")]
pub use rest::RestGateway;
pub use services::{
    AdsService, CdsService, EcdsService, EdsService, LdsService, LedsService, RdsService,
    ResponseFuture, RtdsService, SdsService, SrdsService, VhdsService,
    DEFAULT_MAX_DECODING_MESSAGE_SIZE,
};

/// Not part of the API: the per-stream message encoders, public only for
/// this crate's benchmarks.
#[doc(hidden)]
pub mod __wire {
    pub use super::wire::{delta_message, sotw_message};
}

use crate::cache::Cache;

/// Whether a first request naming no resources subscribes to everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LegacyWildcard {
    /// Yes, for every type (what Envoy expects).
    #[default]
    Allowed,
    /// No: an empty request subscribes to nothing; clients must send `*`
    /// (what gRPC xDS clients and VHDS expect).
    Disabled,
    /// No for these type URLs, yes for the others.
    DisabledFor(Vec<String>),
}

impl LegacyWildcard {
    /// Whether legacy wildcard applies to a type URL.
    pub fn allowed_for(&self, type_url: &str) -> bool {
        match self {
            LegacyWildcard::Allowed => true,
            LegacyWildcard::Disabled => false,
            LegacyWildcard::DisabledFor(types) => !types.iter().any(|t| t == type_url),
        }
    }
}

/// Tuning of a [`Server`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Legacy wildcard rule per type.
    pub legacy_wildcard: LegacyWildcard,
    /// Most distinct type URLs one ADS stream may watch; more ends the
    /// stream with `RESOURCE_EXHAUSTED`.
    pub max_types_per_stream: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            legacy_wildcard: LegacyWildcard::Allowed,
            max_types_per_stream: 64,
        }
    }
}

/// The xDS server. Cheap to clone; every clone serves the same cache and
/// numbers streams from the same counter.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    cache: Arc<dyn Cache>,
    callbacks: Arc<dyn Callbacks>,
    options: ServerOptions,
    next_stream_id: AtomicU64,
    shutdown: shutdown::ShutdownSignal,
    open_streams: stream_body::OpenStreams,
}

impl Server {
    /// A server answering from `cache`, calling `callbacks` (`()` for none).
    pub fn new(cache: impl Cache, callbacks: impl Callbacks) -> Self {
        Self::with_options(cache, callbacks, ServerOptions::default())
    }

    /// A server with explicit options.
    pub fn with_options(
        cache: impl Cache,
        callbacks: impl Callbacks,
        options: ServerOptions,
    ) -> Self {
        Server {
            shared: Arc::new(Shared {
                cache: Arc::new(cache),
                callbacks: Arc::new(callbacks),
                options,
                next_stream_id: AtomicU64::new(1),
                shutdown: Default::default(),
                open_streams: Default::default(),
            }),
        }
    }

    /// What every open stream has been sent, acknowledged and rejected, per
    /// type, with its node: which configuration each client runs. Asked
    /// from a stream's own callback, that stream is left out.
    pub fn client_status(&self) -> Vec<StreamStatus> {
        self.shared.open_streams.status_all()
    }

    /// Ends every open stream with `UNAVAILABLE` and refuses new ones.
    pub fn shutdown(&self) {
        self.shared.shutdown.trigger();
        // Streams whose clients stopped reading are not polled: close them
        // here, so their watches and callbacks do not wait for the client.
        self.shared.open_streams.close_all();
    }

    /// Opens a state-of-the-world stream; `service_type` is `None` for ADS.
    /// Returns where its encoded messages come out.
    fn open_sotw(
        &self,
        requests: request_stream::RequestStream<DiscoveryRequest>,
        service_type: Option<&'static str>,
    ) -> Result<tonic::body::Body, Status> {
        let callbacks = &self.shared.callbacks;
        let ctx = self.open_stream(
            service_type,
            |id, t| callbacks.on_stream_open(id, t),
            |id| callbacks.on_stream_closed(id, None),
        )?;
        let (id, service) = (ctx.id, service_type);
        Ok(self.stream_body(sotw::SotwStream::new(ctx), requests, id, service))
    }

    /// Opens an incremental (delta) stream; `service_type` is `None` for ADS.
    fn open_delta(
        &self,
        requests: request_stream::RequestStream<DeltaDiscoveryRequest>,
        service_type: Option<&'static str>,
    ) -> Result<tonic::body::Body, Status> {
        let callbacks = &self.shared.callbacks;
        let ctx = self.open_stream(
            service_type,
            |id, t| callbacks.on_delta_stream_open(id, t),
            |id| callbacks.on_delta_stream_closed(id, None),
        )?;
        let (id, service) = (ctx.id, service_type);
        Ok(self.stream_body(delta::DeltaStream::new(ctx), requests, id, service))
    }

    /// Numbers a new stream and runs the open callback; a refused stream is
    /// reported closed.
    fn open_stream(
        &self,
        service_type: Option<&'static str>,
        on_open: impl FnOnce(StreamId, &str) -> Result<(), Status>,
        on_refused: impl FnOnce(StreamId),
    ) -> Result<stream::StreamContext, Status> {
        if self.shared.shutdown.is_triggered() {
            return Err(Status::unavailable("xDS server is shutting down"));
        }
        let id = self.shared.next_stream_id.fetch_add(1, Ordering::Relaxed);
        if let Err(status) = on_open(id, service_type.unwrap_or("")) {
            on_refused(id);
            return Err(status);
        }
        Ok(stream::StreamContext::new(
            id,
            Arc::clone(&self.shared),
            service_type,
        ))
    }

    /// The response body that runs a protocol: observed (its tracing span,
    /// counted as open) until hyper drops it.
    fn stream_body<P>(
        &self,
        protocol: P,
        requests: request_stream::RequestStream<P::Request>,
        id: StreamId,
        service_type: Option<&'static str>,
    ) -> tonic::body::Body
    where
        P: stream::Protocol + Unpin,
    {
        let observer = crate::metrics::observe_stream(id, P::KIND, service_type);
        tonic::body::Body::new(stream_body::StreamBody::new(
            id,
            protocol,
            requests,
            Arc::clone(&self.shared),
            observer,
        ))
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("options", &self.shared.options)
            .field(
                "streams_opened",
                &(self.shared.next_stream_id.load(Ordering::Relaxed) - 1),
            )
            .finish()
    }
}
