//! One-off fetches: one request, the current resources, no stream. Served
//! as the unary `Fetch*` RPCs and, with the `rest` feature, by the REST
//! gateway; both share [`Server::fetch_response`] and differ only in how
//! they report a failure.

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tonic::{Response, Status};

use super::Server;
use crate::cache::{EncodedResource, FetchError};

/// Why a fetch was not answered with resources.
#[derive(Debug)]
pub(crate) enum FetchFailure {
    /// The request was refused before reaching the cache: its type URL
    /// does not match the one served, or `on_fetch_request` refused it.
    Refused(Status),
    /// The cache had nothing to answer (or the client is up to date).
    Cache(FetchError),
}

impl FetchFailure {
    /// The gRPC status of a unary `Fetch*` call: a client that already has
    /// the current version gets `FAILED_PRECONDITION` (the REST gateway's
    /// 304); a node with no snapshot, or a request no cache is routed for,
    /// gets `NOT_FOUND`; a type the cache does not hold, `INVALID_ARGUMENT`.
    pub(crate) fn into_status(self, request_version: &str) -> Status {
        match self {
            FetchFailure::Refused(status) => status,
            FetchFailure::Cache(FetchError::UpToDate) => Status::failed_precondition(format!(
                "version {request_version:?} is current: nothing to fetch"
            )),
            FetchFailure::Cache(e @ (FetchError::NoSnapshot(_) | FetchError::NoRoute(_))) => {
                Status::not_found(e.to_string())
            }
            FetchFailure::Cache(e @ FetchError::UnknownType(_)) => {
                Status::invalid_argument(e.to_string())
            }
        }
    }
}

impl Server {
    /// Answers a unary `Fetch*` call for `served` (the service's type URL).
    pub(crate) fn fetch(
        &self,
        request: DiscoveryRequest,
        served: &str,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let version = request.version_info.clone();
        self.fetch_response(request, served)
            .map(Response::new)
            .map_err(|failure| failure.into_status(&version))
    }

    /// The fetch itself: checks the type URL (an empty one means `served`),
    /// runs `on_fetch_request`, asks the cache, builds the response and
    /// runs `on_fetch_response`.
    pub(crate) fn fetch_response(
        &self,
        mut request: DiscoveryRequest,
        served: &str,
    ) -> Result<DiscoveryResponse, FetchFailure> {
        if request.type_url.is_empty() {
            request.type_url = served.to_string();
        } else if request.type_url != served {
            return Err(FetchFailure::Refused(Status::invalid_argument(format!(
                "type_url {:?} does not match this service, which serves {served}",
                request.type_url
            ))));
        }
        let callbacks = &self.shared.callbacks;
        callbacks
            .on_fetch_request(&request)
            .map_err(FetchFailure::Refused)?;
        let response = self
            .shared
            .cache
            .fetch(&request)
            .map_err(FetchFailure::Cache)?;
        let message = DiscoveryResponse {
            version_info: response.version.to_string(),
            resources: response
                .resources
                .iter()
                .map(EncodedResource::to_sotw_any)
                .collect(),
            type_url: request.type_url.clone(),
            ..Default::default()
        };
        callbacks.on_fetch_response(&request, &message);
        Ok(message)
    }
}
