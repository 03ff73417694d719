//! `SnapshotCache::set_snapshot` cost, with and without open watches.
//!
//! - `with_watches`: N nodes, each with a CDS (wildcard) and an EDS (every
//!   cluster by name) watch open at the current version, as an ADS Envoy
//!   leaves them between updates; times setting a new version for every
//!   node, which answers all 2N watches.
//! - `no_watches`: 1,000 nodes with a snapshot and no watch; times setting a
//!   new one for each (should be microseconds per node).
//!
//! Watches are opened through the public `Cache::create_watch`, answered
//! into one `ResponseQueue` per node, as a stream would.
//!
//! ```text
//! cargo bench --bench set_snapshot
//! ```

#[path = "../examples/support/w1.rs"]
mod w1;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use xds_control_plane::cache::{
    Cache, ResponseQueue, ReturnedResources, SotwResponse, Subscription, WatchHandle, WatchRequest,
};
use xds_control_plane::envoy_types::pb::envoy::config::core::v3::Node;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use xds_control_plane::resource::type_url;
use xds_control_plane::{IdHash, Snapshot, SnapshotCache};

const ENDPOINTS: usize = 10;

fn node_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node-{i}")).collect()
}

fn snapshot(seq: u64, clusters: usize) -> Snapshot {
    w1::snapshot(&format!("v{seq}"), seq, clusters, ENDPOINTS).expect("valid snapshot")
}

/// A subscription (wildcard if `names` is empty) that has received every
/// resource it wants at `version`.
fn held_subscription(names: &[String], all: &[String], version: &str) -> Arc<Subscription> {
    let mut sub = Subscription::sotw(names, true);
    let returned: ReturnedResources = all
        .iter()
        .map(|n| (Arc::from(n.as_str()), Arc::from(version)))
        .collect();
    sub.set_returned(returned);
    Arc::new(sub)
}

fn watch_request(
    node: &str,
    type_url: &str,
    version: &str,
    names: &[String],
    subscription: &Arc<Subscription>,
) -> WatchRequest {
    WatchRequest {
        node: None,
        request: Arc::new(DiscoveryRequest {
            version_info: version.to_string(),
            node: Some(Node {
                id: node.to_string(),
                ..Default::default()
            }),
            resource_names: names.to_vec(),
            type_url: type_url.to_string(),
            response_nonce: "1".to_string(),
            ..Default::default()
        }),
        rejected_version: None,
        subscription: Arc::clone(subscription),
    }
}

/// A cache whose every node is at `v0` and holds a CDS and an EDS watch.
struct Watched {
    cache: SnapshotCache,
    queues: Vec<Arc<ResponseQueue<SotwResponse>>>,
    /// Kept so the watches stay open.
    _handles: Vec<WatchHandle>,
}

fn watched_cache(nodes: &[String], v0: &Snapshot, clusters: usize) -> Watched {
    let cache = SnapshotCache::new(true, IdHash);
    let names: Vec<String> = (0..clusters).map(w1::cluster_name).collect();
    let cds = held_subscription(&[], &names, "v0");
    let eds = held_subscription(&names, &names, "v0");
    let mut queues = Vec::with_capacity(nodes.len());
    let mut handles = Vec::with_capacity(2 * nodes.len());
    for node in nodes {
        cache.set_snapshot(node, v0.clone());
        let queue = ResponseQueue::new();
        for (id, (t, names, sub)) in [
            (type_url::CLUSTER, &[][..], &cds),
            (type_url::ENDPOINT, &names[..], &eds),
        ]
        .into_iter()
        .enumerate()
        {
            let request = watch_request(node, t, "v0", names, sub);
            let handle = cache
                .create_watch(request, queue.sink(id as u64 + 1))
                .expect("watch opens");
            handles.push(handle);
        }
        queues.push(queue);
    }
    Watched {
        cache,
        queues,
        _handles: handles,
    }
}

fn with_watches(c: &mut Criterion) {
    let mut group = c.benchmark_group("set_snapshot/with_watches");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    for (nodes, clusters) in [(1000, 10), (100, 1000), (1000, 1000)] {
        let ids = node_ids(nodes);
        let v0 = snapshot(0, clusters);
        let v1 = snapshot(1, clusters);
        // Sanity: every watch is held at v0 and answered by v1.
        {
            let w = watched_cache(&ids[..1], &v0, clusters);
            assert_eq!(w.cache.status_info(&ids[0]).unwrap().num_watches, 2);
            w.cache.set_snapshot(&ids[0], v1.clone());
            assert_eq!(w.queues[0].take().len(), 2);
        }
        group.throughput(Throughput::Elements(nodes as u64));
        group.bench_function(
            BenchmarkId::from_parameter(format!("{nodes}_nodes_{clusters}_clusters")),
            |b| {
                b.iter_batched(
                    || watched_cache(&ids, &v0, clusters),
                    |watched| {
                        for node in &ids {
                            watched.cache.set_snapshot(node, v1.clone());
                        }
                        // Dropped after timing.
                        watched
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();
}

fn no_watches(c: &mut Criterion) {
    let mut group = c.benchmark_group("set_snapshot/no_watches");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let nodes = 1000;
    let ids = node_ids(nodes);
    let cache = SnapshotCache::new(true, IdHash);
    let snaps = [snapshot(0, 1000), snapshot(1, 1000)];
    for node in &ids {
        cache.set_snapshot(node, snaps[0].clone());
    }
    group.throughput(Throughput::Elements(nodes as u64));
    let mut round = 0;
    group.bench_function(BenchmarkId::from_parameter("1000_nodes"), |b| {
        b.iter(|| {
            round += 1;
            let snap = &snaps[round % 2];
            for node in &ids {
                cache.set_snapshot(black_box(node), snap.clone());
            }
        })
    });
    group.finish();
}

criterion_group!(benches, with_watches, no_watches);
criterion_main!(benches);
