//! The gRPC services: ADS and every per-type discovery service, each a
//! tonic-compatible `tower::Service` registered with
//! `tonic::transport::Server::add_service`.
//!
//! They replace the generated `*DiscoveryServiceServer` wrappers for the
//! streaming RPCs, whose codec would rebuild and re-encode every response
//! per stream and keep a buffer the size of the largest one for the life of
//! the stream. Here requests are decoded by [`RequestStream`], which keeps
//! no buffer between messages, and the response body runs the stream
//! ([`super::stream_body`]): responses are encoded ([`super::wire`])
//! straight into as few data frames as sensible ([`super::frames`]), a
//! head of their own and, for state of the world, the resources field
//! every stream sending the same answer shares. Unary `Fetch*` calls go
//! through tonic's own `Grpc::unary`.

use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::Status;
use tonic_prost::ProstCodec;
use tower_service::Service;

use super::request_stream::{NodeRequest, RequestStream};
use super::Server;
use crate::resource::type_url;

/// The request size limit a service starts with (tonic's default): 4 MiB.
pub const DEFAULT_MAX_DECODING_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The future of every service's response.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

/// The gRPC paths one service answers, and the type its per-type RPCs serve.
struct Routes {
    /// `None` for ADS, whose requests name their type.
    type_url: Option<&'static str>,
    sotw: Option<&'static str>,
    delta: Option<&'static str>,
    fetch: Option<&'static str>,
}

/// What every service holds: the server and its limits.
#[derive(Clone)]
struct ServiceCore {
    server: Server,
    max_decoding_message_size: usize,
}

impl ServiceCore {
    fn new(server: &Server) -> Self {
        ServiceCore {
            server: server.clone(),
            max_decoding_message_size: DEFAULT_MAX_DECODING_MESSAGE_SIZE,
        }
    }

    fn call<B>(&self, routes: &Routes, request: http::Request<B>) -> ResponseFuture
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError> + Send + 'static,
    {
        let path = Some(request.uri().path());
        let response = if path == routes.sotw {
            self.stream(request, |server, requests| {
                server.open_sotw(requests, routes.type_url)
            })
        } else if path == routes.delta {
            self.stream(request, |server, requests| {
                server.open_delta(requests, routes.type_url)
            })
        } else if let (true, Some(type_url)) = (path == routes.fetch, routes.type_url) {
            return self.fetch(request, type_url);
        } else {
            trailers_only(Status::unimplemented(format!(
                "unknown method {}",
                request.uri().path()
            )))
        };
        Box::pin(ready(Ok(response)))
    }

    /// Opens a bidirectional stream with `open`, which returns the body that
    /// runs it; a refusal (the open callback's error, shutdown) is answered
    /// trailers-only.
    fn stream<B, Req>(
        &self,
        request: http::Request<B>,
        open: impl FnOnce(&Server, RequestStream<Req>) -> Result<tonic::body::Body, Status>,
    ) -> http::Response<tonic::body::Body>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError> + Send + 'static,
        Req: NodeRequest,
    {
        if let Err(status) = check_encoding(request.headers()) {
            return trailers_only(status);
        }
        let requests = RequestStream::new(
            tonic::body::Body::new(request.into_body()),
            self.max_decoding_message_size,
        );
        match open(&self.server, requests) {
            Ok(body) => {
                let mut response = http::Response::new(body);
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/grpc"),
                );
                response
            }
            Err(status) => trailers_only(status),
        }
    }

    /// A unary fetch, through tonic's own unary handling.
    fn fetch<B>(&self, request: http::Request<B>, type_url: &'static str) -> ResponseFuture
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError> + Send + 'static,
    {
        let method = Fetch {
            server: self.server.clone(),
            type_url,
        };
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(ProstCodec::<DiscoveryResponse, DiscoveryRequest>::default())
                .max_decoding_message_size(limit);
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// Requests must be uncompressed: no compression is enabled (as the
/// generated services, which answer others with `UNIMPLEMENTED`).
fn check_encoding(headers: &http::HeaderMap) -> Result<(), Status> {
    match headers.get("grpc-encoding") {
        None => Ok(()),
        Some(value) if value == "identity" => Ok(()),
        Some(other) => {
            let mut status = Status::unimplemented(format!(
                "Content is compressed with `{}` which isn't supported",
                String::from_utf8_lossy(other.as_bytes())
            ));
            status.metadata_mut().insert(
                "grpc-accept-encoding",
                tonic::metadata::MetadataValue::from_static("identity"),
            );
            Err(status)
        }
    }
}

/// A response carrying only a status, in its headers.
fn trailers_only(status: Status) -> http::Response<tonic::body::Body> {
    status.into_http()
}

/// The unary `Fetch*` method of a per-type service.
struct Fetch {
    server: Server,
    type_url: &'static str,
}

impl UnaryService<DiscoveryRequest> for Fetch {
    type Response = DiscoveryResponse;
    type Future = Ready<Result<tonic::Response<DiscoveryResponse>, Status>>;

    fn call(&mut self, request: tonic::Request<DiscoveryRequest>) -> Self::Future {
        ready(self.server.fetch(request.into_inner(), self.type_url))
    }
}

/// `Some` gRPC path of a method, or `None` when the service has no such
/// method.
macro_rules! path {
    ($service:literal) => {
        None
    };
    ($service:literal, $method:literal) => {
        Some(concat!("/", $service, "/", $method))
    };
}

/// Defines each service: its type, its name, the `Server` method that
/// returns it, and the dispatch of its gRPC paths.
macro_rules! xds_services {
    ($(
        $(#[$doc:meta])*
        $method:ident -> $Service:ident {
            name: $name:literal,
            type_url: $type_url:expr,
            $(sotw: $sotw:literal,)?
            delta: $delta:literal,
            $(fetch: $fetch:literal,)?
        }
    )*) => {
        impl Server {$(
            $(#[$doc])*
            pub fn $method(&self) -> $Service {
                $Service(ServiceCore::new(self))
            }
        )*

            /// ADS and every per-type discovery service at once, for
            /// `tonic::transport::Server::add_routes` (each with the default
            /// request size limit).
            ///
            /// ```no_run
            /// # use xds_control_plane::{IdHash, Server, SnapshotCache};
            /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
            /// let server = Server::new(SnapshotCache::new(true, IdHash), ());
            /// tonic::transport::Server::builder()
            ///     .add_routes(server.discovery_routes())
            ///     .serve("127.0.0.1:18000".parse()?)
            ///     .await?;
            /// # Ok(()) }
            /// ```
            pub fn discovery_routes(&self) -> tonic::service::Routes {
                let mut routes = tonic::service::RoutesBuilder::default();
                $(routes.add_service(self.$method());)*
                routes.routes()
            }
        }

        $(
            $(#[$doc])*
            ///
            #[doc = concat!(
                "Obtained from [`Server::", stringify!($method), "`]; register it with ",
                "`tonic::transport::Server::add_service`."
            )]
            #[derive(Clone)]
            pub struct $Service(ServiceCore);

            impl $Service {
                /// Limits the size of a decoded request message (default
                /// [`DEFAULT_MAX_DECODING_MESSAGE_SIZE`], 4 MiB). A larger
                /// one ends its stream with `OUT_OF_RANGE`.
                #[must_use]
                pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
                    self.0.max_decoding_message_size = limit;
                    self
                }
            }

            impl NamedService for $Service {
                const NAME: &'static str = $name;
            }

            impl<B> Service<http::Request<B>> for $Service
            where
                B: http_body::Body<Data = Bytes> + Send + 'static,
                B::Error: Into<BoxError> + Send + 'static,
            {
                type Response = http::Response<tonic::body::Body>;
                type Error = Infallible;
                type Future = ResponseFuture;

                fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                    Poll::Ready(Ok(()))
                }

                fn call(&mut self, request: http::Request<B>) -> ResponseFuture {
                    const ROUTES: Routes = Routes {
                        type_url: $type_url,
                        sotw: path!($name $(, $sotw)?),
                        delta: path!($name, $delta),
                        fetch: path!($name $(, $fetch)?),
                    };
                    self.0.call(&ROUTES, request)
                }
            }

            impl fmt::Debug for $Service {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.debug_struct(stringify!($Service))
                        .field("max_decoding_message_size", &self.0.max_decoding_message_size)
                        .finish_non_exhaustive()
                }
            }
        )*
    };
}

xds_services! {
    /// The aggregated discovery service (ADS, state of the world and delta),
    /// ready to register.
    ads_service -> AdsService {
        name: "envoy.service.discovery.v3.AggregatedDiscoveryService",
        type_url: None,
        sotw: "StreamAggregatedResources",
        delta: "DeltaAggregatedResources",
    }
    /// The cluster discovery service (CDS), ready to register.
    cds_service -> CdsService {
        name: "envoy.service.cluster.v3.ClusterDiscoveryService",
        type_url: Some(type_url::CLUSTER),
        sotw: "StreamClusters",
        delta: "DeltaClusters",
        fetch: "FetchClusters",
    }
    /// The endpoint discovery service (EDS), ready to register.
    eds_service -> EdsService {
        name: "envoy.service.endpoint.v3.EndpointDiscoveryService",
        type_url: Some(type_url::ENDPOINT),
        sotw: "StreamEndpoints",
        delta: "DeltaEndpoints",
        fetch: "FetchEndpoints",
    }
    /// The listener discovery service (LDS), ready to register.
    lds_service -> LdsService {
        name: "envoy.service.listener.v3.ListenerDiscoveryService",
        type_url: Some(type_url::LISTENER),
        sotw: "StreamListeners",
        delta: "DeltaListeners",
        fetch: "FetchListeners",
    }
    /// The route discovery service (RDS), ready to register.
    rds_service -> RdsService {
        name: "envoy.service.route.v3.RouteDiscoveryService",
        type_url: Some(type_url::ROUTE),
        sotw: "StreamRoutes",
        delta: "DeltaRoutes",
        fetch: "FetchRoutes",
    }
    /// The scoped route discovery service (SRDS), ready to register.
    srds_service -> SrdsService {
        name: "envoy.service.route.v3.ScopedRoutesDiscoveryService",
        type_url: Some(type_url::SCOPED_ROUTE),
        sotw: "StreamScopedRoutes",
        delta: "DeltaScopedRoutes",
        fetch: "FetchScopedRoutes",
    }
    /// The secret discovery service (SDS), ready to register.
    sds_service -> SdsService {
        name: "envoy.service.secret.v3.SecretDiscoveryService",
        type_url: Some(type_url::SECRET),
        sotw: "StreamSecrets",
        delta: "DeltaSecrets",
        fetch: "FetchSecrets",
    }
    /// The runtime discovery service (RTDS), ready to register.
    rtds_service -> RtdsService {
        name: "envoy.service.runtime.v3.RuntimeDiscoveryService",
        type_url: Some(type_url::RUNTIME),
        sotw: "StreamRuntime",
        delta: "DeltaRuntime",
        fetch: "FetchRuntime",
    }
    /// The extension config discovery service (ECDS), ready to register.
    ecds_service -> EcdsService {
        name: "envoy.service.extension.v3.ExtensionConfigDiscoveryService",
        type_url: Some(type_url::EXTENSION_CONFIG),
        sotw: "StreamExtensionConfigs",
        delta: "DeltaExtensionConfigs",
        fetch: "FetchExtensionConfigs",
    }
    /// The locality endpoint discovery service (LEDS, delta only), ready to
    /// register.
    leds_service -> LedsService {
        name: "envoy.service.endpoint.v3.LocalityEndpointDiscoveryService",
        type_url: Some(type_url::LB_ENDPOINT),
        delta: "DeltaLocalityEndpoints",
    }
    /// The virtual host discovery service (VHDS, delta only), ready to
    /// register.
    vhds_service -> VhdsService {
        name: "envoy.service.route.v3.VirtualHostDiscoveryService",
        type_url: Some(type_url::VIRTUAL_HOST),
        delta: "DeltaVirtualHosts",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{IdHash, Snapshot, SnapshotCache};
    use crate::server::{Callbacks, StreamId};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use http_body::Body as _;
    use http_body::Frame;
    use prost::Message;
    use std::future::poll_fn;
    use tokio::sync::mpsc;

    /// A request body fed by a channel, one data frame per message.
    struct RequestBody(mpsc::Receiver<Bytes>);

    impl http_body::Body for RequestBody {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|m| m.map(|m| Ok(Frame::data(m))))
        }
    }

    fn framed(message: &impl Message) -> Bytes {
        let body = message.encode_to_vec();
        let mut frame = vec![0];
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        frame.into()
    }

    fn cds_request(names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            node: Some(Node {
                id: "n1".into(),
                ..Default::default()
            }),
            type_url: type_url::CLUSTER.into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Refuses requests naming `bad`, with a message that needs encoding.
    struct RefuseBad;
    const REFUSAL: &str = "bad % request: ünïcode\r\n\"next\" line";
    impl Callbacks for RefuseBad {
        fn on_stream_request(&self, _: StreamId, r: &DiscoveryRequest) -> Result<(), Status> {
            if r.resource_names.iter().any(|n| n == "bad") {
                return Err(Status::invalid_argument(REFUSAL));
            }
            Ok(())
        }
    }

    fn server() -> Server {
        let cache = SnapshotCache::new(false, IdHash);
        let snapshot = Snapshot::builder("v1")
            .clusters([Cluster {
                name: "c1".into(),
                ..Default::default()
            }])
            .build()
            .unwrap();
        cache.set_snapshot("n1", snapshot);
        Server::new(cache, RefuseBad)
    }

    /// Opens an ADS stream on the raw service: the request sender and the
    /// response.
    async fn open(
        service: &mut AdsService,
    ) -> (mpsc::Sender<Bytes>, http::Response<tonic::body::Body>) {
        let (tx, rx) = mpsc::channel(4);
        let request = http::Request::builder()
            .method("POST")
            .uri("/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources")
            .header("content-type", "application/grpc")
            .body(RequestBody(rx))
            .unwrap();
        (tx, service.call(request).await.unwrap())
    }

    async fn next_frame(body: &mut tonic::body::Body) -> Frame<Bytes> {
        let frame = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)),
        )
        .await
        .expect("a frame in time");
        frame.expect("a frame").expect("no body error")
    }

    #[tokio::test]
    async fn messages_go_out_framed_then_ok_trailers() {
        let mut service = server().ads_service();
        let (tx, response) = open(&mut service).await;
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let mut body = response.into_body();
        tx.send(framed(&cds_request(&[]))).await.unwrap();
        let data = next_frame(&mut body).await.into_data().expect("data");
        let len = u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize;
        assert_eq!((data[0], len), (0, data.len() - 5));
        let message = DiscoveryResponse::decode(&data[5..]).unwrap();
        assert_eq!(
            (message.version_info.as_str(), message.resources.len()),
            ("v1", 1)
        );
        // The client half-closes: the stream ends with OK.
        drop(tx);
        let trailers = next_frame(&mut body)
            .await
            .into_trailers()
            .expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        assert!(!trailers.contains_key("grpc-message"));
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn an_error_ends_the_stream_with_percent_encoded_trailers() {
        let mut service = server().ads_service();
        let (tx, response) = open(&mut service).await;
        let mut body = response.into_body();
        tx.send(framed(&cds_request(&["bad"]))).await.unwrap();
        let trailers = next_frame(&mut body)
            .await
            .into_trailers()
            .expect("trailers");
        assert_eq!(trailers["grpc-status"], "3");
        let encoded = trailers["grpc-message"].to_str().expect("ASCII");
        assert!(encoded.bytes().all(|b| (0x20..0x7f).contains(&b)));
        let status = Status::from_header_map(&trailers).unwrap();
        assert_eq!(status.message(), REFUSAL);
    }

    #[tokio::test]
    async fn oversized_requests_end_the_stream_out_of_range() {
        let mut service = server().ads_service().max_decoding_message_size(64);
        let (tx, response) = open(&mut service).await;
        let mut body = response.into_body();
        tx.send(framed(&cds_request(&["x"; 20]))).await.unwrap();
        let trailers = next_frame(&mut body)
            .await
            .into_trailers()
            .expect("trailers");
        assert_eq!(
            trailers["grpc-status"],
            (tonic::Code::OutOfRange as i32).to_string()
        );
    }

    #[tokio::test]
    async fn unknown_methods_and_refusals_are_trailers_only() {
        let server = server();
        let mut ads = server.ads_service();
        for path in [
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/FetchAnything",
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamClusters",
        ] {
            let request = http::Request::builder()
                .uri(path)
                .body(tonic::body::Body::empty())
                .unwrap();
            let response = ads.call(request).await.unwrap();
            assert_eq!(response.headers()["grpc-status"], "12", "{path}");
            assert!(response.body().is_end_stream());
        }
        // A compressed request stream: no compression is enabled.
        let request = http::Request::builder()
            .uri("/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources")
            .header("grpc-encoding", "gzip")
            .body(tonic::body::Body::empty())
            .unwrap();
        let response = ads.call(request).await.unwrap();
        assert_eq!(response.headers()["grpc-status"], "12");
        // After shutdown, new streams are refused.
        server.shutdown();
        let (_tx, response) = open(&mut ads).await;
        assert_eq!(
            response.headers()["grpc-status"],
            (tonic::Code::Unavailable as i32).to_string()
        );
        assert!(response.body().is_end_stream());
    }

    #[test]
    fn service_names_are_the_generated_ones() {
        use envoy_types::pb::envoy::service as s;
        let server = server();
        fn name<S: NamedService>(_: &S) -> &'static str {
            S::NAME
        }
        let pairs = [
            (
                name(&server.ads_service()),
                s::discovery::v3::aggregated_discovery_service_server::SERVICE_NAME,
            ),
            (
                name(&server.cds_service()),
                s::cluster::v3::cluster_discovery_service_server::SERVICE_NAME,
            ),
            (
                name(&server.eds_service()),
                s::endpoint::v3::endpoint_discovery_service_server::SERVICE_NAME,
            ),
            (
                name(&server.lds_service()),
                s::listener::v3::listener_discovery_service_server::SERVICE_NAME,
            ),
            (
                name(&server.rds_service()),
                s::route::v3::route_discovery_service_server::SERVICE_NAME,
            ),
            (
                name(&server.srds_service()),
                s::route::v3::scoped_routes_discovery_service_server::SERVICE_NAME,
            ),
            (
                name(&server.sds_service()),
                s::secret::v3::secret_discovery_service_server::SERVICE_NAME,
            ),
            (
                name(&server.rtds_service()),
                s::runtime::v3::runtime_discovery_service_server::SERVICE_NAME,
            ),
            (
                name(&server.ecds_service()),
                s::extension::v3::extension_config_discovery_service_server::SERVICE_NAME,
            ),
            (
                name(&server.leds_service()),
                s::endpoint::v3::locality_endpoint_discovery_service_server::SERVICE_NAME,
            ),
            (
                name(&server.vhds_service()),
                s::route::v3::virtual_host_discovery_service_server::SERVICE_NAME,
            ),
        ];
        for (ours, generated) in pairs {
            assert_eq!(ours, generated);
        }
    }
}
