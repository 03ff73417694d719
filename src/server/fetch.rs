//! Unary `Fetch*` RPCs: one request, the current resources, no stream.

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tonic::{Response, Status};

use super::Server;
use crate::cache::{EncodedResource, FetchError};

impl Server {
    /// Answers a fetch for `served` (the service's type URL).
    ///
    /// A client that already has the current version gets
    /// `FAILED_PRECONDITION` (the REST gateway's 304); a node with no
    /// snapshot, or a request no cache is routed for, gets `NOT_FOUND`.
    pub(crate) fn fetch(
        &self,
        mut request: DiscoveryRequest,
        served: &str,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        if request.type_url.is_empty() {
            request.type_url = served.to_string();
        } else if request.type_url != served {
            return Err(Status::invalid_argument(format!(
                "type_url {:?} does not match this service, which serves {served}",
                request.type_url
            )));
        }
        let callbacks = &self.shared.callbacks;
        callbacks.on_fetch_request(&request)?;
        let response = self.shared.cache.fetch(&request).map_err(|e| match e {
            FetchError::UpToDate => Status::failed_precondition(format!(
                "version {:?} is current: nothing to fetch",
                request.version_info
            )),
            FetchError::NoSnapshot(_) | FetchError::NoRoute(_) => Status::not_found(e.to_string()),
            FetchError::UnknownType(_) => Status::invalid_argument(e.to_string()),
        })?;
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
        Ok(Response::new(message))
    }
}
