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

/// A `Server` on a free 127.0.0.1 port with every service registered;
/// stops when dropped.
pub struct Served {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    pub async fn start(server: &Server) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = tonic::transport::Server::builder().add_routes(server.discovery_routes());
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Served { addr, task }
    }

    /// Serves `cache` with recording callbacks.
    pub async fn cache(cache: impl xds_control_plane::Cache) -> Served {
        Served::start(&Server::new(cache, Arc::new(Recorder::default()))).await
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    pub async fn ads(&self) -> XdsStream {
        XdsStream::ads(self.channel().await).await
    }

    pub async fn delta_ads(&self) -> DeltaStream {
        DeltaStream::ads(self.channel().await).await
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Our server on a SnapshotCache, with recording callbacks.
pub struct TestServer {
    pub served: Served,
    pub cache: SnapshotCache,
    pub server: Server,
    pub recorder: Arc<Recorder>,
}

impl std::ops::Deref for TestServer {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.served
    }
}

impl TestServer {
    pub async fn start(ads: bool) -> TestServer {
        Self::start_with(ads, ServerOptions::default()).await
    }

    pub async fn start_with(ads: bool, options: ServerOptions) -> TestServer {
        let cache = SnapshotCache::new(ads, IdHash);
        let recorder = Arc::new(Recorder::default());
        let server = Server::with_options(cache.clone(), Arc::clone(&recorder), options);
        TestServer {
            served: Served::start(&server).await,
            cache,
            server,
            recorder,
        }
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

// ---------------------------------------------------------------------------
// Robustness helpers (tests/robust_*.rs): measuring the process, cheap
// counting callbacks, and serving a `Server` without the recorder.
// ---------------------------------------------------------------------------

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting live heap bytes and allocations. A test
/// binary installs it with
/// `#[global_allocator] static ALLOC: CountingAlloc = CountingAlloc;`
/// and reads the counts with [`live_heap`].
pub struct CountingAlloc;

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new
    }
}

/// Live heap bytes and allocations, as counted by [`CountingAlloc`] (zero
/// in a binary that does not install it).
pub fn live_heap() -> (isize, isize) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_ALLOCS.load(Ordering::Relaxed),
    )
}

/// CPU time (user + system) this process has used, from /proc/self/stat
/// (in USER_HZ = 100 ticks per second).
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Resident memory of this process in KiB (VmRSS in /proc/self/status).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Callbacks that only count: no per-message storage, so they do not grow
/// with traffic.
#[derive(Default)]
pub struct Counts {
    pub sotw_opened: AtomicUsize,
    pub sotw_closed: AtomicUsize,
    pub delta_opened: AtomicUsize,
    pub delta_closed: AtomicUsize,
    pub requests: AtomicUsize,
    pub responses: AtomicUsize,
    pub nacks: AtomicUsize,
}

impl Counts {
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
    /// Streams opened and not yet reported closed, both protocols.
    pub fn open_streams(&self) -> usize {
        Self::get(&self.sotw_opened) + Self::get(&self.delta_opened)
            - Self::get(&self.sotw_closed)
            - Self::get(&self.delta_closed)
    }
    /// Polls until every opened stream was reported closed.
    pub async fn wait_all_closed(&self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        while self.open_streams() != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} streams still open: sotw {}/{} closed, delta {}/{} closed",
                self.open_streams(),
                Self::get(&self.sotw_closed),
                Self::get(&self.sotw_opened),
                Self::get(&self.delta_closed),
                Self::get(&self.delta_opened),
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Callbacks for Counts {
    fn on_stream_open(&self, _stream: StreamId, _type_url: &str) -> Result<(), Status> {
        self.sotw_opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_stream_closed(&self, _stream: StreamId, _node: Option<&Node>) {
        self.sotw_closed.fetch_add(1, Ordering::SeqCst);
    }
    fn on_stream_request(
        &self,
        _stream: StreamId,
        _request: &DiscoveryRequest,
    ) -> Result<(), Status> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_stream_response(
        &self,
        _stream: StreamId,
        _request: &DiscoveryRequest,
        _response: &SentResponse<'_>,
    ) {
        self.responses.fetch_add(1, Ordering::SeqCst);
    }
    fn on_stream_nack(&self, _stream: StreamId, _nack: &Nack<'_>) {
        self.nacks.fetch_add(1, Ordering::SeqCst);
    }
    fn on_delta_stream_open(&self, _stream: StreamId, _type_url: &str) -> Result<(), Status> {
        self.delta_opened.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_delta_stream_closed(&self, _stream: StreamId, _node: Option<&Node>) {
        self.delta_closed.fetch_add(1, Ordering::SeqCst);
    }
    fn on_stream_delta_request(
        &self,
        _stream: StreamId,
        _request: &DeltaDiscoveryRequest,
    ) -> Result<(), Status> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn on_stream_delta_response(
        &self,
        _stream: StreamId,
        _request: &DeltaDiscoveryRequest,
        _response: &SentDeltaResponse<'_>,
    ) {
        self.responses.fetch_add(1, Ordering::SeqCst);
    }
}

/// Like [`Served`], but stoppable gracefully: every service of `server` on
/// a free 127.0.0.1 port until [`Serving::stop`] (as `serve_with_shutdown`)
/// or drop (abort).
pub struct Serving {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub async fn serve(server: &Server) -> Serving {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .add_service(server.ads_service())
        .add_service(server.cds_service())
        .add_service(server.eds_service())
        .add_service(server.lds_service())
        .add_service(server.rds_service());
    let task = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Serving {
        addr,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Serving {
    /// A new connection to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A state-of-the-world ADS stream on a new connection.
    pub async fn ads(&self) -> XdsStream {
        XdsStream::ads(self.channel().await).await
    }

    /// A delta ADS stream on a new connection.
    pub async fn delta_ads(&self) -> DeltaStream {
        DeltaStream::ads(self.channel().await).await
    }

    /// Stops accepting and waits (at most `patience`) for open connections
    /// to finish, as `serve_with_shutdown` does; returns whether they did.
    pub async fn stop(mut self, patience: Duration) -> bool {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        let abort = task.abort_handle();
        match tokio::time::timeout(patience, task).await {
            Ok(joined) => {
                joined.unwrap();
                true
            }
            Err(_) => {
                abort.abort();
                false
            }
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl XdsStream {
    /// A state-of-the-world ADS stream over `channel`.
    pub async fn ads(channel: Channel) -> XdsStream {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        XdsStream::open(
            |requests| async move { client.stream_aggregated_resources(requests).await },
        )
        .await
    }

    /// Half-closes the stream (drops the request sender), keeping the
    /// response side.
    pub fn half_close(self) -> Streaming<DiscoveryResponse> {
        self.rx
    }
}

impl DeltaStream {
    /// A delta ADS stream over `channel`.
    pub async fn ads(channel: Channel) -> DeltaStream {
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        DeltaStream::open(
            |requests| async move { client.delta_aggregated_resources(requests).await },
        )
        .await
    }

    /// Half-closes the stream (drops the request sender), keeping the
    /// response side.
    pub fn half_close(self) -> Streaming<DeltaDiscoveryResponse> {
        self.rx
    }

    /// Rejects a response (NACK) without changing the subscription.
    pub async fn nack(&self, node: &str, response: &DeltaDiscoveryResponse) {
        let mut req = delta_request(node, &response.type_url, &[], &[]);
        req.response_nonce = response.nonce.clone();
        req.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad config".into(),
            details: vec![],
        });
        self.send(req).await;
    }
}
