//! Caches that answer the watches of xDS streams: the per-node
//! [`SnapshotCache`] and the [`Cache`] trait any other cache implements to
//! plug into the same server.

mod consistency;
mod delta_response;
mod encoded;
mod encoded_list;
mod heartbeat;
mod linear;
mod mux_cache;
mod node_hash;
mod snapshot;
mod snapshot_cache;
mod sotw_response;
mod status;
mod subscription;
mod version_hash;
mod watch;

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

pub use consistency::{ConsistencyError, Inconsistency};
pub use encoded::EncodedResource;
pub use encoded_list::EncodedList;
pub use heartbeat::HeartbeatTask;
pub use linear::{LinearCache, LinearCacheError, LinearResource};
pub use mux_cache::{MuxCache, MuxRequest};
pub use node_hash::{ClusterHash, IdHash, NodeHash};
pub use snapshot::{Snapshot, SnapshotBuilder, SnapshotError, TypeResources};
pub use snapshot_cache::SnapshotCache;
pub use status::StatusInfo;
pub use subscription::{ReturnedResources, Subscription, WILDCARD};
pub use watch::{
    CancelWatch, DeltaResponse, DeltaWatchRequest, ResponseQueue, ResponseSink, SotwResponse,
    WatchHandle, WatchRequest,
};

/// Errors a cache reports when opening a watch; the stream ends with them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The cache does not serve this type URL.
    #[error("type {0:?} is not served by this cache")]
    UnsupportedType(String),
    /// The request cannot be routed to a cache.
    #[error("no cache for this request: {0}")]
    NoRoute(String),
}

impl From<CacheError> for tonic::Status {
    fn from(error: CacheError) -> Self {
        match error {
            CacheError::UnsupportedType(_) => tonic::Status::invalid_argument(error.to_string()),
            CacheError::NoRoute(_) => tonic::Status::not_found(error.to_string()),
        }
    }
}

/// Why a one-off fetch returned no resources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No snapshot is set for the node key.
    #[error("no snapshot for node {0:?}")]
    NoSnapshot(String),
    /// The client already has the current version.
    #[error("version is up to date")]
    UpToDate,
    /// The type URL is not one the cache holds.
    #[error("type {0:?} is not served by this cache")]
    UnknownType(String),
    /// The request cannot be routed to a cache.
    #[error("no cache for this request: {0}")]
    NoRoute(String),
}

/// Resources of one type as a cache holds them now, looked up by name for
/// reporting (see [`Cache::current_resources`]).
#[derive(Debug, Clone, Default)]
pub struct CurrentResources {
    /// The type's version now: what a state-of-the-world response would
    /// carry as `version_info`.
    pub version: Arc<str>,
    /// The named resources that exist, each once; names not held are left out.
    pub resources: Vec<EncodedResource>,
}

/// A source of configuration the xDS server can serve from.
///
/// [`SnapshotCache`] is one; implement it to plug in another.
pub trait Cache: Send + Sync + 'static {
    /// Opens a watch: the cache answers it through `sink` at most once, now
    /// or when its data changes, handing the watch itself back in the
    /// response ([`SotwResponse::watch`]). Dropping the returned handle
    /// cancels it. Must not block.
    fn create_watch(
        &self,
        request: WatchRequest,
        sink: ResponseSink<SotwResponse>,
    ) -> Result<WatchHandle, CacheError>;

    /// Opens an incremental (delta) watch, answered like
    /// [`create_watch`](Cache::create_watch)'s.
    fn create_delta_watch(
        &self,
        request: DeltaWatchRequest,
        sink: ResponseSink<DeltaResponse>,
    ) -> Result<WatchHandle, CacheError>;

    /// Answers a one-off request (REST or unary `Fetch*`).
    fn fetch(&self, request: &DiscoveryRequest) -> Result<SotwResponse, FetchError>;

    /// The resources of `type_url` named `names`, as the cache would serve
    /// them to `node` now; `None` when it holds nothing for the node or
    /// type. Used for reporting only (the CSDS service shows the bodies of
    /// what clients were sent), never to answer a stream.
    ///
    /// The default answers through [`fetch`](Cache::fetch); override it
    /// when a cheaper lookup exists or `fetch` has side effects.
    fn current_resources(
        &self,
        node: &Node,
        type_url: &str,
        names: &[&str],
    ) -> Option<CurrentResources> {
        if names.is_empty() {
            // An empty list would be read as a wildcard: look up nothing.
            return None;
        }
        let response = self.fetch(&lookup_request(node, type_url, names)).ok()?;
        Some(CurrentResources {
            version: response.version,
            resources: response.resources.to_vec(),
        })
    }
}

/// The fetch request [`Cache::current_resources`] stands for: `names` of
/// `type_url`, for `node`.
pub(crate) fn lookup_request(node: &Node, type_url: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(node.clone()),
        type_url: type_url.to_string(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

impl<C: Cache + ?Sized> Cache for std::sync::Arc<C> {
    fn create_watch(
        &self,
        request: WatchRequest,
        sink: ResponseSink<SotwResponse>,
    ) -> Result<WatchHandle, CacheError> {
        (**self).create_watch(request, sink)
    }

    fn create_delta_watch(
        &self,
        request: DeltaWatchRequest,
        sink: ResponseSink<DeltaResponse>,
    ) -> Result<WatchHandle, CacheError> {
        (**self).create_delta_watch(request, sink)
    }

    fn fetch(&self, request: &DiscoveryRequest) -> Result<SotwResponse, FetchError> {
        (**self).fetch(request)
    }

    fn current_resources(
        &self,
        node: &Node,
        type_url: &str,
        names: &[&str],
    ) -> Option<CurrentResources> {
        (**self).current_resources(node, type_url, names)
    }
}
