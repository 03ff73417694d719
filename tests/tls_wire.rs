//! xDS over TLS with client-certificate verification (mutual TLS).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{request, snapshot, Recorder, XdsStream};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use xds_control_plane::resource::type_url;
use xds_control_plane::test_support::envoy::TestCerts;
use xds_control_plane::{IdHash, Server, SnapshotCache};

/// Our server on 127.0.0.1 requiring client certificates signed by the CA.
async fn mtls_server(certs: &TestCerts) -> std::net::SocketAddr {
    let cache = SnapshotCache::new(false, IdHash);
    cache.set_snapshot("n1", snapshot("v1", &["a"], &[], &[], &[]));
    let server = Server::new(cache, Arc::new(Recorder::default()));
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            &certs.cert_chain_pem,
            &certs.private_key_pem,
        ))
        .client_ca_root(Certificate::from_pem(&certs.ca_pem));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = tonic::transport::Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(server.ads_service());
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

async fn connect(
    addr: std::net::SocketAddr,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    endpoint.connect().await
}

fn client_tls(certs: &TestCerts, with_identity: bool) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&certs.ca_pem))
        .domain_name("localhost");
    if with_identity {
        tls.identity(Identity::from_pem(
            &certs.client_cert_chain_pem,
            &certs.client_private_key_pem,
        ))
    } else {
        tls
    }
}

/// Opens an ADS stream and asks for clusters; the first response or error.
async fn fetch_clusters(channel: Channel) -> Result<Vec<String>, tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request("n1", type_url::CLUSTER, "", "", &[]))
        .await
        .unwrap();
    let mut responses = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let response = tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no response"))??
        .ok_or_else(|| tonic::Status::unknown("stream ended"))?;
    Ok(common::names(&response))
}

#[tokio::test]
async fn mutual_tls_serves_clients_with_a_certificate() {
    let certs = TestCerts::generate(&["localhost", "127.0.0.1"]).unwrap();
    let addr = mtls_server(&certs).await;
    let channel = connect(addr, Some(client_tls(&certs, true))).await.unwrap();
    assert_eq!(fetch_clusters(channel).await.unwrap(), ["a"]);
    // XdsStream works over TLS channels like any other.
    let channel = connect(addr, Some(client_tls(&certs, true))).await.unwrap();
    let mut ads = XdsStream::ads(channel).await;
    ads.send(request("n1", type_url::CLUSTER, "", "", &[]))
        .await;
    assert_eq!(ads.recv().await.version_info, "v1");
}

#[tokio::test]
async fn clients_without_a_certificate_are_refused() {
    let certs = TestCerts::generate(&["localhost", "127.0.0.1"]).unwrap();
    let addr = mtls_server(&certs).await;
    let refused = match connect(addr, Some(client_tls(&certs, false))).await {
        Err(_) => true,
        Ok(channel) => fetch_clusters(channel).await.is_err(),
    };
    assert!(refused, "a TLS client without a certificate got config");
}

#[tokio::test]
async fn plaintext_clients_are_refused() {
    let certs = TestCerts::generate(&["localhost", "127.0.0.1"]).unwrap();
    let addr = mtls_server(&certs).await;
    let refused = match connect(addr, None).await {
        Err(_) => true,
        Ok(channel) => fetch_clusters(channel).await.is_err(),
    };
    assert!(refused, "a plaintext client got config");
}
