//! The REST-JSON gateway over real loopback HTTP/1.1: mounted on the tonic
//! server next to the gRPC services, and on a bare hyper server.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use prost::Message;
use serde_json::{json, Value};
use tokio_stream::wrappers::TcpListenerStream;
use xds_control_plane::envoy_types::pb::envoy::config::listener::v3::Listener;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
};
use xds_control_plane::resource::type_url;
use xds_control_plane::server::rest::{
    discovery_response_from_json, discovery_response_to_json, RestGateway, PATHS,
};
use xds_control_plane::server::Callbacks;
use xds_control_plane::test_support::{GeneratedResources, TestResources, TlsMaterial, XdsMode};
use xds_control_plane::{IdHash, Server, Snapshot, SnapshotCache};

const NODE: &str = "node-1";

/// Callbacks recording fetches, refusing those of node `refused`.
#[derive(Default)]
struct FetchLog {
    requests: Mutex<Vec<DiscoveryRequest>>,
    responses: Mutex<Vec<(String, String)>>,
}

impl Callbacks for FetchLog {
    fn on_fetch_request(&self, request: &DiscoveryRequest) -> Result<(), tonic::Status> {
        self.requests.lock().push(request.clone());
        match request.node.as_ref().map(|n| n.id.as_str()) {
            Some("refused") => Err(tonic::Status::permission_denied("node not allowed")),
            _ => Ok(()),
        }
    }

    fn on_fetch_response(&self, request: &DiscoveryRequest, response: &DiscoveryResponse) {
        let node = request
            .node
            .as_ref()
            .map(|n| n.id.clone())
            .unwrap_or_default();
        self.responses
            .lock()
            .push((node, response.version_info.clone()));
    }
}

/// Every kind of resource, realistic ones: listeners hold an
/// `HttpConnectionManager` in an `Any`, TLS contexts, ECDS filters...
fn generated() -> GeneratedResources {
    let mut resources = TestResources::new(
        XdsMode::Rest,
        vec![("upstream".into(), 18080), ("other".into(), 18081)],
        19000,
    );
    resources.version = 1;
    resources.num_clusters = 2;
    resources.num_http_listeners = 2;
    resources.num_scoped_http_listeners = 1;
    resources.num_tcp_listeners = 1;
    resources.num_runtimes = 1;
    resources.num_extension_configs = 1;
    // Only rendered, never used: the PEM text need not be valid.
    resources.tls = Some(TlsMaterial {
        cert_chain_pem: "chain".into(),
        private_key_pem: "key".into(),
    });
    resources.generate().expect("generate resources")
}

/// A gateway on a tonic server (HTTP/1.1 accepted), with a snapshot of
/// [`generated`] at `v1` for [`NODE`].
struct Fixture {
    addr: SocketAddr,
    cache: SnapshotCache,
    log: Arc<FetchLog>,
    resources: GeneratedResources,
    task: tokio::task::JoinHandle<()>,
}

impl Fixture {
    async fn start() -> Fixture {
        Self::start_with(|gateway| gateway).await
    }

    async fn start_with(configure: impl FnOnce(RestGateway) -> RestGateway) -> Fixture {
        let cache = SnapshotCache::new(false, IdHash);
        let resources = generated();
        cache.set_snapshot(NODE, resources.snapshot("v1").expect("snapshot"));
        let log = Arc::new(FetchLog::default());
        let server = Server::new(cache.clone(), Arc::clone(&log));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let router = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_service(server.cds_service())
            .add_service(configure(server.rest_gateway()));
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .expect("serve");
        });
        Fixture {
            addr,
            cache,
            log,
            resources,
            task,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What came back.
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one HTTP/1.1 request with `body` on a new connection.
async fn send<B>(addr: SocketAddr, method: &str, path: &str, body: B) -> Reply
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    post_raw(addr, path, body.to_string()).await
}

async fn post_raw(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> Reply {
    send(addr, "POST", path, Full::new(body.into())).await
}

/// A request as Envoy sends it (camelCase names, node included).
fn envoy_request(version: &str, names: &[&str]) -> Value {
    json!({
        "versionInfo": version,
        "node": { "id": NODE, "cluster": "test-cluster", "userAgentName": "envoy" },
        "resourceNames": names,
    })
}

#[tokio::test]
async fn every_type_is_served_as_json_with_typed_resources() {
    let f = Fixture::start().await;
    for (path, type_url) in PATHS {
        let reply = post(f.addr, path, &envoy_request("", &[])).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(
            reply.headers[http::header::CONTENT_TYPE],
            "application/json",
            "{path}"
        );
        let body = reply.json();
        // go-control-plane writes the proto field names.
        assert_eq!(body["version_info"], "v1", "{path}");
        assert_eq!(body["type_url"], type_url, "{path}");
        let resources = body["resources"].as_array().expect("resources");
        assert!(!resources.is_empty(), "{path}: no resources");
        for resource in resources {
            assert_eq!(resource["@type"], type_url, "{path}");
            // Every resource is named (a ClusterLoadAssignment by its
            // cluster_name).
            let name = resource.get("name").or(resource.get("cluster_name"));
            assert!(name.is_some_and(Value::is_string), "{path}: {resource}");
        }
    }
}

#[tokio::test]
async fn json_round_trips_to_the_snapshot_resources() {
    let f = Fixture::start().await;
    let reply = post(f.addr, "/v3/discovery:listeners", &envoy_request("", &[])).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    // Nested Anys are rendered as messages, not bytes.
    let body = reply.json();
    let http = body["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|l| l["name"] == f.resources.listeners[0].name)
        .expect("the first HTTP listener");
    let hcm = &http["filter_chains"][0]["filters"][0]["typed_config"];
    assert_eq!(hcm["@type"], type_url::HTTP_CONNECTION_MANAGER, "{http}");
    assert!(
        hcm["rds"].is_object() || hcm["scoped_routes"].is_object(),
        "{hcm}"
    );

    // Parsed back, the resources are the snapshot's. Nested `Any`s are
    // re-encoded in field-number order, which may differ from the
    // original bytes, so they are compared as messages, through JSON.
    let response = discovery_response_from_json(&reply.text()).expect("parse back");
    let names = |listeners: &[Listener]| -> Vec<String> {
        listeners.iter().map(|l| l.name.clone()).collect()
    };
    let got: Vec<Listener> = response
        .resources
        .iter()
        .map(|any| Listener::decode(any.value.as_slice()).expect("listener"))
        .collect();
    assert_eq!(names(&got), names(&f.resources.listeners));
    assert_eq!(
        discovery_response_to_json(&response).expect("render again"),
        reply.text(),
        "rendering what was parsed gives the same JSON"
    );
    let route_names: Vec<&Value> = body["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|l| {
            l["filter_chains"][0]["filters"][0]["typed_config"]["rds"].get("route_config_name")
        })
        .collect();
    let want: Vec<Value> = f.resources.routes.iter().map(|r| json!(r.name)).collect();
    assert!(
        !route_names.is_empty() && route_names.iter().all(|n| want.contains(n)),
        "{route_names:?} not among {want:?}"
    );
}

#[tokio::test]
async fn named_resources_only() {
    let f = Fixture::start().await;
    let name = f.resources.clusters[1].name.clone();
    let reply = post(
        f.addr,
        "/v3/discovery:clusters",
        &envoy_request("", &[&name]),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let names: Vec<&Value> = body["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| &r["name"])
        .collect();
    assert_eq!(names, [&json!(name)]);
}

#[tokio::test]
async fn current_version_is_not_modified_until_the_snapshot_changes() {
    let f = Fixture::start().await;
    let reply = post(f.addr, "/v3/discovery:clusters", &envoy_request("v1", &[])).await;
    assert_eq!(reply.status, 304);
    assert!(reply.body.is_empty(), "a 304 has no body: {}", reply.text());

    let snapshot = f.resources.snapshot("v2").expect("snapshot");
    f.cache.set_snapshot(NODE, snapshot);
    let reply = post(f.addr, "/v3/discovery:clusters", &envoy_request("v1", &[])).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["version_info"], "v2");
}

#[tokio::test]
async fn bad_requests_are_400() {
    let f = Fixture::start().await;
    let path = "/v3/discovery:clusters";
    for (body, why) in [
        ("", "empty body"),
        ("{", "cannot parse JSON body"),
        ("[1, 2]", "cannot parse JSON body"),
        (r#"{"version_info": 3}"#, "cannot parse JSON body"),
        (r#"{"no_such_field": 1} trailing"#, "cannot parse JSON body"),
    ] {
        let reply = post_raw(f.addr, path, body).await;
        assert_eq!(reply.status, 400, "{body:?}: {}", reply.text());
        assert!(reply.text().contains(why), "{body:?}: {}", reply.text());
    }
    let reply = post_raw(f.addr, path, vec![0xff, 0xfe]).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("UTF-8"), "{}", reply.text());

    // A type URL other than the path's.
    let mut request = envoy_request("", &[]);
    request["typeUrl"] = json!(type_url::LISTENER);
    let reply = post(f.addr, path, &request).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(reply.text().contains("does not match"), "{}", reply.text());
    // The path's own type URL is fine.
    request["typeUrl"] = json!(type_url::CLUSTER);
    assert_eq!(post(f.addr, path, &request).await.status, 200);
}

#[tokio::test]
async fn unknown_paths_and_nodes_are_404() {
    let f = Fixture::start().await;
    for path in [
        "/v3/discovery:virtualhosts",
        "/v3/discovery:nothing",
        "/v3/other",
    ] {
        let reply = post(f.addr, path, &envoy_request("", &[])).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
        assert!(
            reply.text().contains("no discovery endpoint"),
            "{}",
            reply.text()
        );
    }
    let reply = post(
        f.addr,
        "/v3/discovery:clusters",
        &json!({ "node": { "id": "stranger" } }),
    )
    .await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    assert!(reply.text().contains("stranger"), "{}", reply.text());
}

#[tokio::test]
async fn only_post_is_allowed() {
    let f = Fixture::start().await;
    for method in ["GET", "PUT", "DELETE"] {
        let reply = send(
            f.addr,
            method,
            "/v3/discovery:clusters",
            Full::new(Bytes::from(envoy_request("", &[]).to_string())),
        )
        .await;
        assert_eq!(reply.status, 405, "{method}: {}", reply.text());
        assert_eq!(reply.headers[http::header::ALLOW], "POST");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let f = Fixture::start_with(|gateway| gateway.max_request_size(200)).await;
    let big = json!({ "node": { "id": NODE }, "resourceNames": ["x".repeat(300)] });

    // Declared by Content-Length.
    let reply = post(f.addr, "/v3/discovery:clusters", &big).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(
        reply.text().contains("larger than 200 bytes"),
        "{}",
        reply.text()
    );

    // Chunked, with no length declared: caught while reading.
    let text = big.to_string().into_bytes();
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = text
        .chunks(64)
        .map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = StreamBody::new(futures::stream::iter(chunks));
    let reply = send(f.addr, "POST", "/v3/discovery:clusters", body).await;
    assert_eq!(reply.status, 413, "{}", reply.text());

    // Within the limit is fine.
    let small = post(
        f.addr,
        "/v3/discovery:clusters",
        &json!({ "node": { "id": NODE } }),
    )
    .await;
    assert_eq!(small.status, 200, "{}", small.text());
}

#[tokio::test]
async fn fetch_callbacks_see_every_request_and_can_refuse() {
    let f = Fixture::start().await;
    post(f.addr, "/v3/discovery:routes", &envoy_request("", &[])).await;
    post(f.addr, "/v3/discovery:routes", &envoy_request("v1", &[])).await;

    let requests = f.log.requests.lock().clone();
    assert_eq!(requests.len(), 2);
    // The path's type URL is filled in before the callback runs.
    assert!(requests.iter().all(|r| r.type_url == type_url::ROUTE));
    assert_eq!(
        requests[0]
            .node
            .as_ref()
            .map(|n| n.user_agent_name.as_str()),
        Some("envoy")
    );
    // The 304 had no response callback.
    assert_eq!(
        *f.log.responses.lock(),
        [(NODE.to_string(), "v1".to_string())]
    );

    let reply = post(
        f.addr,
        "/v3/discovery:routes",
        &json!({ "node": { "id": "refused" } }),
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(
        reply.text().contains("node not allowed"),
        "{}",
        reply.text()
    );
}

/// The gateway is a plain `tower` service: here on a bare hyper server.
#[tokio::test]
async fn mounts_on_a_hyper_server() {
    let cache = SnapshotCache::new(false, IdHash);
    cache.set_snapshot(
        NODE,
        Snapshot::builder("v7")
            .clusters(generated().clusters)
            .build()
            .expect("snapshot"),
    );
    let gateway = Server::new(cache, ()).rest_gateway();
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let service = hyper_util::service::TowerToHyperService::new(gateway);
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
            .expect("serve");
    });
    let reply = post(addr, "/v3/discovery:clusters", &envoy_request("", &[])).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["version_info"], "v7");
    task.abort();
}
