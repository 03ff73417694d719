//! The REST-JSON xDS gateway (feature `rest`): Envoy's `REST` api_type,
//! which polls `POST /v3/discovery:<type>` with a JSON `DiscoveryRequest`
//! every `refresh_delay` and takes a JSON `DiscoveryResponse` back.
//!
//! [`RestGateway`] answers those requests from a [`Server`]'s cache through
//! the same fetch as the unary `Fetch*` RPCs ([`Callbacks::on_fetch_request`]
//! and [`on_fetch_response`](Callbacks::on_fetch_response) included). It is
//! a `tower` service: mount it on the tonic server that serves the gRPC
//! services (it is routed by the `/v3/` prefix; let the server accept
//! HTTP/1.1, which Envoy's REST clusters speak by default):
//!
//! ```no_run
//! use xds_control_plane::{IdHash, Server, SnapshotCache};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = SnapshotCache::new(false, IdHash);
//! let server = Server::new(cache.clone(), ());
//! tonic::transport::Server::builder()
//!     .accept_http1(true)
//!     .add_service(server.cds_service())
//!     .add_service(server.rest_gateway())
//!     .serve("127.0.0.1:18000".parse()?)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! or on any other HTTP server taking a `tower::Service` (hyper, axum).
//!
//! | Answer | When |
//! |---|---|
//! | 200, JSON `DiscoveryResponse` | the resources of the path's type, all or those named |
//! | 304, no body | the request's `version_info` is the current version |
//! | 400 | unreadable body, invalid JSON, a `type_url` other than the path's |
//! | 404 | a path that is no discovery type, or nothing to serve this node (no snapshot, no cache routed) |
//! | 405 | a method other than `POST` |
//! | 413 | a body larger than [`max_request_size`](RestGateway::max_request_size) |
//! | 500 | a response that cannot be rendered as JSON (an `Any` of a type Envoy's API does not define) |
//! | per status | [`Callbacks::on_fetch_request`] refused the fetch: its gRPC code mapped to HTTP as gRPC-gateway does (`PERMISSION_DENIED` is 403, ...) |
//!
//! Errors come with a one-line `text/plain` explanation.

mod json;

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tonic::server::NamedService;
use tonic::Code;
use tower_service::Service;

pub use json::{
    descriptor_pool, discovery_request_from_json, discovery_request_to_json,
    discovery_response_from_json, discovery_response_to_json, JsonError,
};

use super::fetch::FetchFailure;
use super::{ResponseFuture, Server, DEFAULT_MAX_DECODING_MESSAGE_SIZE};
use crate::cache::FetchError;
use crate::resource::type_url;
#[cfg(doc)]
use crate::server::Callbacks;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The discovery paths and the type each serves: one per per-type service
/// with a `Fetch*` RPC. VHDS and LEDS are delta-only, so they have none.
pub const PATHS: [(&str, &str); 8] = [
    ("/v3/discovery:clusters", type_url::CLUSTER),
    ("/v3/discovery:endpoints", type_url::ENDPOINT),
    ("/v3/discovery:listeners", type_url::LISTENER),
    ("/v3/discovery:routes", type_url::ROUTE),
    ("/v3/discovery:scoped-routes", type_url::SCOPED_ROUTE),
    ("/v3/discovery:secrets", type_url::SECRET),
    ("/v3/discovery:runtime", type_url::RUNTIME),
    (
        "/v3/discovery:extension_configs",
        type_url::EXTENSION_CONFIG,
    ),
];

/// The type URL a request path serves, if any. The path is cleaned first
/// (repeated and trailing slashes, `.` and `..` segments), as
/// go-control-plane does.
///
/// ```
/// use xds_control_plane::server::rest::type_url_of_path;
///
/// assert_eq!(
///     type_url_of_path("/v3/discovery:clusters"),
///     Some("type.googleapis.com/envoy.config.cluster.v3.Cluster")
/// );
/// assert_eq!(type_url_of_path("/v3/discovery:virtualhosts"), None);
/// ```
pub fn type_url_of_path(path: &str) -> Option<&'static str> {
    let cleaned = clean_path(path);
    PATHS
        .iter()
        .find(|(p, _)| *p == cleaned)
        .map(|(_, type_url)| *type_url)
}

/// `path` with empty and `.` segments dropped and `..` applied.
fn clean_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

/// The REST-JSON xDS gateway of a [`Server`]; see the [module
/// documentation](self). Cheap to clone.
#[derive(Clone)]
pub struct RestGateway {
    server: Server,
    max_request_size: usize,
}

impl Server {
    /// A REST-JSON gateway answering from this server's cache, calling its
    /// fetch callbacks. Requests are limited to
    /// [`DEFAULT_MAX_DECODING_MESSAGE_SIZE`] bytes, like gRPC requests.
    pub fn rest_gateway(&self) -> RestGateway {
        RestGateway {
            server: self.clone(),
            max_request_size: DEFAULT_MAX_DECODING_MESSAGE_SIZE,
        }
    }
}

impl RestGateway {
    /// Sets the largest request body accepted; larger ones get 413.
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = bytes;
        self
    }

    /// Answers one HTTP request (what the `tower` service does).
    pub async fn handle<B>(&self, request: http::Request<B>) -> http::Response<tonic::body::Body>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        match self.answer(request).await {
            Ok(response) => response,
            Err((status, message)) => {
                tracing::debug!(%status, %message, "REST discovery request failed");
                text(status, message)
            }
        }
    }

    async fn answer<B>(
        &self,
        request: http::Request<B>,
    ) -> Result<http::Response<tonic::body::Body>, (StatusCode, String)>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let path = request.uri().path();
        let served = type_url_of_path(path).ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("no discovery endpoint at {path}"),
            )
        })?;
        if request.method() != Method::POST {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} not allowed: discovery requests are POSTed",
                    request.method()
                ),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return Ok(response);
        }
        let body = self.read_body(request).await?;
        let text_body = std::str::from_utf8(&body)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("body is not UTF-8: {e}")))?;
        if text_body.trim().is_empty() {
            return Err((StatusCode::BAD_REQUEST, "empty body".into()));
        }
        let discovery = discovery_request_from_json(text_body).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("cannot parse JSON body: {e}"),
            )
        })?;

        let response = match self.server.fetch_response(discovery, served) {
            Ok(response) => response,
            Err(FetchFailure::Cache(FetchError::UpToDate)) => {
                // Envoy keeps what it has; a 304 has no body at all.
                let mut response = http::Response::new(tonic::body::Body::empty());
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                return Ok(response);
            }
            Err(FetchFailure::Cache(e)) => {
                return Err((StatusCode::NOT_FOUND, format!("nothing to fetch: {e}")))
            }
            Err(FetchFailure::Refused(status)) => {
                return Err((
                    http_status_of(status.code()),
                    format!("fetch refused: {}", status.message()),
                ))
            }
        };
        let json = discovery_response_to_json(&response).map_err(|e| {
            tracing::warn!(error = %e, type_url = served, "REST discovery response not renderable");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        })?;
        let mut http_response = http::Response::new(full(json.into()));
        http_response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(http_response)
    }

    /// The whole body, at most `max_request_size` bytes of it.
    async fn read_body<B>(&self, request: http::Request<B>) -> Result<Bytes, (StatusCode, String)>
    where
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let limit = self.max_request_size;
        let too_large = || {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {limit} bytes"),
            )
        };
        // Refuse a declared oversize body without reading any of it.
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        match Limited::new(request.into_body(), limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
            Err(e) => Err((StatusCode::BAD_REQUEST, format!("cannot read body: {e}"))),
        }
    }
}

impl std::fmt::Debug for RestGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestGateway")
            .field("max_request_size", &self.max_request_size)
            .finish_non_exhaustive()
    }
}

impl<B> Service<http::Request<B>> for RestGateway
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let gateway = self.clone();
        Box::pin(async move { Ok(gateway.handle(request).await) })
    }
}

/// Routes `/v3/...` to the gateway on a tonic server (tonic routes by
/// `/{NAME}/`).
impl NamedService for RestGateway {
    const NAME: &'static str = "v3";
}

/// A complete body of `bytes`.
fn full(bytes: Bytes) -> tonic::body::Body {
    tonic::body::Body::new(Full::new(bytes))
}

/// A `text/plain` response of one line.
fn text(status: StatusCode, message: String) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(full(format!("{message}\n").into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The HTTP status of a gRPC code, as gRPC-gateway maps them.
fn http_status_of(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        // nginx's "client closed request", as gRPC-gateway uses.
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_like_go() {
        for path in [
            "/v3/discovery:clusters",
            "/v3/discovery:clusters/",
            "//v3//discovery:clusters",
            "/v3/./discovery:clusters",
            "/v3/x/../discovery:clusters",
        ] {
            assert_eq!(type_url_of_path(path), Some(type_url::CLUSTER), "{path}");
        }
        for path in [
            "/",
            "/v3",
            "/v3/discovery:virtualhosts",
            "/v2/discovery:clusters",
        ] {
            assert_eq!(type_url_of_path(path), None, "{path}");
        }
    }

    #[test]
    fn every_fetch_type_has_a_path() {
        let types: std::collections::BTreeSet<&str> = PATHS.iter().map(|(_, t)| *t).collect();
        assert_eq!(types.len(), PATHS.len());
        assert!(!types.contains(type_url::VIRTUAL_HOST));
    }

    #[test]
    fn grpc_codes_map_to_http() {
        assert_eq!(
            http_status_of(Code::PermissionDenied),
            StatusCode::FORBIDDEN
        );
        assert_eq!(http_status_of(Code::Cancelled).as_u16(), 499);
        assert_eq!(
            http_status_of(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
