//! The glue between the generated tonic services and the one stream state
//! machine: every service pins its type URL and hands its streams over.

use std::pin::Pin;

use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::{
    ClusterDiscoveryService, ClusterDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_server::{
    EndpointDiscoveryService, EndpointDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::endpoint::v3::locality_endpoint_discovery_service_server::{
    LocalityEndpointDiscoveryService, LocalityEndpointDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::{
    ExtensionConfigDiscoveryService, ExtensionConfigDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_server::{
    ListenerDiscoveryService, ListenerDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_server::{
    RouteDiscoveryService, RouteDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::route::v3::scoped_routes_discovery_service_server::{
    ScopedRoutesDiscoveryService, ScopedRoutesDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::route::v3::virtual_host_discovery_service_server::{
    VirtualHostDiscoveryService, VirtualHostDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::runtime::v3::runtime_discovery_service_server::{
    RuntimeDiscoveryService, RuntimeDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Server;
use crate::resource::type_url;

/// The response stream of every state-of-the-world RPC.
pub type SotwResponseStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

/// The response stream of every incremental (delta) RPC.
pub type DeltaResponseStream =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Server {
    type StreamAggregatedResourcesStream = SotwResponseStream;
    type DeltaAggregatedResourcesStream = DeltaResponseStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwResponseStream>, Status> {
        self.open_sotw(request, None)
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponseStream>, Status> {
        self.open_delta(request, None)
    }
}

/// Implements one per-type service: its stream, delta and fetch RPCs, and
/// the `Server` method that returns it ready to register.
macro_rules! per_type_service {
    ($(
        $(#[$doc:meta])*
        $method:ident => $service:ident / $server:ident, $type_url:expr,
        $stream_ty:ident $stream_fn:ident, $delta_ty:ident $delta_fn:ident, $fetch_fn:ident;
    )*) => {
        impl Server {$(
            $(#[$doc])*
            pub fn $method(&self) -> $server<Server> {
                $server::new(self.clone())
            }
        )*}

        $(
            #[tonic::async_trait]
            impl $service for Server {
                type $stream_ty = SotwResponseStream;
                type $delta_ty = DeltaResponseStream;

                async fn $stream_fn(
                    &self,
                    request: Request<Streaming<DiscoveryRequest>>,
                ) -> Result<Response<SotwResponseStream>, Status> {
                    self.open_sotw(request, Some($type_url))
                }

                async fn $delta_fn(
                    &self,
                    request: Request<Streaming<DeltaDiscoveryRequest>>,
                ) -> Result<Response<DeltaResponseStream>, Status> {
                    self.open_delta(request, Some($type_url))
                }

                async fn $fetch_fn(
                    &self,
                    request: Request<DiscoveryRequest>,
                ) -> Result<Response<DiscoveryResponse>, Status> {
                    self.fetch(request.into_inner(), $type_url)
                }
            }
        )*
    };
}

impl Server {
    /// The aggregated discovery service (ADS, state of the world and delta),
    /// ready to register.
    pub fn ads_service(&self) -> AggregatedDiscoveryServiceServer<Server> {
        AggregatedDiscoveryServiceServer::new(self.clone())
    }

    /// The locality endpoint discovery service (LEDS, delta only), ready to
    /// register.
    pub fn leds_service(&self) -> LocalityEndpointDiscoveryServiceServer<Server> {
        LocalityEndpointDiscoveryServiceServer::new(self.clone())
    }

    /// The virtual host discovery service (VHDS, delta only), ready to
    /// register.
    pub fn vhds_service(&self) -> VirtualHostDiscoveryServiceServer<Server> {
        VirtualHostDiscoveryServiceServer::new(self.clone())
    }
}

#[tonic::async_trait]
impl LocalityEndpointDiscoveryService for Server {
    type DeltaLocalityEndpointsStream = DeltaResponseStream;

    async fn delta_locality_endpoints(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponseStream>, Status> {
        self.open_delta(request, Some(type_url::LB_ENDPOINT))
    }
}

#[tonic::async_trait]
impl VirtualHostDiscoveryService for Server {
    type DeltaVirtualHostsStream = DeltaResponseStream;

    async fn delta_virtual_hosts(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponseStream>, Status> {
        self.open_delta(request, Some(type_url::VIRTUAL_HOST))
    }
}

per_type_service! {
    /// The cluster discovery service (CDS), ready to register.
    cds_service => ClusterDiscoveryService / ClusterDiscoveryServiceServer, type_url::CLUSTER,
        StreamClustersStream stream_clusters, DeltaClustersStream delta_clusters, fetch_clusters;
    /// The endpoint discovery service (EDS), ready to register.
    eds_service => EndpointDiscoveryService / EndpointDiscoveryServiceServer, type_url::ENDPOINT,
        StreamEndpointsStream stream_endpoints, DeltaEndpointsStream delta_endpoints, fetch_endpoints;
    /// The listener discovery service (LDS), ready to register.
    lds_service => ListenerDiscoveryService / ListenerDiscoveryServiceServer, type_url::LISTENER,
        StreamListenersStream stream_listeners, DeltaListenersStream delta_listeners, fetch_listeners;
    /// The route discovery service (RDS), ready to register.
    rds_service => RouteDiscoveryService / RouteDiscoveryServiceServer, type_url::ROUTE,
        StreamRoutesStream stream_routes, DeltaRoutesStream delta_routes, fetch_routes;
    /// The scoped route discovery service (SRDS), ready to register.
    srds_service => ScopedRoutesDiscoveryService / ScopedRoutesDiscoveryServiceServer, type_url::SCOPED_ROUTE,
        StreamScopedRoutesStream stream_scoped_routes, DeltaScopedRoutesStream delta_scoped_routes, fetch_scoped_routes;
    /// The secret discovery service (SDS), ready to register.
    sds_service => SecretDiscoveryService / SecretDiscoveryServiceServer, type_url::SECRET,
        StreamSecretsStream stream_secrets, DeltaSecretsStream delta_secrets, fetch_secrets;
    /// The runtime discovery service (RTDS), ready to register.
    rtds_service => RuntimeDiscoveryService / RuntimeDiscoveryServiceServer, type_url::RUNTIME,
        StreamRuntimeStream stream_runtime, DeltaRuntimeStream delta_runtime, fetch_runtime;
    /// The extension config discovery service (ECDS), ready to register.
    ecds_service => ExtensionConfigDiscoveryService / ExtensionConfigDiscoveryServiceServer, type_url::EXTENSION_CONFIG,
        StreamExtensionConfigsStream stream_extension_configs, DeltaExtensionConfigsStream delta_extension_configs, fetch_extension_configs;
}
