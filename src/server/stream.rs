//! What every xDS stream keeps and does, state of the world or delta: the
//! [`Protocol`] a stream runs ([`super::stream_body`] drives it), its
//! context, and its per-type state.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use tonic::Status;

use super::callbacks::{Nack, StreamId};
use super::client_status::{StreamStatus, TypeRecord};
use super::frames::Frames;
use super::request_stream::{NodeRequest, SparePool};
use super::Shared;
use crate::cache::{ResponseQueue, ReturnedResources, Subscription, WatchHandle};
use crate::metrics;
use crate::resource::ResourceType;

/// One flavour of the xDS protocol on one stream: what differs between
/// state of the world and delta. The rest is their shared [`StreamCore`].
pub(crate) trait Protocol: Send + 'static {
    /// A client request.
    type Request: NodeRequest;
    /// What the cache answers watches with.
    type Answer: Answer<Request = Self::Request> + Send + 'static;
    /// State of the world or delta, for metrics and tracing.
    const KIND: metrics::StreamKind;

    fn core(&self) -> &StreamCore<Self::Answer>;
    fn core_mut(&mut self) -> &mut StreamCore<Self::Answer>;

    /// Applies a request (not shared yet): may open or replace a watch. An
    /// error ends the stream with that status.
    fn handle_request(&mut self, request: Arc<Self::Request>) -> Result<(), Status>;

    /// Cancels every watch and reports the stream closed.
    fn close(&mut self);

    /// The queue the cache answers this stream's watches through.
    fn queue(&self) -> Arc<ResponseQueue<Self::Answer>> {
        Arc::clone(&self.core().queue)
    }

    /// Writes `pending` answers (taken from the queue) into `frames`, in
    /// order, each encoded as one gRPC message, recording them as sent;
    /// the requests they answered go to `spares`. Returns how many were
    /// written. An error (a message too large to send) ends the stream
    /// with it.
    fn write_answers(
        &mut self,
        pending: Vec<(u64, Self::Answer)>,
        spares: &mut SparePool<Self::Request>,
        frames: &mut Frames,
    ) -> Result<usize, Status> {
        self.core_mut().write_answers(pending, spares, frames)
    }

    /// What the stream sent, and what its client acked and rejected.
    fn status(&self) -> StreamStatus {
        self.core().status(Self::KIND == metrics::StreamKind::Delta)
    }
}

/// What every protocol keeps about its stream.
pub(crate) struct StreamContext {
    pub(crate) id: StreamId,
    pub(crate) shared: Arc<Shared>,
    /// The type a per-type service serves; `None` on ADS.
    service_type: Option<&'static str>,
    /// The node of the latest request that carried one. Lent (moved) into
    /// requests that left it out while callbacks see them, so it is `None`
    /// only then or before any node arrived.
    pub(crate) node: Option<Node>,
    /// The same node, shared with the cache by every watch of the stream.
    shared_node: Option<Arc<Node>>,
    nonce: u64,
    next_watch_id: u64,
}

impl StreamContext {
    pub(crate) fn new(
        id: StreamId,
        shared: Arc<Shared>,
        service_type: Option<&'static str>,
    ) -> Self {
        StreamContext {
            id,
            shared,
            service_type,
            node: None,
            shared_node: None,
            nonce: 0,
            next_watch_id: 0,
        }
    }

    /// Runs `f` (a request's checks and callbacks) with the stream's node
    /// in the request: a request carrying a node makes it the stream's (a
    /// changed node is copied once); one that left it out is lent the
    /// stream's, moved, not copied. Afterwards the request is left without
    /// a node: it is kept that way, as watches share
    /// [`StreamContext::shared_node`].
    pub(crate) fn with_node_lent<R: NodeRequest, T>(
        &mut self,
        request: &mut R,
        f: impl FnOnce(&mut Self, &mut R) -> T,
    ) -> T {
        match request.node_slot() {
            Some(node) if self.node.as_ref() != Some(node) => {
                metrics::node_known(node);
                self.node = Some(node.clone());
                self.shared_node = Some(Arc::new(node.clone()));
            }
            Some(_) => {}
            lent => *lent = self.node.take(),
        }
        let out = f(self, request);
        self.reclaim_node(request.node_slot());
        out
    }

    /// As [`StreamContext::with_node_lent`], for a request kept since and
    /// now reported with its response: lent only if it has no node of its
    /// own (a request shared elsewhere is copied first), until
    /// [`StreamContext::reclaim_node_from_kept`].
    fn lend_node_to_kept<R: NodeRequest>(&mut self, request: &mut Arc<R>) {
        if self.node.is_none() {
            return;
        }
        let slot = Arc::make_mut(request).node_slot();
        if slot.is_none() {
            *slot = self.node.take();
        }
    }

    fn reclaim_node_from_kept<R: NodeRequest>(&mut self, request: &mut Arc<R>) {
        if let Some(request) = Arc::get_mut(request) {
            self.reclaim_node(request.node_slot());
        }
    }

    fn reclaim_node(&mut self, node: &mut Option<Node>) {
        if let Some(node) = node.take() {
            if self.node.is_none() {
                self.node = Some(node);
            }
        }
    }

    /// The stream's node, shared.
    pub(crate) fn shared_node(&self) -> Option<Arc<Node>> {
        self.shared_node.clone()
    }

    /// Checks the request's type URL against the service, filling in the
    /// service's type when the client left it empty.
    pub(crate) fn check_type_url(&self, type_url: &mut String) -> Result<(), Status> {
        match self.service_type {
            None if type_url.is_empty() => Err(Status::invalid_argument(
                "type_url is required on an aggregated (ADS) stream",
            )),
            None => Ok(()),
            Some(served) if type_url.is_empty() => {
                served.clone_into(type_url);
                Ok(())
            }
            Some(served) if type_url != served => Err(Status::invalid_argument(format!(
                "type_url {type_url:?} does not match this service, which serves {served}"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Refuses a new type once the stream watches as many as allowed.
    pub(crate) fn check_type_budget(&self, watched: usize) -> Result<(), Status> {
        let max = self.shared.options.max_types_per_stream;
        if watched >= max {
            return Err(Status::resource_exhausted(format!(
                "a stream may watch at most {max} types"
            )));
        }
        Ok(())
    }

    /// Reports a client's rejection (NACK) to the log, the callbacks, the
    /// metrics and the type's status record.
    pub(crate) fn report_nack(
        &self,
        kind: metrics::StreamKind,
        nack: &Nack<'_>,
        record: &mut TypeRecord,
    ) {
        tracing::warn!(
            stream = self.id,
            kind = kind.as_str(),
            type_url = nack.type_url,
            version = nack.rejected_version,
            error = nack.error.message,
            "client rejected a response (NACK)"
        );
        self.shared.callbacks.on_stream_nack(self.id, nack);
        metrics::nack(kind, nack.type_url);
        record.rejected(nack.rejected_version, &nack.error.message);
    }

    /// A fresh nonce for a response (never 0).
    fn next_nonce(&mut self) -> u64 {
        self.nonce += 1;
        self.nonce
    }

    /// A fresh id for a watch.
    pub(crate) fn next_watch_id(&mut self) -> u64 {
        self.next_watch_id += 1;
        self.next_watch_id
    }
}

/// Per-type protocol state of one stream, state of the world or delta.
pub(crate) struct TypeState {
    pub(crate) key: TypeKey,
    pub(crate) subscription: Arc<Subscription>,
    /// The open watch; `None` once answered and until the next request.
    pub(crate) watch: Option<WatchHandle>,
    /// Id of the latest watch; answers tagged with another id are stale.
    pub(crate) watch_id: u64,
    /// Nonce (0 before any) and version ("" before any) of the latest
    /// response sent. Nonces are kept as numbers: no string per type.
    last_nonce: u64,
    pub(crate) last_version: Arc<str>,
    /// State of the world: the client rejected the latest response, so
    /// until the next one every request waits at the rejected version.
    pub(crate) nacked: bool,
    /// When it was sent, and what the client acked and rejected.
    pub(crate) record: TypeRecord,
}

impl TypeState {
    fn new(key: TypeKey, subscription: Subscription) -> Self {
        TypeState {
            key,
            subscription: Arc::new(subscription),
            watch: None,
            watch_id: 0,
            last_nonce: 0,
            last_version: Arc::from(""),
            nacked: false,
            record: TypeRecord::default(),
        }
    }

    /// Records that the client acknowledged `version`.
    pub(crate) fn report_ack(&mut self, kind: metrics::StreamKind, version: &str) {
        self.record.acked(version, &self.last_version);
        metrics::ack(kind, self.key.as_str());
    }

    /// Whether any response of this type went out.
    pub(crate) fn sent_any(&self) -> bool {
        self.last_nonce != 0
    }

    /// Whether `nonce` (a request's `response_nonce`) is that of the
    /// latest response sent, spelled as this server spells nonces.
    pub(crate) fn is_latest_nonce(&self, nonce: &str) -> bool {
        self.sent_any()
            && !nonce.starts_with(['0', '+'])
            && nonce.parse::<u64>() == Ok(self.last_nonce)
    }

    /// The latest watch was answered: forget it, the cache already has.
    fn watch_answered(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.forget_answered();
        }
    }

    /// Records a response as sent: its nonce and version, and what the
    /// client now has.
    pub(crate) fn record_sent(
        &mut self,
        nonce: u64,
        version: Arc<str>,
        returned: Arc<ReturnedResources>,
    ) {
        self.last_nonce = nonce;
        self.last_version = version;
        self.nacked = false;
        self.record.sent();
        Arc::make_mut(&mut self.subscription).set_shared_returned(returned);
    }
}

/// A cache answer as the shared stamping step needs it.
pub(crate) trait Answer: Sized {
    type Request: NodeRequest;
    /// About how many bytes [`Answer::encode`] writes, to reserve a batch's
    /// frame once.
    fn size_hint(&self, type_url: &str) -> usize;
    /// Writes the response as it goes on the wire and returns its size
    /// (gRPC frame header included); `type_url` is the answer's own, as the
    /// stream keeps it. Writes nothing if it fails.
    fn encode(&self, type_url: &str, nonce: &str, frames: &mut Frames) -> Result<usize, Status>;
    /// Tells callbacks and metrics the response of `len` bytes is being
    /// sent; the kept request has the stream's node then.
    fn report(&self, ctx: &StreamContext, type_url: &str, nonce: &str, len: usize);
    /// The request the answer replies to, as the cache kept it.
    fn request_mut(&mut self) -> &mut Arc<Self::Request>;
    /// The version, the record of what the client then has, and the
    /// request answered.
    fn into_sent(self) -> (Arc<str>, Arc<ReturnedResources>, Arc<Self::Request>);
}

/// A type URL as a stream keeps it: a known type by its kind, so that
/// answers are matched and ordered without reading the text again; any
/// other type as the client spelled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TypeKey {
    Known(ResourceType),
    Other(Box<str>),
}

impl TypeKey {
    pub(crate) fn of(type_url: &str) -> Self {
        match ResourceType::from_type_url(type_url) {
            Some(kind) => TypeKey::Known(kind),
            None => TypeKey::Other(type_url.into()),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            TypeKey::Known(kind) => kind.type_url(),
            TypeKey::Other(url) => url,
        }
    }

    /// Rank in ADS response order; unknown types go last.
    fn order(&self) -> usize {
        match self {
            TypeKey::Known(kind) => kind.index(),
            TypeKey::Other(_) => ResourceType::COUNT,
        }
    }
}

/// The types one stream watches: a few, so a short list beats a map, in
/// lookups and in memory on every connection.
#[derive(Default)]
pub(crate) struct StreamTypes(Vec<TypeState>);

impl StreamTypes {
    pub(crate) fn get_mut(&mut self, key: &TypeKey) -> Option<&mut TypeState> {
        self.0.iter_mut().find(|state| state.key == *key)
    }

    /// Where the type whose latest watch is `watch_id` is; `None` when
    /// that watch has since been replaced (its answer is stale).
    fn position_of_watch(&self, watch_id: u64) -> Option<usize> {
        self.0.iter().position(|state| state.watch_id == watch_id)
    }

    /// Starts watching a type, within the stream's budget of types;
    /// `subscription` is given whether legacy wildcard applies.
    pub(crate) fn open(
        &mut self,
        ctx: &StreamContext,
        key: TypeKey,
        subscription: impl FnOnce(bool) -> Subscription,
    ) -> Result<&mut TypeState, Status> {
        ctx.check_type_budget(self.0.len())?;
        let legacy = ctx.shared.options.legacy_wildcard.allowed_for(key.as_str());
        self.0.push(TypeState::new(key, subscription(legacy)));
        let last = self.0.len() - 1;
        Ok(&mut self.0[last])
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Each type's status, by type URL.
    fn status(&self) -> std::collections::BTreeMap<String, super::TypeStatus> {
        self.0
            .iter()
            .map(|state| {
                let held = state.subscription.shared_returned();
                let status = state.record.status(&state.last_version, held);
                (state.key.as_str().to_string(), status)
            })
            .collect()
    }
}

/// What both protocols keep per stream: its context, its per-type state,
/// and the queue the cache answers its watches through.
pub(crate) struct StreamCore<A> {
    pub(crate) ctx: StreamContext,
    pub(crate) types: StreamTypes,
    pub(crate) queue: Arc<ResponseQueue<A>>,
}

impl<A: Answer> StreamCore<A> {
    pub(crate) fn new(ctx: StreamContext) -> Self {
        StreamCore {
            ctx,
            types: StreamTypes::default(),
            queue: ResponseQueue::new(),
        }
    }

    /// What the stream sent, and what its client acked and rejected.
    pub(crate) fn status(&self, delta: bool) -> StreamStatus {
        StreamStatus {
            stream: self.ctx.id,
            delta,
            node: self.ctx.node.clone(),
            types: self.types.status(),
        }
    }

    /// Writes answers taken from the queue into `frames` in ADS order
    /// (oldest first within a type), each recorded as sent, and returns how
    /// many. Answers are matched to their type by watch id: the stream's
    /// own state, not the cache's copy of the request; answers to watches
    /// since replaced are stale and dropped.
    pub(crate) fn write_answers(
        &mut self,
        pending: Vec<(u64, A)>,
        spares: &mut SparePool<A::Request>,
        frames: &mut Frames,
    ) -> Result<usize, Status> {
        let types = &self.types;
        // Each answer's type, looked up once; stale answers go. Collected
        // in place: an id and a position take the same room.
        let mut ready: Vec<(usize, A)> = pending
            .into_iter()
            .filter_map(|(watch_id, answer)| Some((types.position_of_watch(watch_id)?, answer)))
            .collect();
        let order = |(at, _): &(usize, A)| types.0[*at].key.order();
        // Usually one answer per type, pushed in ADS order already.
        if !ready.is_sorted_by_key(order) {
            ready.sort_by_key(order);
        }
        let hint = ready
            .iter()
            .map(|(at, answer)| answer.size_hint(types.0[*at].key.as_str()))
            .sum();
        frames.reserve(hint);
        let mut sent = 0;
        let mut outcome = Ok(());
        for (at, answer) in ready {
            if let Err(status) = self.stamp(at, answer, spares, frames) {
                outcome = Err(status);
                break;
            }
            sent += 1;
        }
        // What was stamped before a failure goes out before the stream ends.
        frames.finish();
        outcome.map(|()| sent)
    }

    /// Writes the answer to the watch of the type at `at` into `frames`
    /// and records what the client now has.
    fn stamp(
        &mut self,
        at: usize,
        mut answer: A,
        spares: &mut SparePool<A::Request>,
        frames: &mut Frames,
    ) -> Result<(), Status> {
        let state = &mut self.types.0[at];
        state.watch_answered();
        let ctx = &mut self.ctx;
        let type_url = state.key.as_str();
        let nonce_number = ctx.next_nonce();
        let mut spelled = itoa::Buffer::new();
        let nonce = spelled.format(nonce_number);
        let len = answer.encode(type_url, nonce, frames)?;
        ctx.lend_node_to_kept(answer.request_mut());
        answer.report(ctx, type_url, nonce, len);
        ctx.reclaim_node_from_kept(answer.request_mut());
        let (version, returned, request) = answer.into_sent();
        state.record_sent(nonce_number, version, returned);
        spares.put(request);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_nonce_as_spelled_matches() {
        let mut state = TypeState::new(TypeKey::of("t"), Subscription::sotw(&[], true));
        assert!(!state.sent_any() && !state.is_latest_nonce("") && !state.is_latest_nonce("0"));
        state.record_sent(7, Arc::from("v1"), Arc::default());
        assert!(state.sent_any() && state.is_latest_nonce("7"));
        for other in ["", "6", "07", "+7", " 7", "7 ", "x"] {
            assert!(!state.is_latest_nonce(other), "{other:?}");
        }
    }
}
