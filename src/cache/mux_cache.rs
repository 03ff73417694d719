//! `MuxCache`: routes each request to one of several caches.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

use super::{
    Cache, CacheError, CurrentResources, DeltaResponse, DeltaWatchRequest, FetchError,
    ResponseSink, SotwResponse, WatchHandle, WatchRequest,
};

/// A request as a [`MuxCache`] classifier sees it.
#[derive(Debug, Clone, Copy)]
pub enum MuxRequest<'a> {
    /// A state-of-the-world watch.
    Sotw(&'a DiscoveryRequest),
    /// An incremental (delta) watch.
    Delta(&'a DeltaDiscoveryRequest),
    /// A one-off fetch.
    Fetch(&'a DiscoveryRequest),
}

impl MuxRequest<'_> {
    /// The type URL asked for.
    pub fn type_url(&self) -> &str {
        match self {
            MuxRequest::Sotw(r) | MuxRequest::Fetch(r) => &r.type_url,
            MuxRequest::Delta(r) => &r.type_url,
        }
    }

    /// The client's node, if known.
    pub fn node(&self) -> Option<&Node> {
        match self {
            MuxRequest::Sotw(r) | MuxRequest::Fetch(r) => r.node.as_ref(),
            MuxRequest::Delta(r) => r.node.as_ref(),
        }
    }
}

type Classifier = dyn Fn(&MuxRequest<'_>) -> String + Send + Sync;

/// Serves each request from the cache its classifier picks: say endpoints
/// from a [`LinearCache`](super::LinearCache) shared by the fleet and
/// everything else from a per-node [`SnapshotCache`](super::SnapshotCache).
///
/// A request classified under a key with no cache fails with
/// [`CacheError::NoRoute`] (the stream ends with `NOT_FOUND`), or for a
/// fetch [`FetchError::NoRoute`].
///
/// Cloning gives another handle to the same caches.
///
/// ```
/// use xds_control_plane::cache::{IdHash, LinearCache, MuxCache, SnapshotCache};
/// use xds_control_plane::resource::type_url;
///
/// let eds = LinearCache::new(type_url::ENDPOINT);
/// let snapshots = SnapshotCache::new(true, IdHash);
/// let cache = MuxCache::new(|request| {
///     let key = if request.type_url() == type_url::ENDPOINT { "eds" } else { "snapshot" };
///     key.to_string()
/// })
/// .with_cache("eds", eds.clone())
/// .with_cache("snapshot", snapshots.clone());
/// # let _ = cache;
/// ```
#[derive(Clone)]
pub struct MuxCache {
    classifier: Arc<Classifier>,
    caches: Arc<HashMap<String, Arc<dyn Cache>>>,
}

impl MuxCache {
    /// A mux with no caches yet, routing by `classifier`.
    pub fn new(classifier: impl Fn(&MuxRequest<'_>) -> String + Send + Sync + 'static) -> Self {
        MuxCache {
            classifier: Arc::new(classifier),
            caches: Arc::new(HashMap::new()),
        }
    }

    /// A mux routing by type URL: register each cache under the type URL it
    /// serves.
    pub fn by_type_url() -> Self {
        Self::new(|request| request.type_url().to_string())
    }

    /// Serves requests classified `key` from `cache` (replacing any cache
    /// registered under `key`).
    pub fn with_cache(mut self, key: impl Into<String>, cache: impl Cache) -> Self {
        Arc::make_mut(&mut self.caches).insert(key.into(), Arc::new(cache));
        self
    }

    /// The keys caches are registered under, sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.caches.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    /// The cache for a request, or why there is none.
    fn route(&self, request: &MuxRequest<'_>) -> Result<&Arc<dyn Cache>, String> {
        let key = (self.classifier)(request);
        self.caches.get(&key).ok_or_else(|| {
            format!(
                "no cache is registered under key {key:?}, which the classifier chose for type {:?}",
                request.type_url()
            )
        })
    }
}

impl Cache for MuxCache {
    fn create_watch(
        &self,
        request: WatchRequest,
        sink: ResponseSink<SotwResponse>,
    ) -> Result<WatchHandle, CacheError> {
        let cache = self
            .route(&MuxRequest::Sotw(&request.request))
            .map_err(CacheError::NoRoute)?;
        cache.create_watch(request, sink)
    }

    fn create_delta_watch(
        &self,
        request: DeltaWatchRequest,
        sink: ResponseSink<DeltaResponse>,
    ) -> Result<WatchHandle, CacheError> {
        let cache = self
            .route(&MuxRequest::Delta(&request.request))
            .map_err(CacheError::NoRoute)?;
        cache.create_delta_watch(request, sink)
    }

    fn fetch(&self, request: &DiscoveryRequest) -> Result<SotwResponse, FetchError> {
        let cache = self
            .route(&MuxRequest::Fetch(request))
            .map_err(FetchError::NoRoute)?;
        cache.fetch(request)
    }

    /// Routed like a fetch of the same names, so that the chosen cache's
    /// own lookup runs.
    fn current_resources(
        &self,
        node: &Node,
        type_url: &str,
        names: &[&str],
    ) -> Option<CurrentResources> {
        let request = super::lookup_request(node, type_url, names);
        let cache = self.route(&MuxRequest::Fetch(&request)).ok()?;
        cache.current_resources(node, type_url, names)
    }
}

impl fmt::Debug for MuxCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxCache")
            .field("keys", &self.keys())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{IdHash, LinearCache, ResponseQueue, Snapshot, SnapshotCache, Subscription};
    use crate::resource::type_url::{CLUSTER, ENDPOINT, LISTENER};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use std::collections::HashMap;

    fn request(type_url: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            node: Some(Node {
                id: "n1".into(),
                ..Default::default()
            }),
            type_url: type_url.into(),
            ..Default::default()
        }
    }

    fn watch(type_url: &str) -> WatchRequest {
        WatchRequest {
            node: None,
            request: Arc::new(request(type_url)),
            rejected_version: None,
            subscription: Arc::new(Subscription::sotw(&[], true)),
        }
    }

    fn caches() -> (LinearCache, SnapshotCache) {
        let eds = LinearCache::new(ENDPOINT);
        let cla = ClusterLoadAssignment {
            cluster_name: "e".into(),
            ..Default::default()
        };
        eds.update_resource("e", &cla).unwrap();
        let snapshots = SnapshotCache::new(false, IdHash);
        let snapshot = Snapshot::builder("s1")
            .clusters([Cluster {
                name: "c".into(),
                ..Default::default()
            }])
            .build()
            .unwrap();
        snapshots.set_snapshot("n1", snapshot);
        (eds, snapshots)
    }

    #[test]
    fn routes_each_request_by_its_classification() {
        let (eds, snapshots) = caches();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let mux = MuxCache::new(move |r| {
            let kind = match r {
                MuxRequest::Sotw(_) => "sotw",
                MuxRequest::Delta(_) => "delta",
                MuxRequest::Fetch(_) => "fetch",
            };
            log.lock().push((kind, r.node().map(|n| n.id.clone())));
            if r.type_url() == ENDPOINT {
                "eds"
            } else {
                "rest"
            }
            .to_string()
        })
        .with_cache("eds", eds)
        .with_cache("rest", snapshots);
        assert_eq!(mux.keys(), ["eds", "rest"]);

        let queue = ResponseQueue::new();
        let _a = mux.create_watch(watch(ENDPOINT), queue.sink(1)).unwrap();
        let _b = mux.create_watch(watch(CLUSTER), queue.sink(2)).unwrap();
        let versions: Vec<_> = queue
            .take()
            .into_iter()
            .map(|(id, r)| (id, r.version.to_string()))
            .collect();
        assert_eq!(versions, [(1, "1".to_string()), (2, "s1".to_string())]);

        let delta = DeltaWatchRequest {
            node: None,
            request: Arc::new(DeltaDiscoveryRequest {
                type_url: ENDPOINT.into(),
                ..Default::default()
            }),
            subscription: Arc::new(Subscription::delta(&[], &[], &HashMap::new(), true)),
            first: true,
        };
        let delta_queue = ResponseQueue::new();
        let _c = mux.create_delta_watch(delta, delta_queue.sink(3)).unwrap();
        assert_eq!(delta_queue.take()[0].1.resources[0].name(), "e");
        assert_eq!(mux.fetch(&request(CLUSTER)).unwrap().resources.len(), 1);
        let kinds: Vec<_> = seen.lock().iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, ["sotw", "sotw", "delta", "fetch"]);
        assert_eq!(seen.lock()[0].1.as_deref(), Some("n1"));
    }

    #[test]
    fn an_unknown_key_names_the_key_and_the_type() {
        let (eds, snapshots) = caches();
        let mux = MuxCache::by_type_url()
            .with_cache(ENDPOINT, eds)
            .with_cache(CLUSTER, snapshots);
        let queue = ResponseQueue::new();
        let err = mux
            .create_watch(watch(LISTENER), queue.sink(1))
            .unwrap_err();
        let CacheError::NoRoute(message) = &err else {
            panic!("expected NoRoute, got {err:?}");
        };
        assert!(message.contains(LISTENER), "{message}");
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::NotFound);
        let err = mux.fetch(&request(LISTENER)).unwrap_err();
        assert!(matches!(&err, FetchError::NoRoute(m) if m.contains(LISTENER)));
        let nowhere = MuxCache::new(|_| "nowhere".to_string());
        let err = nowhere
            .create_watch(watch(CLUSTER), queue.sink(2))
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"nowhere\"") && text.contains(CLUSTER),
            "{text}"
        );
        // Routed, the sub-cache's own rules apply.
        assert!(mux.fetch(&request(ENDPOINT)).is_ok());
        assert!(format!("{mux:?}").contains("MuxCache"));
    }
}
