//! Where dynamic resources come from: the `ConfigSource` for each [`XdsMode`].

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    api_config_source::ApiType, config_source::ConfigSourceSpecifier, grpc_service,
    AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, GrpcService,
};
use envoy_types::pb::google::protobuf::Duration as PbDuration;

use super::{XdsMode, XDS_CLUSTER};

/// How often Envoy polls the control plane in [`XdsMode::Rest`].
pub const REST_REFRESH_DELAY: Duration = Duration::from_millis(500);

/// The `ConfigSource` pointing dynamic resources at the control plane for `mode`.
///
/// ADS and delta ADS both use `ads: {}`; whether the aggregated stream is
/// incremental is decided by the bootstrap's `ads_config`.
pub fn config_source(mode: XdsMode) -> ConfigSource {
    let specifier = match mode {
        XdsMode::Ads | XdsMode::DeltaAds => {
            ConfigSourceSpecifier::Ads(AggregatedConfigSource::default())
        }
        XdsMode::Xds => ConfigSourceSpecifier::ApiConfigSource(grpc_api(ApiType::Grpc)),
        XdsMode::Delta => ConfigSourceSpecifier::ApiConfigSource(grpc_api(ApiType::DeltaGrpc)),
        XdsMode::Rest => ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
            api_type: ApiType::Rest as i32,
            transport_api_version: ApiVersion::V3 as i32,
            cluster_names: vec![XDS_CLUSTER.to_string()],
            refresh_delay: Some(pb_duration(REST_REFRESH_DELAY)),
            ..Default::default()
        }),
    };
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(specifier),
        ..Default::default()
    }
}

/// A gRPC `ApiConfigSource` talking to [`XDS_CLUSTER`].
fn grpc_api(api_type: ApiType) -> ApiConfigSource {
    ApiConfigSource {
        api_type: api_type as i32,
        transport_api_version: ApiVersion::V3 as i32,
        grpc_services: vec![GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: XDS_CLUSTER.to_string(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Converts a std duration to the protobuf one.
pub(crate) fn pb_duration(d: Duration) -> PbDuration {
    PbDuration {
        // Test durations are tiny; saturate rather than wrap if one is not.
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(mode: XdsMode) -> ApiConfigSource {
        match config_source(mode).config_source_specifier {
            Some(ConfigSourceSpecifier::ApiConfigSource(api)) => api,
            other => panic!("{mode:?}: expected api_config_source, got {other:?}"),
        }
    }

    fn grpc_cluster(api: &ApiConfigSource) -> &str {
        assert_eq!(api.grpc_services.len(), 1);
        match &api.grpc_services[0].target_specifier {
            Some(grpc_service::TargetSpecifier::EnvoyGrpc(g)) => &g.cluster_name,
            other => panic!("expected envoy_grpc, got {other:?}"),
        }
    }

    #[test]
    fn every_mode_uses_v3_resources() {
        for mode in [
            XdsMode::Ads,
            XdsMode::Xds,
            XdsMode::Rest,
            XdsMode::Delta,
            XdsMode::DeltaAds,
        ] {
            assert_eq!(
                config_source(mode).resource_api_version,
                ApiVersion::V3 as i32
            );
        }
    }

    #[test]
    fn ads_modes_are_aggregated() {
        for mode in [XdsMode::Ads, XdsMode::DeltaAds] {
            assert!(matches!(
                config_source(mode).config_source_specifier,
                Some(ConfigSourceSpecifier::Ads(_))
            ));
        }
    }

    #[test]
    fn grpc_modes_use_the_xds_cluster() {
        let xds = api(XdsMode::Xds);
        assert_eq!(xds.api_type, ApiType::Grpc as i32);
        assert_eq!(xds.transport_api_version, ApiVersion::V3 as i32);
        assert_eq!(grpc_cluster(&xds), XDS_CLUSTER);

        let delta = api(XdsMode::Delta);
        assert_eq!(delta.api_type, ApiType::DeltaGrpc as i32);
        assert_eq!(delta.transport_api_version, ApiVersion::V3 as i32);
        assert_eq!(grpc_cluster(&delta), XDS_CLUSTER);
    }

    #[test]
    fn rest_polls_the_xds_cluster() {
        let rest = api(XdsMode::Rest);
        assert_eq!(rest.api_type, ApiType::Rest as i32);
        assert_eq!(rest.transport_api_version, ApiVersion::V3 as i32);
        assert_eq!(rest.cluster_names, vec![XDS_CLUSTER.to_string()]);
        assert!(rest.grpc_services.is_empty());
        assert_eq!(
            rest.refresh_delay,
            Some(PbDuration {
                seconds: 0,
                nanos: 500_000_000
            })
        );
    }
}
