//! Shared by the wire tests: a server on 127.0.0.1, recording callbacks, and
//! xDS clients driven over real tonic connections.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Channel;
use tonic::{Status, Streaming};
use xds_control_plane::cache::{IdHash, Snapshot, SnapshotCache};
use xds_control_plane::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use xds_control_plane::envoy_types::pb::envoy::config::core::v3::Node;
use xds_control_plane::envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_control_plane::envoy_types::pb::envoy::config::listener::v3::Listener;
use xds_control_plane::envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use xds_control_plane::envoy_types::pb::google::rpc::Status as RpcStatus;
use xds_control_plane::server::{
    Callbacks, Nack, SentDeltaResponse, SentResponse, ServerOptions, StreamId,
};
use xds_control_plane::Server;

/// How long a test waits for something that must happen.
pub const PATIENCE: Duration = Duration::from_secs(5);
/// How long a test watches for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// What the callbacks saw.
#[derive(Default)]
pub struct Recorder {
    pub opened: Mutex<Vec<(StreamId, String)>>,
    pub closed: Mutex<Vec<(StreamId, Option<String>)>>,
    pub requests: Mutex<Vec<DiscoveryRequest>>,
    pub responses: Mutex<Vec<DiscoveryResponse>>,
    pub delta_responses: Mutex<Vec<DeltaDiscoveryResponse>>,
    /// Every stream response as its view describes it: nonce, encoded
    /// size, resource names.
    pub sent: Mutex<Vec<(String, usize, Vec<String>)>>,
    pub nacks: Mutex<Vec<(String, String, String)>>,
    pub fetches: Mutex<Vec<DiscoveryResponse>>,
    /// Refuse streams whose type URL is this.
    pub refuse_type: Mutex<Option<String>>,
}

impl Callbacks for Recorder {
    fn on_stream_open(&self, stream: StreamId, type_url: &str) -> Result<(), Status> {
        self.opened.lock().push((stream, type_url.to_string()));
        if self.refuse_type.lock().as_deref() == Some(type_url) {
            return Err(Status::permission_denied("refused by callback"));
        }
        Ok(())
    }
    fn on_stream_closed(&self, stream: StreamId, node: Option<&Node>) {
        self.closed
            .lock()
            .push((stream, node.map(|n| n.id.clone())));
    }
    fn on_stream_request(
        &self,
        _stream: StreamId,
        request: &DiscoveryRequest,
    ) -> Result<(), Status> {
        self.requests.lock().push(request.clone());
        Ok(())
    }
    fn on_stream_response(
        &self,
        _stream: StreamId,
        _request: &DiscoveryRequest,
        response: &SentResponse<'_>,
    ) {
        self.responses.lock().push(response.to_message());
        self.sent.lock().push((
            response.nonce().to_string(),
            response.encoded_len(),
            response.resource_names().map(str::to_string).collect(),
        ));
    }
    fn on_stream_delta_response(
        &self,
        _stream: StreamId,
        _request: &DeltaDiscoveryRequest,
        response: &SentDeltaResponse<'_>,
    ) {
        self.delta_responses.lock().push(response.to_message());
        self.sent.lock().push((
            response.nonce().to_string(),
            response.encoded_len(),
            response.resource_names().map(str::to_string).collect(),
        ));
    }
    fn on_stream_nack(&self, _stream: StreamId, nack: &Nack<'_>) {
        self.nacks.lock().push((
            nack.type_url.to_string(),
            nack.rejected_version.to_string(),
            nack.error.message.clone(),
        ));
    }
    fn on_delta_stream_open(&self, stream: StreamId, type_url: &str) -> Result<(), Status> {
        self.on_stream_open(stream, type_url)
    }
    fn on_delta_stream_closed(&self, stream: StreamId, node: Option<&Node>) {
        self.on_stream_closed(stream, node)
    }
    fn on_fetch_response(&self, _request: &DiscoveryRequest, response: &DiscoveryResponse) {
        self.fetches.lock().push(response.clone());
    }
}

/// Our server on a free 127.0.0.1 port, every service registered.
pub struct TestServer {
    pub addr: SocketAddr,
    pub cache: SnapshotCache,
    pub server: Server,
    pub recorder: Arc<Recorder>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(ads: bool) -> TestServer {
        Self::start_with(ads, ServerOptions::default()).await
    }

    pub async fn start_with(ads: bool, options: ServerOptions) -> TestServer {
        let cache = SnapshotCache::new(ads, IdHash);
        let recorder = Arc::new(Recorder::default());
        let server = Server::with_options(cache.clone(), Arc::clone(&recorder), options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = tonic::transport::Server::builder()
            .add_service(server.ads_service())
            .add_service(server.cds_service())
            .add_service(server.eds_service())
            .add_service(server.lds_service())
            .add_service(server.rds_service())
            .add_service(server.srds_service())
            .add_service(server.sds_service())
            .add_service(server.rtds_service())
            .add_service(server.ecds_service())
            .add_service(server.leds_service())
            .add_service(server.vhds_service());
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        TestServer {
            addr,
            cache,
            server,
            recorder,
            task,
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn ads(&self) -> XdsStream {
        let mut client = AggregatedDiscoveryServiceClient::new(self.channel().await);
        XdsStream::open(
            |requests| async move { client.stream_aggregated_resources(requests).await },
        )
        .await
    }

    /// Polls until `node` has exactly `n` open watches.
    pub async fn wait_for_watches(&self, node: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = self
                .cache
                .status_info(node)
                .map(|s| s.num_watches)
                .unwrap_or(0);
            if now == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {node} has {now} watches, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One bidirectional xDS stream seen from the client side.
pub struct ClientStream<Req, Resp> {
    tx: mpsc::Sender<Req>,
    pub rx: Streaming<Resp>,
}

/// A state-of-the-world stream.
pub type XdsStream = ClientStream<DiscoveryRequest, DiscoveryResponse>;
/// An incremental (delta) stream.
pub type DeltaStream = ClientStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

impl<Req, Resp: std::fmt::Debug> ClientStream<Req, Resp> {
    /// Opens a stream with any generated client's streaming call.
    pub async fn open<F, Fut>(call: F) -> Self
    where
        F: FnOnce(ReceiverStream<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Streaming<Resp>>, Status>>,
    {
        let (tx, rx) = mpsc::channel(16);
        let response = call(ReceiverStream::new(rx)).await.expect("stream opens");
        ClientStream {
            tx,
            rx: response.into_inner(),
        }
    }

    pub async fn send(&self, request: Req) {
        if self.tx.send(request).await.is_err() {
            panic!("stream is closed");
        }
    }

    /// The next response; fails the test if none comes in time.
    pub async fn recv(&mut self) -> Resp {
        match tokio::time::timeout(PATIENCE, self.rx.message()).await {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => panic!("stream ended"),
            Ok(Err(status)) => panic!("stream failed: {status}"),
            Err(_) => panic!("no response within {PATIENCE:?}"),
        }
    }

    /// The status the stream ends with.
    pub async fn recv_error(&mut self) -> Status {
        match tokio::time::timeout(PATIENCE, self.rx.message()).await {
            Ok(Err(status)) => status,
            Ok(Ok(other)) => panic!("expected an error, got {other:?}"),
            Err(_) => panic!("no error within {PATIENCE:?}"),
        }
    }

    /// Fails the test if a response arrives within [`QUIET`].
    pub async fn expect_silence(&mut self) {
        if let Ok(result) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {result:?}");
        }
    }
}

impl XdsStream {
    /// Acknowledges a response, keeping the same subscription.
    pub async fn ack(&self, node: &str, response: &DiscoveryResponse, names: &[&str]) {
        self.send(request(
            node,
            &response.type_url,
            &response.version_info,
            &response.nonce,
            names,
        ))
        .await;
    }

    /// Rejects a response, reporting the version it still runs.
    pub async fn nack(
        &self,
        node: &str,
        response: &DiscoveryResponse,
        current: &str,
        names: &[&str],
    ) {
        let mut req = request(node, &response.type_url, current, &response.nonce, names);
        req.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad config".into(),
            details: vec![],
        });
        self.send(req).await;
    }
}

pub fn request(
    node: &str,
    type_url: &str,
    version: &str,
    nonce: &str,
    names: &[&str],
) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: node.into(),
            ..Default::default()
        }),
        type_url: type_url.into(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        ..Default::default()
    }
}

pub fn endpoint(name: &str) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        ..Default::default()
    }
}

pub fn listener(name: &str) -> Listener {
    Listener {
        name: name.into(),
        ..Default::default()
    }
}

pub fn route(name: &str) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        ..Default::default()
    }
}

/// A snapshot with these clusters, endpoints, listeners and routes.
pub fn snapshot(
    version: &str,
    clusters: &[&str],
    endpoints: &[&str],
    listeners: &[&str],
    routes: &[&str],
) -> Snapshot {
    Snapshot::builder(version)
        .clusters(clusters.iter().map(|n| cluster(n)))
        .endpoints(endpoints.iter().map(|n| endpoint(n)))
        .listeners(listeners.iter().map(|n| listener(n)))
        .routes(routes.iter().map(|n| route(n)))
        .build()
        .unwrap()
}

/// Names of the resources in a response, decoded from their `Any`s.
pub fn names(response: &DiscoveryResponse) -> Vec<String> {
    use prost::Message;
    use xds_control_plane::resource::type_url;
    response
        .resources
        .iter()
        .map(|any| match any.type_url.as_str() {
            type_url::CLUSTER => Cluster::decode(any.value.as_slice()).unwrap().name,
            type_url::ENDPOINT => {
                ClusterLoadAssignment::decode(any.value.as_slice())
                    .unwrap()
                    .cluster_name
            }
            type_url::LISTENER => Listener::decode(any.value.as_slice()).unwrap().name,
            type_url::ROUTE => {
                RouteConfiguration::decode(any.value.as_slice())
                    .unwrap()
                    .name
            }
            other => panic!("unexpected type {other}"),
        })
        .collect()
}

impl DeltaStream {
    /// Acknowledges a response without changing the subscription.
    pub async fn ack(&self, node: &str, response: &DeltaDiscoveryResponse) {
        let mut req = delta_request(node, &response.type_url, &[], &[]);
        req.response_nonce = response.nonce.clone();
        self.send(req).await;
    }
}

pub fn delta_request(
    node: &str,
    type_url: &str,
    subscribe: &[&str],
    unsubscribe: &[&str],
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: node.into(),
            ..Default::default()
        }),
        type_url: type_url.into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Names of the resources in a delta response, in order.
pub fn delta_names(response: &DeltaDiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(|r| r.name.clone()).collect()
}

impl TestServer {
    pub async fn delta_ads(&self) -> DeltaStream {
        let mut client = AggregatedDiscoveryServiceClient::new(self.channel().await);
        DeltaStream::open(
            |requests| async move { client.delta_aggregated_resources(requests).await },
        )
        .await
    }

    /// Polls until `node` has exactly `n` open delta watches.
    pub async fn wait_for_delta_watches(&self, node: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = self
                .cache
                .status_info(node)
                .map(|s| s.num_delta_watches)
                .unwrap_or(0);
            if now == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {node} has {now} delta watches, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
