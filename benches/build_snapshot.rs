//! What a W1-size snapshot (1,000 clusters, 1,000 load assignments of 10
//! endpoints, a listener, a 1,000-route configuration) costs to build, and
//! what turning it into one response costs per stream.
//!
//! - `typed`: construct the messages, encode each once, index them: what a
//!   control plane pays per update with `Snapshot::builder(..).clusters(..)`.
//! - `encode_only`: prost encoding of already constructed messages.
//! - `index_encoded`: a new version over already encoded bytes
//!   (`SnapshotBuilder::encoded`), no encoding.
//! - `per_stream/*`: what one stream pays to send the 1,000 EDS resources.
//!   `eds_wire` and `eds_delta_wire` are what the server does: assemble one
//!   gRPC message from each resource's shared, already encoded element.
//!   `eds_struct_prost` is what it did before: build a `DiscoveryResponse`
//!   of `Any`s (`EncodedResource::to_any`, a copy per resource) and encode
//!   it (another copy), for comparison.
//! - `per_snapshot/eds_wire_first_use`: the first stream to send a new
//!   snapshot also encodes each resource's element, once for every stream.
//! - `delta_versions/w1_every_resource`: the delta version (a digest of
//!   the canonical form) of every W1 resource, taken once per resource.
//!
//! ```text
//! cargo bench --bench build_snapshot
//! ```

#[path = "../examples/support/w1.rs"]
mod w1;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message;
use xds_control_plane::cache::{EncodedList, EncodedResource};
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use xds_control_plane::resource::{type_url, ResourceType};
use xds_control_plane::server::__wire::{delta_message, sotw_message};

const CLUSTERS: usize = 1000;
const ENDPOINTS: usize = 10;

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("w1_snapshot");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let bytes = w1::Encoded::new(1, CLUSTERS, ENDPOINTS).byte_len();
    group.throughput(Throughput::Bytes(bytes as u64));

    group.bench_function("typed", |b| {
        b.iter(|| w1::snapshot(black_box("v1"), 1, CLUSTERS, ENDPOINTS).unwrap())
    });

    let clusters: Vec<_> = (0..CLUSTERS).map(w1::cluster).collect();
    let assignments: Vec<_> = (0..CLUSTERS)
        .map(|c| w1::load_assignment(c, 1, ENDPOINTS))
        .collect();
    let listener = w1::listener();
    let routes = w1::route_config(CLUSTERS);
    group.bench_function("encode_only", |b| {
        b.iter(|| {
            let mut total = 0;
            for m in &clusters {
                total += m.encode_to_vec().len();
            }
            for m in &assignments {
                total += m.encode_to_vec().len();
            }
            total += listener.encode_to_vec().len();
            total += routes.encode_to_vec().len();
            total
        })
    });

    let encoded = w1::Encoded::new(1, CLUSTERS, ENDPOINTS);
    group.bench_function("index_encoded", |b| {
        b.iter(|| encoded.snapshot(black_box("v1")).unwrap())
    });
    group.finish();

    let snapshot = w1::snapshot("v1", 1, CLUSTERS, ENDPOINTS).unwrap();
    let eds = snapshot.of_type(ResourceType::Endpoint);
    let eds_bytes: usize = eds.resources().iter().map(|r| r.bytes().len()).sum();
    let mut group = c.benchmark_group("per_stream");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(eds_bytes as u64));
    // Warm the shared encodings: every stream but the first finds them.
    let resources = eds.resources();
    let list: EncodedList = resources.iter().cloned().collect();
    sotw_message("v1", type_url::ENDPOINT, "1", &list).unwrap();
    delta_message("v1", type_url::ENDPOINT, "1", resources, &[], false).unwrap();
    group.bench_function("eds_wire_1000_resources", |b| {
        b.iter(|| sotw_message("v1", type_url::ENDPOINT, black_box("1"), &list).unwrap())
    });
    group.bench_function("eds_delta_wire_1000_resources", |b| {
        b.iter(|| {
            delta_message(
                "v1",
                type_url::ENDPOINT,
                black_box("1"),
                resources,
                &[],
                false,
            )
            .unwrap()
        })
    });
    group.bench_function("eds_struct_prost_1000_resources", |b| {
        b.iter(|| {
            let response = DiscoveryResponse {
                version_info: "v1".to_string(),
                resources: resources.iter().map(EncodedResource::to_any).collect(),
                type_url: type_url::ENDPOINT.to_string(),
                nonce: black_box("1").to_string(),
                ..Default::default()
            };
            response.encode_to_vec()
        })
    });
    group.finish();

    let encoded = w1::Encoded::new(1, CLUSTERS, ENDPOINTS);
    let mut group = c.benchmark_group("per_snapshot");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(eds_bytes as u64));
    group.bench_function("eds_wire_first_use", |b| {
        b.iter_batched(
            || encoded.snapshot("v1").unwrap(),
            |snapshot| {
                let eds: EncodedList = snapshot
                    .of_type(ResourceType::Endpoint)
                    .resources()
                    .iter()
                    .cloned()
                    .collect();
                sotw_message("v1", type_url::ENDPOINT, "1", &eds).unwrap();
                // Dropped after timing.
                snapshot
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Delta versions: a digest of each resource's canonical form (map entries
/// sorted), taken once per encoded resource and shared by every stream.
fn delta_versions(c: &mut Criterion) {
    let snapshot = w1::snapshot("v1", 1, CLUSTERS, ENDPOINTS).unwrap();
    let all: Vec<EncodedResource> = ResourceType::ALL
        .iter()
        .flat_map(|&kind| snapshot.of_type(kind).resources().to_vec())
        .collect();
    let bytes: usize = all.iter().map(|r| r.bytes().len()).sum();
    let mut group = c.benchmark_group("delta_versions");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(bytes as u64));
    // Fresh resources each time: a version, once taken, is kept.
    group.bench_function("w1_every_resource", |b| {
        b.iter_batched(
            || {
                all.iter()
                    .map(|r| EncodedResource::from_bytes(r.type_url(), r.name(), r.bytes().clone()))
                    .collect::<Vec<_>>()
            },
            |fresh| {
                for r in &fresh {
                    black_box(r.version());
                }
                fresh
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, build, delta_versions);
criterion_main!(benches);
