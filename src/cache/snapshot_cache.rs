//! `SnapshotCache`: one snapshot per node key, answering the watches of that
//! node's streams.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use parking_lot::{Mutex, RwLock};

use super::delta_response::{delta_answer, DeltaAnswer};
use super::heartbeat::{delta_heartbeat, sotw_heartbeat, HeartbeatTask};
use super::sotw_response::{sotw_answer, sotw_answer_of, SotwAnswer};
use super::{
    Cache, CacheError, CancelWatch, CurrentResources, DeltaResponse, DeltaWatchRequest, FetchError,
    IdHash, NodeHash, ResponseSink, Snapshot, SotwResponse, StatusInfo, Subscription, WatchHandle,
    WatchRequest,
};
use crate::resource::ResourceType;

/// Holds a [`Snapshot`] per node key and answers the watches of every
/// stream of that node; see the crate docs for the serving rules.
///
/// Cloning gives another handle to the same cache.
///
/// ```
/// use xds_control_plane::cache::{IdHash, Snapshot, SnapshotCache};
///
/// let cache = SnapshotCache::new(false, IdHash);
/// cache.set_snapshot("node1", Snapshot::builder("v1").build().unwrap());
/// assert!(cache.snapshot("node1").is_some());
/// ```
pub struct SnapshotCache<H: NodeHash = IdHash> {
    inner: Arc<Inner<H>>,
}

impl<H: NodeHash> Clone for SnapshotCache<H> {
    fn clone(&self) -> Self {
        SnapshotCache {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<H> {
    ads: bool,
    hash: H,
    // Lock order: `nodes`, then one node's state. A node's lock is held only
    // to evaluate and take watches; answers are delivered after it is released.
    nodes: RwLock<HashMap<String, Arc<NodeEntry<H>>, ahash::RandomState>>,
    evict_idle_nodes: AtomicBool,
}

/// A node's state, with what cancelling one of its watches needs: every
/// watch handle of the node points here, rather than at a closure of its own.
struct NodeEntry<H> {
    key: Box<str>,
    state: Mutex<NodeState>,
    cache: Weak<Inner<H>>,
}

impl<H: NodeHash> CancelWatch for NodeEntry<H> {
    fn cancel_watch(&self, watch_id: u64) {
        let idle = {
            let mut state = self.state.lock();
            // A node's watch ids are unique across SotW and delta.
            if state.watches.remove(&watch_id).is_none() {
                state.delta_watches.remove(&watch_id);
            }
            state.is_idle()
        };
        let Some(inner) = self.cache.upgrade() else {
            return;
        };
        if idle && inner.evict_idle_nodes.load(Ordering::Relaxed) {
            let mut nodes = inner.nodes.write();
            // Check again: a stream may have opened a watch since, or the
            // node may have been cleared and opened anew.
            let current = nodes.get(&*self.key).is_some_and(|entry| {
                std::ptr::eq(Arc::as_ptr(entry), self) && entry.state.lock().is_idle()
            });
            if current {
                nodes.remove(&*self.key);
            }
        }
    }
}

#[derive(Default)]
struct NodeState {
    snapshot: Option<Snapshot>,
    // Keyed by watch id: a fast hash, as every ACK inserts one.
    watches: HashMap<u64, Watch, ahash::RandomState>,
    delta_watches: HashMap<u64, DeltaWatch, ahash::RandomState>,
    node: Option<Arc<Node>>,
    last_watch_request: Option<SystemTime>,
    /// The id of the node's latest watch: numbered per node, so opening a
    /// watch touches nothing shared with other nodes' streams.
    last_watch_id: u64,
}

/// A held watch, with its type as known when it was opened: answering it
/// later reads neither the request's type URL nor anything else of the
/// request but what decides the answer.
struct Held<R, S> {
    kind: Option<ResourceType>,
    request: R,
    sink: ResponseSink<S>,
}

type Watch = Held<WatchRequest, SotwResponse>;
type DeltaWatch = Held<DeltaWatchRequest, DeltaResponse>;

/// A watch request as the cache opens it, state of the world or delta:
/// where its node and type are, where a node keeps it while held, and how
/// it joins its answer.
trait OpenedRequest: Sized {
    type Answer;
    type Response;
    /// The response to this watch; it takes the watch back to its stream.
    fn answered(self, answer: Self::Answer) -> Self::Response;
    /// The stream's node, shared, and the node the request carries itself.
    fn nodes(&self) -> (Option<&Arc<Node>>, Option<&Node>);
    fn type_url(&self) -> &str;
    fn held_in(
        state: &mut NodeState,
    ) -> &mut HashMap<u64, Held<Self, Self::Response>, ahash::RandomState>;
}

impl OpenedRequest for WatchRequest {
    type Answer = SotwAnswer;
    type Response = SotwResponse;
    fn answered(self, answer: SotwAnswer) -> SotwResponse {
        answer.into_response(self)
    }
    fn nodes(&self) -> (Option<&Arc<Node>>, Option<&Node>) {
        (self.node.as_ref(), self.request.node.as_ref())
    }
    fn type_url(&self) -> &str {
        WatchRequest::type_url(self)
    }
    fn held_in(state: &mut NodeState) -> &mut HashMap<u64, Watch, ahash::RandomState> {
        &mut state.watches
    }
}

impl OpenedRequest for DeltaWatchRequest {
    type Answer = DeltaAnswer;
    type Response = DeltaResponse;
    fn answered(self, answer: DeltaAnswer) -> DeltaResponse {
        answer.into_response(self)
    }
    fn nodes(&self) -> (Option<&Arc<Node>>, Option<&Node>) {
        (self.node.as_ref(), self.request.node.as_ref())
    }
    fn type_url(&self) -> &str {
        DeltaWatchRequest::type_url(self)
    }
    fn held_in(state: &mut NodeState) -> &mut HashMap<u64, DeltaWatch, ahash::RandomState> {
        &mut state.delta_watches
    }
}

fn delta_answer_of(
    snapshot: &Snapshot,
    kind: Option<ResourceType>,
    watch: &DeltaWatchRequest,
) -> Option<DeltaAnswer> {
    delta_answer(snapshot.of_type(kind?), watch)
}

impl NodeState {
    /// Nothing to keep: no snapshot and no open watch.
    fn is_idle(&self) -> bool {
        self.snapshot.is_none() && self.watches.is_empty() && self.delta_watches.is_empty()
    }

    /// Notes a watch request; the node is copied only when it changed,
    /// which clients repeating it with every request rarely do.
    /// `shared` is the stream's node as watches share it, `own` a node the
    /// request carries itself (when the stream gave none).
    fn touch(&mut self, shared: Option<&Arc<Node>>, own: Option<&Node>) {
        self.last_watch_request = Some(SystemTime::now());
        let Some(node) = shared.map(|n| &**n).or(own) else {
            return;
        };
        let known = self.node.as_ref().is_some_and(|known| {
            shared.is_some_and(|shared| Arc::ptr_eq(known, shared)) || **known == *node
        });
        if !known {
            self.node = Some(shared.cloned().unwrap_or_else(|| Arc::new(node.clone())));
        }
    }
}

/// Takes out of `watches` every watch `answer` has an answer for, in one
/// pass, each joined with its answer.
fn take_answered<Q: OpenedRequest>(
    watches: &mut HashMap<u64, Held<Q, Q::Response>, ahash::RandomState>,
    answer: impl Fn(Option<ResourceType>, &Q) -> Option<Q::Answer>,
) -> Vec<Ready<Q::Response>> {
    // The answer found for the watch extract_if is about to hand out.
    let found = Cell::new(None);
    watches
        .extract_if(|_, watch| {
            let answered = answer(watch.kind, &watch.request);
            let take = answered.is_some();
            found.set(answered);
            take
        })
        .filter_map(|(_, watch)| {
            Some(Ready {
                order: watch.kind.map_or(ResourceType::COUNT, ResourceType::index),
                sink: watch.sink,
                response: watch.request.answered(found.take()?),
            })
        })
        .collect()
}

/// An answer to deliver, with its rank in ADS order.
struct Ready<R> {
    order: usize,
    sink: ResponseSink<R>,
    response: R,
}

/// Answers taken out of a node's watches, to deliver once its lock is released.
struct Answers {
    sotw: Vec<Ready<SotwResponse>>,
    delta: Vec<Ready<DeltaResponse>>,
}

impl Answers {
    fn deliver(self) {
        deliver_in_ads_order(self.sotw);
        deliver_in_ads_order(self.delta);
    }
}

impl NodeState {
    /// Takes out every watch, SotW or delta, that `sotw` or `delta` answers.
    fn take_answers(
        &mut self,
        sotw: impl Fn(Option<ResourceType>, &WatchRequest) -> Option<SotwAnswer>,
        delta: impl Fn(Option<ResourceType>, &DeltaWatchRequest) -> Option<DeltaAnswer>,
    ) -> Answers {
        Answers {
            sotw: take_answered(&mut self.watches, sotw),
            delta: take_answered(&mut self.delta_watches, delta),
        }
    }
}

impl<H: NodeHash> SnapshotCache<H> {
    /// A cache keying nodes with `hash`. With `ads`, a subscription naming
    /// resources is held until one of the names exists in the snapshot;
    /// names the snapshot lacks are left out of the answer (Envoy keeps
    /// naming the resources of a listener it is replacing until the
    /// replacement, which needs the new ones, has warmed).
    pub fn new(ads: bool, hash: H) -> Self {
        SnapshotCache {
            inner: Arc::new(Inner {
                ads,
                hash,
                nodes: RwLock::new(HashMap::default()),
                evict_idle_nodes: AtomicBool::new(true),
            }),
        }
    }

    /// Whether to forget a node with no snapshot once its last watch closes
    /// (default: yes, so a long-running server does not grow with every
    /// node it ever saw; go-control-plane keeps them all). With `false`,
    /// [`status_info`](Self::status_info) keeps reporting departed nodes.
    pub fn evict_idle_nodes(self, evict: bool) -> Self {
        self.inner.evict_idle_nodes.store(evict, Ordering::Relaxed);
        self
    }

    /// Stores the snapshot for a node key and answers every open watch of
    /// that node that is now stale. Never blocks on a stream.
    pub fn set_snapshot(&self, node: &str, snapshot: Snapshot) {
        let _update = crate::metrics::CacheUpdate::snapshot();
        let ads = self.inner.ads;
        let (answers, _) = self.with_node(node, |state| {
            let answers = state.take_answers(
                |kind, w| sotw_answer_of(&snapshot, kind?, w, ads),
                |kind, w| delta_answer_of(&snapshot, kind, w),
            );
            state.snapshot = Some(snapshot);
            answers
        });
        answers.deliver();
    }

    /// Sends a heartbeat on every open watch whose client is up to date and
    /// has resources with a TTL, so the client keeps them: on delta streams
    /// those resources without their body, on SotW streams the full state
    /// again (Envoy cannot take body-less SotW heartbeats). Like any answer,
    /// it closes the watch; the client's ACK opens the next.
    pub fn send_heartbeats(&self) {
        let nodes: Vec<Arc<NodeEntry<H>>> = self.inner.nodes.read().values().cloned().collect();
        for node in nodes {
            let answers = {
                let mut state = node.state.lock();
                let Some(snapshot) = state.snapshot.clone() else {
                    continue;
                };
                state.take_answers(
                    |_, w| sotw_heartbeat(&snapshot, w),
                    |_, w| delta_heartbeat(&snapshot, w),
                )
            };
            answers.deliver();
        }
    }

    /// Sends heartbeats every `interval` on the current tokio runtime until
    /// the returned task is dropped or the cache is.
    pub fn spawn_heartbeats(&self, interval: std::time::Duration) -> HeartbeatTask {
        let inner = Arc::downgrade(&self.inner);
        HeartbeatTask(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(inner) = inner.upgrade() else { break };
                SnapshotCache { inner }.send_heartbeats();
            }
        }))
    }

    /// The snapshot stored for a node key.
    pub fn snapshot(&self, node: &str) -> Option<Snapshot> {
        let nodes = self.inner.nodes.read();
        let state = nodes.get(node)?.state.lock();
        state.snapshot.clone()
    }

    /// Removes a node's snapshot. Its open watches stay open and are
    /// answered by the next snapshot set for it; a node with no open watch
    /// is forgotten entirely.
    pub fn clear_snapshot(&self, node: &str) {
        let mut nodes = self.inner.nodes.write();
        let Some(entry) = nodes.get(node) else { return };
        let mut state = entry.state.lock();
        state.snapshot = None;
        let idle = state.is_idle();
        drop(state);
        if idle {
            nodes.remove(node);
        }
    }

    /// What the cache knows of a node's streams.
    pub fn status_info(&self, node: &str) -> Option<StatusInfo> {
        let nodes = self.inner.nodes.read();
        let state = nodes.get(node)?.state.lock();
        Some(StatusInfo {
            node: state.node.as_deref().cloned(),
            num_watches: state.watches.len(),
            num_delta_watches: state.delta_watches.len(),
            last_watch_request_time: state.last_watch_request,
        })
    }

    /// Every node key the cache holds state for.
    pub fn status_keys(&self) -> Vec<String> {
        self.inner.nodes.read().keys().cloned().collect()
    }

    /// Whether this cache holds named subscriptions until complete (ADS).
    pub fn is_ads(&self) -> bool {
        self.inner.ads
    }

    /// Opens a watch on its node: answered at once from the node's snapshot
    /// if `answer` has a response, else held under a fresh id. An answer is
    /// delivered once the node's lock is released.
    fn open_watch<Q: OpenedRequest>(
        &self,
        request: Q,
        sink: ResponseSink<Q::Response>,
        answer: impl FnOnce(&Snapshot, Option<ResourceType>, &Q) -> Option<Q::Answer>,
    ) -> WatchHandle {
        // The stream's node, shared, is cloned so the key can borrow it
        // while the watch takes the request.
        let (stream_node, own_node) = request.nodes();
        let stream_node = stream_node.cloned();
        let key = self.key_of(stream_node.as_deref(), own_node);
        let kind = ResourceType::from_type_url(request.type_url());
        let ((answered, watch_id), entry) = self.with_node(&key, |state| {
            let (shared, own) = request.nodes();
            state.touch(shared, own);
            state.last_watch_id += 1;
            let watch_id = state.last_watch_id;
            let answered = state
                .snapshot
                .as_ref()
                .and_then(|snapshot| answer(snapshot, kind, &request));
            match answered {
                Some(answer) => (Some((sink, request.answered(answer))), watch_id),
                None => {
                    let watch = Held {
                        kind,
                        request,
                        sink,
                    };
                    Q::held_in(state).insert(watch_id, watch);
                    (None, watch_id)
                }
            }
        });
        match answered {
            Some((sink, response)) => {
                sink.send(response);
                WatchHandle::answered()
            }
            // Cancelling goes straight to the node's state: no map lookup
            // and no allocation per watch, of which every ACK opens one.
            None => WatchHandle::by_id(entry, watch_id),
        }
    }

    /// The key of a watch's node: borrowed from the stream's node (kept
    /// apart from the request, which the watch then takes), else that of
    /// the node the request carries.
    fn key_of<'a>(
        &'a self,
        stream_node: Option<&'a Node>,
        request_node: Option<&Node>,
    ) -> Cow<'a, str> {
        match stream_node {
            Some(node) => self.inner.hash.id_of(Some(node)),
            None => Cow::Owned(self.inner.hash.id(request_node)),
        }
    }

    /// Runs `f` on a node's state, creating it if needed. The map lock is
    /// held (shared) throughout so `clear_snapshot` cannot drop the state
    /// from under a watch being added to it.
    fn with_node<T>(
        &self,
        node: &str,
        f: impl FnOnce(&mut NodeState) -> T,
    ) -> (T, Arc<NodeEntry<H>>) {
        {
            let nodes = self.inner.nodes.read();
            if let Some(entry) = nodes.get(node) {
                return (f(&mut entry.state.lock()), Arc::clone(entry));
            }
        }
        let mut nodes = self.inner.nodes.write();
        let entry = nodes.entry(node.to_string()).or_insert_with(|| {
            Arc::new(NodeEntry {
                key: node.into(),
                state: Mutex::default(),
                cache: Arc::downgrade(&self.inner),
            })
        });
        let result = f(&mut entry.state.lock());
        (result, Arc::clone(entry))
    }
}

/// Delivers answers in ADS order (clusters before endpoints, listeners
/// before routes), so a stream receiving several sends them in that order.
fn deliver_in_ads_order<R>(mut answers: Vec<Ready<R>>) {
    answers.sort_by_key(|ready| ready.order);
    ResponseSink::send_all(
        answers
            .into_iter()
            .map(|ready| (ready.sink, ready.response)),
    );
}

impl<H: NodeHash> Cache for SnapshotCache<H> {
    fn create_watch(
        &self,
        request: WatchRequest,
        sink: ResponseSink<SotwResponse>,
    ) -> Result<WatchHandle, CacheError> {
        let ads = self.inner.ads;
        Ok(self.open_watch(request, sink, |snapshot, kind, request| {
            sotw_answer_of(snapshot, kind?, request, ads)
        }))
    }

    fn create_delta_watch(
        &self,
        request: DeltaWatchRequest,
        sink: ResponseSink<DeltaResponse>,
    ) -> Result<WatchHandle, CacheError> {
        Ok(self.open_watch(request, sink, delta_answer_of))
    }

    fn fetch(&self, request: &DiscoveryRequest) -> Result<SotwResponse, FetchError> {
        let key = self.inner.hash.id(request.node.as_ref());
        let snapshot = self
            .snapshot(&key)
            .ok_or_else(|| FetchError::NoSnapshot(key.clone()))?;
        let resources = snapshot
            .by_type_url(&request.type_url)
            .ok_or_else(|| FetchError::UnknownType(request.type_url.clone()))?;
        if resources.version() == request.version_info {
            return Err(FetchError::UpToDate);
        }
        let watch = WatchRequest {
            node: None,
            request: Arc::new(request.clone()),
            rejected_version: None,
            subscription: Arc::new(Subscription::sotw(&request.resource_names, true)),
        };
        let answer = sotw_answer(&snapshot, &watch, false).ok_or(FetchError::UpToDate)?;
        Ok(answer.into_response(watch))
    }

    /// Reads the node's snapshot directly: going through `fetch` would
    /// replace the memo of the last full named answer, which streams of a
    /// fleet share.
    fn current_resources(
        &self,
        node: &Node,
        type_url: &str,
        names: &[&str],
    ) -> Option<CurrentResources> {
        let snapshot = self.snapshot(&self.inner.hash.id(Some(node)))?;
        let resources = snapshot.by_type_url(type_url)?;
        Some(CurrentResources {
            version: Arc::clone(resources.shared_version()),
            resources: names
                .iter()
                .filter_map(|name| resources.get(name))
                .cloned()
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ResponseQueue;
    use crate::resource::type_url;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

    fn snapshot(version: &str, clusters: &[&str]) -> Snapshot {
        Snapshot::builder(version)
            .clusters(clusters.iter().map(|n| Cluster {
                name: n.to_string(),
                ..Default::default()
            }))
            .endpoints(clusters.iter().map(|n| ClusterLoadAssignment {
                cluster_name: n.to_string(),
                ..Default::default()
            }))
            .build()
            .unwrap()
    }

    fn watch_request(
        node: &str,
        cluster: &str,
        type_url: &str,
        version: &str,
        names: &[&str],
    ) -> WatchRequest {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        // A client at a version has what it asked for, at that version ("x"
        // for the wildcard requests here).
        let mut subscription = Subscription::sotw(&names, true);
        if !version.is_empty() {
            let had = if names.is_empty() {
                vec!["x".to_string()]
            } else {
                names.clone()
            };
            subscription.set_returned(
                had.iter()
                    .map(|n| (Arc::from(n.as_str()), Arc::from(version)))
                    .collect(),
            );
        }
        WatchRequest {
            node: None,
            request: Arc::new(DiscoveryRequest {
                node: Some(Node {
                    id: node.into(),
                    cluster: cluster.into(),
                    ..Default::default()
                }),
                type_url: type_url.into(),
                version_info: version.into(),
                resource_names: names.clone(),
                ..Default::default()
            }),
            rejected_version: None,
            subscription: Arc::new(subscription),
        }
    }

    fn open(
        cache: &SnapshotCache,
        queue: &Arc<ResponseQueue<SotwResponse>>,
        id: u64,
        request: WatchRequest,
    ) -> WatchHandle {
        cache.create_watch(request, queue.sink(id)).unwrap()
    }

    fn answered(queue: &ResponseQueue<SotwResponse>) -> Vec<(u64, String, String)> {
        queue
            .take()
            .into_iter()
            .map(|(id, r)| (id, r.type_url().to_string(), r.version.to_string()))
            .collect()
    }

    #[test]
    fn watches_wait_for_a_snapshot_and_only_stale_ones_are_answered() {
        let cache = SnapshotCache::new(false, IdHash);
        let queue = ResponseQueue::new();
        let _a = open(
            &cache,
            &queue,
            1,
            watch_request("n", "", type_url::CLUSTER, "", &[]),
        );
        let _b = open(
            &cache,
            &queue,
            2,
            watch_request("n", "", type_url::ENDPOINT, "v1", &["x"]),
        );
        assert!(queue.take().is_empty());
        assert_eq!(cache.status_info("n").unwrap().num_watches, 2);

        cache.set_snapshot("n", snapshot("v1", &["x"]));
        // The EDS watch already has v1: it stays open.
        assert_eq!(
            answered(&queue),
            vec![(1, type_url::CLUSTER.into(), "v1".into())]
        );
        assert_eq!(cache.status_info("n").unwrap().num_watches, 1);
        cache.set_snapshot("n", snapshot("v2", &["x"]));
        assert_eq!(
            answered(&queue),
            vec![(2, type_url::ENDPOINT.into(), "v2".into())]
        );
        assert_eq!(cache.status_info("n").unwrap().num_watches, 0);
    }

    /// The response carries the watch it answers, so the stream, not the
    /// cache, lets go of its parts: the cache keeps no reference to them.
    #[test]
    fn answers_hand_the_watch_back_whole() {
        let cache = SnapshotCache::new(false, IdHash);
        let queue = ResponseQueue::new();
        let watch = watch_request("n", "", type_url::CLUSTER, "", &[]);
        let (request, subscription) = (Arc::clone(&watch.request), Arc::clone(&watch.subscription));
        let _held = open(&cache, &queue, 1, watch);
        cache.set_snapshot("n", snapshot("v1", &["x"]));
        let (_, response) = queue.take().pop().unwrap();
        assert!(Arc::ptr_eq(&response.watch.request, &request));
        assert!(Arc::ptr_eq(&response.watch.subscription, &subscription));
        assert_eq!(Arc::strong_count(&request), 2, "ours and the response's");
        assert_eq!(
            Arc::strong_count(&subscription),
            2,
            "ours and the response's"
        );
        // Answered at once, too.
        let watch = watch_request("n", "", type_url::CLUSTER, "", &[]);
        let request = Arc::clone(&watch.request);
        let _answered = open(&cache, &queue, 2, watch);
        let (_, response) = queue.take().pop().unwrap();
        assert!(Arc::ptr_eq(&response.watch.request, &request));
        assert_eq!(&*response.version, "v1");
    }

    #[test]
    fn dropping_the_handle_cancels_the_watch() {
        let cache = SnapshotCache::new(false, IdHash);
        let queue = ResponseQueue::new();
        let handle = open(
            &cache,
            &queue,
            1,
            watch_request("n", "", type_url::CLUSTER, "", &[]),
        );
        let status = cache.status_info("n").unwrap();
        assert_eq!(status.num_watches, 1);
        assert!(status.last_watch_request_time.is_some());
        assert_eq!(status.node.unwrap().id, "n");
        drop(handle);
        // No snapshot and no watch left: the node is forgotten.
        assert!(cache.status_info("n").is_none());
        cache.set_snapshot("n", snapshot("v1", &["x"]));
        assert!(queue.take().is_empty());
    }

    #[test]
    fn idle_nodes_are_forgotten_unless_asked_to_keep_them() {
        let cache = SnapshotCache::new(false, IdHash);
        let queue = ResponseQueue::new();
        let watch = open(
            &cache,
            &queue,
            1,
            watch_request("gone", "", type_url::CLUSTER, "", &[]),
        );
        assert_eq!(cache.status_keys(), ["gone"]);
        drop(watch);
        assert!(cache.status_keys().is_empty());

        // A node with a snapshot stays.
        cache.set_snapshot("kept", snapshot("v1", &["x"]));
        drop(open(
            &cache,
            &queue,
            2,
            watch_request("kept", "", type_url::CLUSTER, "v1", &[]),
        ));
        assert_eq!(cache.status_keys(), ["kept"]);

        let keeping = SnapshotCache::new(false, IdHash).evict_idle_nodes(false);
        drop(open(
            &keeping,
            &queue,
            3,
            watch_request("gone", "", type_url::CLUSTER, "", &[]),
        ));
        assert_eq!(keeping.status_info("gone").unwrap().num_watches, 0);
    }

    #[test]
    fn an_up_to_date_watch_is_answered_immediately_when_stale() {
        let cache = SnapshotCache::new(false, IdHash);
        cache.set_snapshot("n", snapshot("v1", &["x"]));
        let queue = ResponseQueue::new();
        let handle = open(
            &cache,
            &queue,
            9,
            watch_request("n", "", type_url::CLUSTER, "v0", &[]),
        );
        assert_eq!(
            answered(&queue),
            vec![(9, type_url::CLUSTER.into(), "v1".into())]
        );
        assert_eq!(cache.status_info("n").unwrap().num_watches, 0);
        drop(handle);
    }

    #[test]
    fn clearing_keeps_open_watches_and_forgets_idle_nodes() {
        let cache = SnapshotCache::new(false, IdHash);
        cache.set_snapshot("idle", snapshot("v1", &["x"]));
        cache.set_snapshot("busy", snapshot("v1", &["x"]));
        let queue = ResponseQueue::new();
        let _w = open(
            &cache,
            &queue,
            1,
            watch_request("busy", "", type_url::CLUSTER, "v1", &[]),
        );
        cache.clear_snapshot("idle");
        cache.clear_snapshot("busy");
        assert!(cache.snapshot("idle").is_none() && cache.status_info("idle").is_none());
        assert!(cache.snapshot("busy").is_none());
        assert_eq!(cache.status_info("busy").unwrap().num_watches, 1);
        let mut keys = cache.status_keys();
        keys.sort();
        assert_eq!(keys, ["busy"]);
        cache.set_snapshot("busy", snapshot("v2", &["x"]));
        assert_eq!(
            answered(&queue),
            vec![(1, type_url::CLUSTER.into(), "v2".into())]
        );
    }

    #[test]
    fn answers_are_delivered_in_ads_order() {
        let cache = SnapshotCache::new(true, IdHash);
        let queue = ResponseQueue::new();
        let _e = open(
            &cache,
            &queue,
            1,
            watch_request("n", "", type_url::ENDPOINT, "", &["x"]),
        );
        let _c = open(
            &cache,
            &queue,
            2,
            watch_request("n", "", type_url::CLUSTER, "", &[]),
        );
        cache.set_snapshot("n", snapshot("v1", &["x"]));
        let order: Vec<_> = answered(&queue).into_iter().map(|(id, _, _)| id).collect();
        assert_eq!(order, [2, 1]);
    }

    #[test]
    fn a_custom_hash_shares_one_snapshot_across_a_group() {
        let by_cluster = |n: Option<&Node>| n.map(|n| n.cluster.clone()).unwrap_or_default();
        let cache = SnapshotCache::new(false, by_cluster);
        cache.set_snapshot("edge", snapshot("v1", &["x"]));
        let queue = ResponseQueue::new();
        let _a = cache.create_watch(
            watch_request("proxy-1", "edge", type_url::CLUSTER, "", &[]),
            queue.sink(1),
        );
        let _b = cache.create_watch(
            watch_request("proxy-2", "edge", type_url::CLUSTER, "", &[]),
            queue.sink(2),
        );
        assert_eq!(queue.take().len(), 2);
    }

    #[test]
    fn set_snapshot_never_waits_for_streams_that_do_not_read() {
        let cache = SnapshotCache::new(false, IdHash);
        let queues: Vec<_> = (0..100).map(|_| ResponseQueue::new()).collect();
        let mut handles = Vec::new();
        for (i, queue) in queues.iter().enumerate() {
            let req = watch_request(&format!("n{i}"), "", type_url::CLUSTER, "", &[]);
            handles.push(open(&cache, queue, 1, req));
        }
        let snap = snapshot("v1", &["x"]);
        for round in 0..3 {
            for i in 0..100 {
                cache.set_snapshot(&format!("n{i}"), snap.clone());
            }
            // Nobody drains: each queue holds the single answer of its watch.
            assert!(queues
                .iter()
                .all(|q| q.take().len() == usize::from(round == 0)));
        }
    }

    #[test]
    fn current_resources_reads_the_snapshot_by_name() {
        let cache = SnapshotCache::new(false, IdHash);
        let node = Node {
            id: "n".into(),
            ..Default::default()
        };
        assert!(cache
            .current_resources(&node, type_url::CLUSTER, &["a"])
            .is_none());
        cache.set_snapshot("n", snapshot("v1", &["a", "b"]));
        let current = cache
            .current_resources(&node, type_url::CLUSTER, &["b", "missing"])
            .unwrap();
        assert_eq!(&*current.version, "v1");
        let names: Vec<_> = current.resources.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["b"]);
        // A type the snapshot has no resources of: nothing by that name.
        let listeners = cache.current_resources(&node, type_url::LISTENER, &["a"]);
        assert!(listeners.is_none_or(|l| l.resources.is_empty()));
        assert!(cache
            .current_resources(&node, "type.example/Unknown", &["a"])
            .is_none());
    }

    #[test]
    fn fetch_serves_without_holding() {
        let cache = SnapshotCache::new(true, IdHash);
        cache.set_snapshot("n", snapshot("v1", &["x", "y"]));
        let req = |version: &str, names: &[&str]| DiscoveryRequest {
            node: Some(Node {
                id: "n".into(),
                ..Default::default()
            }),
            type_url: type_url::ENDPOINT.into(),
            version_info: version.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let some = cache.fetch(&req("", &["y", "missing"])).unwrap();
        assert_eq!(some.resources.len(), 1);
        assert_eq!(
            cache.fetch(&req("v1", &[])).unwrap_err(),
            FetchError::UpToDate
        );
        let mut other = req("", &[]);
        other.node = None;
        assert_eq!(
            cache.fetch(&other).unwrap_err(),
            FetchError::NoSnapshot(String::new())
        );
        other.node = req("", &[]).node;
        other.type_url = "type.googleapis.com/x.Unknown".into();
        assert!(matches!(
            cache.fetch(&other),
            Err(FetchError::UnknownType(_))
        ));
    }
}
