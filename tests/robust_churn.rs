//! No leaks under churn: 10,000 streams (ADS and per-type, state of the
//! world and delta) open and close every way a stream can end, and the
//! server is left with no watch, no idle node, no open stream and no heap
//! growth.
//!
//! The ways a stream ends:
//! - clean: the client half-closes (drops its request sender) and reads the
//!   end of the response stream;
//! - cancel: the client drops the whole stream mid-flight (RST_STREAM);
//! - reset: the client process dies: its runtime, with every connection and
//!   stream it held, is dropped at once (the server sees the TCP connection
//!   go away);
//! - shutdown: `Server::shutdown` ends the streams of a separate server.
//!
//! The test binary counts live heap allocations ([`CountingAlloc`]); one
//! test only, so nothing else allocates meanwhile. A warm-up round of every
//! kind comes first; then heap bytes and allocations must return to that
//! baseline once the 8,500 streams after it are gone.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use tonic::transport::Channel;
use tonic::Code;
use xds_control_plane::envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use xds_control_plane::resource::type_url::{CLUSTER, ENDPOINT};
use xds_control_plane::{IdHash, Server, SnapshotCache};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Nodes with a snapshot; the others ("idle-*") have none, so the cache
/// must forget them once their last watch is gone.
const SNAPSHOT_NODES: usize = 10;

fn node_for(i: usize) -> String {
    if i.is_multiple_of(3) {
        format!("idle-{}", i % 97)
    } else {
        format!("snap-{}", i % SNAPSHOT_NODES)
    }
}

/// A client stream of either protocol.
enum Open {
    Sotw(XdsStream),
    Delta(DeltaStream),
}

impl Open {
    /// The status the stream ends with.
    async fn recv_error(&mut self) -> tonic::Status {
        match self {
            Open::Sotw(s) => s.recv_error().await,
            Open::Delta(s) => s.recv_error().await,
        }
    }

    /// Half-closes and checks the server ends the stream cleanly.
    async fn close_cleanly(self, i: usize) {
        let end = match self {
            Open::Sotw(s) => {
                let mut rx = s.half_close();
                tokio::time::timeout(PATIENCE, rx.message())
                    .await
                    .map(|r| r.map(|m| m.map(|_| ())))
            }
            Open::Delta(s) => {
                let mut rx = s.half_close();
                tokio::time::timeout(PATIENCE, rx.message())
                    .await
                    .map(|r| r.map(|m| m.map(|_| ())))
            }
        };
        assert!(
            matches!(end, Ok(Ok(None))),
            "stream {i} ({}): expected a clean end: {end:?}",
            node_for(i)
        );
    }
}

/// Opens stream number `i` on `channel`: its kind (ADS or per-type, SotW
/// or delta) and node follow from `i`. Streams of nodes with a snapshot
/// receive their first responses and ACK them, so each holds open watches.
async fn open_stream(channel: Channel, i: usize) -> Open {
    let node = node_for(i);
    let served = node.starts_with("snap");
    let eds = (i / 8) % 2 == 1;
    match i % 4 {
        0 => {
            let mut s = XdsStream::ads(channel).await;
            s.send(request(&node, CLUSTER, "", "", &[])).await;
            s.send(request(&node, ENDPOINT, "", "", &["e0"])).await;
            if served {
                for _ in 0..2 {
                    let r = s.recv().await;
                    let names: &[&str] = if r.type_url == ENDPOINT { &["e0"] } else { &[] };
                    s.ack(&node, &r, names).await;
                }
            }
            Open::Sotw(s)
        }
        1 => {
            let mut s = DeltaStream::ads(channel).await;
            s.send(delta_request(&node, CLUSTER, &[], &[])).await;
            s.send(delta_request(&node, ENDPOINT, &["e0"], &[])).await;
            if served {
                for _ in 0..2 {
                    let r = s.recv().await;
                    s.ack(&node, &r).await;
                }
            }
            Open::Delta(s)
        }
        2 => {
            let names: &[&str] = if eds { &["e0"] } else { &[] };
            let mut s = if eds {
                let mut client = EndpointDiscoveryServiceClient::new(channel);
                XdsStream::open(|r| async move { client.stream_endpoints(r).await }).await
            } else {
                let mut client = ClusterDiscoveryServiceClient::new(channel);
                XdsStream::open(|r| async move { client.stream_clusters(r).await }).await
            };
            s.send(request(&node, "", "", "", names)).await;
            if served {
                let r = s.recv().await;
                s.ack(&node, &r, names).await;
            }
            Open::Sotw(s)
        }
        _ => {
            let names: &[&str] = if eds { &["e0"] } else { &[] };
            let mut s = if eds {
                let mut client = EndpointDiscoveryServiceClient::new(channel);
                DeltaStream::open(|r| async move { client.delta_endpoints(r).await }).await
            } else {
                let mut client = ClusterDiscoveryServiceClient::new(channel);
                DeltaStream::open(|r| async move { client.delta_clusters(r).await }).await
            };
            s.send(delta_request(&node, "", names, &[])).await;
            if served {
                let r = s.recv().await;
                s.ack(&node, &r).await;
            }
            Open::Delta(s)
        }
    }
}

/// `n` streams over 50 connections (HTTP/2 multiplexing, a few at a time
/// per connection), half closed cleanly, half cancelled mid-stream. The
/// connections close at the end: they keep per-connection state that
/// legitimately grows with time (HPACK tables remember each second's `date`
/// header), which would hide a leak.
async fn churn(served: &Serving, next: &mut usize, n: usize) {
    const CHANNELS: usize = 50;
    let per_channel = n / CHANNELS;
    let mut tasks = Vec::new();
    for _ in 0..CHANNELS {
        let first = *next;
        *next += per_channel;
        let channel = served.channel().await;
        tasks.push(tokio::spawn(async move {
            futures::stream::iter(first..first + per_channel)
                .map(|i| {
                    let channel = channel.clone();
                    async move {
                        let stream = open_stream(channel, i).await;
                        if (i / 4) % 2 == 0 {
                            stream.close_cleanly(i).await;
                        } else {
                            drop(stream);
                        }
                    }
                })
                .buffer_unordered(4)
                .collect::<Vec<()>>()
                .await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// `channels` × `per_channel` streams from a client that then dies: its
/// runtime is dropped with every connection and stream open.
async fn reset(addr: SocketAddr, next: &mut usize, channels: usize, per_channel: usize) {
    let first = *next;
    *next += channels * per_channel;
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let held = rt.block_on(async move {
            let mut opening = Vec::new();
            for c in 0..channels {
                let channel = Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                for k in 0..per_channel {
                    opening.push(open_stream(channel.clone(), first + c * per_channel + k));
                }
            }
            futures::future::join_all(opening).await
        });
        // The "process" dies: its tasks (connections included) vanish.
        drop(rt);
        drop(held);
    });
    tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
}

/// `channels` × `per_channel` streams on a separate server sharing the
/// cache, ended by `Server::shutdown`; then that server stops.
async fn shutdown(
    cache: &SnapshotCache,
    counts: &Arc<Counts>,
    next: &mut usize,
    channels: usize,
    per_channel: usize,
) {
    let server = Server::new(cache.clone(), Arc::clone(counts));
    let served = serve(&server).await;
    let mut opening = Vec::new();
    for c in 0..channels {
        let channel = served.channel().await;
        for k in 0..per_channel {
            opening.push(open_stream(channel.clone(), *next + c * per_channel + k));
        }
    }
    *next += channels * per_channel;
    let mut streams = futures::future::join_all(opening).await;
    server.shutdown();
    for stream in &mut streams {
        assert_eq!(stream.recv_error().await.code(), Code::Unavailable);
    }
    drop(streams);
    assert!(
        served.stop(PATIENCE).await,
        "the stopped server did not finish"
    );
}

/// Waits for every stream to end, then checks the cache holds no
/// watch and only the nodes with a snapshot.
async fn settle(cache: &SnapshotCache, counts: &Counts) {
    counts.wait_all_closed(Duration::from_secs(10)).await;
    let mut keys = cache.status_keys();
    keys.sort();
    let expected: Vec<String> = (0..SNAPSHOT_NODES).map(|n| format!("snap-{n}")).collect();
    assert_eq!(keys, expected, "idle nodes must be forgotten");
    for key in &keys {
        let status = cache.status_info(key).unwrap();
        assert_eq!(
            (status.num_watches, status.num_delta_watches),
            (0, 0),
            "{key} still has watches"
        );
    }
    // Let connection tasks finish tidying closed streams.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_leave_no_watch_task_or_memory_behind() {
    let started = Instant::now();
    let cache = SnapshotCache::new(false, IdHash);
    for n in 0..SNAPSHOT_NODES {
        cache.set_snapshot(
            &format!("snap-{n}"),
            snapshot("v1", &["c0", "c1"], &["e0"], &["l0"], &["r0"]),
        );
    }
    let counts = Arc::new(Counts::default());
    let server = Server::new(cache.clone(), Arc::clone(&counts));
    let served = serve(&server).await;

    // Warm-up: every path once, so lazily grown pools and buffers are in
    // the baseline.
    let mut next = 0;
    churn(&served, &mut next, 750).await;
    reset(served.addr, &mut next, 5, 50).await;
    shutdown(&cache, &counts, &mut next, 5, 100).await;
    settle(&cache, &counts).await;
    let warm = next;
    let (base_bytes, base_allocs) = live_heap();
    let base_rss = rss_kib();
    let warmed_up = started.elapsed();

    churn(&served, &mut next, 7_000).await;
    for _ in 0..4 {
        reset(served.addr, &mut next, 5, 50).await;
    }
    shutdown(&cache, &counts, &mut next, 5, 100).await;
    settle(&cache, &counts).await;
    let (bytes, allocs) = live_heap();
    let rss = rss_kib();

    assert_eq!(next, 10_000);
    let opened = Counts::get(&counts.sotw_opened) + Counts::get(&counts.delta_opened);
    assert_eq!(opened, 10_000, "every stream reached the server");

    let closed = Counts::get(&counts.sotw_closed) + Counts::get(&counts.delta_closed);
    assert_eq!(closed, opened, "every stream ended");

    let streams = (next - warm) as isize;
    let grown_bytes = bytes - base_bytes;
    let grown_allocs = allocs - base_allocs;
    eprintln!(
        "churn: {streams} streams after a {warm}-stream warm-up ({warmed_up:?}), total {:?}; \
         live heap {base_bytes} -> {bytes} bytes ({grown_bytes:+}, {:+.1} per stream), \
         {base_allocs} -> {allocs} allocations ({grown_allocs:+}); VmRSS {base_rss} -> {rss} KiB",
        started.elapsed(),
        grown_bytes as f64 / streams as f64,
    );
    // A stream leaking its ResponseQueue, a watch or its body would leave
    // at least one allocation and ~100 bytes each: 8,500 of them. What may
    // remain is capacity some map or queue grew to at a new peak.
    assert!(
        grown_bytes < 64 * 1024,
        "live heap grew by {grown_bytes} bytes over {streams} streams"
    );
    assert!(
        grown_allocs < 100,
        "{grown_allocs} more live allocations after {streams} streams"
    );
    assert!(
        rss < base_rss + 64 * 1024,
        "VmRSS grew from {base_rss} to {rss} KiB"
    );
}
