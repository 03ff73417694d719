//! Model-based test of the state-of-the-world protocol over the wire.
//!
//! `proptest` generates sequences of operations: new snapshots (random
//! subsets of names), re-setting the same snapshot, subscription changes,
//! ACKs, NACKs and requests with stale nonces. Each runs against the real
//! server over a tonic connection (one ADS stream, CDS wildcard and EDS by
//! name; half the cases with an ADS cache, which holds a named subscription
//! while none of its names exists), and a small model of the protocol says
//! what must come back:
//!
//! - every response carries the version of the snapshot at the time, and
//!   exactly the resources the model expects (all clusters; the subscribed
//!   endpoints the client lacks, or all of them on a version change);
//! - nonces strictly increase on the stream;
//! - a request with a stale nonce gets no response and changes nothing;
//! - a NACKed version is never sent again on the stream, unless the client
//!   changes its subscription;
//! - after convergence (a new snapshot, every response ACKed) the client
//!   holds every subscribed resource that exists, at the current version.
//!
//! Operations are applied one at a time: after each, a probe request (an
//! unknown type) goes down the same stream; once the server has read it,
//! it has also sent every answer the operation caused (a stream answers
//! pending watches before reading its next request), so the test knows
//! exactly how many responses to read.

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
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
};
use xds_control_plane::envoy_types::pb::google::rpc::Status as RpcStatus;
use xds_control_plane::resource::type_url::{CLUSTER, ENDPOINT};
use xds_control_plane::{IdHash, Server, SnapshotCache};

const NODE: &str = "model";

#[derive(Debug, Clone)]
enum Op {
    /// A new version with these clusters and endpoints (bit sets).
    SetSnapshot { clusters: u8, endpoints: u8 },
    /// The current snapshot again: same version, same content.
    SetSameSnapshot,
    /// Subscribe EDS to this set of endpoints (accepting any pending
    /// response first, as a proxy does).
    Subscribe { endpoints: u8 },
    /// ACK the latest response of a type (again, if already ACKed).
    Ack { eds: bool },
    /// NACK the latest response of a type, if not yet answered.
    Nack { eds: bool },
    /// A request naming other resources with a nonce that is not the
    /// latest: must be ignored.
    StaleNonce { eds: bool, names: u8, pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<u8>(), any::<u8>())
            .prop_map(|(clusters, endpoints)| Op::SetSnapshot { clusters, endpoints }),
        1 => Just(Op::SetSameSnapshot),
        2 => any::<u8>().prop_map(|endpoints| Op::Subscribe { endpoints }),
        4 => any::<bool>().prop_map(|eds| Op::Ack { eds }),
        2 => any::<bool>().prop_map(|eds| Op::Nack { eds }),
        2 => (any::<bool>(), any::<u8>(), any::<usize>())
            .prop_map(|(eds, names, pick)| Op::StaleNonce { eds, names, pick }),
    ]
}

/// The latest response of a type, as the client saw it.
#[derive(Debug, Clone)]
struct Latest {
    nonce: String,
    version: String,
    names: BTreeSet<String>,
    replied: bool,
    acked: bool,
}

/// One type on the stream: what the client did and has, and what the
/// server must therefore hold.
#[derive(Debug)]
struct TypeModel {
    type_url: &'static str,
    /// EDS: the names subscribed (CDS is a wildcard).
    names: BTreeSet<String>,
    /// The version the client runs and the resources it has.
    accepted: String,
    have: BTreeMap<String, String>,
    latest: Option<Latest>,
    /// Server side: the version of the open watch (`None`: no watch), and
    /// what the server recorded as sent.
    watch: Option<String>,
    returned: BTreeSet<String>,
    /// Versions NACKed since the subscription last changed.
    nacked: BTreeSet<String>,
}

impl Latest {
    /// The client rejected this response: until the next one, the server
    /// holds every watch of the type at its version.
    fn rejected(&self) -> bool {
        self.replied && !self.acked
    }
}

impl TypeModel {
    fn new(type_url: &'static str, names: BTreeSet<String>) -> Self {
        TypeModel {
            type_url,
            names,
            accepted: String::new(),
            have: BTreeMap::new(),
            latest: None,
            watch: None,
            returned: BTreeSet::new(),
            nacked: BTreeSet::new(),
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.type_url == CLUSTER || self.names.contains(name)
    }

    /// The client accepts the latest response.
    fn accept(&mut self) {
        let latest = self.latest.as_mut().expect("a response to accept");
        if self.type_url == CLUSTER || latest.version != self.accepted {
            self.have.clear();
        }
        for name in &latest.names {
            self.have.insert(name.clone(), latest.version.clone());
        }
        self.accepted = latest.version.clone();
        latest.replied = true;
        latest.acked = true;
    }
}

#[derive(Debug, Clone)]
struct SnapshotModel {
    version: String,
    clusters: BTreeSet<String>,
    endpoints: BTreeSet<String>,
}

impl SnapshotModel {
    fn names(&self, t: usize) -> &BTreeSet<String> {
        if t == CDS {
            &self.clusters
        } else {
            &self.endpoints
        }
    }
}

struct Case {
    cache: SnapshotCache,
    observer: Arc<Observer>,
    _served: Serving,
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    probes_sent: usize,
    responses_read: usize,
    last_nonce: u64,
    nonces: Vec<String>,
    snapshot: Option<SnapshotModel>,
    versions: usize,
    types: [TypeModel; 2],
    trace: Vec<String>,
}

impl Case {
    async fn start(eds_names: BTreeSet<String>, ads: bool) -> Case {
        let cache = SnapshotCache::new(ads, IdHash);
        let observer = Arc::new(Observer::default());
        let server = Server::new(cache.clone(), Arc::clone(&observer));
        let served = serve(&server).await;
        let (tx, requests) = mpsc::channel(16);
        let rx = AggregatedDiscoveryServiceClient::new(served.channel().await)
            .stream_aggregated_resources(ReceiverStream::new(requests))
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
            nonces: Vec::new(),
            snapshot: None,
            versions: 0,
            types: [
                TypeModel::new(CLUSTER, BTreeSet::new()),
                TypeModel::new(ENDPOINT, eds_names),
            ],
            trace: Vec::new(),
        }
    }

    /// What the server must answer the open watch of type `t` with now,
    /// if anything: go-control-plane's rules.
    fn answer(&self, t: usize) -> Option<BTreeSet<String>> {
        let ty = &self.types[t];
        let watch = ty.watch.as_ref()?;
        let snapshot = self.snapshot.as_ref()?;
        let subscribed: BTreeSet<String> = snapshot
            .names(t)
            .iter()
            .filter(|n| ty.wants(n))
            .cloned()
            .collect();
        // An ADS cache holds a named subscription while none of its names
        // exists.
        if self.cache.is_ads()
            && t == EDS
            && !ty.names.is_empty()
            && ty.names.is_disjoint(snapshot.names(t))
        {
            return None;
        }
        if *watch != snapshot.version {
            return Some(subscribed);
        }
        let added: BTreeSet<String> = subscribed.difference(&ty.returned).cloned().collect();
        if t == CDS {
            let dropped = ty
                .returned
                .iter()
                .any(|n| !snapshot.names(t).contains(n) || !ty.wants(n));
            return (!added.is_empty() || dropped).then_some(subscribed);
        }
        (!added.is_empty()).then_some(added)
    }

    /// Sends a request for type `t`, recording the watch it opens.
    async fn request(
        &mut self,
        t: usize,
        version: &str,
        nonce: &str,
        nack: bool,
    ) -> Result<(), TestCaseError> {
        let ty = &self.types[t];
        let names: Vec<&str> = ty.names.iter().map(String::as_str).collect();
        let mut req = request(NODE, ty.type_url, version, nonce, &names);
        if nack {
            req.error_detail = Some(RpcStatus {
                code: 3,
                message: "rejected by the model".into(),
                details: vec![],
            });
        }
        self.trace.push(format!(
            "  -> {} version={version:?} nonce={nonce:?} names={names:?}{}",
            short(ty.type_url),
            if nack { " NACK" } else { "" }
        ));
        self.tx.send(req).await.unwrap();
        Ok(())
    }

    /// Waits until the server has read everything sent so far, then reads
    /// every response it sent meanwhile.
    async fn sync(&mut self) -> Result<Vec<DiscoveryResponse>, TestCaseError> {
        self.probes_sent += 1;
        let mut probe = request(NODE, PROBE, "", "", &[]);
        probe.response_nonce = String::new();
        self.tx.send(probe).await.unwrap();
        self.observer
            .responses_after_probe(
                self.probes_sent,
                &mut self.rx,
                &mut self.responses_read,
                &self.trace,
            )
            .await
    }

    /// Checks the responses one operation caused against what the model
    /// expects, then records them as the latest of their type.
    fn observe(
        &mut self,
        responses: Vec<DiscoveryResponse>,
        expected: [Option<BTreeSet<String>>; 2],
    ) -> Result<(), TestCaseError> {
        let mut got: [Option<DiscoveryResponse>; 2] = [None, None];
        for response in responses {
            let names: BTreeSet<String> = names(&response).into_iter().collect();
            self.trace.push(format!(
                "  <- {} version={:?} nonce={:?} names={names:?}",
                short(&response.type_url),
                response.version_info,
                response.nonce
            ));
            let t = match response.type_url.as_str() {
                CLUSTER => CDS,
                ENDPOINT => EDS,
                other => return Err(TestCaseError::fail(format!("unexpected type {other}"))),
            };
            check!(self, got[t].is_none(), "two responses for one type at once");
            let nonce: u64 = response.nonce.parse().unwrap_or(0);
            check!(
                self,
                nonce > self.last_nonce,
                "nonce {:?} does not increase",
                response.nonce
            );
            self.last_nonce = nonce;
            let current = self.snapshot.as_ref().map(|s| s.version.clone());
            check!(
                self,
                current.as_deref() == Some(response.version_info.as_str()),
                "response at version {:?}, snapshot at {current:?}",
                response.version_info
            );
            check!(
                self,
                !self.types[t].nacked.contains(&response.version_info),
                "NACKed version {:?} sent again",
                response.version_info
            );
            got[t] = Some(response);
        }
        for t in [CDS, EDS] {
            let names = got[t]
                .as_ref()
                .map(|r| self::names(r).into_iter().collect::<BTreeSet<String>>());
            check!(
                self,
                names == expected[t],
                "{}: expected {:?}, got {names:?}",
                short(self.types[t].type_url),
                expected[t]
            );
            let Some(response) = got[t].take() else {
                continue;
            };
            let names = names.unwrap();
            let ty = &mut self.types[t];
            // What the server now records as sent: everything on a version
            // change (and always for CDS, sent whole), or what it had plus
            // what it added.
            if t == CDS || ty.watch.as_deref() != Some(response.version_info.as_str()) {
                ty.returned = names.clone();
            } else {
                ty.returned.extend(names.iter().cloned());
            }
            ty.watch = None;
            self.nonces.push(response.nonce.clone());
            ty.latest = Some(Latest {
                nonce: response.nonce,
                version: response.version_info,
                names,
                replied: false,
                acked: false,
            });
        }
        Ok(())
    }

    /// Expected answers of the open watches (e.g. after a snapshot change).
    fn expected_answers(&self) -> [Option<BTreeSet<String>>; 2] {
        [self.answer(CDS), self.answer(EDS)]
    }

    /// Expected answer of type `t` only.
    fn expected_for(&self, t: usize) -> [Option<BTreeSet<String>>; 2] {
        let mut expected = [None, None];
        expected[t] = self.answer(t);
        expected
    }

    fn set_snapshot(&mut self, clusters: BTreeSet<String>, endpoints: BTreeSet<String>) {
        self.versions += 1;
        let model = SnapshotModel {
            version: format!("s{}", self.versions),
            clusters,
            endpoints,
        };
        self.install(model);
    }

    fn install(&mut self, model: SnapshotModel) {
        let c: Vec<&str> = model.clusters.iter().map(String::as_str).collect();
        let e: Vec<&str> = model.endpoints.iter().map(String::as_str).collect();
        self.cache
            .set_snapshot(NODE, snapshot(&model.version, &c, &e, &[], &[]));
        self.trace.push(format!(
            "set_snapshot {} clusters={c:?} endpoints={e:?}",
            model.version
        ));
        self.snapshot = Some(model);
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        self.trace.push(format!("{op:?}"));
        match *op {
            Op::SetSnapshot {
                clusters,
                endpoints,
            } => {
                self.set_snapshot(pick(clusters, &CLUSTERS), pick(endpoints, &ENDPOINTS));
                let expected = self.expected_answers();
                let responses = self.sync().await?;
                self.observe(responses, expected)?;
            }
            Op::SetSameSnapshot => {
                let Some(model) = self.snapshot.clone() else {
                    return Ok(());
                };
                self.install(model);
                let expected = self.expected_answers();
                check!(
                    self,
                    expected == [None, None],
                    "model: the same snapshot answers nothing"
                );
                let responses = self.sync().await?;
                self.observe(responses, expected)?;
            }
            Op::Subscribe { endpoints } => {
                let names = pick(endpoints, &ENDPOINTS);
                let ty = &mut self.types[EDS];
                let (version, nonce) = match &ty.latest {
                    Some(latest) if !latest.replied => {
                        ty.accept();
                        let latest = ty.latest.as_ref().unwrap();
                        (latest.version.clone(), latest.nonce.clone())
                    }
                    Some(latest) => (ty.accepted.clone(), latest.nonce.clone()),
                    None => (String::new(), String::new()),
                };
                if names != ty.names {
                    ty.nacked.clear();
                }
                ty.have.retain(|n, _| names.contains(n));
                ty.returned.retain(|n| names.contains(n));
                ty.names = names;
                ty.watch = match &ty.latest {
                    Some(latest) if latest.rejected() => Some(latest.version.clone()),
                    _ => Some(version.clone()),
                };
                self.request(EDS, &version, &nonce, false).await?;
                let expected = self.expected_for(EDS);
                let responses = self.sync().await?;
                self.observe(responses, expected)?;
            }
            Op::Ack { eds } => {
                let t = usize::from(eds);
                let ty = &mut self.types[t];
                let Some(latest) = ty.latest.clone() else {
                    return Ok(());
                };
                if latest.rejected() {
                    return Ok(()); // NACKed: nothing to ACK.
                }
                if !latest.replied {
                    ty.accept();
                }
                ty.watch = Some(latest.version.clone());
                self.request(t, &latest.version, &latest.nonce, false)
                    .await?;
                let expected = self.expected_for(t);
                let responses = self.sync().await?;
                self.observe(responses, expected)?;
            }
            Op::Nack { eds } => {
                let t = usize::from(eds);
                let ty = &mut self.types[t];
                let Some(latest) = ty.latest.as_mut() else {
                    return Ok(());
                };
                if latest.replied {
                    return Ok(());
                }
                latest.replied = true;
                let (version, nonce) = (latest.version.clone(), latest.nonce.clone());
                ty.nacked.insert(version.clone());
                // The server holds the watch at the rejected version.
                ty.watch = Some(version);
                let current = ty.accepted.clone();
                self.request(t, &current, &nonce, true).await?;
                let expected = self.expected_for(t);
                let responses = self.sync().await?;
                self.observe(responses, expected)?;
            }
            Op::StaleNonce { eds, names, pick } => {
                let t = usize::from(eds);
                let Some(latest) = self.types[t].latest.clone() else {
                    return Ok(()); // Nothing sent yet: no nonce is stale.
                };
                let mut stale: Vec<String> = self
                    .nonces
                    .iter()
                    .filter(|n| **n != latest.nonce)
                    .cloned()
                    .collect();
                stale.push("0".into());
                let nonce = stale[pick % stale.len()].clone();
                let other: Vec<String> = if eds {
                    self::pick(names, &ENDPOINTS).into_iter().collect()
                } else {
                    self::pick(names | 1, &CLUSTERS).into_iter().collect()
                };
                let refs: Vec<&str> = other.iter().map(String::as_str).collect();
                let req = request(NODE, self.types[t].type_url, "", &nonce, &refs);
                self.trace.push(format!(
                    "  -> {} stale nonce={nonce:?} names={refs:?}",
                    short(self.types[t].type_url)
                ));
                self.tx.send(req).await.unwrap();
                let responses = self.sync().await?;
                self.observe(responses, [None, None])?;
            }
        }
        Ok(())
    }

    /// A new version, then every response ACKed until the stream is quiet:
    /// the client must hold every subscribed resource, at that version.
    async fn converge(&mut self) -> Result<(), TestCaseError> {
        self.trace.push("converge".into());
        let (clusters, mut endpoints) = match &self.snapshot {
            Some(s) => (s.clusters.clone(), s.endpoints.clone()),
            None => (pick(0b0101, &CLUSTERS), pick(0b10101, &ENDPOINTS)),
        };
        if self.cache.is_ads() {
            // Every subscribed name exists: an ADS cache holds nothing.
            endpoints.extend(self.types[EDS].names.iter().cloned());
        }
        self.set_snapshot(clusters, endpoints);
        let expected = self.expected_answers();
        let responses = self.sync().await?;
        self.observe(responses, expected)?;
        for _ in 0..4 {
            let mut acked = false;
            for t in [CDS, EDS] {
                let ty = &mut self.types[t];
                if let Some(latest) = ty.latest.clone().filter(|l| !l.replied) {
                    ty.accept();
                    ty.watch = Some(latest.version.clone());
                    self.request(t, &latest.version, &latest.nonce, false)
                        .await?;
                    acked = true;
                }
            }
            if !acked {
                break;
            }
            let expected = self.expected_answers();
            let responses = self.sync().await?;
            self.observe(responses, expected)?;
        }
        let snapshot = self.snapshot.clone().unwrap();
        for t in [CDS, EDS] {
            let ty = &self.types[t];
            let want: BTreeMap<String, String> = snapshot
                .names(t)
                .iter()
                .filter(|n| ty.wants(n))
                .map(|n| (n.clone(), snapshot.version.clone()))
                .collect();
            check!(
                self,
                ty.accepted == snapshot.version && ty.have == want,
                "{} did not converge: runs {:?} with {:?}, expected {want:?}",
                short(ty.type_url),
                ty.accepted,
                ty.have
            );
        }
        Ok(())
    }
}

fn short(type_url: &str) -> &str {
    type_url.rsplit('.').next().unwrap_or(type_url)
}

async fn run_case(eds: u8, ads: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut case = Case::start(pick(eds, &ENDPOINTS), ads).await;
    case.trace.push(format!("ADS cache: {ads}"));
    case.trace.push(format!(
        "subscribe CDS wildcard, EDS {:?}",
        case.types[EDS].names
    ));
    for t in [CDS, EDS] {
        case.types[t].watch = Some(String::new());
        case.request(t, "", "", false).await?;
    }
    let responses = case.sync().await?;
    case.observe(responses, [None, None])?;
    for op in &ops {
        case.apply(op).await?;
    }
    case.converge().await
}

#[test]
fn the_wire_protocol_follows_the_model() {
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
    // Deterministic: the same cases every run (MODEL_SEED varies them,
    // MODEL_CASES sets how many).
    let seed: u64 = std::env::var("MODEL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(config.rng_algorithm, &seed_bytes);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let started = Instant::now();
    let strategy = (
        1u8..32,
        any::<bool>(),
        proptest::collection::vec(op(), 1..=MAX_OPS),
    );
    let result = runner.run(&strategy, |(eds, ads, ops)| {
        runtime.block_on(run_case(eds, ads, ops))
    });
    eprintln!(
        "model: {cases} cases of up to {MAX_OPS} operations in {:?}",
        started.elapsed()
    );
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// The case the model found: after a NACK, a request repeating the same
/// subscription (Envoy sends one when a watch is re-registered) must not
/// bring the rejected version back.
#[tokio::test]
async fn a_repeated_request_after_a_nack_does_not_resend_the_rejected_version() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &[], &["a", "b"], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", ENDPOINT, "", "", &["a"])).await;
    let v1 = ads.recv().await;
    ads.nack("n1", &v1, "", &["a"]).await;
    ads.send(request("n1", ENDPOINT, "", &v1.nonce, &["a"]))
        .await;
    ads.expect_silence().await;
    // A new name is still served, at the version the client knows of.
    ads.send(request("n1", ENDPOINT, "", &v1.nonce, &["a", "b"]))
        .await;
    let b = ads.recv().await;
    assert_eq!(
        (b.version_info.as_str(), names(&b)),
        ("v1", vec!["b".to_string()])
    );
    // And the next version goes out whole.
    ads.ack("n1", &b, &["a", "b"]).await;
    ts.wait_for_watches("n1", 1).await;
    ts.cache
        .set_snapshot("n1", snapshot("v2", &[], &["a", "b"], &[], &[]));
    assert_eq!(names(&ads.recv().await), ["a", "b"]);
}
