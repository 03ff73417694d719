//! State-of-the-world ADS over a real tonic connection.

mod common;

use common::*;
use tonic::Code;
use xds_control_plane::resource::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

#[tokio::test]
async fn initial_fetch_then_update_after_set_snapshot() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a", "b"], &[], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    let first = ads.recv().await;
    assert_eq!(first.version_info, "v1");
    assert_eq!(first.type_url, CLUSTER);
    assert_eq!(names(&first), ["a", "b"]);
    assert!(!first.nonce.is_empty());

    ads.ack("n1", &first, &[]).await;
    ts.wait_for_watches("n1", 1).await;
    ts.cache
        .set_snapshot("n1", snapshot("v2", &["b", "c"], &[], &[], &[]));
    let second = ads.recv().await;
    assert_eq!(second.version_info, "v2");
    assert_eq!(names(&second), ["b", "c"]);
    assert_ne!(second.nonce, first.nonce);
}

#[tokio::test]
async fn ack_holds_until_the_snapshot_changes() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a"], &[], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    let first = ads.recv().await;
    ads.ack("n1", &first, &[]).await;
    ads.expect_silence().await;
    // Setting a snapshot with the same version changes nothing either.
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a"], &[], &[], &[]));
    ads.expect_silence().await;
    assert_eq!(ts.cache.status_info("n1").unwrap().num_watches, 1);
}

#[tokio::test]
async fn nack_is_reported_and_the_rejected_version_is_not_resent() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a"], &[], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    let v1 = ads.recv().await;
    ads.ack("n1", &v1, &[]).await;
    ts.wait_for_watches("n1", 1).await;
    ts.cache
        .set_snapshot("n1", snapshot("v2", &["bad"], &[], &[], &[]));
    let v2 = ads.recv().await;
    assert_eq!(v2.version_info, "v2");
    ads.nack("n1", &v2, "v1", &[]).await;
    ads.expect_silence().await;
    let nacks = ts.recorder.nacks.lock().clone();
    assert_eq!(
        nacks,
        vec![(
            CLUSTER.to_string(),
            "v2".to_string(),
            "bad config".to_string()
        )]
    );

    ts.cache
        .set_snapshot("n1", snapshot("v3", &["good"], &[], &[], &[]));
    let v3 = ads.recv().await;
    assert_eq!(v3.version_info, "v3");
    assert_eq!(names(&v3), ["good"]);
}

#[tokio::test]
async fn stale_nonce_is_ignored() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &[], &["a", "b"], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", ENDPOINT, "", "", &["a"])).await;
    let first = ads.recv().await;
    assert_eq!(names(&first), ["a"]);
    // A request answering an older (here: unknown) nonce is ignored, even
    // though it asks for more.
    ads.send(request("n1", ENDPOINT, "v1", "stale", &["a", "b"]))
        .await;
    ads.expect_silence().await;
    ads.send(request("n1", ENDPOINT, "v1", &first.nonce, &["a", "b"]))
        .await;
    let grown = ads.recv().await;
    assert_eq!(names(&grown), ["b"]);
    assert_eq!(grown.version_info, "v1");
}

#[tokio::test]
async fn subscription_changes_send_new_names_and_forget_dropped_ones() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &[], &["a", "b", "c"], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", ENDPOINT, "", "", &["a", "b"])).await;
    let first = ads.recv().await;
    assert_eq!(names(&first), ["a", "b"]);
    // Drop b: nothing new to send for EDS.
    ads.ack("n1", &first, &["a"]).await;
    ads.expect_silence().await;
    // Ask for b again: it was forgotten, so it is sent again.
    ads.send(request("n1", ENDPOINT, "v1", &first.nonce, &["a", "b"]))
        .await;
    let again = ads.recv().await;
    assert_eq!(names(&again), ["b"]);
}

#[tokio::test]
async fn two_nodes_are_isolated() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["one"], &[], &[], &[]));
    ts.cache
        .set_snapshot("n2", snapshot("v7", &["two"], &[], &[], &[]));
    let mut a = ts.ads().await;
    let mut b = ts.ads().await;
    a.send(request("n1", CLUSTER, "", "", &[])).await;
    b.send(request("n2", CLUSTER, "", "", &[])).await;
    let ra = a.recv().await;
    let rb = b.recv().await;
    assert_eq!(
        (ra.version_info.as_str(), names(&ra)),
        ("v1", vec!["one".to_string()])
    );
    assert_eq!(
        (rb.version_info.as_str(), names(&rb)),
        ("v7", vec!["two".to_string()])
    );
    a.ack("n1", &ra, &[]).await;
    b.ack("n2", &rb, &[]).await;
    ts.wait_for_watches("n1", 1).await;
    ts.wait_for_watches("n2", 1).await;
    ts.cache
        .set_snapshot("n1", snapshot("v2", &["one", "more"], &[], &[], &[]));
    assert_eq!(a.recv().await.version_info, "v2");
    b.expect_silence().await;
}

#[tokio::test]
async fn closing_the_stream_frees_its_watches() {
    let ts = TestServer::start(false).await;
    let ads = ts.ads().await;
    // No snapshot yet: both watches stay open.
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    ads.send(request("n1", LISTENER, "", "", &[])).await;
    ts.wait_for_watches("n1", 2).await;
    drop(ads);
    ts.wait_for_watches("n1", 0).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while ts.recorder.closed.lock().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "on_stream_closed never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(ts.recorder.closed.lock()[0].1.as_deref(), Some("n1"));
}

#[tokio::test]
async fn responses_follow_ads_order() {
    let ts = TestServer::start(true).await;
    let mut ads = ts.ads().await;
    // Ask in reverse dependency order before any snapshot exists.
    ads.send(request("n1", ROUTE, "", "", &["r"])).await;
    ads.send(request("n1", ENDPOINT, "", "", &["c"])).await;
    ads.send(request("n1", LISTENER, "", "", &[])).await;
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    ts.wait_for_watches("n1", 4).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["c"], &["c"], &["l"], &["r"]));
    let order: Vec<String> = [
        ads.recv().await,
        ads.recv().await,
        ads.recv().await,
        ads.recv().await,
    ]
    .into_iter()
    .map(|r| r.type_url)
    .collect();
    assert_eq!(order, [CLUSTER, ENDPOINT, LISTENER, ROUTE]);
}

#[tokio::test]
async fn ads_mode_holds_named_requests_until_a_name_exists() {
    let ts = TestServer::start(true).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &[], &["a"], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", ENDPOINT, "", "", &["b", "c"])).await;
    ads.expect_silence().await;
    ts.cache
        .set_snapshot("n1", snapshot("v2", &[], &["a", "b", "c"], &[], &[]));
    let resp = ads.recv().await;
    assert_eq!(names(&resp), ["b", "c"]);
}

#[tokio::test]
async fn node_is_copied_from_the_first_request() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a"], &[], &["l"], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    ads.recv().await;
    let mut later = request("n1", LISTENER, "", "", &[]);
    later.node = None;
    ads.send(later).await;
    let resp = ads.recv().await;
    assert_eq!(names(&resp), ["l"]);
    let seen = ts.recorder.requests.lock().clone();
    assert_eq!(seen[1].node.as_ref().map(|n| n.id.as_str()), Some("n1"));
}

#[tokio::test]
async fn empty_type_url_on_ads_is_invalid_argument() {
    let ts = TestServer::start(false).await;
    let mut ads = ts.ads().await;
    ads.send(request("n1", "", "", "", &[])).await;
    let status = ads.recv_error().await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("type_url"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn shutdown_ends_streams_with_unavailable() {
    let ts = TestServer::start(false).await;
    let mut ads = ts.ads().await;
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    ts.wait_for_watches("n1", 1).await;
    ts.server.shutdown();
    assert_eq!(ads.recv_error().await.code(), Code::Unavailable);
    ts.wait_for_watches("n1", 0).await;
}
