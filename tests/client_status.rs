//! Per-client ACK/NACK status, over real tonic clients.

mod common;

use common::*;
use xds_control_plane::envoy_types::pb::google::rpc::Status as RpcStatus;
use xds_control_plane::resource::type_url::CLUSTER;

#[tokio::test]
async fn status_shows_what_each_client_acked_and_rejected() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a"], &[], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    let v1 = ads.recv().await;
    ads.ack("n1", &v1, &[]).await;
    ts.wait_for_watches("n1", 1).await;

    let status = ts.server.client_status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].node.as_ref().map(|n| n.id.as_str()), Some("n1"));
    assert!(!status[0].delta);
    let clusters = &status[0].types[CLUSTER];
    assert_eq!(clusters.acked.as_ref().map(|(v, _)| v.as_str()), Some("v1"));
    assert!(clusters.in_sync());

    ts.cache
        .set_snapshot("n1", snapshot("v2", &["bad"], &[], &[], &[]));
    let v2 = ads.recv().await;
    ads.nack("n1", &v2, "v1", &[]).await;
    ts.wait_for_watches("n1", 1).await;
    let clusters = ts.server.client_status()[0].types[CLUSTER].clone();
    assert_eq!(clusters.sent.as_ref().map(|(v, _)| v.as_str()), Some("v2"));
    assert_eq!(clusters.acked.as_ref().map(|(v, _)| v.as_str()), Some("v1"));
    let rejected = clusters.rejected.clone().expect("the NACK is recorded");
    assert_eq!(
        (rejected.version.as_str(), rejected.error.as_str()),
        ("v2", "bad config")
    );
    assert!(!clusters.in_sync());

    drop(ads);
    ts.wait_for_watches("n1", 0).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !ts.server.client_status().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "closed stream still listed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn delta_status_tracks_system_versions() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("s1", &["a"], &[], &[], &[]));
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request("n1", CLUSTER, &[], &[])).await;
    let first = ads.recv().await;
    ads.ack("n1", &first).await;
    ts.wait_for_delta_watches("n1", 1).await;
    let status = ts.server.client_status();
    assert!(status[0].delta);
    assert!(status[0].types[CLUSTER].in_sync());

    ts.cache
        .set_snapshot("n1", snapshot("s2", &["a", "b"], &[], &[], &[]));
    let second = ads.recv().await;
    let mut nack = delta_request("n1", CLUSTER, &[], &[]);
    nack.response_nonce = second.nonce.clone();
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "no".into(),
        details: vec![],
    });
    ads.send(nack).await;
    ts.wait_for_delta_watches("n1", 1).await;
    let clusters = ts.server.client_status()[0].types[CLUSTER].clone();
    assert_eq!(clusters.rejected.map(|r| r.version), Some("s2".to_string()));
    assert_eq!(clusters.acked.map(|(v, _)| v), Some("s1".to_string()));
}

/// Reads the server's client status from inside a stream's callbacks.
#[derive(Default)]
struct StatusFromCallbacks {
    server: std::sync::OnceLock<xds_control_plane::Server>,
    /// Per response: the streams listed, and whether the caller was among them.
    seen: std::sync::Mutex<Vec<(usize, bool)>>,
}

impl xds_control_plane::server::Callbacks for StatusFromCallbacks {
    fn on_stream_response(
        &self,
        stream: xds_control_plane::server::StreamId,
        _: &xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest,
        _: &xds_control_plane::server::SentResponse<'_>,
    ) {
        if let Some(server) = self.server.get() {
            let status = server.client_status();
            let listed_self = status.iter().any(|s| s.stream == stream);
            self.seen.lock().unwrap().push((status.len(), listed_self));
        }
    }
}

#[tokio::test]
async fn status_asked_from_a_callback_lists_the_other_streams_at_once() {
    let cache = xds_control_plane::SnapshotCache::new(false, xds_control_plane::IdHash);
    cache.set_snapshot("n1", snapshot("v1", &["a"], &[], &[], &[]));
    let callbacks = std::sync::Arc::new(StatusFromCallbacks::default());
    let server = xds_control_plane::Server::new(cache.clone(), std::sync::Arc::clone(&callbacks));
    let _ = callbacks.server.set(server.clone());
    let served = Served::start(&server).await;
    let mut first = served.ads().await;
    first.send(request("n1", CLUSTER, "", "", &[])).await;
    first.recv().await;
    let mut second = served.ads().await;
    second.send(request("n1", CLUSTER, "", "", &[])).await;
    // Its own state is held by the very callback: waiting for it would
    // deadlock the stream.
    second.recv().await;
    let seen = callbacks.seen.lock().unwrap().clone();
    assert_eq!(seen, vec![(0, false), (1, false)]);
}
