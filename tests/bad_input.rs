//! Bad and abusive input: answered with a clear status or ignored as the
//! protocol says; never a panic, a hang or unbounded work.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tonic::Code;
use xds_control_plane::resource::type_url;

#[tokio::test]
async fn a_message_over_the_size_limit_ends_the_stream_with_a_status() {
    let ts = TestServer::start(false).await;
    let mut ads = ts.ads().await;
    // 120,000 names of 40 bytes: about 5 MB, over tonic's 4 MB default.
    let names: Vec<String> = (0..120_000).map(|i| format!("{i:0>40}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    ads.send(request("n1", type_url::ENDPOINT, "", "", &refs))
        .await;
    let status = ads.recv_error().await;
    assert_eq!(status.code(), Code::OutOfRange, "{status}");
    ts.wait_for_watches("n1", 0).await;
}

#[tokio::test]
async fn a_hundred_thousand_names_are_served_in_bounded_time() {
    let ts = TestServer::start(false).await;
    ts.cache.set_snapshot(
        "n1",
        snapshot("v1", &[], &["name-7", "name-99999"], &[], &[]),
    );
    let mut ads = ts.ads().await;
    let names: Vec<String> = (0..100_000).map(|i| format!("name-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let started = Instant::now();
    ads.send(request("n1", type_url::ENDPOINT, "", "", &refs))
        .await;
    let response = ads.recv().await;
    assert_eq!(common::names(&response), ["name-7", "name-99999"]);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn duplicated_names_are_sent_once() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &[], &["a"], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", type_url::ENDPOINT, "", "", &["a", "a", "a"]))
        .await;
    assert_eq!(names(&ads.recv().await), ["a"]);
}

#[tokio::test]
async fn versions_the_server_never_sent_get_the_current_state() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a"], &[], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request(
        "n1",
        type_url::CLUSTER,
        "never-sent",
        "garbage-nonce",
        &[],
    ))
    .await;
    let response = ads.recv().await;
    assert_eq!(
        (response.version_info.as_str(), names(&response)),
        ("v1", vec!["a".to_string()])
    );
    // Now a garbage nonce is stale: ignored.
    ads.send(request(
        "n1",
        type_url::CLUSTER,
        "v1",
        "garbage-nonce",
        &["x"],
    ))
    .await;
    ads.expect_silence().await;
}

#[tokio::test]
async fn unknown_type_urls_wait_without_harming_the_stream() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a"], &[], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request(
        "n1",
        "type.googleapis.com/no.such.Type",
        "",
        "",
        &[],
    ))
    .await;
    ads.send(request("n1", type_url::CLUSTER, "", "", &[]))
        .await;
    let response = ads.recv().await;
    assert_eq!(response.type_url, type_url::CLUSTER);
    ads.expect_silence().await;
}

#[tokio::test]
async fn too_many_types_on_one_stream_is_resource_exhausted() {
    let ts = TestServer::start(false).await;
    let mut ads = ts.ads().await;
    for i in 0..65 {
        ads.send(request(
            "n1",
            &format!("type.googleapis.com/t.T{i}"),
            "",
            "",
            &[],
        ))
        .await;
    }
    let status = ads.recv_error().await;
    assert_eq!(status.code(), Code::ResourceExhausted);
    ts.wait_for_watches("n1", 0).await;
}

#[tokio::test]
async fn missing_node_is_served_under_the_empty_key() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("", snapshot("v1", &["anonymous"], &[], &[], &[]));
    let mut ads = ts.ads().await;
    let mut req = request("", type_url::CLUSTER, "", "", &[]);
    req.node = None;
    ads.send(req).await;
    assert_eq!(names(&ads.recv().await), ["anonymous"]);
}

#[tokio::test]
async fn half_close_ends_the_stream_cleanly() {
    let ts = TestServer::start(false).await;
    let XdsStream { rx, .. } = {
        let ads = ts.ads().await;
        ads.send(request("n1", type_url::CLUSTER, "", "", &[]))
            .await;
        ts.wait_for_watches("n1", 1).await;
        ads
    };
    // The sender is dropped above: the client half-closed.
    let mut rx = rx;
    let end = tokio::time::timeout(PATIENCE, rx.message())
        .await
        .expect("stream ends");
    assert!(matches!(end, Ok(None)), "{end:?}");
    ts.wait_for_watches("n1", 0).await;
}

#[tokio::test]
async fn a_request_flood_is_absorbed_and_the_stream_stays_live() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &[], &["a", "b"], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", type_url::ENDPOINT, "", "", &["a"]))
        .await;
    let first = ads.recv().await;
    let started = Instant::now();
    // 3,000 ACKs re-stating the same subscription: each replaces the watch.
    for _ in 0..3_000 {
        ads.send(request(
            "n1",
            type_url::ENDPOINT,
            "v1",
            &first.nonce,
            &["a"],
        ))
        .await;
    }
    ads.send(request(
        "n1",
        type_url::ENDPOINT,
        "v1",
        &first.nonce,
        &["a", "b"],
    ))
    .await;
    let grown = ads.recv().await;
    assert_eq!(names(&grown), ["b"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    // One watch, not thousands: every replaced watch was cancelled.
    ads.ack("n1", &grown, &["a", "b"]).await;
    ts.wait_for_watches("n1", 1).await;
}
