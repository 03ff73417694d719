//! A `MuxCache` serving EDS from a `LinearCache` and the rest from a
//! `SnapshotCache`, over real tonic clients.

mod common;

use std::time::Duration;

use common::*;
use tonic::Code;
use xds_control_plane::cache::{IdHash, LinearCache, MuxCache, SnapshotCache};
use xds_control_plane::envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;
use xds_control_plane::resource::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// Our server on 127.0.0.1, answering from a mux of a linear EDS cache and
/// a snapshot cache.
struct Mux {
    served: Served,
    eds: LinearCache,
    snapshots: SnapshotCache,
}

impl std::ops::Deref for Mux {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.served
    }
}

impl Mux {
    /// EDS (key `eds`) from the linear cache, every other type (key
    /// `snapshot`) from the snapshot cache, except listeners, which go to a
    /// key with no cache.
    async fn start() -> Mux {
        let eds = LinearCache::new(ENDPOINT).with_version_prefix("eds-");
        let snapshots = SnapshotCache::new(false, IdHash);
        let mux = MuxCache::new(|request| {
            match request.type_url() {
                ENDPOINT => "eds",
                LISTENER => "nowhere",
                _ => "snapshot",
            }
            .to_string()
        })
        .with_cache("eds", eds.clone())
        .with_cache("snapshot", snapshots.clone());
        Mux {
            served: Served::cache(mux).await,
            eds,
            snapshots,
        }
    }

    /// Polls until the node has `snapshot` open watches in the snapshot
    /// cache (SotW and delta together) and the linear cache has `linear`.
    async fn wait_for_watches(&self, node: &str, snapshot: usize, linear: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let in_snapshot = self
                .snapshots
                .status_info(node)
                .map_or(0, |s| s.num_watches + s.num_delta_watches);
            let in_linear = self.eds.num_open_watches();
            if (in_snapshot, in_linear) == (snapshot, linear) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "watches: {in_snapshot} snapshot, {in_linear} linear; expected {snapshot}, {linear}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn one_ads_stream_is_served_from_both_caches() {
    let ts = Mux::start().await;
    ts.snapshots
        .set_snapshot("n1", snapshot("v1", &["backend"], &[], &[], &["r1"]));
    ts.eds
        .update_resource("backend", &endpoint("backend"))
        .unwrap();
    let mut ads = ts.ads().await;
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    let clusters = ads.recv().await;
    assert_eq!(
        (clusters.version_info.as_str(), names(&clusters)),
        ("v1", vec!["backend".to_string()])
    );
    ads.send(request("n1", ENDPOINT, "", "", &["backend"]))
        .await;
    let endpoints = ads.recv().await;
    assert_eq!(endpoints.type_url, ENDPOINT);
    assert_eq!(
        (endpoints.version_info.as_str(), names(&endpoints)),
        ("eds-1", vec!["backend".to_string()])
    );
    ads.send(request("n1", ROUTE, "", "", &["r1"])).await;
    let routes = ads.recv().await;
    assert_eq!(names(&routes), ["r1"]);
    ads.ack("n1", &clusters, &[]).await;
    ads.ack("n1", &endpoints, &["backend"]).await;
    ads.ack("n1", &routes, &["r1"]).await;
    ts.wait_for_watches("n1", 2, 1).await;

    // Each cache wakes only its own watches.
    ts.eds
        .update_resource("backend", &endpoint("backend"))
        .unwrap();
    ads.expect_silence().await;
    let mut changed = endpoint("backend");
    changed.endpoints.push(Default::default());
    ts.eds.update_resource("backend", &changed).unwrap();
    let update = ads.recv().await;
    assert_eq!(
        (update.type_url.as_str(), update.version_info.as_str()),
        (ENDPOINT, "eds-2")
    );
    ads.ack("n1", &update, &["backend"]).await;
    ts.wait_for_watches("n1", 2, 1).await;
    ts.snapshots.set_snapshot(
        "n1",
        snapshot("v2", &["backend", "extra"], &[], &[], &["r1"]),
    );
    let update = ads.recv().await;
    assert_eq!(
        (update.type_url.as_str(), update.version_info.as_str()),
        (CLUSTER, "v2")
    );
    assert_eq!(names(&update), ["backend", "extra"]);
}

#[tokio::test]
async fn one_delta_stream_is_served_from_both_caches() {
    let ts = Mux::start().await;
    ts.snapshots
        .set_snapshot("n1", snapshot("v1", &["backend"], &[], &[], &[]));
    ts.eds
        .update_resource("backend", &endpoint("backend"))
        .unwrap();
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request("n1", CLUSTER, &[], &[])).await;
    let clusters = ads.recv().await;
    assert_eq!(
        (
            clusters.system_version_info.as_str(),
            delta_names(&clusters)
        ),
        ("v1", vec!["backend".to_string()])
    );
    ads.send(delta_request("n1", ENDPOINT, &["backend"], &[]))
        .await;
    let endpoints = ads.recv().await;
    assert_eq!(
        (
            endpoints.system_version_info.as_str(),
            delta_names(&endpoints)
        ),
        ("eds-1", vec!["backend".to_string()])
    );
    ads.ack("n1", &clusters).await;
    ads.ack("n1", &endpoints).await;
    ts.wait_for_watches("n1", 1, 1).await;
    ts.eds.delete_resource("backend");
    let removed = ads.recv().await;
    assert_eq!(
        (removed.type_url.as_str(), removed.removed_resources.clone()),
        (ENDPOINT, vec!["backend".to_string()])
    );
}

#[tokio::test]
async fn an_unknown_classifier_key_ends_the_stream_with_its_status() {
    let ts = Mux::start().await;
    ts.snapshots
        .set_snapshot("n1", snapshot("v1", &["backend"], &[], &["l1"], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    assert_eq!(ads.recv().await.type_url, CLUSTER);
    ads.send(request("n1", LISTENER, "", "", &[])).await;
    let status = ads.recv_error().await;
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("\"nowhere\"") && status.message().contains(LISTENER),
        "{}",
        status.message()
    );

    let mut delta = ts.delta_ads().await;
    delta.send(delta_request("n1", LISTENER, &[], &[])).await;
    assert_eq!(delta.recv_error().await.code(), Code::NotFound);
}

#[tokio::test]
async fn fetch_goes_through_the_mux() {
    let ts = Mux::start().await;
    ts.snapshots
        .set_snapshot("n1", snapshot("v1", &["backend"], &[], &[], &[]));
    let mut cds = ClusterDiscoveryServiceClient::new(ts.channel().await);
    let fetched = cds
        .fetch_clusters(request("n1", CLUSTER, "", "", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&fetched), ["backend"]);

    let mut lds = ListenerDiscoveryServiceClient::new(ts.channel().await);
    let status = lds
        .fetch_listeners(request("n1", LISTENER, "", "", &[]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("\"nowhere\""),
        "{}",
        status.message()
    );
}
