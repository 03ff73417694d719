//! Load client for the reference workload "W1": M Envoy-like ADS clients,
//! each on its own HTTP/2 connection, measuring how fast a control plane
//! (`examples/bench_server.rs`) gets every update to every client.
//!
//! Each client opens one state-of-the-world ADS stream as node
//! `node-<i % N>` and behaves like Envoy: CDS and LDS wildcard, EDS for
//! every cluster received, RDS for the routes its listeners name, and an ACK
//! for every response. It decodes only names (a message with only field 1),
//! so thousands of clients stay light.
//!
//! Versions must be `v<seq>-<unix nanoseconds>` (the server's clock at the
//! start of that update); a client's latency for update `seq` is the time it
//! received the last type it needs for full config at `seq` minus that.
//! With `--server-pid`, the server's CPU time (utime+stime) and RSS are read
//! from /proc.
//!
//! ```text
//! cargo run --release --example load_client -- --clients 1000 --nodes 1000 \
//!     --expect-updates 5 --server-pid "$(cat server.pid)"
//! ```
//! Talks to loopback addresses only.

#[path = "support/flags.rs"]
mod flags;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Endpoint;
use xds_control_plane::envoy_types::pb::envoy::config::core::v3::Node;
use xds_control_plane::envoy_types::pb::envoy::config::listener::v3::Listener;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use xds_control_plane::envoy_types::pb::google::rpc::Status as RpcStatus;
use xds_control_plane::resource::{listener_route_names, type_url};

const USAGE: &str = "\
usage: load_client [--server 127.0.0.1:18000] [--clients 1000] [--nodes 1]
                   [--expect-updates 0] [--timeout 120] [--server-pid PID]
                   [--connect-rate R] [--connect-concurrency 128]
                   [--h2-window BYTES] [--json] [--delta]

  --expect-updates K     stop once every client has full config at update K
                         (0: once every client has its initial config)
  --timeout S            stop after S seconds whatever happened
  --server-pid PID       read the server's CPU time and RSS from /proc
  --connect-rate R       open at most R clients per second (default: as fast
                         as --connect-concurrency connects in flight allow)
  --h2-window BYTES      HTTP/2 stream and connection receive window
                         (default 268435456, Envoy's default)
  --json                 also print the report as one JSON line
  --delta                incremental xDS (not yet supported)";

const ADS_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// The four types a client needs for full config, in ADS order.
const TYPES: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];
const CDS: usize = 0;
const EDS: usize = 1;
const LDS: usize = 2;
const RDS: usize = 3;

// ---------------------------------------------------------------------------
// Light messages: only the fields the client reads. prost skips the rest.

/// `DiscoveryResponse` without `canary`, `control_plane`, `resource_errors`.
#[derive(Clone, PartialEq, Message)]
struct LightResponse {
    #[prost(string, tag = "1")]
    version_info: String,
    #[prost(message, repeated, tag = "2")]
    resources: Vec<LightAny>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

/// `google.protobuf.Any` without its type URL; the value is not copied.
#[derive(Clone, PartialEq, Message)]
struct LightAny {
    #[prost(bytes = "bytes", tag = "2")]
    value: Bytes,
}

/// Field 1 of `Cluster` (`name`), `ClusterLoadAssignment` (`cluster_name`),
/// `Listener` (`name`) and `RouteConfiguration` (`name`).
#[derive(Clone, PartialEq, Message)]
struct NameOnly {
    #[prost(string, tag = "1")]
    name: String,
}

// ---------------------------------------------------------------------------
// Configuration and shared measurements.

struct Config {
    server: SocketAddr,
    clients: usize,
    nodes: usize,
    expect_updates: u64,
    timeout: Duration,
    server_pid: Option<u32>,
    connect_rate: Option<f64>,
    connect_concurrency: usize,
    h2_window: u32,
    json: bool,
}

fn parse_args() -> Result<Config, String> {
    let mut f = flags::Flags::parse(USAGE, &["json", "delta"])?;
    if f.flag("delta") {
        return Err("--delta: incremental (delta) xDS is not yet supported".into());
    }
    let config = Config {
        server: f.get("server", SocketAddr::from(([127, 0, 0, 1], 18000)))?,
        clients: f.get("clients", 1000)?,
        nodes: f.get("nodes", 1)?,
        expect_updates: f.get("expect-updates", 0)?,
        timeout: Duration::try_from_secs_f64(f.get("timeout", 120.0)?)
            .map_err(|e| format!("--timeout: {e}"))?,
        server_pid: f.opt("server-pid")?,
        connect_rate: f.opt("connect-rate")?,
        connect_concurrency: f.get("connect-concurrency", 128)?,
        h2_window: f.get("h2-window", 256 * 1024 * 1024)?,
        json: f.flag("json"),
    };
    f.finish()?;
    if !config.server.ip().is_loopback() {
        return Err(format!(
            "--server {}: only loopback addresses are allowed",
            config.server
        ));
    }
    if config.clients == 0 || config.nodes == 0 || config.connect_concurrency == 0 {
        return Err("--clients, --nodes and --connect-concurrency must be positive".into());
    }
    if config.connect_rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err("--connect-rate must be positive".into());
    }
    Ok(config)
}

/// The first full config a client had.
struct Initial {
    /// From the client's connect start to full config.
    connect_to_config: Duration,
    /// When it had full config.
    at: SystemTime,
    seq: u64,
}

struct Shared {
    config: Config,
    stop: CancellationToken,
    connect_slots: Semaphore,
    initial: Mutex<Vec<Initial>>,
    /// (seq, latency) of every update a client had full config at.
    updates: Mutex<Vec<(u64, Duration)>>,
    /// The server's timestamp of each seq seen.
    stamps: Mutex<BTreeMap<u64, SystemTime>>,
    configured: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicUsize,
    nacks: AtomicU64,
    stream_errors: AtomicU64,
    connect_errors: AtomicU64,
    connect_retries: AtomicU64,
    ended_after_done: AtomicU64,
    bad_versions: AtomicU64,
    responses: AtomicU64,
    resource_bytes: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, message: String) {
        let mut errors = self.errors.lock();
        if errors.len() < 5 {
            errors.push(message);
        }
    }
}

// ---------------------------------------------------------------------------
// One client.

#[derive(Default)]
struct TypeState {
    /// Version and nonce of the last accepted response ("" before any).
    version: String,
    nonce: String,
    /// Seq of the last accepted response, if its version parsed.
    seq: Option<u64>,
    received: bool,
}

struct Client {
    index: usize,
    node: Node,
    types: [TypeState; 4],
    /// Names subscribed for EDS and RDS, sorted.
    eds_names: Vec<String>,
    rds_names: Vec<String>,
    /// Seq of the last full config.
    complete: Option<u64>,
    done: bool,
    connect_started: SystemTime,
}

/// `v<seq>-<unix nanoseconds>`.
fn parse_version(version: &str) -> Option<(u64, SystemTime)> {
    let (seq, nanos) = version.strip_prefix('v')?.split_once('-')?;
    let nanos: u64 = nanos.parse().ok()?;
    Some((seq.parse().ok()?, UNIX_EPOCH + Duration::from_nanos(nanos)))
}

impl Client {
    fn request(&self, t: usize, names: &[String]) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: self.types[t].version.clone(),
            node: Some(self.node.clone()),
            resource_names: names.to_vec(),
            type_url: TYPES[t].to_string(),
            response_nonce: self.types[t].nonce.clone(),
            ..Default::default()
        }
    }

    fn names_of(&self, t: usize) -> &[String] {
        match t {
            EDS => &self.eds_names,
            RDS => &self.rds_names,
            _ => &[],
        }
    }

    /// Handles one response; returns the requests to send (ACK or NACK,
    /// then new subscriptions).
    fn on_response(
        &mut self,
        response: LightResponse,
        now: SystemTime,
        shared: &Shared,
    ) -> Vec<DiscoveryRequest> {
        shared.responses.fetch_add(1, Ordering::Relaxed);
        let bytes: usize = response.resources.iter().map(|r| r.value.len()).sum();
        shared
            .resource_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        let Some(t) = TYPES.iter().position(|u| *u == response.type_url) else {
            shared.error(format!("unexpected type {}", response.type_url));
            return Vec::new();
        };
        let names = match decode_names(t, &response.resources) {
            Ok(names) => names,
            Err(e) => {
                shared.nacks.fetch_add(1, Ordering::Relaxed);
                shared.error(format!("client {}: NACK {}: {e}", self.index, TYPES[t]));
                let mut nack = self.request(t, self.names_of(t));
                nack.response_nonce = response.nonce;
                nack.error_detail = Some(RpcStatus {
                    code: 3,
                    message: e,
                    details: Vec::new(),
                });
                return vec![nack];
            }
        };
        let parsed = parse_version(&response.version_info);
        if parsed.is_none() {
            shared.bad_versions.fetch_add(1, Ordering::Relaxed);
        }
        let state = &mut self.types[t];
        state.version = response.version_info;
        state.nonce = response.nonce;
        state.seq = parsed.map(|(seq, _)| seq);
        state.received = true;
        let mut out = vec![self.request(t, self.names_of(t))];
        // New subscriptions follow from clusters and listeners.
        let follow = match t {
            CDS => Some((EDS, names)),
            LDS => Some((RDS, names)),
            _ => None,
        };
        if let Some((dependent, mut names)) = follow {
            names.sort();
            names.dedup();
            let current = if dependent == EDS {
                &mut self.eds_names
            } else {
                &mut self.rds_names
            };
            if *current != names {
                *current = names;
                out.push(self.request(dependent, self.names_of(dependent)));
            }
        }
        if let Some((seq, stamp)) = parsed {
            self.check_complete(seq, stamp, now, shared);
        }
        out
    }

    /// Records full config at `seq` once every needed type is at it.
    fn check_complete(&mut self, seq: u64, stamp: SystemTime, now: SystemTime, shared: &Shared) {
        if self.complete.is_some_and(|c| c >= seq) {
            return;
        }
        let needed = [
            true,
            !self.eds_names.is_empty(),
            true,
            !self.rds_names.is_empty(),
        ];
        let at_seq = self
            .types
            .iter()
            .zip(needed)
            .all(|(state, need)| !need || (state.received && state.seq == Some(seq)));
        if !at_seq {
            return;
        }
        shared.stamps.lock().entry(seq).or_insert(stamp);
        if self.complete.is_none() {
            shared.initial.lock().push(Initial {
                connect_to_config: now.duration_since(self.connect_started).unwrap_or_default(),
                at: now,
                seq,
            });
            shared.configured.fetch_add(1, Ordering::Relaxed);
        } else {
            let latency = now.duration_since(stamp).unwrap_or_default();
            shared.updates.lock().push((seq, latency));
        }
        self.complete = Some(seq);
        if !self.done && seq >= shared.config.expect_updates {
            self.done = true;
            shared.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The names in a response; for listeners, the routes they use.
fn decode_names(t: usize, resources: &[LightAny]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for resource in resources {
        if t == LDS {
            let listener = Listener::decode(resource.value.clone()).map_err(|e| e.to_string())?;
            names.extend(listener_route_names(&listener));
        } else {
            let named = NameOnly::decode(resource.value.clone()).map_err(|e| e.to_string())?;
            if named.name.is_empty() {
                return Err("a resource has no name".into());
            }
            if t == CDS {
                names.push(named.name);
            }
        }
    }
    Ok(names)
}

async fn connect(shared: &Shared) -> Result<tonic::transport::Channel, String> {
    let config = &shared.config;
    let endpoint = Endpoint::from_shared(format!("http://{}", config.server))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .initial_stream_window_size(config.h2_window)
        .initial_connection_window_size(config.h2_window);
    let mut attempt = 0;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(_) if attempt < 5 => {
                attempt += 1;
                shared.connect_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(format!("connect: {e}")),
        }
    }
}

/// How a client's session ended.
enum End {
    /// It could not connect or open its stream.
    ConnectFailed(String),
    /// Its stream failed before it reached the expected update.
    StreamFailed(String),
    /// Its stream ended after it reached the expected update (the server
    /// stopped first): not an error.
    AfterDone,
}

async fn run_client(index: usize, shared: Arc<Shared>) {
    let end = tokio::select! {
        end = client_session(index, &shared) => end,
        _ = shared.stop.cancelled() => return,
    };
    let (counter, message) = match end {
        End::ConnectFailed(e) => (&shared.connect_errors, e),
        End::StreamFailed(e) => (&shared.stream_errors, e),
        End::AfterDone => {
            shared.ended_after_done.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
    shared.error(format!("client {index}: {message}"));
    shared.failed.fetch_add(1, Ordering::Relaxed);
}

/// Connects and serves the stream until it ends.
async fn client_session(index: usize, shared: &Shared) -> End {
    let Ok(permit) = shared.connect_slots.acquire().await else {
        return End::ConnectFailed("connect slots closed".into());
    };
    let mut client = Client {
        index,
        node: Node {
            id: format!("node-{}", index % shared.config.nodes),
            cluster: "xds-load-client".into(),
            user_agent_name: "xds-load-client".into(),
            ..Default::default()
        },
        types: Default::default(),
        eds_names: Vec::new(),
        rds_names: Vec::new(),
        complete: None,
        done: false,
        connect_started: SystemTime::now(),
    };
    let channel = match connect(shared).await {
        Ok(channel) => channel,
        Err(e) => return End::ConnectFailed(e),
    };
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(1 << 30);
    if let Err(e) = grpc.ready().await {
        return End::ConnectFailed(format!("channel not ready: {e}"));
    }
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    // Envoy starts with CDS and LDS, both wildcard. The channel has room.
    for t in [CDS, LDS] {
        let _ = tx.try_send(client.request(t, &[]));
    }
    let codec = tonic_prost::ProstCodec::<DiscoveryRequest, LightResponse>::default();
    let response = grpc
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static(ADS_PATH),
            codec,
        )
        .await;
    let mut stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return End::ConnectFailed(format!("open stream: {status}")),
    };
    drop(permit);
    let ended = loop {
        match stream.message().await {
            Ok(Some(response)) => {
                let now = SystemTime::now();
                let mut sent = true;
                for request in client.on_response(response, now, shared) {
                    sent = sent && tx.send(request).await.is_ok();
                }
                if !sent {
                    break "request stream closed".to_string();
                }
            }
            Ok(None) => break "stream ended by the server".into(),
            Err(status) => break format!("stream failed: {status}"),
        }
    };
    if client.done {
        End::AfterDone
    } else {
        End::StreamFailed(ended)
    }
}

// ---------------------------------------------------------------------------
// The server process, from /proc.

/// utime+stime in clock ticks.
fn proc_cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn proc_rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds of a process over time, sampled every 10 ms on a thread
/// (the kernel counts in clock ticks, usually 10 ms, so short windows are
/// coarse).
struct CpuSampler {
    samples: Arc<Mutex<Vec<(SystemTime, f64)>>>,
    running: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CpuSampler {
    fn start(pid: String, ticks_per_second: f64) -> CpuSampler {
        let sample = move |samples: &Mutex<Vec<(SystemTime, f64)>>| {
            let now = SystemTime::now();
            if let Some(ticks) = proc_cpu_ticks(&pid) {
                samples.lock().push((now, ticks as f64 / ticks_per_second));
            }
        };
        let samples = Arc::new(Mutex::new(Vec::new()));
        // One sample now, so every later instant lies after the first.
        sample(&samples);
        let running = Arc::new(AtomicBool::new(true));
        let thread = {
            let (samples, running) = (Arc::clone(&samples), Arc::clone(&running));
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(10));
                sample(&samples);
                if !running.load(Ordering::Relaxed) {
                    break;
                }
            })
        };
        CpuSampler {
            samples,
            running,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> Vec<(SystemTime, f64)> {
        self.running.store(false, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut self.samples.lock())
    }
}

/// CPU seconds at time `t`, interpolated; `None` outside the samples.
fn cpu_at(samples: &[(SystemTime, f64)], t: SystemTime) -> Option<f64> {
    let i = samples.partition_point(|(at, _)| *at <= t);
    if i == 0 || i == samples.len() {
        return None;
    }
    let (t0, c0) = samples[i - 1];
    let (t1, c1) = samples[i];
    let span = t1.duration_since(t0).ok()?.as_secs_f64();
    let into = t.duration_since(t0).ok()?.as_secs_f64();
    Some(if span > 0.0 {
        c0 + (c1 - c0) * into / span
    } else {
        c0
    })
}

// ---------------------------------------------------------------------------
// Report.

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map_or(0.0, |d| d.as_secs_f64())
}

fn own_cpu_seconds(ticks_per_second: f64) -> f64 {
    proc_cpu_ticks("self").map_or(f64::NAN, |t| t as f64 / ticks_per_second)
}

fn json_num(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!((v * 1e4).round() / 1e4)
    } else {
        serde_json::Value::Null
    }
}

#[tokio::main]
async fn main() {
    let config = match parse_args() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    std::process::exit(run(config).await);
}

async fn run(config: Config) -> i32 {
    let ticks_per_second = clock_ticks_per_second();
    let server_pid = config.server_pid.map(|p| p.to_string());
    if let Some(pid) = &server_pid {
        if proc_cpu_ticks(pid).is_none() {
            eprintln!("--server-pid {pid}: no such process");
            return 2;
        }
    }
    let rss_before = server_pid.as_deref().and_then(proc_rss_kib);
    let mut sampler = server_pid
        .clone()
        .map(|pid| CpuSampler::start(pid, ticks_per_second));
    let shared = Arc::new(Shared {
        connect_slots: Semaphore::new(config.connect_concurrency),
        config,
        stop: CancellationToken::new(),
        initial: Mutex::new(Vec::new()),
        updates: Mutex::new(Vec::new()),
        stamps: Mutex::new(BTreeMap::new()),
        configured: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        nacks: AtomicU64::new(0),
        stream_errors: AtomicU64::new(0),
        connect_errors: AtomicU64::new(0),
        connect_retries: AtomicU64::new(0),
        ended_after_done: AtomicU64::new(0),
        bad_versions: AtomicU64::new(0),
        responses: AtomicU64::new(0),
        resource_bytes: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    });
    let config = &shared.config;
    let m = config.clients;
    let started = tokio::time::Instant::now();
    let deadline = started + config.timeout;
    let first_connect = SystemTime::now();

    let spawner = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut pace = shared.config.connect_rate.map(|rate| {
                let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                i
            });
            let mut clients = Vec::with_capacity(shared.config.clients);
            for index in 0..shared.config.clients {
                if let Some(pace) = &mut pace {
                    pace.tick().await;
                }
                clients.push(tokio::spawn(run_client(index, Arc::clone(&shared))));
            }
            clients
        })
    };

    // Wait for every client to be configured, then to reach the last update.
    let mut all_configured: Option<SystemTime> = None;
    let mut rss_configured = None;
    let mut timed_out = false;
    loop {
        let configured = shared.configured.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        if all_configured.is_none() && configured + failed >= m {
            all_configured = Some(SystemTime::now());
            rss_configured = server_pid.as_deref().and_then(proc_rss_kib);
        }
        if shared.done.load(Ordering::Relaxed) + failed >= m {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let finished = SystemTime::now();

    // Update windows: [stamp(seq), stamp(seq+1)); the last one as long as
    // the median earlier one, so keep sampling the server until it ends.
    let stamps: Vec<(u64, SystemTime)> =
        shared.stamps.lock().iter().map(|(s, t)| (*s, *t)).collect();
    let update_stamps: Vec<&(u64, SystemTime)> = stamps.iter().filter(|(s, _)| *s >= 1).collect();
    let mut gaps: Vec<f64> = update_stamps
        .windows(2)
        .map(|w| secs_between(w[0].1, w[1].1))
        .collect();
    gaps.sort_by(f64::total_cmp);
    let last_window = if gaps.is_empty() {
        1.0
    } else {
        gaps[gaps.len() / 2]
    };
    if let Some((_, last)) = update_stamps.last() {
        let until = *last + Duration::from_secs_f64(last_window + 0.05);
        while SystemTime::now() < until && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let rss_end = server_pid.as_deref().and_then(proc_rss_kib);
    let samples = sampler.as_mut().map(CpuSampler::stop).unwrap_or_default();
    shared.stop.cancel();
    if let Ok(clients) = spawner.await {
        for c in clients {
            let _ = tokio::time::timeout(Duration::from_secs(2), c).await;
        }
    }
    let client_cpu = own_cpu_seconds(ticks_per_second);

    // ---- Assemble the report.
    let initial = std::mem::take(&mut *shared.initial.lock());
    let updates = std::mem::take(&mut *shared.updates.lock());
    let configured = initial.len();
    let cold_start = initial
        .iter()
        .map(|i| secs_between(first_connect, i.at))
        .fold(f64::NAN, f64::max);
    let mut per_client: Vec<f64> = initial
        .iter()
        .map(|i| i.connect_to_config.as_secs_f64())
        .collect();
    per_client.sort_by(f64::total_cmp);
    let mut initial_seqs: BTreeMap<u64, usize> = BTreeMap::new();
    for i in &initial {
        *initial_seqs.entry(i.seq).or_default() += 1;
    }
    let cold_cpu = all_configured
        .and_then(|end| Some(cpu_at(&samples, end)? - cpu_at(&samples, first_connect)?));

    let mut by_seq: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for (seq, latency) in &updates {
        by_seq
            .entry(*seq)
            .or_default()
            .push(latency.as_secs_f64() * 1e3);
    }
    let stamp_of: BTreeMap<u64, SystemTime> = stamps.iter().copied().collect();
    struct Row {
        seq: u64,
        clients: usize,
        as_initial: usize,
        p50: f64,
        p99: f64,
        max: f64,
        cpu: Option<f64>,
        window: Option<f64>,
    }
    let mut seqs: Vec<u64> = by_seq.keys().copied().collect();
    seqs.extend(stamp_of.keys().filter(|s| **s >= 1));
    seqs.sort();
    seqs.dedup();
    let rows: Vec<Row> = seqs
        .iter()
        .map(|&seq| {
            let mut lat = by_seq.remove(&seq).unwrap_or_default();
            lat.sort_by(f64::total_cmp);
            let window = stamp_of.get(&seq).map(|start| {
                let end = stamp_of
                    .get(&(seq + 1))
                    .copied()
                    .unwrap_or(*start + Duration::from_secs_f64(last_window));
                (*start, end)
            });
            let cpu = window.and_then(|(a, b)| Some(cpu_at(&samples, b)? - cpu_at(&samples, a)?));
            Row {
                seq,
                clients: lat.len(),
                as_initial: initial_seqs.get(&seq).copied().unwrap_or(0),
                p50: percentile(&lat, 0.50),
                p99: percentile(&lat, 0.99),
                max: lat.last().copied().unwrap_or(f64::NAN),
                cpu,
                window: window.map(|(a, b)| secs_between(a, b)),
            }
        })
        .collect();
    let rss_per_client = match (rss_before, rss_configured) {
        (Some(before), Some(after)) => Some((after as f64 - before as f64) / m as f64),
        _ => None,
    };
    let nacks = shared.nacks.load(Ordering::Relaxed);
    let stream_errors = shared.stream_errors.load(Ordering::Relaxed);
    let connect_errors = shared.connect_errors.load(Ordering::Relaxed);
    let done = shared.done.load(Ordering::Relaxed);
    let complete = !timed_out && done == m;

    // ---- Table.
    let mib = |kib: Option<u64>| {
        kib.map_or("n/a".to_string(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    println!();
    println!(
        "W1 load client: {m} clients as {} nodes, server {}, expecting update {}",
        config.nodes, config.server, config.expect_updates
    );
    if configured == m {
        println!(
            "cold start: all {m} clients had full config {cold_start:.3} s after the first connect"
        );
    } else {
        println!("cold start: only {configured} of {m} clients got full config");
    }
    println!(
        "  per client, connect to full config: p50 {:.3} s, p99 {:.3} s, max {:.3} s; initial seq {:?}",
        percentile(&per_client, 0.5),
        percentile(&per_client, 0.99),
        per_client.last().copied().unwrap_or(f64::NAN),
        initial_seqs
    );
    if let Some(cpu) = cold_cpu {
        println!("  server CPU during cold start: {cpu:.3} s");
    }
    println!();
    println!(
        "{:>6} {:>8} {:>10} {:>10} {:>10} {:>13} {:>9}",
        "update", "clients", "p50 ms", "p99 ms", "max ms", "server CPU-s", "window s"
    );
    let opt = |v: Option<f64>, prec: usize| v.map_or("n/a".to_string(), |v| format!("{v:.prec$}"));
    for r in &rows {
        let extra = if r.as_initial > 0 {
            format!("  (+{} as initial config)", r.as_initial)
        } else {
            String::new()
        };
        println!(
            "{:>6} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>13} {:>9}{extra}",
            r.seq,
            r.clients,
            r.p50,
            r.p99,
            r.max,
            opt(r.cpu, 3),
            opt(r.window, 2)
        );
    }
    println!();
    println!(
        "server RSS: before {}, all configured {}, end {}; per client {}",
        mib(rss_before),
        mib(rss_configured),
        mib(rss_end),
        rss_per_client.map_or("n/a".into(), |k| format!("{k:.1} KiB"))
    );
    println!(
        "NACKs sent: {nacks}; stream errors: {stream_errors}; connect errors: {connect_errors} (retries {}); unparsable versions: {}",
        shared.connect_retries.load(Ordering::Relaxed),
        shared.bad_versions.load(Ordering::Relaxed)
    );
    let after_done = shared.ended_after_done.load(Ordering::Relaxed);
    if after_done > 0 {
        println!(
            "  ({after_done} streams were closed by the server after reaching the last update)"
        );
    }
    for e in shared.errors.lock().iter() {
        println!("  error: {e}");
    }
    println!(
        "responses: {}, resource bytes: {:.1} MiB; client CPU: {client_cpu:.2} s; ran {:.2} s; {}",
        shared.responses.load(Ordering::Relaxed),
        shared.resource_bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        secs_between(first_connect, finished),
        if complete {
            format!("all {m} clients reached update {}", config.expect_updates)
        } else if timed_out {
            format!(
                "TIMED OUT after {:?}: {done} of {m} clients reached update {}",
                config.timeout, config.expect_updates
            )
        } else {
            format!(
                "INCOMPLETE: {done} of {m} clients reached update {}",
                config.expect_updates
            )
        }
    );

    if config.json {
        let report = serde_json::json!({
            "clients": m,
            "nodes": config.nodes,
            "expect_updates": config.expect_updates,
            "complete": complete,
            "timed_out": timed_out,
            "clients_done": done,
            "configured": configured,
            "cold_start_s": json_num(cold_start),
            "connect_to_config_s": {
                "p50": json_num(percentile(&per_client, 0.5)),
                "p99": json_num(percentile(&per_client, 0.99)),
                "max": json_num(per_client.last().copied().unwrap_or(f64::NAN)),
            },
            "cold_start_server_cpu_s": cold_cpu.map(json_num),
            "updates": rows.iter().map(|r| serde_json::json!({
                "seq": r.seq,
                "clients": r.clients,
                "as_initial": r.as_initial,
                "p50_ms": json_num(r.p50),
                "p99_ms": json_num(r.p99),
                "max_ms": json_num(r.max),
                "server_cpu_s": r.cpu.map(json_num),
                "window_s": r.window.map(json_num),
            })).collect::<Vec<_>>(),
            "server_rss_kib": {
                "before": rss_before,
                "configured": rss_configured,
                "end": rss_end,
                "per_client": rss_per_client.map(json_num),
            },
            "nacks": nacks,
            "stream_errors": stream_errors,
            "connect_errors": connect_errors,
            "responses": shared.responses.load(Ordering::Relaxed),
            "resource_bytes": shared.resource_bytes.load(Ordering::Relaxed),
            "client_cpu_s": json_num(client_cpu),
        });
        println!("{report}");
    }
    if complete && nacks == 0 && stream_errors == 0 && connect_errors == 0 {
        0
    } else {
        1
    }
}
