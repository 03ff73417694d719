//! A NACK storm: every client rejects every version it is sent. The server
//! must answer each version exactly once per type and stream (no resend
//! loop), sit idle between versions, and still deliver the next good
//! version to everyone.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use parking_lot::Mutex;
use tonic::transport::Channel;
use tonic::Status;
use xds_control_plane::envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LocalityLbEndpoints,
};
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use xds_control_plane::envoy_types::pb::google::rpc::Status as RpcStatus;
use xds_control_plane::resource::type_url::{CLUSTER, ENDPOINT};
use xds_control_plane::server::{Callbacks, Nack, SentDeltaResponse, SentResponse, StreamId};
use xds_control_plane::{IdHash, Server, Snapshot, SnapshotCache};

/// The tests of this binary measure the whole process's CPU: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NODES: usize = 10;
const BAD_VERSIONS: usize = 3;

/// Counts what the server sent, per stream, type and version.
#[derive(Default)]
struct Tally {
    sent: Mutex<HashMap<(StreamId, String, String), usize>>,
    nacks: AtomicUsize,
}

impl Tally {
    fn total(&self) -> usize {
        self.sent.lock().values().sum()
    }
    fn nacks(&self) -> usize {
        self.nacks.load(Ordering::SeqCst)
    }
    /// Every (stream, type, version) sent exactly once, `per_stream` of
    /// them on each of `streams` streams.
    fn assert_each_sent_once(&self, streams: usize, per_stream: usize) {
        let sent = self.sent.lock();
        let repeated: Vec<_> = sent.iter().filter(|(_, n)| **n != 1).collect();
        assert!(repeated.is_empty(), "sent more than once: {repeated:?}");
        let mut per: HashMap<StreamId, usize> = HashMap::new();
        for (stream, _, _) in sent.keys() {
            *per.entry(*stream).or_default() += 1;
        }
        assert_eq!(per.len(), streams);
        assert!(
            per.values().all(|n| *n == per_stream),
            "responses per stream: {:?}",
            per.values().collect::<HashSet<_>>()
        );
    }
}

impl Callbacks for Tally {
    fn on_stream_response(
        &self,
        stream: StreamId,
        _request: &DiscoveryRequest,
        response: &SentResponse<'_>,
    ) {
        *self
            .sent
            .lock()
            .entry((
                stream,
                response.type_url().to_owned(),
                response.version().to_owned(),
            ))
            .or_default() += 1;
    }
    fn on_stream_delta_response(
        &self,
        stream: StreamId,
        _request: &DeltaDiscoveryRequest,
        response: &SentDeltaResponse<'_>,
    ) {
        *self
            .sent
            .lock()
            .entry((
                stream,
                response.type_url().to_owned(),
                response.system_version().to_owned(),
            ))
            .or_default() += 1;
    }
    fn on_stream_nack(&self, _stream: StreamId, _nack: &Nack<'_>) {
        self.nacks.fetch_add(1, Ordering::SeqCst);
    }
}

/// Every version changes the content of every resource (delta streams only
/// send what changed).
fn storm_snapshot(version: &str, k: u32) -> Snapshot {
    let mut c0 = cluster("c0");
    c0.alt_stat_name = version.to_string();
    Snapshot::builder(version)
        .clusters([c0])
        .endpoints([ClusterLoadAssignment {
            cluster_name: "e0".into(),
            endpoints: vec![LocalityLbEndpoints {
                priority: k,
                ..Default::default()
            }],
            ..Default::default()
        }])
        .build()
        .unwrap()
}

fn set_all(cache: &SnapshotCache, version: &str, k: u32) {
    let snapshot = storm_snapshot(version, k);
    for n in 0..NODES {
        cache.set_snapshot(&format!("storm-{n}"), snapshot.clone());
    }
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    received: AtomicUsize,
    good: AtomicUsize,
    duplicates: AtomicUsize,
}

fn rejection() -> Option<RpcStatus> {
    Some(RpcStatus {
        code: 3,
        message: "rejected by the storm".into(),
        details: vec![],
    })
}

/// A SotW ADS client (CDS wildcard, EDS `e0`) that NACKs every version
/// whose name starts with "bad" and ACKs the others.
async fn sotw_client(channel: Channel, node: String, seen: Arc<Seen>) -> Result<(), Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, requests) = tokio::sync::mpsc::channel(8);
    let names = |t: &str| -> Vec<String> {
        if t == ENDPOINT {
            vec!["e0".into()]
        } else {
            vec![]
        }
    };
    for t in [CLUSTER, ENDPOINT] {
        let mut r = request(&node, t, "", "", &[]);
        r.resource_names = names(t);
        tx.send(r).await.unwrap();
    }
    let mut rx = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await?
        .into_inner();
    let mut had = HashSet::new();
    let mut accepted: HashMap<String, String> = HashMap::new();
    while let Some(response) = rx.message().await? {
        seen.received.fetch_add(1, Ordering::SeqCst);
        if !had.insert((response.type_url.clone(), response.version_info.clone())) {
            seen.duplicates.fetch_add(1, Ordering::SeqCst);
        }
        let current = accepted
            .get(&response.type_url)
            .cloned()
            .unwrap_or_default();
        let mut reply = request(&node, &response.type_url, &current, &response.nonce, &[]);
        reply.resource_names = names(&response.type_url);
        if response.version_info.starts_with("bad") {
            reply.error_detail = rejection();
        } else {
            reply.version_info.clone_from(&response.version_info);
            accepted.insert(response.type_url.clone(), response.version_info.clone());
            seen.good.fetch_add(1, Ordering::SeqCst);
        }
        if tx.send(reply).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The delta counterpart: rejects every response carrying a "bad" system
/// version.
async fn delta_client(channel: Channel, node: String, seen: Arc<Seen>) -> Result<(), Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, requests) = tokio::sync::mpsc::channel(8);
    tx.send(delta_request(&node, CLUSTER, &[], &[]))
        .await
        .unwrap();
    tx.send(delta_request(&node, ENDPOINT, &["e0"], &[]))
        .await
        .unwrap();
    let mut rx = client
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await?
        .into_inner();
    let mut had = HashSet::new();
    while let Some(response) = rx.message().await? {
        seen.received.fetch_add(1, Ordering::SeqCst);
        if !had.insert((
            response.type_url.clone(),
            response.system_version_info.clone(),
        )) {
            seen.duplicates.fetch_add(1, Ordering::SeqCst);
        }
        let mut reply = delta_request(&node, &response.type_url, &[], &[]);
        reply.response_nonce.clone_from(&response.nonce);
        if response.system_version_info.starts_with("bad") {
            reply.error_detail = rejection();
        } else {
            seen.good.fetch_add(1, Ordering::SeqCst);
        }
        if tx.send(reply).await.is_err() {
            break;
        }
    }
    Ok(())
}

async fn wait_for(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the storm: `clients` clients over `channels` connections, every
/// one rejecting each of the bad versions, then a good version for all.
async fn storm(delta: bool, clients: usize, channels: usize) {
    let started = Instant::now();
    let label = if delta { "delta" } else { "sotw" };
    let cache = SnapshotCache::new(true, IdHash);
    let tally = Arc::new(Tally::default());
    let server = Server::new(cache.clone(), Arc::clone(&tally));
    let served = serve(&server).await;
    set_all(&cache, "bad-1", 1);

    let seen = Arc::new(Seen::default());
    let mut tasks = Vec::new();
    for c in 0..channels {
        let channel = served.channel().await;
        for k in 0..clients / channels {
            let node = format!("storm-{}", (c + k) % NODES);
            let (channel, seen) = (channel.clone(), Arc::clone(&seen));
            tasks.push(tokio::spawn(async move {
                if delta {
                    delta_client(channel, node, seen).await
                } else {
                    sotw_client(channel, node, seen).await
                }
            }));
        }
    }
    let per_version = 2 * clients;
    let storm_cpu = cpu_time();
    for k in 1..=BAD_VERSIONS {
        if k > 1 {
            set_all(&cache, &format!("bad-{k}"), k as u32);
        }
        wait_for(
            &format!("NACKs of bad-{k}"),
            Duration::from_secs(20),
            || tally.nacks() >= k * per_version,
        )
        .await;
    }
    let storm_cpu = cpu_time() - storm_cpu;

    // Quiet: everyone has rejected everything. Nothing may be re-sent.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (sent_before, cpu_before) = (tally.total(), cpu_time());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (sent_after, quiet_cpu) = (tally.total(), cpu_time() - cpu_before);
    assert_eq!(sent_before, BAD_VERSIONS * per_version);
    assert_eq!(
        sent_after, sent_before,
        "responses went out with nothing new"
    );
    assert_eq!(tally.nacks(), BAD_VERSIONS * per_version);
    tally.assert_each_sent_once(clients, 2 * BAD_VERSIONS);

    // The next good version reaches every client, once.
    let good_sent = Instant::now();
    set_all(&cache, "good", 100);
    wait_for("the good version", Duration::from_secs(20), || {
        seen.good.load(Ordering::SeqCst) >= per_version
    })
    .await;
    let good_latency = good_sent.elapsed();
    tally.assert_each_sent_once(clients, 2 * (BAD_VERSIONS + 1));
    assert_eq!(seen.received.load(Ordering::SeqCst), tally.total());
    assert_eq!(seen.duplicates.load(Ordering::SeqCst), 0);

    eprintln!(
        "{label} NACK storm: {clients} clients over {channels} connections, {BAD_VERSIONS} rejected versions: \
         {} responses, {} NACKs, CPU {storm_cpu:?} during the storm, {quiet_cpu:?} in the quiet second after; \
         the good version reached all in {good_latency:?}; took {:?}",
        tally.total(),
        tally.nacks(),
        started.elapsed()
    );
    // An idle server with a resend loop would burn a core or two here.
    assert!(
        quiet_cpu <= Duration::from_millis(50),
        "{quiet_cpu:?} of CPU in a quiet second"
    );
    for task in &tasks {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sotw_clients_nacking_every_version_get_each_version_once() {
    let _serial = SERIAL.lock().await;
    storm(false, 1_000, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_clients_nacking_every_version_get_each_version_once() {
    let _serial = SERIAL.lock().await;
    storm(true, 250, 5).await;
}
