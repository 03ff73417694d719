//! Resources with a TTL and heartbeats, over real tonic clients.

mod common;

use std::time::Duration;

use common::*;
use prost::Message;
use xds_control_plane::cache::Snapshot;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::Resource;
use xds_control_plane::envoy_types::pb::envoy::service::runtime::v3::Runtime;
use xds_control_plane::envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use xds_control_plane::resource::{type_url, ResourceType};

fn runtimes(version: &str) -> Snapshot {
    Snapshot::builder(version)
        .runtimes(["with-ttl", "plain"].map(|name| Runtime {
            name: name.into(),
            ..Default::default()
        }))
        .ttl(ResourceType::Runtime, "with-ttl", Duration::from_secs(2))
        .build()
        .unwrap()
}

fn two_seconds() -> Option<ProtoDuration> {
    Some(ProtoDuration {
        seconds: 2,
        nanos: 0,
    })
}

#[tokio::test]
async fn sotw_ttl_resources_are_wrapped_and_heartbeats_resend_the_state() {
    let ts = TestServer::start(false).await;
    ts.cache.set_snapshot("n1", runtimes("v1"));
    let mut ads = ts.ads().await;
    ads.send(request(
        "n1",
        type_url::RUNTIME,
        "",
        "",
        &["with-ttl", "plain"],
    ))
    .await;
    let first = ads.recv().await;
    assert_eq!(first.resources.len(), 2);
    let wrapped = first
        .resources
        .iter()
        .find(|a| a.type_url == type_url::RESOURCE_WRAPPER)
        .unwrap();
    let resource = Resource::decode(wrapped.value.as_slice()).unwrap();
    assert_eq!(
        (resource.name.as_str(), resource.ttl),
        ("with-ttl", two_seconds())
    );
    assert_eq!(resource.resource.unwrap().type_url, type_url::RUNTIME);
    assert!(first
        .resources
        .iter()
        .any(|a| a.type_url == type_url::RUNTIME));

    ads.ack("n1", &first, &["with-ttl", "plain"]).await;
    ts.wait_for_watches("n1", 1).await;
    ts.cache.send_heartbeats();
    // A SotW heartbeat is the full state again at the same version (Envoy
    // cannot take body-less SotW heartbeats).
    let beat = ads.recv().await;
    assert_eq!(beat.version_info, "v1");
    assert_ne!(beat.nonce, first.nonce);
    assert_eq!(beat.resources, first.resources);

    // After the heartbeat's ACK, a real change still arrives.
    ads.ack("n1", &beat, &["with-ttl", "plain"]).await;
    ts.wait_for_watches("n1", 1).await;
    ts.cache.set_snapshot("n1", runtimes("v2"));
    assert_eq!(ads.recv().await.version_info, "v2");
}

#[tokio::test]
async fn delta_ttl_resources_carry_ttl_and_heartbeats_carry_no_body() {
    let ts = TestServer::start(false).await;
    ts.cache.set_snapshot("n1", runtimes("v1"));
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request(
        "n1",
        type_url::RUNTIME,
        &["with-ttl", "plain"],
        &[],
    ))
    .await;
    let first = ads.recv().await;
    let with_ttl = first
        .resources
        .iter()
        .find(|r| r.name == "with-ttl")
        .unwrap();
    assert_eq!(with_ttl.ttl, two_seconds());
    assert!(with_ttl.resource.is_some());
    assert!(first
        .resources
        .iter()
        .find(|r| r.name == "plain")
        .unwrap()
        .ttl
        .is_none());

    ads.ack("n1", &first).await;
    ts.wait_for_delta_watches("n1", 1).await;
    ts.cache.send_heartbeats();
    let beat = ads.recv().await;
    assert_eq!(delta_names(&beat), ["with-ttl"]);
    assert_eq!(beat.resources[0].version, with_ttl.version);
    assert_eq!(beat.resources[0].ttl, two_seconds());
    assert!(beat.resources[0].resource.is_none());
}

#[tokio::test]
async fn heartbeats_run_on_an_interval_until_the_task_is_dropped() {
    let ts = TestServer::start(false).await;
    ts.cache.set_snapshot("n1", runtimes("v1"));
    let task = ts.cache.spawn_heartbeats(Duration::from_millis(50));
    let mut ads = ts.ads().await;
    ads.send(request("n1", type_url::RUNTIME, "", "", &["with-ttl"]))
        .await;
    let mut last = ads.recv().await;
    for _ in 0..3 {
        ads.ack("n1", &last, &["with-ttl"]).await;
        last = ads.recv().await;
        assert_eq!(last.version_info, "v1", "a heartbeat");
        let resource = Resource::decode(last.resources[0].value.as_slice()).unwrap();
        assert_eq!(resource.ttl, two_seconds());
    }
    drop(task);
    ads.ack("n1", &last, &["with-ttl"]).await;
    ads.expect_silence().await;
}

#[tokio::test]
async fn no_heartbeat_without_ttl_resources() {
    let ts = TestServer::start(false).await;
    ts.cache.set_snapshot("n1", runtimes("v1"));
    let mut ads = ts.ads().await;
    ads.send(request("n1", type_url::RUNTIME, "", "", &["plain"]))
        .await;
    let first = ads.recv().await;
    ads.ack("n1", &first, &["plain"]).await;
    ts.wait_for_watches("n1", 1).await;
    ts.cache.send_heartbeats();
    ads.expect_silence().await;
}
