//! A `LinearCache` serving EDS to a fleet, over real tonic clients.

mod common;

use std::time::Duration;

use common::*;
use futures::future::join_all;
use tonic::Code;
use xds_control_plane::cache::LinearCache;
use xds_control_plane::envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_control_plane::envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use xds_control_plane::resource::type_url::{CLUSTER, ENDPOINT};

/// An endpoint; `weight` changes its content.
fn cla(name: &str, weight: u32) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: (0..weight).map(|_| Default::default()).collect(),
        ..Default::default()
    }
}

/// An EDS cache holding `ep-0`…`ep-{n-1}` and `shared`, at version `eds-1`.
fn fleet_cache(n: usize) -> LinearCache {
    let mut names: Vec<String> = (0..n).map(|i| format!("ep-{i}")).collect();
    names.push("shared".into());
    let items: Vec<(String, ClusterLoadAssignment)> =
        names.iter().map(|n| (n.clone(), cla(n, 1))).collect();
    LinearCache::new(ENDPOINT)
        .with_version_prefix("eds-")
        .with_initial_resources(items.iter().map(|(n, c)| (n.as_str(), c)))
        .unwrap()
}

/// Polls until the cache has exactly `n` open watches.
async fn wait_for_watches(cache: &LinearCache, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while cache.num_open_watches() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} open watches, expected {n}",
            cache.num_open_watches()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_update_reaches_only_the_clients_watching_it() {
    const FLEET: usize = 30;
    let cache = fleet_cache(FLEET);
    let served = Served::cache(cache.clone()).await;
    let mut clients = Vec::new();
    for i in 0..FLEET {
        let node = format!("node-{i}");
        let mine = format!("ep-{i}");
        let stream = served.ads().await;
        stream
            .send(request(&node, ENDPOINT, "", "", &[&mine, "shared"]))
            .await;
        clients.push((node, mine, stream));
    }
    for (node, mine, stream) in &mut clients {
        let first = stream.recv().await;
        assert_eq!(first.version_info, "eds-1");
        let mut got = names(&first);
        got.sort();
        assert_eq!(got, [mine.clone(), "shared".to_string()]);
        stream.ack(node, &first, &[mine, "shared"]).await;
    }
    wait_for_watches(&cache, FLEET).await;
    assert_eq!(cache.num_watches("ep-7"), 1);
    assert_eq!(cache.num_watches("shared"), FLEET);

    cache.update_resource("ep-7", &cla("ep-7", 2)).unwrap();
    let (node, mine, seven) = &mut clients[7];
    let update = seven.recv().await;
    assert_eq!(
        (update.version_info.as_str(), names(&update)),
        ("eds-2", vec![mine.clone()])
    );
    seven.ack(node, &update, &[mine, "shared"]).await;
    join_all(
        clients
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| *i != 7)
            .map(|(_, (_, _, stream))| stream.expect_silence()),
    )
    .await;
    wait_for_watches(&cache, FLEET).await;

    // A change everyone watches reaches everyone, with just that resource.
    cache.update_resource("shared", &cla("shared", 3)).unwrap();
    for (_, _, stream) in &mut clients {
        let update = stream.recv().await;
        assert_eq!(update.version_info, "eds-3");
        assert_eq!(names(&update), ["shared"]);
    }
}

#[tokio::test]
async fn delta_clients_get_changes_and_removals_of_what_they_watch() {
    let cache = fleet_cache(4);
    let served = Served::cache(cache.clone()).await;
    let mut named = Vec::new();
    for i in 0..4 {
        let stream = served.delta_ads().await;
        let mine = format!("ep-{i}");
        stream
            .send(delta_request(&format!("node-{i}"), ENDPOINT, &[&mine], &[]))
            .await;
        named.push(stream);
    }
    let mut wildcard = served.delta_ads().await;
    wildcard
        .send(delta_request("watcher", ENDPOINT, &[], &[]))
        .await;
    for (i, stream) in named.iter_mut().enumerate() {
        let first = stream.recv().await;
        assert_eq!(delta_names(&first), [format!("ep-{i}")]);
        assert_eq!(first.system_version_info, "eds-1");
        stream.ack(&format!("node-{i}"), &first).await;
    }
    let all = wildcard.recv().await;
    assert_eq!(all.resources.len(), 5);
    wildcard.ack("watcher", &all).await;
    wait_for_watches(&cache, 5).await;
    assert_eq!(cache.num_wildcard_watches(), 1);

    cache
        .update_resources([("ep-1", &cla("ep-1", 2))], ["ep-2"])
        .unwrap();
    let changed = named[1].recv().await;
    assert_eq!(delta_names(&changed), ["ep-1"]);
    assert!(changed.removed_resources.is_empty());
    let removed = named[2].recv().await;
    assert!(removed.resources.is_empty());
    assert_eq!(removed.removed_resources, ["ep-2"]);
    let both = wildcard.recv().await;
    assert_eq!(
        (delta_names(&both), both.removed_resources.clone()),
        (vec!["ep-1".to_string()], vec!["ep-2".to_string()])
    );
    assert_eq!(both.system_version_info, "eds-2");
    join_all(
        named
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| *i == 0 || *i == 3)
            .map(|(_, s)| s.expect_silence()),
    )
    .await;
}

#[tokio::test]
async fn a_client_from_another_instance_gets_everything_at_once() {
    let cache = fleet_cache(2);
    let served = Served::cache(cache.clone()).await;
    let mut ads = served.ads().await;
    // A version without our prefix: sent in full, even what the client has.
    ads.send(request(
        "n1",
        ENDPOINT,
        "elsewhere-42",
        "",
        &["ep-0", "ep-1"],
    ))
    .await;
    let full = ads.recv().await;
    assert_eq!(names(&full), ["ep-0", "ep-1"]);
    assert_eq!(full.version_info, "eds-1");
    // Nothing subscribed exists: a first request is still answered.
    let mut other = served.ads().await;
    other
        .send(request("n2", ENDPOINT, "", "", &["missing"]))
        .await;
    let empty = other.recv().await;
    assert!(empty.resources.is_empty());
    other.ack("n2", &empty, &["missing"]).await;
    wait_for_watches(&cache, 1).await;
    cache
        .update_resource("missing", &cla("missing", 1))
        .unwrap();
    assert_eq!(names(&other.recv().await), ["missing"]);
}

#[tokio::test]
async fn the_eds_service_streams_and_fetches_from_the_linear_cache() {
    let cache = fleet_cache(2);
    let served = Served::cache(cache.clone()).await;
    let mut client = EndpointDiscoveryServiceClient::new(served.channel().await);
    let fetched = client
        .fetch_endpoints(request("n1", ENDPOINT, "", "", &["ep-1"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (fetched.version_info.as_str(), names(&fetched)),
        ("eds-1", vec!["ep-1".to_string()])
    );
    let current = client
        .fetch_endpoints(request("n1", ENDPOINT, "eds-1", "", &[]))
        .await
        .unwrap_err();
    assert_eq!(current.code(), Code::FailedPrecondition);

    let mut stream = XdsStream::open(|r| async move { client.stream_endpoints(r).await }).await;
    stream.send(request("n1", ENDPOINT, "", "", &[])).await;
    let all = stream.recv().await;
    assert_eq!(names(&all), ["ep-0", "ep-1", "shared"]);
    stream.ack("n1", &all, &[]).await;
    wait_for_watches(&cache, 1).await;
    cache.set_resources([("ep-0", &cla("ep-0", 1))]).unwrap();
    // SotW EDS cannot say "deleted": nothing is sent for the removals.
    stream.expect_silence().await;
    cache.update_resource("new", &cla("new", 1)).unwrap();
    let added = stream.recv().await;
    assert_eq!(
        (added.version_info.as_str(), names(&added)),
        ("eds-3", vec!["new".to_string()])
    );
}

#[tokio::test]
async fn a_request_for_another_type_ends_the_stream() {
    let cache = fleet_cache(1);
    let served = Served::cache(cache).await;
    let mut ads = served.ads().await;
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    let status = ads.recv_error().await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains(CLUSTER), "{}", status.message());
}
