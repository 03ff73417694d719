//! The state-of-the-world protocol, shared by ADS and every per-type service.
//!
//! Each accepted request opens a watch per type on the cache; answers go out
//! in ADS order with a fresh nonce each. Requests carrying a stale nonce are
//! ignored; a NACK opens the next watch at the rejected version, so the cache
//! holds it until the snapshot changes instead of resending it.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tonic::Status;

use super::callbacks::{Nack, SentResponse};
use super::frames::Frames;
use super::stream::{Answer, Protocol, StreamContext, StreamCore, TypeKey};
use super::wire;
use crate::cache::{ReturnedResources, SotwResponse, Subscription, WatchRequest};
use crate::metrics;

pub(crate) struct SotwStream {
    core: StreamCore<SotwResponse>,
}

impl SotwStream {
    pub(crate) fn new(ctx: StreamContext) -> Self {
        SotwStream {
            core: StreamCore::new(ctx),
        }
    }
}

impl Answer for SotwResponse {
    type Request = DiscoveryRequest;
    fn size_hint(&self, type_url: &str) -> usize {
        wire::sotw_size_hint(&self.version, type_url, &self.resources)
    }
    fn encode(&self, type_url: &str, nonce: &str, frames: &mut Frames) -> Result<usize, Status> {
        wire::write_sotw(frames, &self.version, type_url, nonce, &self.resources)
    }
    fn report(&self, ctx: &StreamContext, type_url: &str, nonce: &str, len: usize) {
        ctx.shared.callbacks.on_stream_response(
            ctx.id,
            &self.watch.request,
            &SentResponse::new(self, nonce, len),
        );
        metrics::sotw_response(self, type_url, nonce, len);
    }
    fn request_mut(&mut self) -> &mut Arc<DiscoveryRequest> {
        &mut self.watch.request
    }
    fn into_sent(self) -> (Arc<str>, Arc<ReturnedResources>, Arc<DiscoveryRequest>) {
        // The rest of the watch is let go of here, by the stream that
        // opened it, rather than by the cache.
        (self.version, self.returned, self.watch.request)
    }
}

impl Protocol for SotwStream {
    type Request = DiscoveryRequest;
    type Answer = SotwResponse;
    const KIND: metrics::StreamKind = metrics::StreamKind::Sotw;

    fn core(&self) -> &StreamCore<SotwResponse> {
        &self.core
    }

    fn core_mut(&mut self) -> &mut StreamCore<SotwResponse> {
        &mut self.core
    }

    fn handle_request(&mut self, mut shared: Arc<DiscoveryRequest>) -> Result<(), Status> {
        // Unique, fresh from the request stream: this never copies.
        let request = Arc::make_mut(&mut shared);
        let ctx = &mut self.core.ctx;
        ctx.with_node_lent(request, |ctx, request| {
            ctx.check_type_url(&mut request.type_url)?;
            metrics::sotw_request(request);
            ctx.shared.callbacks.on_stream_request(ctx.id, request)
        })?;

        let key = TypeKey::of(&request.type_url);
        let state = match self.core.types.get_mut(&key) {
            Some(state) => {
                if state.sent_any() && !state.is_latest_nonce(&request.response_nonce) {
                    tracing::debug!(
                        stream = ctx.id,
                        type_url = request.type_url,
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
            None => self.core.types.open(ctx, key, |legacy| {
                Subscription::sotw(&request.resource_names, legacy)
            })?,
        };
        let acks_latest = state.is_latest_nonce(&request.response_nonce);
        if acks_latest && request.error_detail.is_none() && !state.nacked {
            state.report_ack(metrics::StreamKind::Sotw, &request.version_info);
        }
        let rejected_version = match &request.error_detail {
            Some(error) if state.sent_any() => {
                let nack = Nack {
                    node: ctx.node.as_ref(),
                    type_url: state.key.as_str(),
                    rejected_version: &state.last_version,
                    current_version: &request.version_info,
                    nonce: &request.response_nonce,
                    error,
                };
                ctx.report_nack(metrics::StreamKind::Sotw, &nack, &mut state.record);
                state.nacked = true;
                Some(Arc::clone(&state.last_version))
            }
            // A later request without error_detail (e.g. the same names
            // again) does not take the rejection back.
            _ if state.nacked => Some(Arc::clone(&state.last_version)),
            // The client has the request's version: nothing to copy.
            _ => None,
        };

        state.watch_id = ctx.next_watch_id();
        let watch = WatchRequest {
            request: shared,
            node: ctx.shared_node(),
            rejected_version,
            subscription: Arc::clone(&state.subscription),
        };
        let sink = self.core.queue.sink(state.watch_id);
        let handle = ctx
            .shared
            .cache
            .create_watch(watch, sink)
            .map_err(Status::from)?;
        state.watch = Some(handle);
        Ok(())
    }

    fn close(&mut self) {
        self.core.types.clear();
        self.core
            .ctx
            .shared
            .callbacks
            .on_stream_closed(self.core.ctx.id, self.core.ctx.node.as_ref());
    }
}
