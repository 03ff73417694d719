//! Callbacks see the stream's node on every request, response and NACK,
//! although clients (Envoy among them) send it only with their first
//! request and the server keeps requests without it.

mod common;

use std::sync::Arc;

use common::*;
use parking_lot::Mutex;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use xds_control_plane::resource::type_url::{CLUSTER, ENDPOINT};
use xds_control_plane::server::{Nack, SentDeltaResponse, SentResponse, StreamId};
use xds_control_plane::{Callbacks, IdHash, Server, SnapshotCache};

/// Which node id each callback saw, in order.
#[derive(Default)]
struct NodesSeen(Mutex<Vec<(&'static str, Option<String>)>>);

impl NodesSeen {
    fn note(&self, what: &'static str, node: Option<&str>) {
        self.0.lock().push((what, node.map(str::to_owned)));
    }
}

impl Callbacks for NodesSeen {
    fn on_stream_request(
        &self,
        _: StreamId,
        request: &DiscoveryRequest,
    ) -> Result<(), tonic::Status> {
        self.note("request", request.node.as_ref().map(|n| n.id.as_str()));
        Ok(())
    }

    fn on_stream_response(&self, _: StreamId, request: &DiscoveryRequest, _: &SentResponse<'_>) {
        self.note("response", request.node.as_ref().map(|n| n.id.as_str()));
    }

    fn on_stream_nack(&self, _: StreamId, nack: &Nack<'_>) {
        self.note("nack", nack.node.map(|n| n.id.as_str()));
    }

    fn on_stream_delta_request(
        &self,
        _: StreamId,
        request: &DeltaDiscoveryRequest,
    ) -> Result<(), tonic::Status> {
        self.note(
            "delta request",
            request.node.as_ref().map(|n| n.id.as_str()),
        );
        Ok(())
    }

    fn on_stream_delta_response(
        &self,
        _: StreamId,
        request: &DeltaDiscoveryRequest,
        _: &SentDeltaResponse<'_>,
    ) {
        self.note(
            "delta response",
            request.node.as_ref().map(|n| n.id.as_str()),
        );
    }
}

fn without_node(mut request: DiscoveryRequest) -> DiscoveryRequest {
    request.node = None;
    request
}

#[tokio::test]
async fn callbacks_see_the_node_of_the_first_request_throughout() {
    let cache = SnapshotCache::new(false, IdHash);
    cache.set_snapshot("n1", snapshot("v1", &["a"], &["a"], &[], &[]));
    let seen = Arc::new(NodesSeen::default());
    let server = Server::new(cache.clone(), Arc::clone(&seen));
    let served = serve(&server).await;

    // State of the world: only the first request names the node.
    let mut ads = served.ads().await;
    ads.send(request("n1", CLUSTER, "", "", &[])).await;
    let clusters = ads.recv().await;
    ads.send(without_node(request("n1", ENDPOINT, "", "", &["a"])))
        .await;
    let endpoints = ads.recv().await;
    ads.send(without_node(request(
        "n1",
        CLUSTER,
        &clusters.version_info,
        &clusters.nonce,
        &[],
    )))
    .await;
    let mut nack = request("n1", ENDPOINT, "", &endpoints.nonce, &["a"]);
    nack.node = None;
    nack.error_detail = Some(Default::default());
    ads.send(nack).await;
    // A new version answers the watches the ACK and the NACK opened.
    cache.set_snapshot("n1", snapshot("v2", &["a", "b"], &["a"], &[], &[]));
    ads.recv().await;
    ads.recv().await;

    // Delta, the same way.
    let mut delta = served.delta_ads().await;
    delta.send(delta_request("n1", CLUSTER, &["*"], &[])).await;
    let first = delta.recv().await;
    let mut ack = delta_request("n1", CLUSTER, &[], &[]);
    ack.node = None;
    ack.response_nonce = first.nonce.clone();
    delta.send(ack).await;
    cache.set_snapshot("n1", snapshot("v3", &["c"], &["a"], &[], &[]));
    delta.recv().await;

    let seen = seen.0.lock().clone();
    // Every callback ran (the second version may reach the stream before
    // its NACK is read, so their order varies).
    let mut kinds: Vec<&str> = seen.iter().map(|(what, _)| *what).collect();
    kinds.sort_unstable();
    let mut expected = [
        ["request"; 4].as_slice(),
        &["response"; 4],
        &["nack"],
        &["delta request"; 2],
        &["delta response"; 2],
    ]
    .concat();
    expected.sort_unstable();
    assert_eq!(kinds, expected);
    for (what, node) in &seen {
        assert_eq!(node.as_deref(), Some("n1"), "{what} saw no node: {seen:?}");
    }
}
