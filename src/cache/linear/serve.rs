//! `LinearCache` as a [`Cache`]: opening watches and answering fetches.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

use super::super::delta_response::delta_answer;
use super::super::{
    Cache, CacheError, DeltaResponse, DeltaWatchRequest, FetchError, ResponseSink, SotwResponse,
    Subscription, WatchHandle, WatchRequest,
};
use super::resources::sotw_answer;
use super::watches::Watch;
use super::LinearCache;

impl Cache for LinearCache {
    fn create_watch(
        &self,
        request: WatchRequest,
        sink: ResponseSink<SotwResponse>,
    ) -> Result<WatchHandle, CacheError> {
        self.check_type(request.type_url())?;
        let mut state = self.inner.state.lock();
        let answer = sotw_answer(
            &state.resources,
            &state.prefix,
            self.inner.full_state,
            &request,
        );
        match answer {
            Some(answer) => {
                drop(state);
                sink.send(answer.into_response(request));
                Ok(WatchHandle::answered())
            }
            None => Ok(self.hold(&mut state, Watch::Sotw(request, sink))),
        }
    }

    fn create_delta_watch(
        &self,
        request: DeltaWatchRequest,
        sink: ResponseSink<DeltaResponse>,
    ) -> Result<WatchHandle, CacheError> {
        self.check_type(request.type_url())?;
        let mut state = self.inner.state.lock();
        match delta_answer(&state.resources, &request) {
            Some(answer) => {
                drop(state);
                sink.send(answer.into_response(request));
                Ok(WatchHandle::answered())
            }
            None => Ok(self.hold(&mut state, Watch::Delta(request, sink))),
        }
    }

    /// Every subscribed resource (every resource when no name is given),
    /// unless the request already has the cache version.
    fn fetch(&self, request: &DiscoveryRequest) -> Result<SotwResponse, FetchError> {
        if request.type_url != *self.inner.type_url {
            return Err(FetchError::UnknownType(request.type_url.clone()));
        }
        let watch = WatchRequest {
            node: None,
            request: Arc::new(request.clone()),
            rejected_version: None,
            subscription: Arc::new(Subscription::sotw(&request.resource_names, true)),
        };
        let state = self.inner.state.lock();
        if *state.resources.version == *request.version_info {
            return Err(FetchError::UpToDate);
        }
        let answer = state.resources.full_answer(&watch);
        Ok(answer.into_response(watch))
    }
}
