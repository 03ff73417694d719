//! `Server::shutdown`: delta streams end like state-of-the-world ones, a
//! thousand open streams end promptly, and so do streams whose clients
//! stopped reading; shutting down again from a close callback does not
//! deadlock.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use xds_control_plane::envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use xds_control_plane::resource::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use xds_control_plane::resource::ResourceType;
use xds_control_plane::{IdHash, Server, Snapshot, SnapshotCache};

#[tokio::test]
async fn shutdown_ends_delta_streams_with_unavailable() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a"], &[], &[], &[]));
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request("n1", CLUSTER, &[], &[])).await;
    let first = ads.recv().await;
    ads.ack("n1", &first).await;
    ads.send(delta_request("n1", ENDPOINT, &["missing"], &[]))
        .await;
    ts.wait_for_delta_watches("n1", 2).await;

    ts.server.shutdown();
    assert_eq!(ads.recv_error().await.code(), Code::Unavailable);
    ts.wait_for_delta_watches("n1", 0).await;
    let deadline = Instant::now() + PATIENCE;
    while ts.recorder.closed.lock().is_empty() {
        assert!(
            Instant::now() < deadline,
            "on_delta_stream_closed never ran"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ts.recorder.closed.lock()[0].1.as_deref(), Some("n1"));

    // New streams of either protocol are refused.
    let mut client = AggregatedDiscoveryServiceClient::new(ts.channel().await);
    let (_tx, rx) = mpsc::channel(1);
    let refused = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    let (_tx, rx) = mpsc::channel(1);
    let refused = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
}

/// A client stream of either protocol.
enum Open {
    Sotw(XdsStream),
    Delta(DeltaStream),
}

/// Stream `i`: SotW or delta, ADS or per-type; on a node with a snapshot
/// (responses received and ACKed) or one without (the watch waits).
async fn open(channel: Channel, i: usize) -> Open {
    let node = if (i / 4).is_multiple_of(2) {
        "served"
    } else {
        "waiting"
    };
    let served = node == "served";
    match i % 4 {
        0 | 1 => {
            if i.is_multiple_of(4) {
                let mut s = XdsStream::ads(channel).await;
                s.send(request(node, CLUSTER, "", "", &[])).await;
                if served {
                    let r = s.recv().await;
                    s.ack(node, &r, &[]).await;
                }
                Open::Sotw(s)
            } else {
                let mut s = DeltaStream::ads(channel).await;
                s.send(delta_request(node, CLUSTER, &[], &[])).await;
                if served {
                    let r = s.recv().await;
                    s.ack(node, &r).await;
                }
                Open::Delta(s)
            }
        }
        2 => {
            let mut client = ClusterDiscoveryServiceClient::new(channel);
            let mut s = XdsStream::open(|r| async move { client.stream_clusters(r).await }).await;
            s.send(request(node, "", "", "", &[])).await;
            if served {
                let r = s.recv().await;
                s.ack(node, &r, &[]).await;
            }
            Open::Sotw(s)
        }
        _ => {
            let mut client = EndpointDiscoveryServiceClient::new(channel);
            let mut s = DeltaStream::open(|r| async move { client.delta_endpoints(r).await }).await;
            s.send(delta_request(node, "", &["e0"], &[])).await;
            if served {
                let r = s.recv().await;
                s.ack(node, &r).await;
            }
            Open::Delta(s)
        }
    }
}

async fn wait_watches(cache: &SnapshotCache, node: &str, sotw: usize, delta: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = cache
            .status_info(node)
            .map_or((0, 0), |s| (s.num_watches, s.num_delta_watches));
        if now == (sotw, delta) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{node}: {now:?} watches, expected {:?}",
            (sotw, delta)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_thousand_open_streams_is_prompt() {
    const STREAMS: usize = 1_000;
    let cache = SnapshotCache::new(false, IdHash);
    cache.set_snapshot("served", snapshot("v1", &["c0"], &["e0"], &[], &[]));
    let counts = Arc::new(Counts::default());
    let server = Server::new(cache.clone(), Arc::clone(&counts));
    let served = serve(&server).await;
    let mut opening = Vec::new();
    for c in 0..10 {
        let channel = served.channel().await;
        for k in 0..STREAMS / 10 {
            opening.push(open(channel.clone(), c * (STREAMS / 10) + k));
        }
    }
    let streams = futures::future::join_all(opening).await;
    // Every stream holds one open watch: ADS and CDS ones SotW or delta
    // alike, EDS ones delta.
    wait_watches(&cache, "served", 250, 250).await;
    wait_watches(&cache, "waiting", 250, 250).await;
    assert_eq!(counts.open_streams(), STREAMS);

    let started = Instant::now();
    server.shutdown();
    let ended = futures::future::join_all(streams.into_iter().map(|s| async move {
        match s {
            Open::Sotw(mut s) => s.recv_error().await.code(),
            Open::Delta(mut s) => s.recv_error().await.code(),
        }
    }))
    .await;
    let clients_told = started.elapsed();
    assert!(ended.iter().all(|code| *code == Code::Unavailable));
    counts.wait_all_closed(PATIENCE).await;
    wait_watches(&cache, "served", 0, 0).await;
    assert!(
        cache.status_info("waiting").is_none(),
        "idle node forgotten"
    );
    let streams_ended = started.elapsed();
    // The tonic server, stopped as `serve_with_shutdown` does, finishes too.
    assert!(served.stop(PATIENCE).await);
    let server_stopped = started.elapsed();
    eprintln!(
        "shutdown of {STREAMS} streams: every client told UNAVAILABLE in {clients_told:?}, \
         every stream ended and watch gone in {streams_ended:?}, tonic server stopped in {server_stopped:?}"
    );
    assert!(
        server_stopped < Duration::from_secs(1),
        "shutdown took {server_stopped:?}"
    );
}

/// Shutdown must not wait for clients that stopped reading: their stream
/// tasks end and their watches go at once (what they had in flight stays
/// with HTTP/2 until they read it or their connection closes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_whose_clients_stopped_reading() {
    const STALLED: usize = 20;
    let cache = SnapshotCache::new(false, IdHash);
    // 300 clusters of `width` bytes; at 1 KB, a 300 KB response, over the
    // 64 KB windows the clients below grant.
    let snapshot_of = |version: &str, width: usize| {
        let mut builder = Snapshot::builder(version);
        for i in 0..300 {
            let mut c = cluster(&format!("c{i:03}"));
            c.alt_stat_name = format!("{i:0>width$}");
            builder = builder.encoded(
                ResourceType::Cluster,
                &c.name,
                Bytes::from(c.encode_to_vec()),
            );
        }
        builder
            .endpoints([endpoint("e0")])
            .listeners([listener("l0")])
            .routes([route("r0")])
            .build()
            .unwrap()
    };
    // v0 fits the windows: every stream gets it, ACKs it and waits on four
    // watches.
    cache.set_snapshot("stalled", snapshot_of("v0", 10));
    let counts = Arc::new(Counts::default());
    let server = Server::new(cache.clone(), Arc::clone(&counts));
    let served = serve(&server).await;

    let subscriptions: [(&str, &[&str]); 4] = [
        (CLUSTER, &[]),
        (ENDPOINT, &["e0"]),
        (LISTENER, &[]),
        (ROUTE, &["r0"]),
    ];
    let mut held = Vec::new();
    for _ in 0..STALLED {
        let channel = Endpoint::from_shared(format!("http://{}", served.addr))
            .unwrap()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(64);
        let responses = AggregatedDiscoveryServiceClient::new(channel)
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        // Subscribe and ACK the first responses (numbered 1 to 4) without
        // reading them: they fit the windows.
        for (type_url, names) in subscriptions {
            tx.send(request("stalled", type_url, "", "", names))
                .await
                .unwrap();
        }
        for (n, (type_url, names)) in subscriptions.into_iter().enumerate() {
            let nonce = (n + 1).to_string();
            tx.send(request("stalled", type_url, "v0", &nonce, names))
                .await
                .unwrap();
        }
        held.push((tx, responses));
    }
    wait_watches(&cache, "stalled", 4 * STALLED, 0).await;
    // New versions of 300 KB, each ACKed blindly (with the nonces the server
    // uses for a client that reads), until the unread responses fill the
    // HTTP/2 windows: hyper then waits for the client and polls the stream
    // no more.
    for k in 1..=4 {
        cache.set_snapshot("stalled", snapshot_of(&format!("v{k}"), 1000));
        for (tx, _) in &held {
            for (n, (type_url, names)) in subscriptions.into_iter().enumerate() {
                let nonce = (4 * k + n + 1).to_string();
                let _ = tx.try_send(request(
                    "stalled",
                    type_url,
                    &format!("v{k}"),
                    &nonce,
                    names,
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(counts.open_streams(), STALLED);

    let started = Instant::now();
    server.shutdown();
    counts.wait_all_closed(Duration::from_secs(1)).await;
    let ended = started.elapsed();
    eprintln!("shutdown of {STALLED} streams whose clients stopped reading: every stream ended in {ended:?}");
    assert!(cache
        .status_info("stalled")
        .is_some_and(|s| s.num_watches == 0));
    // tonic's graceful stop, by contrast, waits for every HTTP/2 stream to
    // be delivered, so for these clients to read: give it a deadline.
    let drained = served.stop(Duration::from_millis(500)).await;
    eprintln!("graceful stop of the tonic server with those clients connected finished within 500 ms: {drained}");
    drop(held);
}

/// Shuts the server down again from its close callback (a user's clean-up
/// hook that stops everything).
#[derive(Default)]
struct ShutdownOnClose {
    server: std::sync::OnceLock<Server>,
    closed: std::sync::atomic::AtomicUsize,
}

impl xds_control_plane::Callbacks for ShutdownOnClose {
    fn on_stream_closed(
        &self,
        _: xds_control_plane::server::StreamId,
        _: Option<&xds_control_plane::envoy_types::pb::envoy::config::core::v3::Node>,
    ) {
        self.closed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(server) = self.server.get() {
            server.shutdown();
        }
    }
}

#[test]
fn shutdown_from_a_close_callback_does_not_deadlock() {
    // A runtime of its own, let go of rather than shut down at the end: a
    // deadlock would block its workers, and shutting it down would hang
    // the test instead of failing it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(async {
        let cache = SnapshotCache::new(false, IdHash);
        cache.set_snapshot("n1", snapshot("v1", &["a"], &[], &[], &[]));
        let callbacks = Arc::new(ShutdownOnClose::default());
        let server = Server::new(cache.clone(), Arc::clone(&callbacks));
        let _ = callbacks.server.set(server.clone());
        let served = serve(&server).await;
        let mut ads = served.ads().await;
        ads.send(request("n1", CLUSTER, "", "", &[])).await;
        let response = ads.recv().await;
        ads.ack("n1", &response, &[]).await;
        wait_watches(&cache, "n1", 1, 0).await;

        let (stopped, stopping) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            server.shutdown();
            let _ = stopped.send(());
        });
        if tokio::time::timeout(PATIENCE, stopping).await.is_err() {
            return Err("shutdown did not return");
        }
        if ads.recv_error().await.code() != Code::Unavailable {
            return Err("the stream did not end with UNAVAILABLE");
        }
        wait_watches(&cache, "n1", 0, 0).await;
        Ok(callbacks.closed.load(std::sync::atomic::Ordering::SeqCst))
    });
    std::mem::forget(runtime);
    assert_eq!(outcome, Ok(1), "close callbacks run once, no deadlock");
}
