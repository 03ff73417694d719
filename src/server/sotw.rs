//! The state-of-the-world stream state machine, one per gRPC stream, shared
//! by ADS and every per-type service.
//!
//! It reads requests, opens a watch per type on the cache, and sends the
//! answers in ADS order with a fresh nonce each. Requests carrying a stale
//! nonce are ignored; a NACK opens the next watch at the rejected version, so
//! the cache holds it until the snapshot changes instead of resending.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::Status;

use super::callbacks::{Nack, StreamId};
use super::Shared;
use crate::cache::{
    EncodedResource, ResponseQueue, SotwResponse, Subscription, WatchHandle, WatchRequest,
};
use crate::resource;

/// What the stream sends to the client.
pub(crate) type Outbound = mpsc::Sender<Result<DiscoveryResponse, Status>>;

/// Per-type protocol state of one stream.
struct TypeState {
    subscription: Arc<Subscription>,
    /// The open watch; `None` once answered and until the next request.
    watch: Option<WatchHandle>,
    /// Id of the latest watch; answers tagged with another id are stale.
    watch_id: u64,
    /// Nonce and version of the latest response sent ("" before any).
    last_nonce: String,
    last_version: Arc<str>,
}

pub(crate) struct SotwStream {
    id: StreamId,
    shared: Arc<Shared>,
    /// The type a per-type service serves; `None` on ADS.
    service_type: Option<&'static str>,
    node: Option<Node>,
    nonce: u64,
    next_watch_id: u64,
    types: HashMap<String, TypeState>,
    queue: Arc<ResponseQueue<SotwResponse>>,
}

impl SotwStream {
    pub(crate) fn new(
        id: StreamId,
        shared: Arc<Shared>,
        service_type: Option<&'static str>,
    ) -> Self {
        SotwStream {
            id,
            shared,
            service_type,
            node: None,
            nonce: 0,
            next_watch_id: 0,
            types: HashMap::new(),
            queue: ResponseQueue::new(),
        }
    }

    /// Serves the stream until the client leaves, an error ends it, or the
    /// server shuts down; then cancels every watch.
    pub(crate) async fn run<S>(mut self, mut requests: S, out: Outbound)
    where
        S: Stream<Item = Result<DiscoveryRequest, Status>> + Unpin + Send,
    {
        let queue = Arc::clone(&self.queue);
        let shutdown = self.shared.shutdown.clone();
        let ended: Result<(), Status> = loop {
            tokio::select! {
                biased;
                _ = out.closed() => break Ok(()),
                _ = shutdown.cancelled() => break Err(Status::unavailable("xDS server is shutting down")),
                _ = queue.notified() => {
                    if !self.flush(&out).await {
                        break Ok(());
                    }
                }
                next = requests.next() => match next {
                    Some(Ok(request)) => {
                        if let Err(status) = self.handle_request(request) {
                            break Err(status);
                        }
                    }
                    Some(Err(status)) => {
                        tracing::debug!(stream = self.id, %status, "stream receive failed");
                        break Ok(());
                    }
                    None => break Ok(()),
                },
            }
        };
        if let Err(status) = ended {
            // The client may have stopped reading; never wait on it here.
            let _ = out.try_send(Err(status));
        }
        self.types.clear();
        self.shared
            .callbacks
            .on_stream_closed(self.id, self.node.as_ref());
    }

    fn handle_request(&mut self, mut request: DiscoveryRequest) -> Result<(), Status> {
        match &request.node {
            Some(node) if self.node.as_ref() != Some(node) => self.node = Some(node.clone()),
            Some(_) => {}
            None => request.node = self.node.clone(),
        }
        self.check_type_url(&mut request)?;
        self.shared.callbacks.on_stream_request(self.id, &request)?;

        let type_url = request.type_url.clone();
        let state = match self.types.get_mut(&type_url) {
            Some(state) => {
                if !state.last_nonce.is_empty() && request.response_nonce != state.last_nonce {
                    tracing::debug!(
                        stream = self.id,
                        type_url,
                        nonce = request.response_nonce,
                        "ignoring request with stale nonce"
                    );
                    return Ok(());
                }
                // Cancel before changing the subscription so the cache lets go of it.
                state.watch = None;
                Arc::make_mut(&mut state.subscription).set_sotw_names(&request.resource_names);
                state
            }
            None => {
                if self.types.len() >= self.shared.options.max_types_per_stream {
                    return Err(Status::resource_exhausted(format!(
                        "a stream may watch at most {} types",
                        self.shared.options.max_types_per_stream
                    )));
                }
                let legacy = self.shared.options.legacy_wildcard.allowed_for(&type_url);
                let state = TypeState {
                    subscription: Arc::new(Subscription::sotw(&request.resource_names, legacy)),
                    watch: None,
                    watch_id: 0,
                    last_nonce: String::new(),
                    last_version: Arc::from(""),
                };
                self.types.entry(type_url.clone()).or_insert(state)
            }
        };

        let version_info = match &request.error_detail {
            Some(error) if !state.last_nonce.is_empty() => {
                let nack = Nack {
                    node: request.node.as_ref(),
                    type_url: &type_url,
                    rejected_version: &state.last_version,
                    current_version: &request.version_info,
                    nonce: &request.response_nonce,
                    error,
                };
                tracing::warn!(
                    stream = self.id,
                    type_url,
                    version = &*state.last_version,
                    error = error.message,
                    "client rejected a response (NACK)"
                );
                self.shared.callbacks.on_stream_nack(self.id, &nack);
                state.last_version.to_string()
            }
            _ => request.version_info.clone(),
        };

        self.next_watch_id += 1;
        state.watch_id = self.next_watch_id;
        let watch = WatchRequest {
            request: Arc::new(request),
            version_info,
            subscription: Arc::clone(&state.subscription),
        };
        let sink = self.queue.sink(state.watch_id);
        let handle = self
            .shared
            .cache
            .create_watch(watch, sink)
            .map_err(|e| Status::unavailable(format!("cannot watch {type_url}: {e}")))?;
        state.watch = Some(handle);
        Ok(())
    }

    fn check_type_url(&self, request: &mut DiscoveryRequest) -> Result<(), Status> {
        match self.service_type {
            None if request.type_url.is_empty() => Err(Status::invalid_argument(
                "type_url is required on an aggregated (ADS) stream",
            )),
            None => Ok(()),
            Some(served) if request.type_url.is_empty() => {
                request.type_url = served.to_string();
                Ok(())
            }
            Some(served) if request.type_url != served => Err(Status::invalid_argument(format!(
                "type_url {:?} does not match this service, which serves {served}",
                request.type_url
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Sends every pending answer of a current watch, in ADS order; `false`
    /// once the client is gone.
    async fn flush(&mut self, out: &Outbound) -> bool {
        let mut pending = self.queue.take();
        pending.sort_by_key(|(_, response)| resource::response_order(response.type_url()));
        for (watch_id, response) in pending {
            let Some(message) = self.stamp(watch_id, response) else {
                continue;
            };
            if out.send(Ok(message)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Turns an answer into the message to send and records what the client
    /// now has; `None` for an answer to a watch since replaced.
    fn stamp(&mut self, watch_id: u64, response: SotwResponse) -> Option<DiscoveryResponse> {
        let state = self.types.get_mut(response.type_url())?;
        if state.watch_id != watch_id {
            return None;
        }
        state.watch = None;
        self.nonce += 1;
        let message = DiscoveryResponse {
            version_info: response.version.to_string(),
            resources: response
                .resources
                .iter()
                .map(EncodedResource::to_any)
                .collect(),
            type_url: response.type_url().to_string(),
            nonce: self.nonce.to_string(),
            ..Default::default()
        };
        state.last_nonce.clone_from(&message.nonce);
        state.last_version = response.version;
        Arc::make_mut(&mut state.subscription).set_returned(response.returned);
        self.shared
            .callbacks
            .on_stream_response(self.id, &response.request, &message);
        Some(message)
    }
}
