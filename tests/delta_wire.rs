//! Incremental (delta) xDS over real tonic clients.

mod common;

use std::collections::HashMap;

use common::*;
use tonic::Code;
use xds_control_plane::cache::Snapshot;
use xds_control_plane::envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint};
use xds_control_plane::envoy_types::pb::envoy::config::route::v3::VirtualHost;
use xds_control_plane::envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::endpoint::v3::locality_endpoint_discovery_service_client::LocalityEndpointDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::route::v3::virtual_host_discovery_service_client::VirtualHostDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::google::rpc::Status as RpcStatus;
use xds_control_plane::resource::{type_url, ResourceType};
use xds_control_plane::server::{LegacyWildcard, ServerOptions};

/// Endpoints named `names`; `changed` ones carry different content.
fn endpoints(version: &str, names: &[&str], changed: &[&str]) -> Snapshot {
    Snapshot::builder(version)
        .endpoints(names.iter().map(|n| ClusterLoadAssignment {
            cluster_name: n.to_string(),
            policy: changed.contains(n).then(Default::default),
            ..Default::default()
        }))
        .build()
        .unwrap()
}

#[tokio::test]
async fn subscribe_then_only_changes_are_sent() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", endpoints("s1", &["a", "b", "c"], &[]));
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request("n1", type_url::ENDPOINT, &["a", "b"], &[]))
        .await;
    let first = ads.recv().await;
    assert_eq!(first.system_version_info, "s1");
    assert_eq!(delta_names(&first), ["a", "b"]);
    assert!(first
        .resources
        .iter()
        .all(|r| !r.version.is_empty() && r.resource.is_some()));

    ads.ack("n1", &first).await;
    ts.wait_for_delta_watches("n1", 1).await;
    // A new snapshot where only b changed: only b is sent.
    ts.cache
        .set_snapshot("n1", endpoints("s2", &["a", "b", "c"], &["b"]));
    let second = ads.recv().await;
    assert_eq!(second.system_version_info, "s2");
    assert_eq!(delta_names(&second), ["b"]);
    assert_ne!(second.resources[0].version, first.resources[1].version);
    // A new snapshot changing nothing they watch sends nothing.
    ads.ack("n1", &second).await;
    ts.wait_for_delta_watches("n1", 1).await;
    ts.cache
        .set_snapshot("n1", endpoints("s3", &["a", "b", "c"], &["b", "c"]));
    ads.expect_silence().await;
}

#[tokio::test]
async fn deleted_resources_are_removed_and_unsubscribed_ones_forgotten() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", endpoints("s1", &["a", "b"], &[]));
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request("n1", type_url::ENDPOINT, &["a", "b"], &[]))
        .await;
    let first = ads.recv().await;
    ads.ack("n1", &first).await;
    // Unsubscribe b: nothing to send.
    let mut unsub = delta_request("n1", type_url::ENDPOINT, &[], &["b"]);
    unsub.response_nonce = first.nonce.clone();
    ads.send(unsub).await;
    ads.expect_silence().await;
    ts.wait_for_delta_watches("n1", 1).await;
    // Delete both: only a, still subscribed, is reported removed.
    ts.cache.set_snapshot("n1", endpoints("s2", &[], &[]));
    let removed = ads.recv().await;
    assert!(removed.resources.is_empty());
    assert_eq!(removed.removed_resources, ["a"]);
}

#[tokio::test]
async fn reconnect_with_initial_versions_skips_unchanged_resources() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", endpoints("s1", &["a", "b"], &[]));
    let mut first_stream = ts.delta_ads().await;
    first_stream
        .send(delta_request("n1", type_url::ENDPOINT, &["a", "b"], &[]))
        .await;
    let first = first_stream.recv().await;
    let had: HashMap<String, String> = first
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    drop(first_stream);

    // While away, b changes.
    ts.cache
        .set_snapshot("n1", endpoints("s2", &["a", "b"], &["b"]));
    let mut again = ts.delta_ads().await;
    let mut req = delta_request("n1", type_url::ENDPOINT, &["a", "b"], &[]);
    req.initial_resource_versions = had;
    again.send(req).await;
    let resp = again.recv().await;
    assert_eq!(delta_names(&resp), ["b"]);
}

#[tokio::test]
async fn wildcard_first_response_may_be_empty_and_star_toggles_wildcard() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", Snapshot::builder("s1").build().unwrap());
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request("n1", type_url::CLUSTER, &[], &[]))
        .await;
    let empty = ads.recv().await;
    assert!(empty.resources.is_empty() && empty.removed_resources.is_empty());
    assert_eq!(empty.system_version_info, "s1");
    ads.ack("n1", &empty).await;
    ts.wait_for_delta_watches("n1", 1).await;

    ts.cache
        .set_snapshot("n1", snapshot("s2", &["x"], &[], &[], &[]));
    let x = ads.recv().await;
    assert_eq!(delta_names(&x), ["x"]);
    // Leave wildcard: a new cluster is not sent any more.
    let mut leave = delta_request("n1", type_url::CLUSTER, &[], &["*"]);
    leave.response_nonce = x.nonce.clone();
    ads.send(leave).await;
    ts.wait_for_delta_watches("n1", 1).await;
    ts.cache
        .set_snapshot("n1", snapshot("s3", &["x", "y"], &[], &[], &[]));
    ads.expect_silence().await;
    // Back to wildcard: y arrives.
    ads.send(delta_request("n1", type_url::CLUSTER, &["*"], &[]))
        .await;
    assert_eq!(delta_names(&ads.recv().await), ["y"]);
}

#[tokio::test]
async fn unsubscribing_a_name_under_wildcard_resends_it() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("s1", &["x"], &[], &[], &[]));
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request("n1", type_url::CLUSTER, &["*", "x"], &[]))
        .await;
    let first = ads.recv().await;
    assert_eq!(delta_names(&first), ["x"]);
    let mut unsub = delta_request("n1", type_url::CLUSTER, &[], &["x"]);
    unsub.response_nonce = first.nonce;
    ads.send(unsub).await;
    assert_eq!(delta_names(&ads.recv().await), ["x"]);
}

#[tokio::test]
async fn legacy_wildcard_can_be_switched_off() {
    let options = ServerOptions {
        legacy_wildcard: LegacyWildcard::DisabledFor(vec![type_url::CLUSTER.to_string()]),
        ..Default::default()
    };
    let ts = TestServer::start_with(false, options).await;
    ts.cache
        .set_snapshot("n1", snapshot("s1", &["x"], &[], &["l"], &[]));
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request("n1", type_url::CLUSTER, &[], &[]))
        .await;
    ads.expect_silence().await;
    ads.send(delta_request("n1", type_url::LISTENER, &[], &[]))
        .await;
    assert_eq!(delta_names(&ads.recv().await), ["l"]);
    ads.send(delta_request("n1", type_url::CLUSTER, &["*"], &[]))
        .await;
    assert_eq!(delta_names(&ads.recv().await), ["x"]);
}

#[tokio::test]
async fn nack_is_reported_and_not_answered_with_the_same_resources() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("s1", &["x"], &[], &[], &[]));
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request("n1", type_url::CLUSTER, &[], &[]))
        .await;
    let first = ads.recv().await;
    let mut nack = delta_request("n1", type_url::CLUSTER, &[], &[]);
    nack.response_nonce = first.nonce.clone();
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "rejected x".into(),
        details: vec![],
    });
    ads.send(nack).await;
    ads.expect_silence().await;
    assert_eq!(
        ts.recorder.nacks.lock().clone(),
        vec![(
            type_url::CLUSTER.to_string(),
            "s1".to_string(),
            "rejected x".to_string()
        )]
    );
    ts.cache
        .set_snapshot("n1", snapshot("s2", &["x", "fixed"], &[], &[], &[]));
    assert_eq!(delta_names(&ads.recv().await), ["fixed"]);
}

#[tokio::test]
async fn delta_ads_answers_in_dependency_order() {
    let ts = TestServer::start(true).await;
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request("n1", type_url::ROUTE, &["r"], &[]))
        .await;
    ads.send(delta_request("n1", type_url::ENDPOINT, &["c"], &[]))
        .await;
    ads.send(delta_request("n1", type_url::LISTENER, &[], &[]))
        .await;
    ads.send(delta_request("n1", type_url::CLUSTER, &[], &[]))
        .await;
    ts.wait_for_delta_watches("n1", 4).await;
    ts.cache
        .set_snapshot("n1", snapshot("s1", &["c"], &["c"], &["l"], &["r"]));
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(ads.recv().await.type_url);
    }
    assert_eq!(
        order,
        [
            type_url::CLUSTER,
            type_url::ENDPOINT,
            type_url::LISTENER,
            type_url::ROUTE
        ]
    );
}

#[tokio::test]
async fn per_type_delta_services_serve_their_type() {
    let ts = TestServer::start(false).await;
    let snapshot = Snapshot::builder("s1")
        .clusters([cluster("c")])
        .virtual_hosts([VirtualHost {
            name: "route/vh1".into(),
            ..Default::default()
        }])
        .encoded(
            ResourceType::LbEndpoint,
            "leds/ep1",
            prost::Message::encode_to_vec(&LbEndpoint::default()).into(),
        )
        .build()
        .unwrap();
    ts.cache.set_snapshot("n1", snapshot);
    let channel = ts.channel().await;

    let mut cds = ClusterDiscoveryServiceClient::new(channel.clone());
    let mut stream = DeltaStream::open(|r| async move { cds.delta_clusters(r).await }).await;
    stream.send(delta_request("n1", "", &[], &[])).await;
    let resp = stream.recv().await;
    assert_eq!(
        (resp.type_url.as_str(), delta_names(&resp)),
        (type_url::CLUSTER, vec!["c".to_string()])
    );

    let mut vhds = VirtualHostDiscoveryServiceClient::new(channel.clone());
    let mut stream = DeltaStream::open(|r| async move { vhds.delta_virtual_hosts(r).await }).await;
    stream
        .send(delta_request("n1", "", &["route/vh1"], &[]))
        .await;
    assert_eq!(delta_names(&stream.recv().await), ["route/vh1"]);

    let mut leds = LocalityEndpointDiscoveryServiceClient::new(channel.clone());
    let mut stream =
        DeltaStream::open(|r| async move { leds.delta_locality_endpoints(r).await }).await;
    stream.send(delta_request("n1", "", &["leds/*"], &[])).await;
    let resp = stream.recv().await;
    assert_eq!(
        (resp.type_url.as_str(), delta_names(&resp)),
        (type_url::LB_ENDPOINT, vec!["leds/ep1".to_string()])
    );

    let mut cds = ClusterDiscoveryServiceClient::new(channel);
    let mut wrong = DeltaStream::open(|r| async move { cds.delta_clusters(r).await }).await;
    wrong
        .send(delta_request("n1", type_url::ROUTE, &[], &[]))
        .await;
    assert_eq!(wrong.recv_error().await.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn closing_a_delta_stream_frees_its_watches() {
    let ts = TestServer::start(false).await;
    let ads = ts.delta_ads().await;
    ads.send(delta_request("n1", type_url::CLUSTER, &[], &[]))
        .await;
    ads.send(delta_request("n1", type_url::ENDPOINT, &["a"], &[]))
        .await;
    ts.wait_for_delta_watches("n1", 2).await;
    drop(ads);
    ts.wait_for_delta_watches("n1", 0).await;
}

#[tokio::test]
async fn empty_type_url_on_delta_ads_is_invalid_argument() {
    let ts = TestServer::start(false).await;
    let mut ads = ts.delta_ads().await;
    ads.send(delta_request("n1", "", &[], &[])).await;
    assert_eq!(ads.recv_error().await.code(), Code::InvalidArgument);
}
