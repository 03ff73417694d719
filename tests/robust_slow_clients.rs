//! Clients that stop reading: 100 ADS streams subscribe to a big CDS
//! response (2,000 clusters, over the 2 MB HTTP/2 stream window a tonic
//! client grants) and never read a byte. They must not slow `set_snapshot`
//! down, starve a healthy client on the same node, or make the server
//! buffer more than a bounded amount per stream, however many versions go
//! by and however eagerly they keep sending ACKs. Once one starts reading
//! again, it catches up with the newest version.
//!
//! The binary counts live heap bytes ([`CountingAlloc`]); one test only.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
};
use xds_control_plane::resource::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use xds_control_plane::resource::ResourceType;
use xds_control_plane::{IdHash, Server, Snapshot, SnapshotCache};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const STALLED: usize = 100;
const NODES: usize = 25;
const CLUSTERS: usize = 2_000;
const VERSIONS: usize = 50;

/// What every client subscribes to, in the order it asks (ADS order).
const SUBSCRIPTIONS: [(&str, &[&str]); 4] = [
    (CLUSTER, &[]),
    (ENDPOINT, &["e0", "e1"]),
    (LISTENER, &[]),
    (ROUTE, &["r0"]),
];

fn node(i: usize) -> String {
    format!("slow-{}", i % NODES)
}

/// 2,000 clusters of about 1.1 KB each, encoded once and shared by every
/// version's snapshot.
fn big_clusters() -> Vec<(String, Bytes)> {
    (0..CLUSTERS)
        .map(|i| {
            let mut c = cluster(&format!("cluster-{i:04}"));
            c.alt_stat_name = format!("{i:0>1100}");
            (c.name.clone(), Bytes::from(c.encode_to_vec()))
        })
        .collect()
}

fn version_snapshot(version: usize, clusters: &[(String, Bytes)]) -> Snapshot {
    let mut builder = Snapshot::builder(format!("v{version}"));
    for (name, bytes) in clusters {
        builder = builder.encoded(ResourceType::Cluster, name, bytes.clone());
    }
    builder
        .endpoints([endpoint("e0"), endpoint("e1")])
        .listeners([listener("l0")])
        .routes([route("r0")])
        .build()
        .unwrap()
}

/// A client that subscribes and then never reads its responses. It keeps
/// sending ACKs as if it had read them (as a proxy whose reader is stuck
/// would not, but a hostile one could).
struct Stalled {
    node: String,
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Stalled {
    async fn attach(channel: tonic::transport::Channel, node: String) -> Stalled {
        let (tx, requests) = mpsc::channel(1024);
        let mut client = AggregatedDiscoveryServiceClient::new(channel);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(requests))
            .await
            .expect("stream opens")
            .into_inner();
        let stalled = Stalled { node, tx, rx };
        // Subscribe, then ACK the initial responses blindly: the server
        // numbers the responses of a stream 1, 2, 3, ... and answers each
        // subscription at once, in the order asked.
        for (type_url, names) in SUBSCRIPTIONS {
            stalled.send(request(&stalled.node, type_url, "", "", names));
        }
        stalled.ack_blindly(0);
        stalled
    }

    fn send(&self, request: DiscoveryRequest) {
        // Never wait: a full queue just drops the request.
        let _ = self.tx.try_send(request);
    }

    /// ACKs version `v{k}` with the nonces the server would have used had
    /// the client read everything.
    fn ack_blindly(&self, k: usize) {
        for (t, (type_url, names)) in SUBSCRIPTIONS.into_iter().enumerate() {
            let nonce = (4 * k + t + 1).to_string();
            self.send(request(
                &self.node,
                type_url,
                &format!("v{k}"),
                &nonce,
                names,
            ));
        }
    }
}

/// Receives until every subscribed type arrived at `version`, ACKing each
/// response as a real client does.
async fn read_until(
    node: &str,
    tx: &mpsc::Sender<DiscoveryRequest>,
    rx: &mut Streaming<DiscoveryResponse>,
    types: &[(&str, &[&str])],
    version: &str,
) -> usize {
    let mut current: HashMap<String, String> = HashMap::new();
    let mut received = 0;
    while types
        .iter()
        .any(|(t, _)| current.get(*t).map(String::as_str) != Some(version))
    {
        let response = match tokio::time::timeout(Duration::from_secs(10), rx.message()).await {
            Ok(Ok(Some(response))) => response,
            other => panic!("{node}: no {version} for every type: {other:?} (have {current:?})"),
        };
        received += 1;
        let names = types
            .iter()
            .find(|(t, _)| *t == response.type_url)
            .map(|(_, n)| *n)
            .unwrap_or_else(|| panic!("unexpected type {}", response.type_url));
        tx.send(request(
            node,
            &response.type_url,
            &response.version_info,
            &response.nonce,
            names,
        ))
        .await
        .unwrap();
        current.insert(response.type_url.clone(), response.version_info.clone());
    }
    received
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_block_nothing_and_hold_bounded_memory() {
    let started = Instant::now();
    let clusters = big_clusters();
    let cache = SnapshotCache::new(false, IdHash);
    let server = Server::new(cache.clone(), ());
    let served = serve(&server).await;
    for n in 0..NODES {
        cache.set_snapshot(&node(n), version_snapshot(0, &clusters));
    }

    // A healthy client on the first stalled node, on its own connection.
    let healthy_types: [(&str, &[&str]); 2] = [(CLUSTER, &[]), (ENDPOINT, &["e0"])];
    let (healthy_tx, requests) = mpsc::channel(16);
    let mut healthy_rx = AggregatedDiscoveryServiceClient::new(served.channel().await)
        .stream_aggregated_resources(ReceiverStream::new(requests))
        .await
        .unwrap()
        .into_inner();
    for (type_url, names) in healthy_types {
        healthy_tx
            .send(request(&node(0), type_url, "", "", names))
            .await
            .unwrap();
    }
    read_until(&node(0), &healthy_tx, &mut healthy_rx, &healthy_types, "v0").await;
    let cds_bytes = {
        let snapshot = cache.snapshot(&node(0)).unwrap();
        let cds = snapshot.of_type(ResourceType::Cluster);
        cds.resources()
            .iter()
            .map(|r| r.bytes().len())
            .sum::<usize>() as isize
    };
    let (base, _) = live_heap();

    // 100 stalled clients: the first on a connection of its own (it reads
    // again at the end: a stream sharing a connection with stalled ones
    // would wait for them, as HTTP/2 flow control is per connection too),
    // the others eleven to a connection.
    let mut stalled = vec![Stalled::attach(served.channel().await, node(0)).await];
    let mut channel = served.channel().await;
    for i in 1..STALLED {
        if i % 11 == 0 {
            channel = served.channel().await;
        }
        stalled.push(Stalled::attach(channel.clone(), node(i)).await);
    }
    // Every stalled stream was sent v0's clusters, which it does not read:
    // over its window, so the stream now waits for its client (and reads
    // none of its requests meanwhile).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let sent_v0 = server
            .client_status()
            .iter()
            .filter(|s| {
                s.types
                    .get(CLUSTER)
                    .and_then(|t| t.sent.as_ref())
                    .is_some_and(|(version, _)| version == "v0")
            })
            .count();
        if sent_v0 == STALLED + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stalled clients did not subscribe: {sent_v0} sent v0"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (attached, _) = live_heap();

    let mut set_times: Vec<Duration> = Vec::new();
    let mut healthy_times: Vec<Duration> = Vec::new();
    let mut stalled_heap = 0;
    for k in 1..=VERSIONS {
        let snapshot = version_snapshot(k, &clusters);
        let version_set = Instant::now();
        let mut slowest = Duration::ZERO;
        for n in 0..NODES {
            let call = Instant::now();
            cache.set_snapshot(&node(n), snapshot.clone());
            slowest = slowest.max(call.elapsed());
        }
        set_times.push(slowest);
        drop(snapshot);
        for s in &stalled {
            s.ack_blindly(k);
        }
        read_until(
            &node(0),
            &healthy_tx,
            &mut healthy_rx,
            &healthy_types,
            &format!("v{k}"),
        )
        .await;
        healthy_times.push(version_set.elapsed());
        if k == 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stalled_heap = live_heap().0;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (end, _) = live_heap();

    let max_set = set_times.iter().max().unwrap();
    let first: Duration = set_times[..10].iter().sum::<Duration>() / 10;
    let last: Duration = set_times[VERSIONS - 10..].iter().sum::<Duration>() / 10;
    let max_healthy = healthy_times.iter().max().unwrap();
    let per_stalled = (stalled_heap - base) / STALLED as isize;
    eprintln!(
        "slow clients: CDS response {:.2} MiB; set_snapshot (slowest node per version) max {max_set:?}, \
         mean of first 10 {first:?}, of last 10 {last:?}; healthy client got each version within {max_healthy:?}; \
         live heap: base {:.1} MiB, stalled attached {:.1}, after v2 {:.1} ({:.2} MiB per stalled stream), \
         after v{VERSIONS} {:.1} ({:+.2} MiB since v2); VmRSS {} MiB",
        mib(cds_bytes),
        mib(base),
        mib(attached),
        mib(stalled_heap),
        mib(per_stalled),
        mib(end),
        mib(end - stalled_heap),
        rss_kib() / 1024,
    );

    // Hang guards, not benchmarks.
    assert!(
        *max_set < Duration::from_millis(50),
        "set_snapshot took {max_set:?}: {set_times:?}"
    );
    assert!(
        last <= first * 3 + Duration::from_millis(5),
        "set_snapshot slows down as versions go by: {set_times:?}"
    );
    assert!(
        *max_healthy < Duration::from_secs(2),
        "the healthy client waited {max_healthy:?}"
    );
    // Per stalled stream, what is in flight when it stops reading: the
    // response HTTP/2 is sending (encoded, in a buffer up to twice its size)
    // and at most one response per type queued behind it: less than five
    // CDS responses' worth.
    assert!(
        per_stalled < 5 * cds_bytes,
        "{:.2} MiB held per stalled stream",
        mib(per_stalled)
    );
    // And it does not grow: 48 more versions, each ACKed by every stalled
    // client, add less than a tenth of one CDS response per stalled stream
    // (what grows is the ACKs themselves, waiting in HTTP/2 receive buffers
    // that flow control bounds; were each ACK answered, every version would
    // add a CDS response per stream).
    assert!(
        end - stalled_heap < cds_bytes * STALLED as isize / 10,
        "live heap grew {:.1} MiB while clients were stalled",
        mib(end - stalled_heap)
    );

    // One stalled client reads again: it catches up with the newest version
    // (intermediate ones may be skipped).
    let Stalled { node, tx, mut rx } = stalled.remove(0);
    let caught_up = Instant::now();
    let received = read_until(&node, &tx, &mut rx, &SUBSCRIPTIONS, &format!("v{VERSIONS}")).await;
    eprintln!(
        "slow clients: the unstalled client reached v{VERSIONS} after {received} responses in {:?}; test took {:?}",
        caught_up.elapsed(),
        started.elapsed()
    );
    drop(stalled);
}
