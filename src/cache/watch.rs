//! Watches: how a stream asks a cache for data and how the cache answers.
//!
//! A stream opens a watch per type with every request it accepts. The cache
//! answers a watch at most once, through its [`ResponseSink`], either at once
//! or later when data changes; the stream then opens the next one. Answering
//! never blocks: the sink drops the response into the stream's
//! [`ResponseQueue`], which holds at most one pending response per watch.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::task::AtomicWaker;
use parking_lot::Mutex;

use super::{EncodedList, EncodedResource, ReturnedResources, Subscription};
use crate::metrics::{self, PendingSince};

/// A request for data of one type, as a stream passes it to a cache.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// The client's request. Its `node` is usually left empty: the
    /// stream's node is in [`WatchRequest::node`], shared.
    pub request: Arc<DiscoveryRequest>,
    /// The stream's node (from this request or an earlier one), shared by
    /// every watch of the stream rather than copied into each request.
    pub node: Option<Arc<Node>>,
    /// After a NACK, the rejected version: the cache treats the client as
    /// having it, so it does not send it again. `None` otherwise, the
    /// client having `request.version_info` (read it with
    /// [`WatchRequest::version_info`]).
    pub rejected_version: Option<Arc<str>>,
    /// What the stream subscribes to and what it was sent.
    pub subscription: Arc<Subscription>,
}

impl WatchRequest {
    /// The type URL asked for.
    pub fn type_url(&self) -> &str {
        &self.request.type_url
    }

    /// The version the client has: the one it rejected after a NACK, else
    /// the request's `version_info`.
    pub fn version_info(&self) -> &str {
        match &self.rejected_version {
            Some(rejected) => rejected,
            None => &self.request.version_info,
        }
    }

    /// The client's node, if known: the stream's, else the request's own.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_deref().or(self.request.node.as_ref())
    }
}

/// A state-of-the-world answer to a watch.
#[derive(Debug, Clone)]
pub struct SotwResponse {
    /// The watch answered, handed back whole: the stream that opened it,
    /// not the cache, lets go of its request, node and subscription, so the
    /// cache touches none of them while answering a fleet.
    pub watch: WatchRequest,
    /// The version this response carries.
    pub version: Arc<str>,
    /// The resources to send, already encoded (shared by every stream
    /// getting the same answer).
    pub resources: Arc<EncodedList>,
    /// What the client has once it receives this response.
    pub returned: Arc<ReturnedResources>,
}

impl SotwResponse {
    /// The type URL of the response.
    pub fn type_url(&self) -> &str {
        self.watch.type_url()
    }

    /// The request that opened the watch.
    pub fn request(&self) -> &Arc<DiscoveryRequest> {
        &self.watch.request
    }
}

/// A request for incremental (delta) data of one type.
#[derive(Debug, Clone)]
pub struct DeltaWatchRequest {
    /// The client's request; its node as for [`WatchRequest`].
    pub request: Arc<DeltaDiscoveryRequest>,
    /// The stream's node, shared, as for [`WatchRequest`].
    pub node: Option<Arc<Node>>,
    /// What the stream subscribes to, and every resource version the client
    /// has (sent, or declared in `initial_resource_versions`).
    pub subscription: Arc<Subscription>,
    /// Whether the stream has sent nothing for the type yet (its first
    /// request, or a later one before any answer): a wildcard subscription
    /// is then answered even when it has nothing to send.
    pub first: bool,
}

impl DeltaWatchRequest {
    /// The type URL asked for.
    pub fn type_url(&self) -> &str {
        &self.request.type_url
    }

    /// The client's node, if known: the stream's, else the request's own.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_deref().or(self.request.node.as_ref())
    }
}

/// An incremental (delta) answer to a watch: what changed and what is gone.
#[derive(Debug, Clone)]
pub struct DeltaResponse {
    /// The watch answered, handed back whole (as in [`SotwResponse`]).
    pub watch: DeltaWatchRequest,
    /// The snapshot's version of the type (`system_version_info`).
    pub system_version: Arc<str>,
    /// New or changed resources; each carries its own version.
    pub resources: Vec<EncodedResource>,
    /// Names the client has that no longer exist or are no longer wanted.
    pub removed: Vec<String>,
    /// What the client has once it receives this response.
    pub returned: Arc<ReturnedResources>,
    /// A heartbeat: the resources only refresh their TTL, sent without body.
    pub heartbeat: bool,
}

impl DeltaResponse {
    /// The type URL of the response.
    pub fn type_url(&self) -> &str {
        self.watch.type_url()
    }

    /// The request that opened the watch.
    pub fn request(&self) -> &Arc<DeltaDiscoveryRequest> {
        &self.watch.request
    }
}

/// A stream's mailbox for watch answers. Each entry is tagged with the watch
/// it answers, so answers of watches the stream has since replaced can be
/// told apart and dropped.
pub struct ResponseQueue<R> {
    pending: Mutex<Pending<R>>,
    /// The stream waiting for answers (one consumer per queue).
    waker: AtomicWaker,
}

struct Pending<R> {
    answers: Vec<(u64, R)>,
    /// For the push latency metric (nothing without the feature).
    since: PendingSince,
}

impl<R> ResponseQueue<R> {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        Arc::new(ResponseQueue {
            pending: Mutex::new(Pending {
                answers: Vec::new(),
                since: PendingSince::new(),
            }),
            waker: AtomicWaker::new(),
        })
    }

    /// A sink for the watch with this id.
    pub fn sink(self: &Arc<Self>, watch_id: u64) -> ResponseSink<R> {
        ResponseSink {
            queue: Arc::clone(self),
            watch_id,
        }
    }

    /// Takes every pending answer, oldest first.
    pub fn take(&self) -> Vec<(u64, R)> {
        let mut pending = self.pending.lock();
        pending.since.clear();
        std::mem::take(&mut pending.answers)
    }

    /// Waits until an answer is pending.
    pub async fn notified(&self) {
        std::future::poll_fn(|cx| self.poll_pending(cx)).await
    }

    /// Ready when an answer is pending; otherwise the task is woken when
    /// one arrives. Meant for the one stream that owns the queue.
    pub fn poll_pending(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before checking, so an answer pushed in between wakes.
        self.waker.register(cx.waker());
        if self.pending.lock().answers.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }

    /// Takes every pending answer, oldest first, with when the cache update
    /// behind the oldest started; with none pending, the task is woken when
    /// one arrives. One lock for both, as the stream does it every time it
    /// is polled.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<(Vec<(u64, R)>, PendingSince)> {
        self.waker.register(cx.waker());
        let mut pending = self.pending.lock();
        if pending.answers.is_empty() {
            return Poll::Pending;
        }
        let since = pending.since;
        pending.since.clear();
        Poll::Ready((std::mem::take(&mut pending.answers), since))
    }

    /// Wakes the stream without an answer (to see it must end).
    pub(crate) fn wake(&self) {
        self.waker.wake();
    }

    /// Queues answers under one lock and wakes the stream once.
    fn push_all(&self, answers: impl IntoIterator<Item = (u64, R)>) {
        let mut pending = self.pending.lock();
        pending.since.mark();
        pending.answers.extend(answers);
        drop(pending);
        self.waker.wake();
    }
}

impl<R> fmt::Debug for ResponseQueue<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseQueue")
            .field("pending", &self.pending.lock().answers.len())
            .finish()
    }
}

/// Where a cache delivers the one answer to a watch. Sending never blocks.
pub struct ResponseSink<R> {
    queue: Arc<ResponseQueue<R>>,
    watch_id: u64,
}

impl<R> ResponseSink<R> {
    /// Delivers the answer; consumes the sink, as a watch is answered once.
    pub fn send(self, response: R) {
        self.queue.push_all([(self.watch_id, response)]);
    }

    /// Delivers answers in order; a run of answers for the same stream is
    /// queued under one lock and wakes it once, so the stream finds them
    /// all together rather than waking for the first.
    pub fn send_all(answers: impl IntoIterator<Item = (ResponseSink<R>, R)>) {
        let mut answers = answers.into_iter().peekable();
        while let Some((sink, response)) = answers.next() {
            let same_stream = std::iter::from_fn(|| {
                answers
                    .next_if(|(next, _)| Arc::ptr_eq(&next.queue, &sink.queue))
                    .map(|(next, response)| (next.watch_id, response))
            });
            sink.queue
                .push_all(std::iter::once((sink.watch_id, response)).chain(same_stream));
        }
    }

    /// The watch this sink answers.
    pub fn watch_id(&self) -> u64 {
        self.watch_id
    }
}

impl<R> fmt::Debug for ResponseSink<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseSink")
            .field("watch_id", &self.watch_id)
            .finish()
    }
}

/// An open watch; dropping it cancels the watch in the cache.
///
/// A watch is cancelled only while unanswered: once its [`ResponseSink`]
/// delivered an answer, the stream forgets the handle without cancelling,
/// since a cache lets go of a watch when it answers it (sending consumes
/// the sink). This spares the cache a lookup for every answer it sends.
#[must_use = "dropping a WatchHandle cancels the watch"]
pub struct WatchHandle {
    cancel: Cancel,
}

enum Cancel {
    Nothing,
    Once(Box<dyn FnOnce() + Send + Sync>),
    ById(Arc<dyn CancelWatch>, u64),
}

/// What holds a cache's watches and cancels them by id: a cache holding
/// many watches in one place hands out handles to that place and the
/// watch's id, with no closure allocated per watch (see
/// [`WatchHandle::by_id`]).
pub trait CancelWatch: Send + Sync + 'static {
    /// Forgets the watch with this id, if still held.
    fn cancel_watch(&self, watch_id: u64);
}

impl WatchHandle {
    /// A handle that runs `cancel` when dropped.
    pub fn new(cancel: impl FnOnce() + Send + Sync + 'static) -> Self {
        metrics::watch_opened();
        WatchHandle {
            cancel: Cancel::Once(Box::new(cancel)),
        }
    }

    /// A handle that cancels watch `watch_id` in `holder` when dropped.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use xds_control_plane::cache::{CancelWatch, WatchHandle};
    ///
    /// struct Watches(parking_lot::Mutex<std::collections::HashSet<u64>>);
    /// impl CancelWatch for Watches {
    ///     fn cancel_watch(&self, watch_id: u64) {
    ///         self.0.lock().remove(&watch_id);
    ///     }
    /// }
    ///
    /// let watches = Arc::new(Watches(Default::default()));
    /// watches.0.lock().insert(7);
    /// drop(WatchHandle::by_id(watches.clone(), 7));
    /// assert!(watches.0.lock().is_empty());
    /// ```
    pub fn by_id(holder: Arc<dyn CancelWatch>, watch_id: u64) -> Self {
        metrics::watch_opened();
        WatchHandle {
            cancel: Cancel::ById(holder, watch_id),
        }
    }

    /// A handle for a watch answered at once, with nothing to cancel.
    pub fn answered() -> Self {
        WatchHandle {
            cancel: Cancel::Nothing,
        }
    }

    /// Forgets a watch the cache has answered, without cancelling it.
    pub fn forget_answered(mut self) {
        if !matches!(
            std::mem::replace(&mut self.cancel, Cancel::Nothing),
            Cancel::Nothing
        ) {
            metrics::watch_closed();
        }
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.cancel, Cancel::Nothing) {
            Cancel::Nothing => return,
            Cancel::Once(cancel) => cancel(),
            Cancel::ById(holder, watch_id) => holder.cancel_watch(watch_id),
        }
        metrics::watch_closed();
    }
}

impl fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchHandle")
            .field("open", &!matches!(self.cancel, Cancel::Nothing))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn sinks_deliver_tagged_answers_and_wake_the_stream() {
        let queue = ResponseQueue::<&str>::new();
        queue.sink(1).send("first");
        queue.sink(2).send("second");
        queue.notified().await;
        assert_eq!(queue.take(), vec![(1, "first"), (2, "second")]);
        assert!(queue.take().is_empty());
    }

    #[test]
    fn answers_sent_together_reach_each_stream_in_order() {
        let (a, b) = (ResponseQueue::<&str>::new(), ResponseQueue::<&str>::new());
        ResponseSink::send_all([
            (a.sink(1), "a1"),
            (a.sink(2), "a2"),
            (b.sink(3), "b3"),
            (a.sink(4), "a4"),
        ]);
        assert_eq!(a.take(), vec![(1, "a1"), (2, "a2"), (4, "a4")]);
        assert_eq!(b.take(), vec![(3, "b3")]);
    }

    #[test]
    fn dropping_a_handle_cancels() {
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancelled);
        drop(WatchHandle::new(move || flag.store(true, Ordering::SeqCst)));
        assert!(cancelled.load(Ordering::SeqCst));
        drop(WatchHandle::answered());
    }

    #[test]
    fn an_answered_watch_is_forgotten_without_cancelling() {
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancelled);
        WatchHandle::new(move || flag.store(true, Ordering::SeqCst)).forget_answered();
        assert!(!cancelled.load(Ordering::SeqCst));
    }
}
