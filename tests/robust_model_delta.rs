//! Model-based test of the incremental (delta) protocol over the wire: the
//! counterpart of `robust_model.rs` for one delta ADS stream (CDS wildcard,
//! EDS by name).
//!
//! `proptest` generates snapshots (random names and contents), subscribing
//! and unsubscribing names, ACKs and NACKs. After each operation (and the
//! same probe barrier as the SotW model) the test checks:
//!
//! - every response carries the snapshot's version, only resources the
//!   stream wants, at their current version, never one the client was
//!   already sent at that version, and removes only names that are gone
//!   and that the client was sent;
//! - nonces strictly increase;
//! - an open watch is answered as soon as there is something to send: once
//!   the stream is quiet, what the server has sent covers every wanted
//!   resource at its current version (a first wildcard request is answered
//!   even when empty);
//! - after convergence (every resource changes, every response ACKed) the
//!   client holds exactly what it wants at the current versions, apart from
//!   removals it rejected itself.

mod common;
#[path = "common/model.rs"]
mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use common::*;
use model::{check, pick, Observer, CDS, CLUSTERS, EDS, ENDPOINTS, MAX_OPS, PROBE};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRng, TestRunner};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use xds_control_plane::envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LocalityLbEndpoints,
};
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use xds_control_plane::envoy_types::pb::google::rpc::Status as RpcStatus;
use xds_control_plane::resource::type_url::{CLUSTER, ENDPOINT};
use xds_control_plane::resource::ResourceType;
use xds_control_plane::{IdHash, Server, Snapshot, SnapshotCache};

const NODE: &str = "delta-model";
const TYPES: [ResourceType; 2] = [ResourceType::Cluster, ResourceType::Endpoint];

#[derive(Debug, Clone)]
enum Op {
    /// A new version: these clusters and endpoints (bit sets), each with
    /// one of four contents (two bits of `contents` per name).
    SetSnapshot {
        clusters: u8,
        endpoints: u8,
        contents: u32,
    },
    /// The current snapshot again.
    SetSameSnapshot,
    /// Subscribe to names (for CDS: explicitly, on top of the wildcard).
    Subscribe { eds: bool, names: u8 },
    /// Unsubscribe names.
    Unsubscribe { eds: bool, names: u8 },
    /// ACK the latest response (or repeat the last request).
    Ack { eds: bool },
    /// NACK the latest response, if not yet answered.
    Nack { eds: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(clusters, endpoints, contents)| {
            Op::SetSnapshot { clusters, endpoints, contents }
        }),
        1 => Just(Op::SetSameSnapshot),
        2 => (any::<bool>(), any::<u8>()).prop_map(|(eds, names)| Op::Subscribe { eds, names }),
        2 => (any::<bool>(), any::<u8>()).prop_map(|(eds, names)| Op::Unsubscribe { eds, names }),
        4 => any::<bool>().prop_map(|eds| Op::Ack { eds }),
        2 => any::<bool>().prop_map(|eds| Op::Nack { eds }),
    ]
}

/// A snapshot: its version, and per type each name's content number.
#[derive(Debug, Clone)]
struct SnapshotModel {
    version: String,
    contents: [BTreeMap<String, u32>; 2],
    built: Snapshot,
}

impl SnapshotModel {
    fn new(version: String, contents: [BTreeMap<String, u32>; 2]) -> Self {
        let built = Snapshot::builder(&version)
            .clusters(contents[CDS].iter().map(|(name, content)| {
                let mut c = cluster(name);
                c.alt_stat_name = format!("content-{content}");
                c
            }))
            .endpoints(
                contents[EDS]
                    .iter()
                    .map(|(name, content)| ClusterLoadAssignment {
                        cluster_name: name.clone(),
                        endpoints: vec![LocalityLbEndpoints {
                            priority: *content,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
            )
            .build()
            .unwrap();
        SnapshotModel {
            version,
            contents,
            built,
        }
    }

    /// The delta version of a resource, if it exists.
    fn version_of(&self, t: usize, name: &str) -> Option<String> {
        self.built
            .of_type(TYPES[t])
            .get(name)
            .map(|r| r.version().to_string())
    }
}

#[derive(Debug, Default)]
struct TypeModel {
    wildcard: bool,
    /// Explicitly subscribed names.
    names: BTreeSet<String>,
    /// What the client has accepted.
    have: BTreeMap<String, String>,
    /// What the server has sent (the client's state as the server sees it,
    /// rejected responses included).
    sent: BTreeMap<String, String>,
    latest: Option<(DeltaDiscoveryResponse, bool)>,
    /// A request opened a watch not yet answered.
    watch_open: bool,
    /// A response was ever received.
    answered: bool,
    /// Removals the client rejected: it keeps those names.
    kept_removed: BTreeSet<String>,
}

impl TypeModel {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// The client accepts the latest response.
    fn accept(&mut self) {
        let Some((response, replied)) = self.latest.as_mut() else {
            return;
        };
        if *replied {
            return;
        }
        *replied = true;
        for r in &response.resources {
            self.have.insert(r.name.clone(), r.version.clone());
            self.kept_removed.remove(&r.name);
        }
        for name in &response.removed_resources {
            self.have.remove(name);
            self.kept_removed.remove(name);
        }
    }
}

struct Case {
    cache: SnapshotCache,
    observer: Arc<Observer>,
    _served: Serving,
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
    probes_sent: usize,
    responses_read: usize,
    last_nonce: u64,
    snapshot: Option<SnapshotModel>,
    versions: usize,
    types: [TypeModel; 2],
    trace: Vec<String>,
}

fn type_url(t: usize) -> &'static str {
    [CLUSTER, ENDPOINT][t]
}

impl Case {
    async fn start() -> Case {
        let cache = SnapshotCache::new(false, IdHash);
        let observer = Arc::new(Observer::default());
        let server = Server::new(cache.clone(), Arc::clone(&observer));
        let served = serve(&server).await;
        let (tx, requests) = mpsc::channel(16);
        let rx = AggregatedDiscoveryServiceClient::new(served.channel().await)
            .delta_aggregated_resources(ReceiverStream::new(requests))
            .await
            .unwrap()
            .into_inner();
        Case {
            cache,
            observer,
            _served: served,
            tx,
            rx,
            probes_sent: 0,
            responses_read: 0,
            last_nonce: 0,
            snapshot: None,
            versions: 0,
            types: [TypeModel::default(), TypeModel::default()],
            trace: Vec::new(),
        }
    }

    async fn send(&mut self, t: usize, subscribe: &[String], unsubscribe: &[String], nack: bool) {
        let sub: Vec<&str> = subscribe.iter().map(String::as_str).collect();
        let unsub: Vec<&str> = unsubscribe.iter().map(String::as_str).collect();
        let mut req = delta_request(NODE, type_url(t), &sub, &unsub);
        if let Some((latest, _)) = &self.types[t].latest {
            req.response_nonce.clone_from(&latest.nonce);
        }
        if nack {
            req.error_detail = Some(RpcStatus {
                code: 3,
                message: "rejected by the model".into(),
                details: vec![],
            });
        }
        self.trace.push(format!(
            "  -> {} subscribe={sub:?} unsubscribe={unsub:?} nonce={:?}{}",
            short(t),
            req.response_nonce,
            if nack { " NACK" } else { "" }
        ));
        self.types[t].watch_open = true;
        self.tx.send(req).await.unwrap();
    }

    async fn sync(&mut self) -> Result<Vec<DeltaDiscoveryResponse>, TestCaseError> {
        self.probes_sent += 1;
        self.tx
            .send(delta_request(NODE, PROBE, &[], &[]))
            .await
            .unwrap();
        self.observer
            .responses_after_probe(
                self.probes_sent,
                &mut self.rx,
                &mut self.responses_read,
                &self.trace,
            )
            .await
    }

    /// Reads what an operation caused and checks it.
    async fn settle(&mut self) -> Result<(), TestCaseError> {
        let responses = self.sync().await?;
        let mut seen = [false, false];
        for response in responses {
            let t = match response.type_url.as_str() {
                CLUSTER => CDS,
                ENDPOINT => EDS,
                other => return Err(TestCaseError::fail(format!("unexpected type {other}"))),
            };
            let sent: Vec<(&str, &str)> = response
                .resources
                .iter()
                .map(|r| (r.name.as_str(), &r.version[..8.min(r.version.len())]))
                .collect();
            self.trace.push(format!(
                "  <- {} system_version={:?} nonce={:?} resources={sent:?} removed={:?}",
                short(t),
                response.system_version_info,
                response.nonce,
                response.removed_resources
            ));
            check!(self, !seen[t], "two responses for one type at once");
            seen[t] = true;
            check!(
                self,
                self.types[t].watch_open,
                "a response without a request"
            );
            let nonce: u64 = response.nonce.parse().unwrap_or(0);
            check!(self, nonce > self.last_nonce, "nonce does not increase");
            self.last_nonce = nonce;
            let Some(snapshot) = self.snapshot.clone() else {
                return Err(TestCaseError::fail("a response before any snapshot"));
            };
            check!(
                self,
                response.system_version_info == snapshot.version,
                "system version {:?}, snapshot at {:?}",
                response.system_version_info,
                snapshot.version
            );
            let ty = &self.types[t];
            for r in &response.resources {
                let current = snapshot.version_of(t, &r.name);
                check!(self, ty.wants(&r.name), "{} is not subscribed", r.name);
                check!(
                    self,
                    current.as_deref() == Some(r.version.as_str()) && r.resource.is_some(),
                    "{} sent at {:?}, current {current:?}",
                    r.name,
                    r.version
                );
                check!(
                    self,
                    ty.sent.get(&r.name) != Some(&r.version),
                    "{} sent again at the same version",
                    r.name
                );
            }
            for name in &response.removed_resources {
                check!(
                    self,
                    snapshot.version_of(t, name).is_none() && ty.sent.contains_key(name),
                    "{name} removed, but it exists or was never sent"
                );
            }
            let ty = &mut self.types[t];
            for r in &response.resources {
                ty.sent.insert(r.name.clone(), r.version.clone());
            }
            for name in &response.removed_resources {
                ty.sent.remove(name);
            }
            ty.watch_open = false;
            ty.answered = true;
            ty.latest = Some((response, false));
        }
        // An open watch with something to send would have been answered.
        let Some(snapshot) = self.snapshot.clone() else {
            return Ok(());
        };
        for t in [CDS, EDS] {
            let ty = &self.types[t];
            if !ty.watch_open {
                continue;
            }
            check!(
                self,
                ty.answered || !ty.wildcard,
                "{}: a first wildcard request is answered",
                short(t)
            );
            for name in snapshot.contents[t].keys() {
                if ty.wants(name) {
                    let current = snapshot.version_of(t, name);
                    check!(
                        self,
                        ty.sent.get(name) == current.as_ref(),
                        "{}: {name} at {current:?} never sent (server view {:?})",
                        short(t),
                        ty.sent.get(name)
                    );
                }
            }
            for name in ty.sent.keys() {
                check!(
                    self,
                    snapshot.version_of(t, name).is_some(),
                    "{}: removal of {name} never sent",
                    short(t)
                );
            }
        }
        Ok(())
    }

    fn install(&mut self, model: SnapshotModel) {
        self.cache.set_snapshot(NODE, model.built.clone());
        self.trace.push(format!(
            "set_snapshot {} clusters={:?} endpoints={:?}",
            model.version, model.contents[CDS], model.contents[EDS]
        ));
        self.snapshot = Some(model);
    }

    fn new_snapshot(&mut self, contents: [BTreeMap<String, u32>; 2]) {
        self.versions += 1;
        let model = SnapshotModel::new(format!("s{}", self.versions), contents);
        self.install(model);
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        self.trace.push(format!("{op:?}"));
        match *op {
            Op::SetSnapshot {
                clusters,
                endpoints,
                contents,
            } => {
                let content = |i: usize| (contents >> (2 * i)) & 3;
                let clusters = pick(clusters, &CLUSTERS)
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| (n, content(i)))
                    .collect();
                let endpoints = pick(endpoints, &ENDPOINTS)
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| (n, content(i + 4)))
                    .collect();
                self.new_snapshot([clusters, endpoints]);
            }
            Op::SetSameSnapshot => {
                let Some(model) = self.snapshot.clone() else {
                    return Ok(());
                };
                self.install(model);
            }
            Op::Subscribe { eds, names } => {
                let t = usize::from(eds);
                let all = if eds { &ENDPOINTS[..] } else { &CLUSTERS[..] };
                let names: Vec<String> = pick(names, all).into_iter().collect();
                self.types[t].accept();
                self.types[t].names.extend(names.iter().cloned());
                self.send(t, &names, &[], false).await;
            }
            Op::Unsubscribe { eds, names } => {
                let t = usize::from(eds);
                let all = if eds { &ENDPOINTS[..] } else { &CLUSTERS[..] };
                let names: Vec<String> = pick(names, all).into_iter().collect();
                let ty = &mut self.types[t];
                ty.accept();
                for name in &names {
                    // The server forgets what it sent, or under a wildcard
                    // marks it unknown so that it is sent again.
                    if ty.names.remove(name) && ty.wildcard {
                        ty.sent.insert(name.clone(), String::new());
                    } else {
                        ty.sent.remove(name);
                    }
                    ty.have.remove(name);
                    ty.kept_removed.remove(name);
                }
                self.send(t, &[], &names, false).await;
            }
            Op::Ack { eds } => {
                let t = usize::from(eds);
                if self.types[t].latest.is_none() {
                    return Ok(());
                }
                self.types[t].accept();
                self.send(t, &[], &[], false).await;
            }
            Op::Nack { eds } => {
                let t = usize::from(eds);
                let ty = &mut self.types[t];
                let Some((latest, replied)) = ty.latest.as_mut() else {
                    return Ok(());
                };
                if *replied {
                    return Ok(());
                }
                *replied = true;
                for name in &latest.removed_resources {
                    if ty.have.contains_key(name) {
                        ty.kept_removed.insert(name.clone());
                    }
                }
                self.send(t, &[], &[], true).await;
            }
        }
        self.settle().await
    }

    /// Every resource changes, every response is ACKed: the client must
    /// then hold what it wants, at the current versions.
    async fn converge(&mut self) -> Result<(), TestCaseError> {
        self.trace.push("converge".into());
        let fresh = 100 + self.versions as u32;
        let contents = match &self.snapshot {
            Some(s) => s
                .contents
                .clone()
                .map(|m| m.into_keys().map(|n| (n, fresh)).collect()),
            None => [
                pick(0b0101, &CLUSTERS)
                    .into_iter()
                    .map(|n| (n, fresh))
                    .collect(),
                pick(0b10101, &ENDPOINTS)
                    .into_iter()
                    .map(|n| (n, fresh))
                    .collect(),
            ],
        };
        self.new_snapshot(contents);
        self.settle().await?;
        for _ in 0..4 {
            let mut acked = false;
            for t in [CDS, EDS] {
                if self.types[t].latest.as_ref().is_some_and(|(_, r)| !*r) {
                    self.types[t].accept();
                    self.send(t, &[], &[], false).await;
                    acked = true;
                }
            }
            if !acked {
                break;
            }
            self.settle().await?;
        }
        let snapshot = self.snapshot.clone().unwrap();
        for t in [CDS, EDS] {
            let ty = &self.types[t];
            let want: BTreeMap<String, String> = snapshot.contents[t]
                .keys()
                .filter(|n| ty.wants(n))
                .map(|n| (n.clone(), snapshot.version_of(t, n).unwrap()))
                .collect();
            let have: BTreeMap<String, String> = ty
                .have
                .iter()
                .filter(|(n, _)| !ty.kept_removed.contains(*n))
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect();
            check!(
                self,
                have == want,
                "{} did not converge: has {have:?}, expected {want:?}",
                short(t)
            );
        }
        Ok(())
    }
}

fn short(t: usize) -> &'static str {
    ["CDS", "EDS"][t]
}

async fn run_case(eds: u8, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut case = Case::start().await;
    let names: Vec<String> = pick(eds, &ENDPOINTS).into_iter().collect();
    case.trace
        .push(format!("subscribe CDS wildcard, EDS {names:?}"));
    case.types[CDS].wildcard = true;
    case.types[EDS].names = names.iter().cloned().collect();
    case.send(CDS, &[], &[], false).await;
    case.send(EDS, &names, &[], false).await;
    case.settle().await?;
    for op in &ops {
        case.apply(op).await?;
    }
    case.converge().await
}

#[test]
fn the_delta_wire_protocol_follows_the_model() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cases: u32 = std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let seed: u64 = std::env::var("MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0xde17a);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(config.rng_algorithm, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let started = Instant::now();
    let strategy = (1u8..32, proptest::collection::vec(op(), 1..=MAX_OPS));
    let result = runner.run(&strategy, |(eds, ops)| runtime.block_on(run_case(eds, ops)));
    eprintln!(
        "delta model: {cases} cases of up to {MAX_OPS} operations in {:?}",
        started.elapsed()
    );
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// The case the model found: a wildcard subscription whose first request
/// was repeated before any snapshot existed must still get its (empty)
/// first response, or the client never finishes initializing.
#[tokio::test]
async fn a_repeated_first_wildcard_request_is_still_answered_when_empty() {
    let ts = TestServer::start(false).await;
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request("n1", CLUSTER, &[], &[])).await;
    ads.send(delta_request("n1", CLUSTER, &[], &[])).await;
    ts.wait_for_delta_watches("n1", 1).await;
    ts.cache
        .set_snapshot("n1", Snapshot::builder("s1").build().unwrap());
    let empty = ads.recv().await;
    assert_eq!(empty.system_version_info, "s1");
    assert!(empty.resources.is_empty() && empty.removed_resources.is_empty());
}
