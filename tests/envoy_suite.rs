//! The real-Envoy integration suite: our server drives a real Envoy 1.40
//! (found or installed by the harness) through several snapshot versions in
//! every mode — ADS, one gRPC stream per type (xds), delta, delta ADS, xds
//! served by a MuxCache taking EDS from a LinearCache, and REST (Envoy
//! polling our REST-JSON gateway) — and every listener is checked with real
//! traffic after each version.
//!
//! What each version must show:
//! - Envoy accepted it on every resource type (`*.version_text` stats);
//! - every listener (plain and TLS HTTP with RDS and ECDS, scoped routes by
//!   SRDS, TCP proxy) reaches the upstream the generator expects, carrying
//!   the header the version's ECDS filter sets;
//! - the RTDS layers' values show in the admin `/runtime`;
//! - our callbacks saw a response of every type at that version and no NACK.
//!
//! A separate test feeds Envoy a cluster it rejects and checks the NACK is
//! reported, not answered by a resend loop, and that the next good version
//! recovers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, TcpListener as StdTcpListener};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_stream::wrappers::TcpListenerStream;
use xds_control_plane::cache::{Cache, LinearCache, MuxCache};
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use xds_control_plane::resource::type_url;
use xds_control_plane::server::{Callbacks, Nack, SentDeltaResponse, SentResponse, StreamId};
use xds_control_plane::test_support::envoy::{
    http_get, https_get, Bootstrap, EnvoyOptions, EnvoyProcess, HttpResponse, ResourceKind,
    TestCerts, Upstream, DEFAULT_NODE_ID, REST_REFRESH_DELAY,
};
use xds_control_plane::test_support::{
    GeneratedResources, ListenerExpectation, TestResources, TlsMaterial, XdsMode,
};
use xds_control_plane::{IdHash, Server, SnapshotCache};

/// How long Envoy may take to apply a version on every type. Kept below
/// Envoy's 15 s `initial_fetch_timeout`, after which a warming listener goes
/// active anyway: a request the server wrongly holds must fail the test,
/// not be papered over by that timeout.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a listener may take to serve as expected once its version is
/// applied (a replaced listener warms, then takes over from the old one).
const TRAFFIC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the NACK test watches for a resend of the rejected version.
const RESEND_WATCH: Duration = Duration::from_secs(2);
/// Pause between attempts of a bounded retry.
const RETRY: Duration = Duration::from_millis(100);
/// Log lines shown in failure messages.
const LOG_LINES: usize = 40;
/// The server name the TLS listeners' certificate is valid for.
const TLS_HOST: &str = "localhost";

// ---- Free ports ----

/// Ports handed out by [`consecutive_free_ports`] in this process, so that
/// tests running in parallel threads never get overlapping ranges.
static HANDED_OUT: Mutex<Vec<Range<u16>>> = Mutex::new(Vec::new());

/// Finds `n` consecutive TCP ports on 127.0.0.1 that are free right now (by
/// binding every one of them, then releasing them) and returns the first.
///
/// Candidates lie below the kernel's ephemeral range, so that outgoing
/// connections (which take ephemeral ports) do not grab them before Envoy
/// binds them.
fn consecutive_free_ports(n: u16) -> u16 {
    // If the ephemeral range starts oddly low, overlap it rather than fail.
    let low = 10_000u16;
    let high = ephemeral_range_start().saturating_sub(1).max(low + 1_000);
    assert!(high - low > n, "{n} ports do not fit in {low}..{high}");
    let mut handed_out = HANDED_OUT.lock();
    for _ in 0..500 {
        let base = low + (random_u64() % u64::from(high - low - n)) as u16;
        let range = base..base + n;
        if handed_out
            .iter()
            .any(|r| r.start < range.end && range.start < r.end)
        {
            continue;
        }
        let bound: Result<Vec<StdTcpListener>, _> = range
            .clone()
            .map(|port| StdTcpListener::bind((Ipv4Addr::LOCALHOST, port)))
            .collect();
        if bound.is_ok() {
            handed_out.push(range);
            return base; // `bound` is dropped here: the ports are released.
        }
    }
    panic!("found no {n} consecutive free ports on 127.0.0.1");
}

/// The first port of the kernel's ephemeral range (Linux), or 32768.
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A random number from the standard library's randomly seeded hasher.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

// ---- What the server saw ----

/// The stream id [`Observer`] files REST responses under: a REST poll
/// opens no stream (real stream ids start at 1).
const REST_POLLS: StreamId = 0;

/// Callbacks recording what the server did and heard.
#[derive(Default)]
struct Observer {
    /// Type URL of every stream opened ("" for ADS).
    opened: Mutex<Vec<String>>,
    /// Responses sent, by (stream, type URL, version); REST responses under
    /// [`REST_POLLS`].
    responses: Mutex<BTreeMap<(StreamId, String, String), usize>>,
    /// Every NACK, described.
    nacks: Mutex<Vec<String>>,
    /// REST polls received (answered or not: a poll at the current version
    /// gets a 304, with no response callback).
    fetch_requests: Mutex<usize>,
    /// Every request carrying `error_detail`, described.
    error_requests: Mutex<Vec<String>>,
}

impl Callbacks for Observer {
    fn on_stream_open(&self, _stream: StreamId, type_url: &str) -> Result<(), tonic::Status> {
        self.opened.lock().push(type_url.to_owned());
        Ok(())
    }

    fn on_stream_request(
        &self,
        stream: StreamId,
        request: &DiscoveryRequest,
    ) -> Result<(), tonic::Status> {
        if let Some(error) = &request.error_detail {
            self.error_requests.lock().push(format!(
                "stream {stream} {} version {:?} nonce {:?}: {}",
                short(&request.type_url),
                request.version_info,
                request.response_nonce,
                error.message
            ));
        }
        Ok(())
    }

    fn on_stream_response(
        &self,
        stream: StreamId,
        _request: &DiscoveryRequest,
        response: &SentResponse<'_>,
    ) {
        let key = (
            stream,
            response.type_url().to_owned(),
            response.version().to_owned(),
        );
        *self.responses.lock().entry(key).or_default() += 1;
    }

    fn on_delta_stream_open(&self, stream: StreamId, type_url: &str) -> Result<(), tonic::Status> {
        self.on_stream_open(stream, type_url)
    }

    fn on_stream_delta_request(
        &self,
        stream: StreamId,
        request: &DeltaDiscoveryRequest,
    ) -> Result<(), tonic::Status> {
        if let Some(error) = &request.error_detail {
            self.error_requests.lock().push(format!(
                "stream {stream} {} (delta) nonce {:?}: {}",
                short(&request.type_url),
                request.response_nonce,
                error.message
            ));
        }
        Ok(())
    }

    fn on_stream_delta_response(
        &self,
        stream: StreamId,
        _request: &DeltaDiscoveryRequest,
        response: &SentDeltaResponse<'_>,
    ) {
        let key = (
            stream,
            response.type_url().to_owned(),
            response.system_version().to_owned(),
        );
        *self.responses.lock().entry(key).or_default() += 1;
    }

    /// A REST poll: Envoy reports a rejected response in its next poll's
    /// `error_detail`, as on a stream.
    fn on_fetch_request(&self, request: &DiscoveryRequest) -> Result<(), tonic::Status> {
        *self.fetch_requests.lock() += 1;
        if let Some(error) = &request.error_detail {
            self.error_requests.lock().push(format!(
                "REST {} version {:?}: {}",
                short(&request.type_url),
                request.version_info,
                error.message
            ));
        }
        Ok(())
    }

    fn on_fetch_response(&self, _request: &DiscoveryRequest, response: &DiscoveryResponse) {
        let key = (
            REST_POLLS,
            response.type_url.clone(),
            response.version_info.clone(),
        );
        *self.responses.lock().entry(key).or_default() += 1;
    }

    fn on_stream_nack(&self, stream: StreamId, nack: &Nack<'_>) {
        self.nacks.lock().push(format!(
            "stream {stream} {} rejected {:?} (runs {:?}): {}",
            short(nack.type_url),
            nack.rejected_version,
            nack.current_version,
            nack.error.message
        ));
    }
}

impl Observer {
    /// Responses of `type_url` at `version`, per stream that got any.
    fn responses_of(&self, type_url: &str, version: &str) -> BTreeMap<StreamId, usize> {
        self.responses
            .lock()
            .iter()
            .filter(|((_, t, v), _)| t == type_url && v == version)
            .map(|((stream, _, _), n)| (*stream, *n))
            .collect()
    }

    /// Fails the test if Envoy rejected anything, listing what it rejected.
    fn assert_no_nacks(&self, when: &str) {
        let nacks = self.nacks.lock().clone();
        let errors = self.error_requests.lock().clone();
        assert!(
            nacks.is_empty() && errors.is_empty(),
            "{when}: Envoy rejected configuration.\nNACKs: {nacks:#?}\nrequests with error_detail: {errors:#?}"
        );
    }
}

/// The last part of a type URL, for messages.
fn short(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}

// ---- The control plane under test ----

/// Our server on a free 127.0.0.1 port, every service registered (and the
/// REST gateway, for the REST mode).
struct ControlPlane {
    port: u16,
    cache: SnapshotCache,
    /// With `mux`, EDS comes from this fleet-wide cache instead.
    linear_eds: Option<LinearCache>,
    observer: Arc<Observer>,
    task: tokio::task::JoinHandle<()>,
}

impl ControlPlane {
    /// Serves from a SnapshotCache (ADS hold with `ads`), or with `mux`
    /// from a MuxCache sending EDS to a LinearCache and the rest to it.
    /// With `rest`, the same tonic server also accepts HTTP/1.1 and routes
    /// `/v3/discovery:*` to the REST gateway, which Envoy polls over
    /// HTTP/1.1 (the harness's default for REST).
    async fn start(ads: bool, mux: bool, rest: bool) -> ControlPlane {
        let cache = SnapshotCache::new(ads, IdHash);
        let observer = Arc::new(Observer::default());
        // Versions `v1`, `v2`, … as the snapshots: one update per version.
        let linear_eds = mux.then(|| LinearCache::new(type_url::ENDPOINT).with_version_prefix("v"));
        let served: Arc<dyn Cache> = match &linear_eds {
            Some(linear) => Arc::new(
                MuxCache::by_type_url()
                    .with_cache(type_url::ENDPOINT, linear.clone())
                    .with_cache(type_url::CLUSTER, cache.clone())
                    .with_cache(type_url::LISTENER, cache.clone())
                    .with_cache(type_url::ROUTE, cache.clone())
                    .with_cache(type_url::SCOPED_ROUTE, cache.clone())
                    .with_cache(type_url::SECRET, cache.clone())
                    .with_cache(type_url::RUNTIME, cache.clone())
                    .with_cache(type_url::EXTENSION_CONFIG, cache.clone()),
            ),
            None => Arc::new(cache.clone()),
        };
        let server = Server::new(served, Arc::clone(&observer));
        // Binding port 0 lets the OS pick a free port, with no race.
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the xDS server");
        let port = listener.local_addr().expect("xDS server address").port();
        let router = tonic::transport::Server::builder()
            .accept_http1(rest)
            .add_routes(server.discovery_routes())
            .add_optional_service(rest.then(|| server.rest_gateway()));
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .expect("xDS server failed");
        });
        ControlPlane {
            port,
            cache,
            linear_eds,
            observer,
            task,
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- One Envoy and everything around it ----

/// How many resources of each kind the generator makes.
#[derive(Debug, Clone, Copy)]
struct Shape {
    clusters: usize,
    http: usize,
    scoped: usize,
    tcp: usize,
    runtimes: usize,
    extension_configs: usize,
    tls: bool,
}

/// Every kind of resource, several of each, TLS on the HTTP listeners.
const FULL: Shape = Shape {
    clusters: 3,
    http: 3,
    scoped: 2,
    tcp: 2,
    runtimes: 2,
    extension_configs: 2,
    tls: true,
};

impl Shape {
    fn listeners(self) -> u16 {
        u16::try_from(self.http + self.scoped + self.tcp).expect("a few listeners")
    }

    /// The resource kinds Envoy subscribes to for this shape.
    fn kinds(self) -> Vec<ResourceKind> {
        let mut kinds = vec![
            ResourceKind::Cluster,
            ResourceKind::Endpoint,
            ResourceKind::Listener,
        ];
        if self.http + self.scoped > 0 {
            kinds.push(ResourceKind::Route);
        }
        if self.scoped > 0 {
            kinds.push(ResourceKind::ScopedRoute);
        }
        if self.tls && self.http + self.scoped > 0 {
            kinds.push(ResourceKind::Secret);
        }
        if self.extension_configs > 0 {
            kinds.push(ResourceKind::ExtensionConfig);
        }
        if self.runtimes > 0 {
            kinds.push(ResourceKind::Runtime);
        }
        kinds
    }
}

/// Upstreams, our server and an Envoy connected to it, for one test.
/// Dropping it kills Envoy and stops the server and the upstreams.
struct Setup {
    mode: XdsMode,
    shape: Shape,
    base_port: u16,
    certs: TestCerts,
    // Fields drop in declaration order: Envoy is killed before the server
    // and the upstreams it talks to stop.
    envoy: EnvoyProcess,
    control_plane: ControlPlane,
    upstreams: Vec<Upstream>,
}

impl Setup {
    /// Starts three upstreams and our server, sets the snapshot of
    /// `first_version`, then starts Envoy (declaring the RTDS layers the
    /// resources name) in `mode`.
    async fn start(mode: XdsMode, mux: bool, shape: Shape, first_version: u64) -> Setup {
        let mut upstreams = Vec::new();
        for name in ["upstream-a", "upstream-b", "upstream-c"] {
            upstreams.push(Upstream::start(name).await.expect("start an upstream"));
        }
        let certs = TestCerts::generate(&[TLS_HOST, "127.0.0.1"]).expect("test certificates");
        let base_port = consecutive_free_ports(shape.listeners());
        let ads = matches!(mode, XdsMode::Ads | XdsMode::DeltaAds);
        let control_plane = ControlPlane::start(ads, mux, mode == XdsMode::Rest).await;
        let first = resources(mode, shape, base_port, &upstreams, &certs, first_version);
        set_snapshot(&control_plane, &first, first_version);

        let mut bootstrap = Bootstrap::new(mode, control_plane.port);
        for layer in &first.runtime_layer_names {
            bootstrap = bootstrap.rtds_layer(layer);
        }
        let envoy = EnvoyProcess::start(&bootstrap, envoy_options())
            .await
            .expect("start Envoy");
        Setup {
            mode,
            shape,
            base_port,
            certs,
            control_plane,
            envoy,
            upstreams,
        }
    }

    fn observer(&self) -> &Observer {
        &self.control_plane.observer
    }

    /// The generated resources of `version`.
    fn generate(&self, version: u64) -> GeneratedResources {
        resources(
            self.mode,
            self.shape,
            self.base_port,
            &self.upstreams,
            &self.certs,
            version,
        )
    }

    /// Sets the snapshot of `version` and returns its resources.
    fn push(&self, version: u64) -> GeneratedResources {
        let generated = self.generate(version);
        set_snapshot(&self.control_plane, &generated, version);
        generated
    }

    /// The kinds whose content every version changes. In delta modes a type
    /// whose resources did not change gets no response at a new version
    /// (the TLS secret stays the same), so it keeps its older version.
    fn changing_kinds(&self, version: &str) -> Vec<ResourceKind> {
        let delta = matches!(self.mode, XdsMode::Delta | XdsMode::DeltaAds);
        let mut kinds = self.shape.kinds();
        if delta && version != version_name(1) {
            kinds.retain(|k| *k != ResourceKind::Secret);
        }
        kinds
    }

    /// Waits until Envoy accepted `version` on every type it subscribes to.
    async fn wait_applied(&self, version: &str) {
        if let Err(e) = self
            .envoy
            .wait_for_version(version, &self.changing_kinds(version), APPLY_TIMEOUT)
            .await
        {
            panic!(
                "{:?}: Envoy did not apply {version}: {e}\nNACKs: {:#?}",
                self.mode,
                self.observer().nacks.lock()
            );
        }
    }

    /// Checks every listener serves as `generated` expects, retrying each
    /// for at most [`TRAFFIC_TIMEOUT`]; fails with every listener that did not.
    async fn check_traffic(&self, generated: &GeneratedResources, version: &str) {
        let checks = generated
            .expectations
            .iter()
            .map(|exp| self.expect_served(exp));
        let failures: Vec<String> = futures::future::join_all(checks)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect();
        assert!(
            failures.is_empty(),
            "{:?} {version}: listeners did not serve as expected within {TRAFFIC_TIMEOUT:?}:\n{}\n--- Envoy log tail ---\n{}",
            self.mode,
            failures.join("\n"),
            self.envoy.log_tail(LOG_LINES)
        );
    }

    /// Sends requests through one listener until the answer is the expected
    /// one or [`TRAFFIC_TIMEOUT`] passes; the error says what was seen last.
    async fn expect_served(&self, exp: &ListenerExpectation) -> Result<(), String> {
        let deadline = Instant::now() + TRAFFIC_TIMEOUT;
        loop {
            let seen = self.request(exp).await;
            let problem = match &seen {
                Ok(response) => mismatch(exp, response),
                Err(e) => Some(e.to_string()),
            };
            let Some(problem) = problem else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "  {} (port {}, {:?}, tls {}): {problem}",
                    exp.name, exp.port, exp.kind, exp.tls
                ));
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// One request through a listener: HTTPS trusting the test CA on TLS
    /// listeners, plain HTTP otherwise (through the TCP proxy too).
    async fn request(
        &self,
        exp: &ListenerExpectation,
    ) -> xds_control_plane::test_support::envoy::Result<HttpResponse> {
        let headers: Vec<(&str, &str)> = exp
            .request_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if exp.tls {
            https_get(exp.port, "/", &headers, &self.certs.ca_pem, TLS_HOST).await
        } else {
            http_get(exp.port, "/", &headers).await
        }
    }

    /// Polls the admin `/runtime` until every RTDS key has its value.
    async fn check_runtime(&self, generated: &GeneratedResources, version: &str) {
        let deadline = Instant::now() + TRAFFIC_TIMEOUT;
        loop {
            let runtime = self.envoy.runtime().await;
            let wrong: Vec<String> = match &runtime {
                Ok(runtime) => generated
                    .runtime_expectations
                    .iter()
                    .filter_map(|(key, want)| {
                        let got = &runtime["entries"][key]["final_value"];
                        (got != want.as_str()).then(|| format!("{key} = {got} (want {want:?})"))
                    })
                    .collect(),
                Err(e) => vec![e.to_string()],
            };
            if wrong.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} {version}: runtime not as expected within {TRAFFIC_TIMEOUT:?}: {wrong:?}\n--- Envoy log tail ---\n{}",
                self.mode,
                self.envoy.log_tail(LOG_LINES)
            );
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Checks our server sent a response of every type Envoy uses at
    /// `version` (so each type really went through the server).
    fn check_responses(&self, version: &str) {
        for kind in self.changing_kinds(version) {
            assert!(
                !self
                    .observer()
                    .responses_of(kind.type_url(), version)
                    .is_empty(),
                "{:?}: no {kind:?} response at {version} was sent; sent: {:?}",
                self.mode,
                self.observer().responses.lock().keys()
            );
        }
    }

    /// Pushes `version`, waits for Envoy to apply it, then checks traffic,
    /// runtime and what the server sent.
    async fn push_and_check(&self, version: u64) -> GeneratedResources {
        let v = version_name(version);
        let generated = self.push(version);
        self.wait_applied(&v).await;
        self.check_traffic(&generated, &v).await;
        self.check_runtime(&generated, &v).await;
        self.check_responses(&v);
        generated
    }
}

/// What a response lacks compared with the expectation, if anything.
fn mismatch(exp: &ListenerExpectation, response: &HttpResponse) -> Option<String> {
    let body = response.text();
    if response.status != 200 || body != exp.expected_upstream {
        return Some(format!(
            "got status {} body {body:?}, want 200 {:?}",
            response.status, exp.expected_upstream
        ));
    }
    exp.expected_response_headers
        .iter()
        .find(|(name, value)| response.header(name) != Some(value.as_str()))
        .map(|(name, value)| {
            format!(
                "header {name} = {:?}, want {value:?} (headers {:?})",
                response.header(name),
                response.headers
            )
        })
}

/// The snapshot version string of generator version `n`.
fn version_name(n: u64) -> String {
    format!("v{n}")
}

/// The generator's resources for `version`.
fn resources(
    mode: XdsMode,
    shape: Shape,
    base_port: u16,
    upstreams: &[Upstream],
    certs: &TestCerts,
    version: u64,
) -> GeneratedResources {
    TestResources {
        mode,
        version,
        upstreams: upstreams
            .iter()
            .map(|u| (u.name().to_owned(), u.port()))
            .collect(),
        base_port,
        num_clusters: shape.clusters,
        num_http_listeners: shape.http,
        num_scoped_http_listeners: shape.scoped,
        num_tcp_listeners: shape.tcp,
        num_runtimes: shape.runtimes,
        num_extension_configs: shape.extension_configs,
        tls: shape.tls.then(|| TlsMaterial {
            cert_chain_pem: certs.cert_chain_pem.clone(),
            private_key_pem: certs.private_key_pem.clone(),
        }),
    }
    .generate()
    .expect("generate resources")
}

/// Builds the snapshot of `generated` as version `n`, checks it is
/// consistent and sets it for Envoy's node.
fn set_snapshot(control_plane: &ControlPlane, generated: &GeneratedResources, n: u64) {
    let snapshot = generated.snapshot(&version_name(n)).expect("snapshot");
    snapshot.consistent().expect("consistent snapshot");
    if let Some(linear) = &control_plane.linear_eds {
        let endpoints = generated
            .endpoints
            .iter()
            .map(|e| (e.cluster_name.clone(), e));
        linear.set_resources(endpoints).expect("endpoints");
        assert_eq!(
            linear.version(),
            version_name(n),
            "one LinearCache update per version"
        );
    }
    control_plane.cache.set_snapshot(DEFAULT_NODE_ID, snapshot);
}

/// Envoy's options for the suite: replaced listeners drain for 1 s instead
/// of 600 s, so that the old listeners, and with them their subscriptions
/// to the previous version's routes, go away quickly (go-control-plane's
/// integration test runs Envoy the same way).
fn envoy_options() -> EnvoyOptions {
    EnvoyOptions {
        extra_args: vec!["--drain-time-s".into(), "1".into()],
        ..EnvoyOptions::default()
    }
}

// ---- The tests ----

/// Three versions, each changing clusters, endpoints, routes and listeners,
/// applied by Envoy and served on every listener, with no NACK.
async fn three_versions(mode: XdsMode, mux: bool) {
    let started = Instant::now();
    let setup = Setup::start(mode, mux, FULL, 1).await;
    for version in 1..=3 {
        setup.push_and_check(version).await;
        setup
            .observer()
            .assert_no_nacks(&format!("{mode:?} {}", version_name(version)));
    }
    check_streams(&setup).await;
    if let Some(linear) = &setup.control_plane.linear_eds {
        // Envoy's EDS watches wait on the LinearCache, not the snapshot.
        assert!(
            linear.num_open_watches() > 0,
            "no EDS watch reached the LinearCache"
        );
        assert_eq!(
            setup
                .control_plane
                .cache
                .status_info(DEFAULT_NODE_ID)
                .map(|s| s.num_watches > 0),
            Some(true)
        );
    }
    eprintln!(
        "{mode:?} (mux: {mux}): 3 versions in {:?}",
        started.elapsed()
    );
}

/// ADS uses one aggregated stream; xds one stream per type, no ADS; REST
/// polls, no stream at all.
async fn check_streams(setup: &Setup) {
    let opened = setup.observer().opened.lock().clone();
    let types: BTreeSet<&str> = opened.iter().map(String::as_str).collect();
    match setup.mode {
        XdsMode::Ads | XdsMode::DeltaAds => {
            assert_eq!(types, BTreeSet::from([""]), "streams opened: {opened:?}")
        }
        XdsMode::Rest => {
            assert!(types.is_empty(), "streams opened: {opened:?}");
            // Envoy polls every REST_REFRESH_DELAY whether or not anything
            // changed; with nothing pushed since the last version, its next
            // polls are at the current version and must get 304s, which
            // Envoy takes as "keep what you have" (the versions held). A
            // fast machine can apply all versions before any such poll, so
            // wait for a few poll rounds rather than expecting one already.
            let unanswered_poll = || {
                let polls = *setup.observer().fetch_requests.lock();
                let answered: usize = setup.observer().responses.lock().values().sum();
                (
                    polls > answered,
                    format!("{polls} polls, {answered} responses"),
                )
            };
            let deadline = Instant::now() + REST_REFRESH_DELAY * 10;
            let (seen, counts) = loop {
                let (seen, counts) = unanswered_poll();
                if seen || Instant::now() >= deadline {
                    break (seen, counts);
                }
                tokio::time::sleep(REST_REFRESH_DELAY / 5).await;
            };
            assert!(seen, "no REST poll was answered 304: {counts}");
            eprintln!("REST: {counts}");
        }
        _ => {
            let want: BTreeSet<&str> = setup.shape.kinds().iter().map(|k| k.type_url()).collect();
            assert_eq!(types, want, "streams opened: {opened:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ads_three_versions() {
    three_versions(XdsMode::Ads, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn xds_three_versions() {
    three_versions(XdsMode::Xds, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delta_three_versions() {
    three_versions(XdsMode::Delta, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delta_ads_three_versions() {
    three_versions(XdsMode::DeltaAds, false).await;
}

/// xds with EDS from a LinearCache behind a MuxCache (go-control-plane's
/// `-mux` integration mode).
#[tokio::test(flavor = "multi_thread")]
async fn mux_three_versions() {
    three_versions(XdsMode::Xds, true).await;
}

/// Envoy polling the REST gateway (go-control-plane's `rest` integration
/// mode) for every type of the full shape.
#[tokio::test(flavor = "multi_thread")]
async fn rest_three_versions() {
    three_versions(XdsMode::Rest, false).await;
}

/// A small configuration for the NACK test: no TLS, ECDS or RTDS needed.
const SMALL: Shape = Shape {
    clusters: 2,
    http: 1,
    scoped: 0,
    tcp: 1,
    runtimes: 0,
    extension_configs: 0,
    tls: false,
};

/// Envoy rejects a version holding an invalid cluster: the NACK reaches the
/// callbacks, the server does not send the rejected version again (Envoy
/// would NACK it again, forever), Envoy keeps serving the previous version,
/// and the next good version is applied.
#[tokio::test(flavor = "multi_thread")]
async fn nack_is_seen_not_resent_and_recovered() {
    let started = Instant::now();
    let setup = Setup::start(XdsMode::Ads, false, SMALL, 1).await;
    let good = setup.push_and_check(1).await;
    setup.observer().assert_no_nacks("v1");

    // v2: v1's resources, but one cluster has an lb_policy outside the enum,
    // which Envoy's proto validation rejects (the whole CDS response).
    let bad_version = version_name(2);
    let mut bad = good.clone();
    bad.clusters[0].lb_policy = 99;
    let snapshot = bad.snapshot(&bad_version).expect("snapshot");
    snapshot.consistent().expect("consistent snapshot");
    setup
        .control_plane
        .cache
        .set_snapshot(DEFAULT_NODE_ID, snapshot);

    let cluster_type = ResourceKind::Cluster.type_url();
    let nacks = wait_for_nacks(&setup).await;
    assert!(
        nacks
            .iter()
            .all(|n| n.contains("Cluster rejected \"v2\"") && n.contains("lb_policy")),
        "unexpected NACKs: {nacks:#?}"
    );
    // Give a resend loop time to show.
    tokio::time::sleep(RESEND_WATCH).await;
    let sent = setup.observer().responses_of(cluster_type, &bad_version);
    assert!(
        !sent.is_empty() && sent.values().all(|n| *n == 1),
        "the rejected CDS version should go out once per stream; sent (stream → count): {sent:?}"
    );
    let nacks = setup.observer().nacks.lock().clone();
    assert_eq!(nacks.len(), sent.len(), "one NACK per stream: {nacks:#?}");

    // Envoy's side: it rejected one CDS update, still runs v1's clusters,
    // and still serves v1's traffic.
    let stats = setup.envoy.stats().await.expect("stats");
    assert_eq!(
        stats.get("cluster_manager.cds.update_rejected"),
        Some(&serde_json::json!(1)),
        "Envoy's count of rejected CDS updates"
    );
    let applied = setup.envoy.applied_versions().await.expect("versions");
    assert_eq!(
        applied.accepted(ResourceKind::Cluster),
        BTreeSet::from([version_name(1)]),
        "{applied}"
    );
    setup.check_traffic(&good, "after the NACK").await;

    // A good version replaces the rejected one.
    setup.push_and_check(3).await;
    assert_eq!(
        setup.observer().nacks.lock().len(),
        nacks.len(),
        "no NACK after recovery: {:#?}",
        setup.observer().nacks.lock()
    );
    eprintln!("NACK test in {:?}", started.elapsed());
}

/// Polls until the server reported at least one NACK; returns them all.
async fn wait_for_nacks(setup: &Setup) -> Vec<String> {
    let deadline = Instant::now() + APPLY_TIMEOUT;
    loop {
        let nacks = setup.observer().nacks.lock().clone();
        if !nacks.is_empty() {
            return nacks;
        }
        assert!(
            Instant::now() < deadline,
            "no NACK reported within {APPLY_TIMEOUT:?}; requests with error_detail: {:?}\n--- Envoy log tail ---\n{}",
            setup.observer().error_requests.lock(),
            setup.envoy.log_tail(LOG_LINES)
        );
        tokio::time::sleep(RETRY).await;
    }
}
