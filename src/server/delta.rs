//! The incremental (delta) protocol, shared by delta ADS and every per-type
//! service's `Delta*` RPC.
//!
//! Each request updates the type's subscription and opens a new watch; the
//! cache answers with changed resources (each with its own version) and
//! removed names. There is no nonce check: subscription changes apply at once.
//! A NACK is reported; the rejected resources are not sent again because the
//! stream records them as sent, so only a later change goes out.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tonic::Status;

use super::callbacks::{Nack, SentDeltaResponse};
use super::frames::Frames;
use super::stream::{Answer, Protocol, StreamContext, StreamCore, TypeKey};
use super::wire;
use crate::cache::{DeltaResponse, DeltaWatchRequest, ReturnedResources, Subscription};
use crate::metrics;

pub(crate) struct DeltaStream {
    core: StreamCore<DeltaResponse>,
}

impl DeltaStream {
    pub(crate) fn new(ctx: StreamContext) -> Self {
        DeltaStream {
            core: StreamCore::new(ctx),
        }
    }
}

impl Answer for DeltaResponse {
    type Request = DeltaDiscoveryRequest;
    fn size_hint(&self, type_url: &str) -> usize {
        wire::delta_size_hint(
            &self.system_version,
            type_url,
            self.resources.iter(),
            self.removed.iter(),
            self.heartbeat,
        )
    }
    fn encode(&self, type_url: &str, nonce: &str, frames: &mut Frames) -> Result<usize, Status> {
        wire::write_delta(
            frames,
            &self.system_version,
            type_url,
            nonce,
            self.resources.iter(),
            self.removed.iter(),
            self.heartbeat,
        )
    }
    fn report(&self, ctx: &StreamContext, type_url: &str, nonce: &str, len: usize) {
        ctx.shared.callbacks.on_stream_delta_response(
            ctx.id,
            &self.watch.request,
            &SentDeltaResponse::new(self, nonce, len),
        );
        metrics::delta_response(self, type_url, nonce, len);
    }
    fn request_mut(&mut self) -> &mut Arc<DeltaDiscoveryRequest> {
        &mut self.watch.request
    }
    fn into_sent(self) -> (Arc<str>, Arc<ReturnedResources>, Arc<DeltaDiscoveryRequest>) {
        // The rest of the watch is let go of here, by the stream that
        // opened it, rather than by the cache.
        (self.system_version, self.returned, self.watch.request)
    }
}

impl Protocol for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Answer = DeltaResponse;
    const KIND: metrics::StreamKind = metrics::StreamKind::Delta;

    fn core(&self) -> &StreamCore<DeltaResponse> {
        &self.core
    }

    fn core_mut(&mut self) -> &mut StreamCore<DeltaResponse> {
        &mut self.core
    }

    fn handle_request(&mut self, mut shared: Arc<DeltaDiscoveryRequest>) -> Result<(), Status> {
        // Unique, fresh from the request stream: this never copies.
        let request = Arc::make_mut(&mut shared);
        let ctx = &mut self.core.ctx;
        ctx.with_node_lent(request, |ctx, request| {
            ctx.check_type_url(&mut request.type_url)?;
            metrics::delta_request(request);
            ctx.shared
                .callbacks
                .on_stream_delta_request(ctx.id, request)
        })?;

        let key = TypeKey::of(&request.type_url);
        let state = match self.core.types.get_mut(&key) {
            Some(state) => {
                state.watch = None;
                Arc::make_mut(&mut state.subscription).update_delta(
                    &request.resource_names_subscribe,
                    &request.resource_names_unsubscribe,
                );
                state
            }
            None => self.core.types.open(ctx, key, |legacy| {
                Subscription::delta(
                    &request.resource_names_subscribe,
                    &request.resource_names_unsubscribe,
                    &request.initial_resource_versions,
                    legacy,
                )
            })?,
        };

        if let Some(error) = &request.error_detail {
            let rejected = if state.is_latest_nonce(&request.response_nonce) {
                &*state.last_version
            } else {
                ""
            };
            let nack = Nack {
                node: ctx.node.as_ref(),
                type_url: state.key.as_str(),
                rejected_version: rejected,
                current_version: "",
                nonce: &request.response_nonce,
                error,
            };
            ctx.report_nack(metrics::StreamKind::Delta, &nack, &mut state.record);
        } else if state.is_latest_nonce(&request.response_nonce) {
            // A delta ACK carries no version: it acks what was sent.
            let sent = Arc::clone(&state.last_version);
            state.report_ack(metrics::StreamKind::Delta, &sent);
        }

        state.watch_id = ctx.next_watch_id();
        let watch = DeltaWatchRequest {
            request: shared,
            node: ctx.shared_node(),
            subscription: Arc::clone(&state.subscription),
            // Nothing sent for the type yet: however many requests came.
            first: !state.sent_any(),
        };
        let sink = self.core.queue.sink(state.watch_id);
        let handle = ctx
            .shared
            .cache
            .create_delta_watch(watch, sink)
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
            .on_delta_stream_closed(self.core.ctx.id, self.core.ctx.node.as_ref());
    }
}
