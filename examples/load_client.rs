//! Load client for the reference workload "W1": M Envoy-like ADS clients,
//! each on its own HTTP/2 connection, measuring how fast a control plane
//! (`examples/bench_server.rs`) gets every update to every client.
//!
//! Each client opens one ADS stream as node `node-<i % N>`, state of the
//! world by default or incremental (delta) with `--delta`, and behaves like
//! Envoy: CDS and LDS wildcard, EDS for every cluster received, RDS for the
//! routes its listeners name, and an ACK for every response (a NACK when a
//! resource does not decode). It decodes only names (a message with only
//! field 1; listeners in full, for their route names), so thousands of
//! clients stay light.
//!
//! Versions must be `v<seq>-<unix nanoseconds>` (the server's clock at the
//! start of that update), for every type and, in delta, for
//! `system_version_info`. With `--server-pid`, the server's CPU time
//! (utime+stime) and RSS are read from /proc.
//!
//! When a client has full config at `seq`, and its latency for it:
//! - state of the world: every type it needs (CDS, LDS, and EDS and RDS once
//!   it subscribed to names) was last received with a version at `seq`; the
//!   latency is the receive time of the last of those responses minus the
//!   timestamp in the version.
//! - delta: unchanged resources are not sent again, so not every type has a
//!   response at each `seq`. The client has config once it received a CDS
//!   and an LDS response and holds a resource for every EDS and RDS name it
//!   subscribed to. It is at `seq` when, in addition, the EDS name delivered
//!   longest ago came in a response whose `system_version_info` is at
//!   `seq`, so every EDS name is at `seq` or later (with no clusters: the
//!   highest seq any response carried). The latency is the receive time of the response
//!   that brought it there minus the timestamp of `seq`. This is exact for
//!   W1, where every update changes every load assignment and nothing else;
//!   a workload whose updates leave some load assignment unchanged would
//!   never reach those updates under this rule.
//!
//! ```text
//! cargo run --release --example load_client -- --clients 1000 --nodes 1000 \
//!     --expect-updates 5 --server-pid "$(cat server.pid)" [--delta]
//! ```
//! Talks to loopback addresses only.

#[path = "support/flags.rs"]
mod flags;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use xds_control_plane::envoy_types::pb::envoy::config::core::v3::Node;
use xds_control_plane::envoy_types::pb::envoy::config::listener::v3::Listener;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use xds_control_plane::envoy_types::pb::google::rpc::Status as RpcStatus;
use xds_control_plane::resource::{listener_route_names, type_url};

// Thousands of connections allocating and freeing small buffers: glibc's
// malloc keeps returning memory to the kernel and faulting it back in,
// which would make the client, not the server under test, the bottleneck
// of a run on the same machine. `scripts/bench-w1.sh` also has mimalloc
// commit memory on demand (`MIMALLOC_ARENA_EAGER_COMMIT=0`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: load_client [--server 127.0.0.1:18000] [--clients 1000] [--nodes 1]
                   [--expect-updates 0] [--timeout 120] [--server-pid PID]
                   [--connect-rate R] [--connect-concurrency 128]
                   [--h2-window BYTES] [--threads T] [--json] [--delta]

  --expect-updates K     stop once every client has full config at update K
                         (0: once every client has its initial config)
  --timeout S            stop after S seconds whatever happened
  --server-pid PID       read the server's CPU time and RSS from /proc
  --connect-rate R       open at most R clients per second (default: as fast
                         as --connect-concurrency connects in flight allow)
  --h2-window BYTES      HTTP/2 stream and connection receive window
                         (default 268435456, Envoy's default)
  --threads T            client threads, each running its share of the
                         clients on its own runtime (default: one per CPU)
  --json                 also print the report as one JSON line
  --delta                incremental xDS (DeltaAggregatedResources)

Full config at update K: state of the world, every needed type was last
received at K. Delta, which does not resend unchanged resources: CDS and LDS
received, a resource held for every EDS and RDS name subscribed, and the EDS
name delivered longest ago came in a response at K. Exact for W1, whose
updates change every load assignment and nothing else.";

const ADS_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_ADS_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

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

/// `DeltaDiscoveryResponse` without `control_plane`,
/// `removed_resource_names` and `resource_errors`.
#[derive(Clone, PartialEq, Message)]
struct LightDeltaResponse {
    #[prost(string, tag = "1")]
    system_version_info: String,
    #[prost(message, repeated, tag = "2")]
    resources: Vec<LightResource>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
    #[prost(string, repeated, tag = "6")]
    removed_resources: Vec<String>,
}

/// A delta `Resource`: its name and body. The version is not needed, since
/// a client that never reconnects sends no `initial_resource_versions`.
#[derive(Clone, PartialEq, Message)]
struct LightResource {
    #[prost(message, optional, tag = "2")]
    resource: Option<LightAny>,
    #[prost(string, tag = "3")]
    name: String,
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
    threads: usize,
    json: bool,
    delta: bool,
}

fn parse_args() -> Result<Config, String> {
    let mut f = flags::Flags::parse(USAGE, &["json", "delta"])?;
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
        threads: f.get(
            "threads",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )?,
        json: f.flag("json"),
        delta: f.flag("delta"),
    };
    f.finish()?;
    if !config.server.ip().is_loopback() {
        return Err(format!(
            "--server {}: only loopback addresses are allowed",
            config.server
        ));
    }
    if config.clients == 0
        || config.nodes == 0
        || config.connect_concurrency == 0
        || config.threads == 0
    {
        return Err(
            "--clients, --nodes, --connect-concurrency and --threads must be positive".into(),
        );
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
    /// Connects in flight, per client thread: one shared queue would let
    /// the thread that queued first make every early connect alone.
    connect_slots: Vec<Semaphore>,
    initial: Mutex<Vec<Initial>>,
    /// What the clients of each thread counted, apart from other threads'.
    tallies: Vec<Tally>,
    configured: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicUsize,
    nacks: AtomicU64,
    stream_errors: AtomicU64,
    connect_errors: AtomicU64,
    connect_retries: AtomicU64,
    ended_after_done: AtomicU64,
    bad_versions: AtomicU64,
    errors: Mutex<Vec<String>>,
}

/// What the clients of one thread count on every response: written by that
/// thread only, on cache lines of its own.
#[repr(align(128))]
#[derive(Default)]
struct Tally {
    responses: AtomicU64,
    resource_bytes: AtomicU64,
    /// (seq, latency) of every update a client had full config at.
    updates: Mutex<Vec<(u64, Duration)>>,
    /// The server's timestamp of each seq seen.
    stamps: Mutex<BTreeMap<u64, SystemTime>>,
}

impl Shared {
    fn new(config: Config) -> Shared {
        Shared {
            connect_slots: (0..config.threads)
                .map(|_| Semaphore::new(config.connect_concurrency.div_ceil(config.threads)))
                .collect(),
            stop: CancellationToken::new(),
            initial: Mutex::new(Vec::new()),
            tallies: (0..config.threads).map(|_| Tally::default()).collect(),
            configured: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            nacks: AtomicU64::new(0),
            stream_errors: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            connect_retries: AtomicU64::new(0),
            ended_after_done: AtomicU64::new(0),
            bad_versions: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            config,
        }
    }

    /// The tally of the thread running client `index`.
    fn tally(&self, index: usize) -> &Tally {
        &self.tallies[index % self.tallies.len()]
    }

    fn responses(&self) -> u64 {
        self.tallies
            .iter()
            .map(|t| t.responses.load(Ordering::Relaxed))
            .sum()
    }

    fn resource_bytes(&self) -> u64 {
        let bytes = self
            .tallies
            .iter()
            .map(|t| t.resource_bytes.load(Ordering::Relaxed));
        bytes.sum()
    }

    /// Every (seq, latency) recorded, taken out.
    fn take_updates(&self) -> Vec<(u64, Duration)> {
        let mut all = Vec::new();
        for tally in &self.tallies {
            all.append(&mut tally.updates.lock());
        }
        all
    }

    /// The server's timestamp of every seq seen.
    fn stamps(&self) -> BTreeMap<u64, SystemTime> {
        let mut all = BTreeMap::new();
        for tally in &self.tallies {
            for (seq, stamp) in tally.stamps.lock().iter() {
                all.entry(*seq).or_insert(*stamp);
            }
        }
        all
    }

    fn error(&self, message: String) {
        let mut errors = self.errors.lock();
        if errors.len() < 5 {
            errors.push(message);
        }
    }

    /// Parses a response's version, counting one that does not follow
    /// `v<seq>-<unix nanoseconds>`.
    fn version(&self, version: &str) -> Option<(u64, SystemTime)> {
        let parsed = parse_version(version);
        if parsed.is_none() {
            self.bad_versions.fetch_add(1, Ordering::Relaxed);
        }
        parsed
    }
}

/// `v<seq>-<unix nanoseconds>`.
fn parse_version(version: &str) -> Option<(u64, SystemTime)> {
    let (seq, nanos) = version.strip_prefix('v')?.split_once('-')?;
    let nanos: u64 = nanos.parse().ok()?;
    Some((seq.parse().ok()?, UNIX_EPOCH + Duration::from_nanos(nanos)))
}

/// Decodes one resource body of type `t`: its name, and for a listener the
/// routes it uses.
fn decode_resource(t: usize, body: &Bytes) -> Result<(String, Vec<String>), String> {
    if t == LDS {
        let listener = Listener::decode(body.clone()).map_err(|e| e.to_string())?;
        let routes = listener_route_names(&listener).into_iter().collect();
        return Ok((listener.name, routes));
    }
    let named = NameOnly::decode(body.clone()).map_err(|e| e.to_string())?;
    if named.name.is_empty() {
        return Err("a resource has no name".into());
    }
    Ok((named.name, Vec::new()))
}

// ---------------------------------------------------------------------------
// One client: what both protocols share.

/// How far a client got, and the bookkeeping of reaching a seq.
struct Progress {
    index: usize,
    connect_started: SystemTime,
    /// Seq of the last full config.
    complete: Option<u64>,
    done: bool,
}

impl Progress {
    fn new(index: usize) -> Progress {
        Progress {
            index,
            connect_started: SystemTime::now(),
            complete: None,
            done: false,
        }
    }

    /// Records full config at `seq`, whose server timestamp is `stamp`,
    /// reached at `now`: the first is the initial config, later ones
    /// updates with their latency. Seqs at or below the last are ignored.
    fn reached(&mut self, seq: u64, stamp: SystemTime, now: SystemTime, shared: &Shared) {
        if self.complete.is_some_and(|c| c >= seq) {
            return;
        }
        let tally = shared.tally(self.index);
        tally.stamps.lock().entry(seq).or_insert(stamp);
        if self.complete.is_none() {
            shared.initial.lock().push(Initial {
                connect_to_config: now.duration_since(self.connect_started).unwrap_or_default(),
                at: now,
                seq,
            });
            shared.configured.fetch_add(1, Ordering::Relaxed);
        } else {
            let latency = now.duration_since(stamp).unwrap_or_default();
            tally.updates.lock().push((seq, latency));
        }
        self.complete = Some(seq);
        if !self.done && seq >= shared.config.expect_updates {
            self.done = true;
            shared.done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One ADS protocol: state of the world or delta.
trait Protocol: Send + Sized + 'static {
    type Request: Message + Send + 'static;
    type Response: Message + Default + Send + 'static;
    /// What the client reads of a response.
    type Decoded;
    /// The gRPC method.
    const PATH: &'static str;

    fn new(node: Node) -> Self;

    /// The requests that open the stream: CDS and LDS wildcard, as Envoy
    /// starts.
    fn start(&mut self) -> Vec<Self::Request>;

    /// A response's type URL and the size of its resource bodies.
    fn measure(response: &Self::Response) -> (&str, usize);

    /// Decodes what the client reads of a response of type `t`.
    fn decode(t: usize, response: &Self::Response) -> Result<Self::Decoded, String>;

    /// The NACK of a response of type `t`.
    fn nack(&mut self, t: usize, response: Self::Response, error: RpcStatus) -> Self::Request;

    /// Applies an accepted response of type `t` received at `now`; returns
    /// its ACK, then the changed subscriptions.
    fn accept(
        &mut self,
        t: usize,
        response: Self::Response,
        decoded: Self::Decoded,
        now: SystemTime,
        progress: &mut Progress,
        shared: &Shared,
    ) -> Vec<Self::Request>;
}

/// Handles one response received at `now`: counts it, then ACKs or NACKs
/// it. Returns the requests to send.
fn on_response<P: Protocol>(
    client: &mut P,
    response: P::Response,
    now: SystemTime,
    progress: &mut Progress,
    shared: &Shared,
) -> Vec<P::Request> {
    let (type_url, bytes) = P::measure(&response);
    let tally = shared.tally(progress.index);
    tally.responses.fetch_add(1, Ordering::Relaxed);
    tally
        .resource_bytes
        .fetch_add(bytes as u64, Ordering::Relaxed);
    let Some(t) = TYPES.iter().position(|u| *u == type_url) else {
        // Not a type the client asked for: nothing to ACK it against.
        shared.error(format!("unexpected type {type_url}"));
        return Vec::new();
    };
    match P::decode(t, &response) {
        Ok(decoded) => client.accept(t, response, decoded, now, progress, shared),
        Err(error) => {
            shared.nacks.fetch_add(1, Ordering::Relaxed);
            shared.error(format!(
                "client {}: NACK {}: {error}",
                progress.index, TYPES[t]
            ));
            let status = RpcStatus {
                code: 3, // INVALID_ARGUMENT, as Envoy sends for a rejected config
                message: error,
                details: Vec::new(),
            };
            vec![client.nack(t, response, status)]
        }
    }
}

// ---------------------------------------------------------------------------
// State of the world.

#[derive(Default)]
struct TypeState {
    /// Version and nonce of the last accepted response ("" before any).
    version: String,
    nonce: String,
    /// Seq of the last accepted response, if its version parsed.
    seq: Option<u64>,
    received: bool,
}

struct Sotw {
    node: Node,
    types: [TypeState; 4],
    /// Names subscribed for EDS and RDS, sorted.
    eds_names: Vec<String>,
    rds_names: Vec<String>,
}

impl Sotw {
    fn request(&self, t: usize) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: self.types[t].version.clone(),
            node: Some(self.node.clone()),
            resource_names: self.names_of(t).to_vec(),
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

    /// Full config at `seq` once every needed type is at it.
    fn at_seq(&self, seq: u64) -> bool {
        let needed = [
            true,
            !self.eds_names.is_empty(),
            true,
            !self.rds_names.is_empty(),
        ];
        self.types
            .iter()
            .zip(needed)
            .all(|(state, need)| !need || (state.received && state.seq == Some(seq)))
    }
}

/// The names in a state-of-the-world response that lead to subscriptions:
/// clusters' names for CDS, listeners' routes for LDS (none for the rest).
fn decode_names(t: usize, resources: &[LightAny]) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for resource in resources {
        let (name, routes) = decode_resource(t, &resource.value)?;
        match t {
            CDS => names.push(name),
            LDS => names.extend(routes),
            _ => {}
        }
    }
    Ok(names)
}

impl Protocol for Sotw {
    type Request = DiscoveryRequest;
    type Response = LightResponse;
    type Decoded = Vec<String>;
    const PATH: &'static str = ADS_PATH;

    fn new(node: Node) -> Sotw {
        Sotw {
            node,
            types: Default::default(),
            eds_names: Vec::new(),
            rds_names: Vec::new(),
        }
    }

    fn start(&mut self) -> Vec<DiscoveryRequest> {
        vec![self.request(CDS), self.request(LDS)]
    }

    fn measure(response: &LightResponse) -> (&str, usize) {
        let bytes = response.resources.iter().map(|r| r.value.len()).sum();
        (&response.type_url, bytes)
    }

    fn decode(t: usize, response: &LightResponse) -> Result<Vec<String>, String> {
        decode_names(t, &response.resources)
    }

    /// Envoy's NACK repeats the version it last accepted.
    fn nack(&mut self, t: usize, response: LightResponse, error: RpcStatus) -> DiscoveryRequest {
        DiscoveryRequest {
            response_nonce: response.nonce,
            error_detail: Some(error),
            ..self.request(t)
        }
    }

    fn accept(
        &mut self,
        t: usize,
        response: LightResponse,
        names: Vec<String>,
        now: SystemTime,
        progress: &mut Progress,
        shared: &Shared,
    ) -> Vec<DiscoveryRequest> {
        let parsed = shared.version(&response.version_info);
        let state = &mut self.types[t];
        state.version = response.version_info;
        state.nonce = response.nonce;
        state.seq = parsed.map(|(seq, _)| seq);
        state.received = true;
        let mut out = vec![self.request(t)];
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
                out.push(self.request(dependent));
            }
        }
        if let Some((seq, stamp)) = parsed {
            if self.at_seq(seq) {
                progress.reached(seq, stamp, now, shared);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Delta.

/// What a client holds of one subscribed EDS or RDS name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Held {
    /// Nothing yet, or the server removed it.
    Missing,
    /// Delivered by a response at this seq.
    At(u64),
    /// Delivered by a response whose version did not parse.
    Unknown,
}

/// Changes to one type's subscription, for the next request.
#[derive(Debug, Default, PartialEq, Eq)]
struct Diff {
    subscribe: Vec<String>,
    unsubscribe: Vec<String>,
}

impl Diff {
    fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

/// The names subscribed for EDS or RDS, each with what the client holds.
#[derive(Default)]
struct Subscriptions {
    names: BTreeMap<String, Held>,
}

impl Subscriptions {
    /// Subscribes to `name` unless it already is.
    fn add(&mut self, name: String, diff: &mut Diff) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.names.entry(name) {
            diff.subscribe.push(e.key().clone());
            e.insert(Held::Missing);
        }
    }

    /// Unsubscribes from `name` if subscribed.
    fn remove(&mut self, name: &str, diff: &mut Diff) {
        if self.names.remove(name).is_some() {
            diff.unsubscribe.push(name.to_string());
        }
    }

    /// Subscribes to exactly `wanted`.
    fn set(&mut self, wanted: &BTreeSet<&str>, diff: &mut Diff) {
        let gone: Vec<String> = self
            .names
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            self.remove(&name, diff);
        }
        for name in wanted {
            if !self.names.contains_key(*name) {
                self.add(name.to_string(), diff);
            }
        }
    }

    /// Records what a response did to `name`; names not subscribed (a
    /// response crossing an unsubscribe) are ignored.
    fn deliver(&mut self, name: &str, held: Held) {
        if let Some(h) = self.names.get_mut(name) {
            *h = held;
        }
    }

    fn all_held(&self) -> bool {
        self.names.values().all(|h| *h != Held::Missing)
    }

    /// The lowest seq any name was delivered at; `None` while a name is
    /// missing or at an unknown seq, or when there are no names.
    fn min_seq(&self) -> Option<u64> {
        self.names
            .values()
            .map(|h| match h {
                Held::At(seq) => Some(*seq),
                Held::Missing | Held::Unknown => None,
            })
            .try_fold(u64::MAX, |min, seq| Some(min.min(seq?)))
            .filter(|_| !self.names.is_empty())
    }
}

struct Delta {
    node: Node,
    /// Whether a request of each type was sent: only the first carries the
    /// node, as Envoy does.
    opened: [bool; 4],
    /// Whether a response of each type arrived.
    received: [bool; 4],
    /// EDS subscriptions: one per cluster known from CDS.
    clusters: Subscriptions,
    /// Known listeners and the routes each uses.
    listeners: BTreeMap<String, Vec<String>>,
    /// RDS subscriptions: the routes of all listeners.
    routes: Subscriptions,
    /// The highest seq any response carried.
    latest: Option<u64>,
    /// Server timestamps of the seqs seen above the last one reached.
    stamps: Vec<(u64, SystemTime)>,
}

impl Delta {
    fn request(&mut self, t: usize, diff: Diff) -> DeltaDiscoveryRequest {
        let node = (!self.opened[t]).then(|| self.node.clone());
        self.opened[t] = true;
        DeltaDiscoveryRequest {
            node,
            type_url: TYPES[t].to_string(),
            resource_names_subscribe: diff.subscribe,
            resource_names_unsubscribe: diff.unsubscribe,
            ..Default::default()
        }
    }

    /// Applies an accepted response of type `t`: `resources` (name, routes
    /// for a listener) added or updated at `held`, `removed` gone. Returns
    /// the subscription changes of the type that depends on `t`.
    fn apply(
        &mut self,
        t: usize,
        resources: Vec<(String, Vec<String>)>,
        removed: &[String],
        held: Held,
    ) -> Diff {
        let mut diff = Diff::default();
        self.received[t] = true;
        match t {
            CDS => {
                for name in removed {
                    self.clusters.remove(name, &mut diff);
                }
                for (name, _) in resources {
                    self.clusters.add(name, &mut diff);
                }
            }
            LDS => {
                for name in removed {
                    self.listeners.remove(name);
                }
                for (name, routes) in resources {
                    self.listeners.insert(name, routes);
                }
                let wanted: BTreeSet<&str> = self
                    .listeners
                    .values()
                    .flatten()
                    .map(String::as_str)
                    .collect();
                self.routes.set(&wanted, &mut diff);
            }
            _ => {
                let subs = if t == EDS {
                    &mut self.clusters
                } else {
                    &mut self.routes
                };
                for name in removed {
                    subs.deliver(name, Held::Missing);
                }
                for (name, _) in &resources {
                    subs.deliver(name, held);
                }
            }
        }
        diff
    }

    /// The seq the client has full config at, if it has (see the file's
    /// doc comment).
    fn config_seq(&self) -> Option<u64> {
        if !(self.received[CDS] && self.received[LDS] && self.routes.all_held()) {
            return None;
        }
        if self.clusters.names.is_empty() {
            self.latest
        } else {
            self.clusters.min_seq()
        }
    }
}

/// A delta response's resources, decoded: (name, routes for a listener).
/// Checks that each body carries the name the resource has.
fn decode_delta(
    t: usize,
    resources: &[LightResource],
) -> Result<Vec<(String, Vec<String>)>, String> {
    resources
        .iter()
        .map(|r| {
            let body = r
                .resource
                .as_ref()
                .ok_or_else(|| format!("resource {:?} has no body", r.name))?;
            let (name, routes) = decode_resource(t, &body.value)?;
            if name != r.name {
                return Err(format!("resource {:?} holds {name:?}", r.name));
            }
            Ok((name, routes))
        })
        .collect()
}

impl Protocol for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = LightDeltaResponse;
    type Decoded = Vec<(String, Vec<String>)>;
    const PATH: &'static str = DELTA_ADS_PATH;

    fn new(node: Node) -> Delta {
        Delta {
            node,
            opened: [false; 4],
            received: [false; 4],
            clusters: Subscriptions::default(),
            listeners: BTreeMap::new(),
            routes: Subscriptions::default(),
            latest: None,
            stamps: Vec::new(),
        }
    }

    /// An empty first subscription is the (legacy) wildcard, as Envoy sends.
    fn start(&mut self) -> Vec<DeltaDiscoveryRequest> {
        vec![
            self.request(CDS, Diff::default()),
            self.request(LDS, Diff::default()),
        ]
    }

    fn measure(response: &LightDeltaResponse) -> (&str, usize) {
        let bytes = response
            .resources
            .iter()
            .filter_map(|r| r.resource.as_ref())
            .map(|a| a.value.len())
            .sum();
        (&response.type_url, bytes)
    }

    fn decode(t: usize, response: &LightDeltaResponse) -> Result<Self::Decoded, String> {
        decode_delta(t, &response.resources)
    }

    fn nack(
        &mut self,
        t: usize,
        response: LightDeltaResponse,
        error: RpcStatus,
    ) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            response_nonce: response.nonce,
            error_detail: Some(error),
            ..self.request(t, Diff::default())
        }
    }

    fn accept(
        &mut self,
        t: usize,
        response: LightDeltaResponse,
        resources: Self::Decoded,
        now: SystemTime,
        progress: &mut Progress,
        shared: &Shared,
    ) -> Vec<DeltaDiscoveryRequest> {
        let parsed = shared.version(&response.system_version_info);
        if let Some((seq, stamp)) = parsed {
            self.latest = self.latest.max(Some(seq));
            if !self.stamps.iter().any(|(s, _)| *s == seq) {
                self.stamps.push((seq, stamp));
            }
        }
        let held = parsed.map_or(Held::Unknown, |(seq, _)| Held::At(seq));
        let diff = self.apply(t, resources, &response.removed_resources, held);
        let mut ack = self.request(t, Diff::default());
        ack.response_nonce = response.nonce;
        let mut out = vec![ack];
        if !diff.is_empty() {
            let dependent = if t == CDS { EDS } else { RDS };
            out.push(self.request(dependent, diff));
        }
        if let Some(seq) = self.config_seq() {
            if let Some(&(_, stamp)) = self.stamps.iter().find(|(s, _)| *s == seq) {
                progress.reached(seq, stamp, now, shared);
                // Only later seqs can be reached from now on.
                self.stamps.retain(|(s, _)| *s > seq);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// The connection and stream, for either protocol.

/// Opens the client's HTTP/2 connection, retrying a few times; h2's
/// connection task runs on the client's thread.
async fn connect(shared: &Shared) -> Result<h2::client::SendRequest<Bytes>, String> {
    let mut attempt = 0;
    loop {
        match try_connect(&shared.config).await {
            Ok(connection) => return Ok(connection),
            Err(_) if attempt < 5 => {
                attempt += 1;
                shared.connect_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(format!("connect: {e}")),
        }
    }
}

async fn try_connect(config: &Config) -> Result<h2::client::SendRequest<Bytes>, String> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(config.server),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (send_request, connection) = h2::client::Builder::new()
        .initial_window_size(config.h2_window)
        .initial_connection_window_size(config.h2_window)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send_request)
}

/// Opens the ADS stream: the request headers, then `first` (the opening
/// requests), then waits for the response headers.
async fn open_stream<P: Protocol>(
    shared: &Shared,
    first: Vec<P::Request>,
) -> Result<(h2::SendStream<Bytes>, h2::RecvStream), String> {
    let connection = connect(shared).await?;
    let mut ready = connection.ready().await.map_err(|e| e.to_string())?;
    let request = http::Request::post(format!("http://{}{}", shared.config.server, P::PATH))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, mut send) = ready
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    for request in &first {
        send_message(&mut send, request)?;
    }
    let response = response.await.map_err(|e| e.to_string())?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("HTTP status {}", response.status()));
    }
    // A stream refused at once answers with its status in the headers.
    if let Some(status) = grpc_status(response.headers()).filter(|s| s.0 != "0") {
        return Err(format!("grpc-status {}: {}", status.0, status.1));
    }
    Ok((send, response.into_body()))
}

/// A request as one gRPC message, sent on the stream.
fn send_message<M: Message>(send: &mut h2::SendStream<Bytes>, message: &M) -> Result<(), String> {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(GRPC_HEADER + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).map_err(|_| "request too large".to_string())?);
    message.encode(&mut buf).map_err(|e| e.to_string())?;
    send.send_data(buf.freeze(), false)
        .map_err(|e| e.to_string())
}

/// `grpc-status` and `grpc-message` of headers or trailers.
fn grpc_status(headers: &http::HeaderMap) -> Option<(String, String)> {
    let text = |name| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    Some((
        text("grpc-status")?,
        text("grpc-message").unwrap_or_default(),
    ))
}

/// The gRPC message header: a compression flag and a 4-byte length.
const GRPC_HEADER: usize = 5;

/// Cuts the whole gRPC messages out of received data frames: straight
/// out of a frame when one holds them whole, else gathered.
#[derive(Default)]
struct Messages {
    pending: BytesMut,
}

impl Messages {
    /// Adds a data frame; returns the messages it completes. A message
    /// split across frames is gathered into a buffer sized once, from its
    /// header: large responses come in many frames.
    fn push(&mut self, mut chunk: Bytes, out: &mut Vec<Bytes>) -> Result<(), String> {
        loop {
            if self.pending.is_empty() {
                let whole = Self::whole_len(&chunk)?;
                if let Some(whole) = whole.filter(|whole| *whole <= chunk.len()) {
                    let mut message = chunk.split_to(whole);
                    message.advance(GRPC_HEADER);
                    out.push(message);
                    continue;
                }
                if chunk.is_empty() {
                    return Ok(());
                }
                self.pending.reserve(whole.unwrap_or(GRPC_HEADER));
            }
            let whole = Self::whole_len(&self.pending)?;
            let goal = whole.unwrap_or(GRPC_HEADER);
            let take = (goal - self.pending.len()).min(chunk.len());
            self.pending.extend_from_slice(&chunk[..take]);
            chunk.advance(take);
            if self.pending.len() < goal {
                // The frame is used up.
                return Ok(());
            }
            match whole {
                Some(_) => {
                    let mut message = std::mem::take(&mut self.pending).freeze();
                    message.advance(GRPC_HEADER);
                    out.push(message);
                }
                // The header just completed: make room for the body once.
                None => {
                    let whole = Self::whole_len(&self.pending)?.unwrap_or(GRPC_HEADER);
                    self.pending.reserve(whole - GRPC_HEADER);
                }
            }
        }
    }

    /// The length of the message starting `bytes`, header included, once
    /// its header is there.
    fn whole_len(bytes: &[u8]) -> Result<Option<usize>, String> {
        if bytes.len() < GRPC_HEADER {
            return Ok(None);
        }
        if bytes[0] != 0 {
            return Err("compressed response".into());
        }
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        Ok(Some(GRPC_HEADER + len))
    }
}

/// Starts the clients on `--threads` threads, each a single-threaded
/// runtime running clients `shard`, `shard + threads`, ...: a client's
/// connection, stream and bookkeeping stay on one thread, so no task
/// migrates and no buffer is freed by another thread than its own, which
/// keeps the client light next to the server it measures.
fn start_shards(shared: &Arc<Shared>) -> Vec<std::thread::JoinHandle<()>> {
    let threads = shared.config.threads;
    (0..threads)
        .filter_map(|shard| {
            let own = Arc::clone(shared);
            let spawned = std::thread::Builder::new()
                .name(format!("load-client-{shard}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime.block_on(run_shard(shard, own)),
                        Err(e) => shard_failed(shard, &own, &format!("runtime: {e}")),
                    }
                });
            spawned
                .map_err(|e| shard_failed(shard, shared, &format!("thread: {e}")))
                .ok()
        })
        .collect()
}

/// Runs one thread's share of the clients until they end.
async fn run_shard(shard: usize, shared: Arc<Shared>) {
    let threads = shared.config.threads;
    let mut pace = shared.config.connect_rate.map(|rate| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(threads as f64 / rate));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        i
    });
    let mut clients = Vec::new();
    for index in (shard..shared.config.clients).step_by(threads) {
        if let Some(pace) = &mut pace {
            pace.tick().await;
        }
        let shared = Arc::clone(&shared);
        clients.push(if shared.config.delta {
            tokio::spawn(run_client::<Delta>(index, shared))
        } else {
            tokio::spawn(run_client::<Sotw>(index, shared))
        });
    }
    for client in clients {
        let _ = client.await;
    }
}

/// Counts every client of a shard that could not start as failed.
fn shard_failed(shard: usize, shared: &Shared, why: &str) {
    let clients = (shard..shared.config.clients)
        .step_by(shared.config.threads)
        .count();
    shared.error(format!("client thread {shard}: {why}"));
    shared.failed.fetch_add(clients, Ordering::Relaxed);
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

async fn run_client<P: Protocol>(index: usize, shared: Arc<Shared>) {
    let end = tokio::select! {
        end = client_session::<P>(index, &shared) => end,
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
async fn client_session<P: Protocol>(index: usize, shared: &Shared) -> End {
    let slots = &shared.connect_slots[index % shared.connect_slots.len()];
    let Ok(permit) = slots.acquire().await else {
        return End::ConnectFailed("connect slots closed".into());
    };
    let mut progress = Progress::new(index);
    let mut client = P::new(Node {
        id: format!("node-{}", index % shared.config.nodes),
        cluster: "xds-load-client".into(),
        user_agent_name: "xds-load-client".into(),
        ..Default::default()
    });
    let (mut send, mut recv) = match open_stream::<P>(shared, client.start()).await {
        Ok(stream) => stream,
        Err(e) => return End::ConnectFailed(format!("open stream: {e}")),
    };
    drop(permit);
    let mut messages = Messages::default();
    let mut whole = Vec::new();
    let ended = 'stream: loop {
        let chunk = match recv.data().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => break format!("stream failed: {e}"),
            None => {
                break match recv.trailers().await {
                    Ok(trailers) => match trailers.as_ref().and_then(grpc_status) {
                        Some((code, message)) if code != "0" => {
                            format!("stream failed: grpc-status {code}: {message}")
                        }
                        _ => "stream ended by the server".into(),
                    },
                    Err(e) => format!("stream failed: {e}"),
                };
            }
        };
        let _ = recv.flow_control().release_capacity(chunk.len());
        if let Err(e) = messages.push(chunk, &mut whole) {
            break format!("stream failed: {e}");
        }
        for message in whole.drain(..) {
            let response = match P::Response::decode(message) {
                Ok(response) => response,
                Err(e) => break 'stream format!("stream failed: undecodable response: {e}"),
            };
            let now = SystemTime::now();
            for request in on_response(&mut client, response, now, &mut progress, shared) {
                if let Err(e) = send_message(&mut send, &request) {
                    break 'stream format!("request stream closed: {e}");
                }
            }
        }
    };
    if progress.done {
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

#[tokio::main(flavor = "current_thread")]
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
    let shared = Arc::new(Shared::new(config));
    let config = &shared.config;
    let m = config.clients;
    let started = tokio::time::Instant::now();
    let deadline = started + config.timeout;
    let first_connect = SystemTime::now();

    let shards = start_shards(&shared);

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
    let stamps: Vec<(u64, SystemTime)> = shared.stamps().into_iter().collect();
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
    // Clients end at once on `stop`; a shard's runtime ends with them.
    let joined = tokio::task::spawn_blocking(move || {
        for shard in shards {
            let _ = shard.join();
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), joined).await;
    let client_cpu = own_cpu_seconds(ticks_per_second);

    // ---- Assemble the report.
    let initial = std::mem::take(&mut *shared.initial.lock());
    let updates = shared.take_updates();
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
        "W1 load client ({}): {m} clients as {} nodes, server {}, expecting update {}",
        if config.delta {
            "delta"
        } else {
            "state of the world"
        },
        config.nodes,
        config.server,
        config.expect_updates
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
        shared.responses(),
        shared.resource_bytes() as f64 / (1 << 20) as f64,
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
            "delta": config.delta,
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
            "responses": shared.responses(),
            "resource_bytes": shared.resource_bytes(),
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

#[cfg(test)]
#[path = "support/w1.rs"]
mod w1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_from_frames_and_gathered_across_them() {
        let framed = |body: &[u8]| {
            let mut m = vec![0, 0, 0, 0, body.len() as u8];
            m.extend_from_slice(body);
            m
        };
        let mut bytes = framed(b"one");
        bytes.extend(framed(b""));
        bytes.extend(framed(b"three"));
        for cut in 1..bytes.len() {
            let mut messages = Messages::default();
            let mut out = Vec::new();
            messages
                .push(Bytes::copy_from_slice(&bytes[..cut]), &mut out)
                .unwrap();
            messages
                .push(Bytes::copy_from_slice(&bytes[cut..]), &mut out)
                .unwrap();
            assert_eq!(out, [&b"one"[..], b"", b"three"], "cut at {cut}");
            assert!(messages.pending.is_empty());
        }
        // A message in many small frames.
        let mut messages = Messages::default();
        let mut out = Vec::new();
        for byte in framed(b"spread out") {
            messages
                .push(Bytes::copy_from_slice(&[byte]), &mut out)
                .unwrap();
        }
        assert_eq!(out, [&b"spread out"[..]]);
        let mut out = Vec::new();
        let compressed = Bytes::from_static(&[1, 0, 0, 0, 0]);
        assert!(Messages::default().push(compressed, &mut out).is_err());
    }

    fn shared(expect_updates: u64) -> Shared {
        Shared::new(Config {
            server: SocketAddr::from(([127, 0, 0, 1], 18000)),
            clients: 1,
            nodes: 1,
            expect_updates,
            timeout: Duration::from_secs(1),
            server_pid: None,
            connect_rate: None,
            connect_concurrency: 1,
            h2_window: 65535,
            threads: 1,
            json: false,
            delta: true,
        })
    }

    fn version(seq: u64) -> String {
        format!("v{seq}-{}", 1_000_000_000 * (seq + 1))
    }

    fn resource(name: &str, body: Vec<u8>) -> LightResource {
        LightResource {
            resource: Some(LightAny {
                value: Bytes::from(body),
            }),
            name: name.into(),
        }
    }

    fn response(
        t: usize,
        seq: u64,
        resources: Vec<LightResource>,
        removed: &[&str],
    ) -> LightDeltaResponse {
        LightDeltaResponse {
            system_version_info: version(seq),
            resources,
            type_url: TYPES[t].into(),
            nonce: format!("{t}-{seq}"),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn clusters(cs: &[usize]) -> Vec<LightResource> {
        cs.iter()
            .map(|&c| resource(&w1::cluster_name(c), w1::cluster(c).encode_to_vec()))
            .collect()
    }

    fn endpoints(cs: &[usize], seq: u64) -> Vec<LightResource> {
        cs.iter()
            .map(|&c| {
                let body = w1::load_assignment(c, seq, 2).encode_to_vec();
                resource(&w1::cluster_name(c), body)
            })
            .collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subscriptions_send_only_differences() {
        let mut subs = Subscriptions::default();
        let mut diff = Diff::default();
        subs.add("a".into(), &mut diff);
        subs.add("b".into(), &mut diff);
        subs.add("a".into(), &mut diff);
        assert_eq!(diff.subscribe, names(&["a", "b"]));
        assert!(diff.unsubscribe.is_empty());

        let mut diff = Diff::default();
        subs.set(&["b", "c"].into_iter().collect(), &mut diff);
        assert_eq!(
            diff,
            Diff {
                subscribe: names(&["c"]),
                unsubscribe: names(&["a"]),
            }
        );

        let mut diff = Diff::default();
        subs.set(&["b", "c"].into_iter().collect(), &mut diff);
        subs.remove("nope", &mut diff);
        assert!(diff.is_empty());
    }

    #[test]
    fn min_seq_needs_every_name_at_a_known_seq() {
        let mut subs = Subscriptions::default();
        assert_eq!(subs.min_seq(), None);
        let mut diff = Diff::default();
        subs.add("a".into(), &mut diff);
        subs.add("b".into(), &mut diff);
        subs.deliver("a", Held::At(3));
        assert!(!subs.all_held());
        assert_eq!(subs.min_seq(), None);
        subs.deliver("b", Held::At(2));
        subs.deliver("unsubscribed", Held::At(9));
        assert!(subs.all_held());
        assert_eq!(subs.min_seq(), Some(2));
        subs.deliver("b", Held::Unknown);
        assert!(subs.all_held());
        assert_eq!(subs.min_seq(), None);
    }

    /// One delta client and what it reports to.
    struct Harness {
        shared: Shared,
        progress: Progress,
        client: Delta,
    }

    impl Harness {
        fn new(expect_updates: u64) -> Harness {
            Harness {
                shared: shared(expect_updates),
                progress: Progress::new(0),
                client: Delta::new(Node {
                    id: "node-0".into(),
                    ..Default::default()
                }),
            }
        }

        fn receive(&mut self, r: LightDeltaResponse, at: SystemTime) -> Vec<DeltaDiscoveryRequest> {
            on_response(&mut self.client, r, at, &mut self.progress, &self.shared)
        }
    }

    #[test]
    fn delta_client_follows_clusters_and_listeners_and_reaches_updates() {
        let mut h = Harness::new(1);
        let now = SystemTime::now();

        // Wildcard CDS and LDS, each with the node.
        let start = h.client.start();
        assert_eq!(start.len(), 2);
        for (request, t) in start.iter().zip([CDS, LDS]) {
            assert_eq!(request.type_url, TYPES[t]);
            assert!(request.node.is_some());
            assert!(request.resource_names_subscribe.is_empty());
        }

        // Clusters: ACK (no node now) and subscribe EDS (first EDS request: node).
        let out = h.receive(response(CDS, 0, clusters(&[0, 1]), &[]), now);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].response_nonce, "0-0");
        assert!(out[0].node.is_none() && out[0].error_detail.is_none());
        assert_eq!(out[1].type_url, TYPES[EDS]);
        assert!(out[1].node.is_some());
        assert_eq!(
            out[1].resource_names_subscribe,
            names(&["cluster-0", "cluster-1"])
        );

        // The listener: subscribe RDS to its route.
        let listener = resource(w1::LISTENER_NAME, w1::listener().encode_to_vec());
        let out = h.receive(response(LDS, 0, vec![listener], &[]), now);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].type_url, TYPES[RDS]);
        assert_eq!(out[1].resource_names_subscribe, names(&[w1::ROUTE_NAME]));

        // EDS alone is not full config; the route completes it at seq 0.
        let out = h.receive(response(EDS, 0, endpoints(&[0, 1], 0), &[]), now);
        assert_eq!(out.len(), 1);
        assert_eq!(h.progress.complete, None);
        let route = resource(w1::ROUTE_NAME, w1::route_config(2).encode_to_vec());
        h.receive(response(RDS, 0, vec![route], &[]), now);
        assert_eq!(h.progress.complete, Some(0));
        assert_eq!(h.shared.configured.load(Ordering::Relaxed), 1);
        assert_eq!(h.shared.initial.lock()[0].seq, 0);

        // Update 1 reaches the client only once every load assignment is at
        // it; the latency counts from the version's timestamp (2 s).
        let later = UNIX_EPOCH + Duration::from_millis(2_250);
        h.receive(response(EDS, 1, endpoints(&[0], 1), &[]), later);
        assert_eq!(h.progress.complete, Some(0));
        h.receive(response(EDS, 1, endpoints(&[1], 1), &[]), later);
        assert_eq!(h.progress.complete, Some(1));
        assert!(h.progress.done);
        assert_eq!(
            h.shared.take_updates(),
            vec![(1, Duration::from_millis(250))]
        );

        // A cluster removed: unsubscribe its EDS name, nothing else.
        let out = h.receive(response(CDS, 2, Vec::new(), &["cluster-1"]), later);
        assert_eq!(out.len(), 2);
        assert!(out[1].resource_names_subscribe.is_empty());
        assert_eq!(out[1].resource_names_unsubscribe, names(&["cluster-1"]));
        assert_eq!(h.client.config_seq(), Some(1));
        assert_eq!(h.shared.nacks.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn delta_client_nacks_what_does_not_decode() {
        let mut h = Harness::new(0);
        h.client.start();
        let now = SystemTime::now();
        let mut bad = response(CDS, 0, vec![resource("cluster-0", vec![0xff, 0xff])], &[]);
        bad.nonce = "n1".into();
        let out = h.receive(bad, now);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].response_nonce, "n1");
        assert!(out[0].error_detail.is_some());
        // A body holding another name than the resource's is rejected too.
        let mut mismatched = clusters(&[0]);
        mismatched[0].name = "cluster-9".into();
        let out = h.receive(response(CDS, 0, mismatched, &[]), now);
        assert!(out[0].error_detail.is_some());
        assert_eq!(h.shared.nacks.load(Ordering::Relaxed), 2);
        assert!(!h.client.received[CDS]);
        assert!(h.client.clusters.names.is_empty());
    }
}
