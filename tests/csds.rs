//! The Client Status Discovery Service (CSDS), over real tonic clients: xDS
//! clients ACK and NACK, a CSDS client asks what each of them runs.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use prost::Message;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Channel;
use xds_control_plane::cache::{IdHash, SnapshotCache};
use xds_control_plane::envoy_types::pb::envoy::admin::v3::ClientResourceStatus;
use xds_control_plane::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use xds_control_plane::envoy_types::pb::envoy::config::core::v3::Node;
use xds_control_plane::envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern as M, struct_matcher::path_segment::Segment, struct_matcher::PathSegment,
    value_matcher::MatchPattern as V, NodeMatcher, RegexMatcher, StringMatcher, StructMatcher,
    ValueMatcher,
};
use xds_control_plane::envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use xds_control_plane::envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use xds_control_plane::envoy_types::pb::envoy::service::status::v3::{
    ClientConfig,
    ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use xds_control_plane::envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use xds_control_plane::resource::type_url::{CLUSTER, ENDPOINT};
use xds_control_plane::Server;

/// A server with ADS, EDS and CSDS on a free loopback port.
struct Csds {
    cache: SnapshotCache,
    server: Server,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Csds {
    async fn start() -> Csds {
        let cache = SnapshotCache::new(false, IdHash);
        let server = Server::new(cache.clone(), ());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = tonic::transport::Server::builder()
            .add_service(server.ads_service())
            .add_service(server.eds_service())
            .add_service(server.csds_service());
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Csds {
            cache,
            server,
            addr,
            task,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn client(&self) -> ClientStatusDiscoveryServiceClient<Channel> {
        ClientStatusDiscoveryServiceClient::new(self.channel().await)
    }

    async fn ads(&self) -> XdsStream {
        XdsStream::ads(self.channel().await).await
    }

    async fn delta_ads(&self) -> DeltaStream {
        DeltaStream::ads(self.channel().await).await
    }

    async fn eds(&self) -> XdsStream {
        let mut client = EndpointDiscoveryServiceClient::new(self.channel().await);
        XdsStream::open(|r| async move { client.stream_endpoints(r).await }).await
    }

    /// Asks with `FetchClientStatus` until `done` holds; fails the test if
    /// it does not within [`PATIENCE`].
    async fn until(
        &self,
        request: ClientStatusRequest,
        done: impl Fn(&ClientStatusResponse) -> bool,
    ) -> ClientStatusResponse {
        let mut client = self.client().await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let response = client
                .fetch_client_status(request.clone())
                .await
                .expect("CSDS answers")
                .into_inner();
            if done(&response) {
                return response;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "CSDS never reached the expected state; last answer: {response:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Csds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn all() -> ClientStatusRequest {
    ClientStatusRequest::default()
}

fn by_id(pattern: M, ignore_case: bool) -> ClientStatusRequest {
    ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher {
                ignore_case,
                match_pattern: Some(pattern),
            }),
            node_metadatas: vec![],
        }],
        ..Default::default()
    }
}

/// The entries of `node` as (type, name, version, config status, client status).
fn entries(
    response: &ClientStatusResponse,
    node: &str,
) -> Vec<(String, String, String, ConfigStatus, ClientResourceStatus)> {
    generic(response, node)
        .iter()
        .map(|g| {
            (
                g.type_url.clone(),
                g.name.clone(),
                g.version_info.clone(),
                g.config_status(),
                g.client_status(),
            )
        })
        .collect()
}

fn generic<'a>(response: &'a ClientStatusResponse, node: &str) -> &'a [GenericXdsConfig] {
    response
        .config
        .iter()
        .find(|c| c.node.as_ref().is_some_and(|n| n.id == node))
        .map(|c| c.generic_xds_configs.as_slice())
        .unwrap_or_default()
}

fn node_ids(response: &ClientStatusResponse) -> Vec<&str> {
    response
        .config
        .iter()
        .filter_map(|c| c.node.as_ref().map(|n| n.id.as_str()))
        .collect()
}

fn entry(
    type_url: &str,
    name: &str,
    version: &str,
    status: ConfigStatus,
    client: ClientResourceStatus,
) -> (String, String, String, ConfigStatus, ClientResourceStatus) {
    (type_url.into(), name.into(), version.into(), status, client)
}

fn has_status(node: &'static str, status: ConfigStatus) -> impl Fn(&ClientStatusResponse) -> bool {
    move |r| {
        let g = generic(r, node);
        !g.is_empty() && g.iter().all(|g| g.config_status() == status)
    }
}

#[tokio::test]
async fn sotw_client_goes_stale_synced_error_and_back() {
    use ClientResourceStatus as C;
    use ConfigStatus as S;
    let csds = Csds::start().await;
    csds.cache
        .set_snapshot("n1", snapshot("v1", &["a", "b"], &[], &[], &[]));
    let mut ads = csds.ads().await;
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    let v1 = ads.recv().await;

    // Sent, not acknowledged yet.
    let r = csds.until(all(), has_status("n1", S::Stale)).await;
    assert_eq!(
        entries(&r, "n1"),
        [
            entry(CLUSTER, "a", "v1", S::Stale, C::Unknown),
            entry(CLUSTER, "b", "v1", S::Stale, C::Unknown),
        ]
    );

    ads.ack("n1", &v1, &[]).await;
    let r = csds.until(all(), has_status("n1", S::Synced)).await;
    assert_eq!(node_ids(&r), ["n1"]);
    let g = generic(&r, "n1");
    assert_eq!(g.len(), 2);
    assert_eq!(g[0].client_status(), C::Acked);
    assert!(g[0].error_state.is_none() && !g[0].is_static_resource);
    assert!(g[0].last_updated.is_some());
    let body = g[0].xds_config.as_ref().expect("the body the client runs");
    assert_eq!(body.type_url, CLUSTER);
    assert_eq!(Cluster::decode(body.value.as_slice()).unwrap().name, "a");

    // A rejected version: every resource of the type shows the error.
    csds.cache
        .set_snapshot("n1", snapshot("v2", &["a", "bad"], &[], &[], &[]));
    let v2 = ads.recv().await;
    ads.nack("n1", &v2, "v1", &[]).await;
    let r = csds.until(all(), has_status("n1", S::Error)).await;
    assert_eq!(
        entries(&r, "n1"),
        [
            entry(CLUSTER, "a", "v2", S::Error, C::Nacked),
            entry(CLUSTER, "bad", "v2", S::Error, C::Nacked),
        ]
    );
    let error = generic(&r, "n1")[1]
        .error_state
        .clone()
        .expect("error state");
    assert_eq!(
        (error.details.as_str(), error.version_info.as_str()),
        ("bad config", "v2")
    );
    assert!(error.last_update_attempt.is_some());
    // ERROR shows the rejected config, which the cache still holds.
    assert!(generic(&r, "n1")[1].xds_config.is_some());

    // A newer version went out: waiting again, the error still on record.
    csds.cache
        .set_snapshot("n1", snapshot("v3", &["a"], &[], &[], &[]));
    let v3 = ads.recv().await;
    let r = csds.until(all(), has_status("n1", S::Stale)).await;
    assert_eq!(
        entries(&r, "n1"),
        [entry(CLUSTER, "a", "v3", S::Stale, C::Unknown)]
    );
    assert!(generic(&r, "n1")[0].error_state.is_some());

    ads.ack("n1", &v3, &[]).await;
    let r = csds.until(all(), has_status("n1", S::Synced)).await;
    assert!(generic(&r, "n1")[0].error_state.is_none());

    // Bodies are left out when asked to, and when the cache no longer
    // holds what was sent.
    let lean = ClientStatusRequest {
        exclude_resource_contents: true,
        ..Default::default()
    };
    let r = csds.until(lean, has_status("n1", S::Synced)).await;
    assert!(generic(&r, "n1")[0].xds_config.is_none());
    csds.cache.clear_snapshot("n1");
    let r = csds.until(all(), has_status("n1", S::Synced)).await;
    assert_eq!(
        entries(&r, "n1"),
        [entry(CLUSTER, "a", "v3", S::Synced, C::Acked)]
    );
    assert!(generic(&r, "n1")[0].xds_config.is_none());
}

#[tokio::test]
async fn a_nodes_delta_and_per_type_streams_merge_into_one_config() {
    use ClientResourceStatus as C;
    use ConfigStatus as S;
    let csds = Csds::start().await;
    csds.cache
        .set_snapshot("n2", snapshot("s1", &["a"], &["a"], &[], &[]));
    let mut delta = csds.delta_ads().await;
    delta.send(delta_request("n2", CLUSTER, &["a"], &[])).await;
    let first = delta.recv().await;
    let a_version = first.resources[0].version.clone();
    delta.ack("n2", &first).await;
    let mut eds = csds.eds().await;
    eds.send(request("n2", ENDPOINT, "", "", &["a"])).await;
    let endpoints = eds.recv().await;
    eds.ack("n2", &endpoints, &["a"]).await;

    let r = csds.until(all(), has_status("n2", S::Synced)).await;
    assert_eq!(r.config.len(), 1, "one config per node: {r:#?}");
    assert_eq!(
        entries(&r, "n2"),
        [
            entry(CLUSTER, "a", &a_version, S::Synced, C::Acked),
            entry(ENDPOINT, "a", "s1", S::Synced, C::Acked),
        ]
    );
    assert!(generic(&r, "n2").iter().all(|g| g.xds_config.is_some()));

    // Delta NACK: the rejected system version and the error are reported.
    csds.cache
        .set_snapshot("n2", snapshot("s2", &["a", "b"], &["a"], &[], &[]));
    delta.send(delta_request("n2", CLUSTER, &["b"], &[])).await;
    let second = delta.recv().await;
    assert_eq!(delta_names(&second), ["b"]);
    delta.nack("n2", &second).await;
    let r = csds
        .until(all(), |r| {
            generic(r, "n2")
                .iter()
                .any(|g| g.config_status() == S::Error)
        })
        .await;
    let clusters: Vec<_> = generic(&r, "n2")
        .iter()
        .filter(|g| g.type_url == CLUSTER)
        .collect();
    assert_eq!(clusters.len(), 2);
    for g in clusters {
        assert_eq!(g.client_status(), C::Nacked);
        let error = g.error_state.as_ref().unwrap();
        assert_eq!(error.version_info, "s2");
        assert_eq!(error.details, "bad config");
    }

    // Closing the per-type stream takes its type out; closing the last
    // stream takes the node out.
    drop(eds);
    csds.until(all(), |r| {
        generic(r, "n2").iter().all(|g| g.type_url == CLUSTER)
    })
    .await;
    drop(delta);
    csds.until(all(), |r| r.config.is_empty()).await;
}

fn metadata(cluster: &str) -> Struct {
    Struct {
        fields: [(
            "cluster".to_string(),
            Value {
                kind: Some(Kind::StringValue(cluster.into())),
            },
        )]
        .into(),
    }
}

async fn connect(csds: &Csds, id: &str, cluster: &str) -> XdsStream {
    let ads = csds.ads().await;
    let mut req = request(id, CLUSTER, "", "", &[]);
    req.node = Some(Node {
        id: id.into(),
        metadata: Some(metadata(cluster)),
        ..Default::default()
    });
    ads.send(req).await;
    ads
}

#[tokio::test]
async fn node_matchers_select_clients() {
    use ClientResourceStatus as C;
    use ConfigStatus as S;
    let csds = Csds::start().await;
    // No snapshot: requested, nothing sent.
    let _streams = [
        connect(&csds, "sidecar~1", "east").await,
        connect(&csds, "sidecar~2", "west").await,
        connect(&csds, "router~1", "east").await,
    ];
    let r = csds.until(all(), |r| r.config.len() == 3).await;
    assert_eq!(node_ids(&r), ["router~1", "sidecar~1", "sidecar~2"]);
    assert_eq!(
        entries(&r, "router~1"),
        [entry(CLUSTER, "", "", S::NotSent, C::Requested)]
    );
    let node = r.config[0].node.as_ref().unwrap();
    assert_eq!(node.metadata, Some(metadata("east")), "the stream's node");

    let mut client = csds.client().await;
    let mut ask = async |request: ClientStatusRequest| {
        let r = client.fetch_client_status(request).await.unwrap();
        node_ids(&r.into_inner())
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ask(by_id(M::Prefix("SIDECAR~".into()), true)).await,
        ["sidecar~1", "sidecar~2"]
    );
    assert!(ask(by_id(M::Prefix("SIDECAR~".into()), false))
        .await
        .is_empty());
    assert_eq!(
        ask(by_id(M::Exact("router~1".into()), false)).await,
        ["router~1"]
    );
    assert_eq!(
        ask(by_id(M::Suffix("~1".into()), false)).await,
        ["router~1", "sidecar~1"]
    );
    assert_eq!(ask(by_id(M::Contains("car".into()), false)).await.len(), 2);

    let east = StructMatcher {
        path: vec![PathSegment {
            segment: Some(Segment::Key("cluster".into())),
        }],
        value: Some(ValueMatcher {
            match_pattern: Some(V::StringMatch(StringMatcher {
                ignore_case: false,
                match_pattern: Some(M::Exact("east".into())),
            })),
        }),
    };
    let east_sidecars = ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher {
                ignore_case: false,
                match_pattern: Some(M::Prefix("sidecar~".into())),
            }),
            node_metadatas: vec![east.clone()],
        }],
        ..Default::default()
    };
    assert_eq!(ask(east_sidecars).await, ["sidecar~1"]);
    // Matchers are alternatives.
    let east_or_sidecar_2 = ClientStatusRequest {
        node_matchers: vec![
            NodeMatcher {
                node_id: None,
                node_metadatas: vec![east],
            },
            by_id(M::Exact("sidecar~2".into()), false).node_matchers[0].clone(),
        ],
        ..Default::default()
    };
    assert_eq!(ask(east_or_sidecar_2).await.len(), 3);

    // What cannot be evaluated is refused, with the field named.
    let regex = by_id(M::SafeRegex(RegexMatcher::default()), false);
    let err = client.fetch_client_status(regex.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "node_matchers[0].node_id: regex matchers are not supported"
    );
    let err = client
        .fetch_client_status(by_id(M::Suffix(String::new()), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // On a stream the error ends it.
    let (tx, mut responses) = open_stream(&mut client).await;
    tx.send(all()).await.unwrap();
    assert_eq!(responses.message().await.unwrap().unwrap().config.len(), 3);
    tx.send(regex).await.unwrap();
    let err = responses.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

/// Opens a CSDS stream: where to send requests, and the answers.
async fn open_stream(
    client: &mut ClientStatusDiscoveryServiceClient<Channel>,
) -> (
    tokio::sync::mpsc::Sender<ClientStatusRequest>,
    tonic::Streaming<ClientStatusResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let responses = client
        .stream_client_status(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, responses)
}

/// The configs of the stream's next answer.
async fn next_config(responses: &mut tonic::Streaming<ClientStatusResponse>) -> Vec<ClientConfig> {
    responses.message().await.unwrap().unwrap().config
}

#[tokio::test]
async fn stream_answers_each_request_until_closed_or_shutdown() {
    let csds = Csds::start().await;
    csds.cache
        .set_snapshot("n3", snapshot("v1", &["a"], &[], &[], &[]));
    let mut client = csds.client().await;
    let (tx, mut responses) = open_stream(&mut client).await;
    tx.send(all()).await.unwrap();
    assert!(next_config(&mut responses).await.is_empty());

    let mut ads = csds.ads().await;
    ads.send(request("n3", CLUSTER, "", "", &[])).await;
    let v1 = ads.recv().await;
    ads.ack("n3", &v1, &[]).await;
    csds.until(all(), has_status("n3", ConfigStatus::Synced))
        .await;
    tx.send(all()).await.unwrap();
    let r = responses.message().await.unwrap().unwrap();
    assert_eq!(node_ids(&r), ["n3"]);

    drop(ads);
    csds.until(all(), |r| r.config.is_empty()).await;
    tx.send(all()).await.unwrap();
    assert!(next_config(&mut responses).await.is_empty());

    // Half-closing ends the stream cleanly.
    drop(tx);
    assert!(responses.message().await.unwrap().is_none());

    // Shutdown ends an open CSDS stream too, so it cannot hold up a
    // graceful stop.
    let (tx, mut responses) = open_stream(&mut client).await;
    tx.send(all()).await.unwrap();
    responses.message().await.unwrap().unwrap();
    csds.server.shutdown();
    let ended = tokio::time::timeout(PATIENCE, responses.message())
        .await
        .expect("the stream ends");
    assert_eq!(ended.unwrap_err().code(), tonic::Code::Unavailable);
    // Unary questions are still answered.
    client.fetch_client_status(all()).await.unwrap();
}

#[tokio::test]
async fn unsubscribed_names_leave_the_report_at_once() {
    let csds = Csds::start().await;
    csds.cache
        .set_snapshot("n4", snapshot("v1", &[], &["a", "b"], &[], &[]));
    csds.cache
        .set_snapshot("n5", snapshot("v1", &["a", "b"], &[], &[], &[]));
    let mut eds = csds.eds().await;
    eds.send(request("n4", ENDPOINT, "", "", &["a", "b"])).await;
    let endpoints = eds.recv().await;
    eds.ack("n4", &endpoints, &["a", "b"]).await;
    let mut delta = csds.delta_ads().await;
    delta
        .send(delta_request("n5", CLUSTER, &["a", "b"], &[]))
        .await;
    let clusters = delta.recv().await;
    delta.ack("n5", &clusters).await;
    let names = |r: &ClientStatusResponse, node| -> Vec<String> {
        generic(r, node).iter().map(|g| g.name.clone()).collect()
    };
    csds.until(all(), |r| {
        names(r, "n4") == ["a", "b"] && names(r, "n5") == ["a", "b"]
    })
    .await;

    // Neither change sends anything: the report follows the subscription.
    eds.ack("n4", &endpoints, &["a"]).await;
    delta.send(delta_request("n5", CLUSTER, &[], &["b"])).await;
    let r = csds
        .until(all(), |r| {
            names(r, "n4") == ["a"] && names(r, "n5") == ["a"]
        })
        .await;
    assert!(has_status("n4", ConfigStatus::Synced)(&r));
    assert!(has_status("n5", ConfigStatus::Synced)(&r));
    eds.expect_silence().await;
    delta.expect_silence().await;
}
