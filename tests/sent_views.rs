//! What `on_stream_response` and `on_stream_delta_response` see is what the
//! client receives: the views' fields, sizes and `to_message()` agree with
//! the messages a real tonic client decodes.

mod common;

use std::time::Duration;

use common::*;
use prost::Message;
use xds_control_plane::cache::Snapshot;
use xds_control_plane::resource::{type_url, ResourceType};

#[tokio::test]
async fn sotw_views_describe_the_messages_sent() {
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a", "b"], &["a"], &[], &[]));
    let mut ads = ts.ads().await;
    ads.send(request("n1", type_url::CLUSTER, "", "", &[]))
        .await;
    let clusters = ads.recv().await;
    ads.send(request("n1", type_url::ENDPOINT, "", "", &["a"]))
        .await;
    let endpoints = ads.recv().await;
    let received = [clusters, endpoints];
    assert_eq!(*ts.recorder.responses.lock(), received);
    let sent = ts.recorder.sent.lock().clone();
    assert_eq!(sent.len(), 2);
    for (message, (nonce, size, names)) in received.iter().zip(sent) {
        assert_eq!(message.nonce, nonce);
        assert_eq!(message.encoded_len(), size);
        assert_eq!(common::names(message), names);
    }
}

#[tokio::test]
async fn delta_views_describe_the_messages_sent() {
    let ts = TestServer::start(false).await;
    // One plain resource and one with a TTL.
    let v1 = Snapshot::builder("v1")
        .clusters([cluster("a"), cluster("b")])
        .ttl(ResourceType::Cluster, "b", Duration::from_secs(30))
        .build()
        .unwrap();
    ts.cache.set_snapshot("n1", v1);
    let mut delta = ts.delta_ads().await;
    delta
        .send(delta_request("n1", type_url::CLUSTER, &["*"], &[]))
        .await;
    let first = delta.recv().await;
    delta.ack("n1", &first).await;
    ts.wait_for_delta_watches("n1", 1).await;
    // "a" is deleted, "b" loses its TTL.
    let v2 = Snapshot::builder("v2")
        .clusters([cluster("b")])
        .build()
        .unwrap();
    ts.cache.set_snapshot("n1", v2);
    let second = delta.recv().await;
    assert_eq!(second.removed_resources, ["a"]);
    let received = [first, second];
    assert_eq!(*ts.recorder.delta_responses.lock(), received);
    let sent = ts.recorder.sent.lock().clone();
    assert_eq!(sent.len(), 2);
    for (message, (nonce, size, names)) in received.iter().zip(sent) {
        assert_eq!(message.nonce, nonce);
        assert_eq!(message.encoded_len(), size);
        assert_eq!(delta_names(message), names);
    }
}
