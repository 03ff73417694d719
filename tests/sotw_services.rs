//! The per-type discovery services and unary fetch, over real tonic clients.

mod common;

use common::*;
use tonic::Code;
use xds_control_plane::cache::Snapshot;
use xds_control_plane::envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use xds_control_plane::envoy_types::pb::envoy::config::route::v3::ScopedRouteConfiguration;
use xds_control_plane::envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use xds_control_plane::envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_client::ExtensionConfigDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::route::v3::route_discovery_service_client::RouteDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::route::v3::scoped_routes_discovery_service_client::ScopedRoutesDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::runtime::v3::runtime_discovery_service_client::RuntimeDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::runtime::v3::Runtime;
use xds_control_plane::envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use xds_control_plane::resource::type_url;

fn full_snapshot(version: &str) -> Snapshot {
    Snapshot::builder(version)
        .clusters([cluster("c")])
        .endpoints([endpoint("c")])
        .listeners([listener("l")])
        .routes([route("r")])
        .scoped_routes([ScopedRouteConfiguration {
            name: "s".into(),
            route_configuration_name: "r".into(),
            ..Default::default()
        }])
        .secrets([Secret {
            name: "cert".into(),
            ..Default::default()
        }])
        .runtimes([Runtime {
            name: "rt".into(),
            ..Default::default()
        }])
        .extension_configs([TypedExtensionConfig {
            name: "ext".into(),
            ..Default::default()
        }])
        .build()
        .unwrap()
}

#[tokio::test]
async fn cds_stream_serves_and_updates() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a"], &[], &[], &[]));
    let mut client = ClusterDiscoveryServiceClient::new(ts.channel().await);
    let mut cds = XdsStream::open(|r| async move { client.stream_clusters(r).await }).await;
    // A per-type stream may leave type_url empty.
    cds.send(request("n1", "", "", "", &[])).await;
    let first = cds.recv().await;
    assert_eq!(first.type_url, type_url::CLUSTER);
    assert_eq!(names(&first), ["a"]);
    cds.ack("n1", &first, &[]).await;
    ts.wait_for_watches("n1", 1).await;
    ts.cache
        .set_snapshot("n1", snapshot("v2", &["a", "b"], &[], &[], &[]));
    let second = cds.recv().await;
    assert_eq!(names(&second), ["a", "b"]);
}

#[tokio::test]
async fn eds_stream_serves_named_resources() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &[], &["a", "b", "c"], &[], &[]));
    let mut client = EndpointDiscoveryServiceClient::new(ts.channel().await);
    let mut eds = XdsStream::open(|r| async move { client.stream_endpoints(r).await }).await;
    eds.send(request("n1", type_url::ENDPOINT, "", "", &["c", "a"]))
        .await;
    assert_eq!(names(&eds.recv().await), ["a", "c"]);
}

#[tokio::test]
async fn type_url_of_another_service_is_invalid_argument() {
    let ts = TestServer::start(false).await;
    let mut client = ClusterDiscoveryServiceClient::new(ts.channel().await);
    let mut cds = XdsStream::open(|r| async move { client.stream_clusters(r).await }).await;
    cds.send(request("n1", type_url::LISTENER, "", "", &[]))
        .await;
    let status = cds.recv_error().await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("does not match"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn every_per_type_service_serves_its_own_type() {
    let ts = TestServer::start(false).await;
    ts.cache.set_snapshot("n1", full_snapshot("v1"));
    let channel = ts.channel().await;
    let mut streams = vec![
        (type_url::LISTENER, {
            let mut c = ListenerDiscoveryServiceClient::new(channel.clone());
            XdsStream::open(|r| async move { c.stream_listeners(r).await }).await
        }),
        (type_url::ROUTE, {
            let mut c = RouteDiscoveryServiceClient::new(channel.clone());
            XdsStream::open(|r| async move { c.stream_routes(r).await }).await
        }),
        (type_url::SCOPED_ROUTE, {
            let mut c = ScopedRoutesDiscoveryServiceClient::new(channel.clone());
            XdsStream::open(|r| async move { c.stream_scoped_routes(r).await }).await
        }),
        (type_url::SECRET, {
            let mut c = SecretDiscoveryServiceClient::new(channel.clone());
            XdsStream::open(|r| async move { c.stream_secrets(r).await }).await
        }),
        (type_url::RUNTIME, {
            let mut c = RuntimeDiscoveryServiceClient::new(channel.clone());
            XdsStream::open(|r| async move { c.stream_runtime(r).await }).await
        }),
        (type_url::EXTENSION_CONFIG, {
            let mut c = ExtensionConfigDiscoveryServiceClient::new(channel.clone());
            XdsStream::open(|r| async move { c.stream_extension_configs(r).await }).await
        }),
    ];
    for (type_url, stream) in &mut streams {
        let wanted: &[&str] = match *type_url {
            type_url::ROUTE => &["r"],
            type_url::SCOPED_ROUTE => &["s"],
            type_url::SECRET => &["cert"],
            type_url::RUNTIME => &["rt"],
            type_url::EXTENSION_CONFIG => &["ext"],
            _ => &[],
        };
        stream.send(request("n1", type_url, "", "", wanted)).await;
        let response = stream.recv().await;
        assert_eq!(response.type_url, *type_url);
        assert_eq!(response.resources.len(), 1, "{type_url}");
        assert_eq!(response.resources[0].type_url, *type_url);
    }
}

#[tokio::test]
async fn a_callback_can_refuse_a_stream() {
    let ts = TestServer::start(false).await;
    *ts.recorder.refuse_type.lock() = Some(type_url::CLUSTER.to_string());
    let mut client = ClusterDiscoveryServiceClient::new(ts.channel().await);
    let (_tx, rx) = tokio::sync::mpsc::channel(1);
    let status = client
        .stream_clusters(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(ts.recorder.closed.lock().len(), 1);
}

#[tokio::test]
async fn callbacks_see_requests_and_responses() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a"], &[], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", type_url::CLUSTER, "", "", &[]))
        .await;
    let response = ads.recv().await;
    assert_eq!(ts.recorder.opened.lock().clone(), vec![(1, String::new())]);
    assert_eq!(ts.recorder.requests.lock().len(), 1);
    assert_eq!(ts.recorder.responses.lock().clone(), vec![response]);
}

#[tokio::test]
async fn fetch_answers_current_resources() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a", "b"], &["a", "b"], &[], &[]));
    let mut cds = ClusterDiscoveryServiceClient::new(ts.channel().await);
    let all = cds
        .fetch_clusters(request("n1", "", "", "", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (all.version_info.as_str(), names(&all)),
        ("v1", vec!["a".into(), "b".into()])
    );
    assert_eq!(ts.recorder.fetches.lock().len(), 1);

    let current = cds
        .fetch_clusters(request("n1", "", "v1", "", &[]))
        .await
        .unwrap_err();
    assert_eq!(current.code(), Code::FailedPrecondition);
    let unknown = cds
        .fetch_clusters(request("nobody", "", "", "", &[]))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let mut eds = EndpointDiscoveryServiceClient::new(ts.channel().await);
    let one = eds
        .fetch_endpoints(request("n1", "", "", "", &["b"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&one), ["b"]);
    let wrong = eds
        .fetch_endpoints(request("n1", type_url::CLUSTER, "", "", &[]))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
}
