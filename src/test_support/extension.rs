//! ECDS resources: an HTTP filter config whose effect shows in responses.

use envoy_types::pb::envoy::config::common::mutation_rules::v3::{
    header_mutation::Action, HeaderMutation as HeaderMutationRule,
};
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, ExtensionConfigSource, HeaderValue, HeaderValueOption,
    TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3::{
    HeaderMutation, Mutations,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::util::pack_any;

use super::listener::{hcm_chain, http_connection_manager, listener, rds};
use super::{config_source, XdsMode};

/// Type URL of the filter config delivered by ECDS (the header mutation filter).
pub const ECDS_FILTER_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation";

/// An ECDS resource named `name`: a header mutation HTTP filter setting
/// response header `header_name: header_value` (replacing any upstream value).
pub fn make_extension_config(
    name: &str,
    header_name: &str,
    header_value: &str,
) -> TypedExtensionConfig {
    let set_header = HeaderMutationRule {
        action: Some(Action::Append(HeaderValueOption {
            header: Some(HeaderValue {
                key: header_name.to_string(),
                value: header_value.to_string(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        })),
    };
    let filter = HeaderMutation {
        mutations: Some(Mutations {
            response_mutations: vec![set_header],
            ..Default::default()
        }),
        ..Default::default()
    };
    TypedExtensionConfig {
        name: name.to_string(),
        typed_config: Some(pack_any(filter)),
    }
}

/// Like [`make_http_listener`](super::make_http_listener), with an HTTP
/// filter before the router whose config is fetched by ECDS as `ecds_name`
/// from `config_source(mode)`.
///
/// There is no default config, so Envoy keeps the listener warming until the
/// extension config arrives; a served request therefore proves it applied.
pub fn make_http_listener_with_ecds(
    mode: XdsMode,
    name: &str,
    port: u16,
    route_name: &str,
    ecds_name: &str,
) -> Listener {
    // ECDS subscribes to the filter's name, so it must equal the resource name.
    let discovered = HttpFilter {
        name: ecds_name.to_string(),
        config_type: Some(http_filter::ConfigType::ConfigDiscovery(
            ExtensionConfigSource {
                config_source: Some(config_source(mode)),
                type_urls: vec![ECDS_FILTER_TYPE_URL.to_string()],
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let hcm = http_connection_manager(rds(mode, route_name), vec![discovered]);
    listener(name, port, vec![hcm_chain(hcm)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::listener::tests::decode_hcm;
    use prost::Message;

    #[test]
    fn extension_config_sets_a_response_header() {
        let ext = make_extension_config("ecds-0", "x-ecds", "v7");
        assert_eq!(ext.name, "ecds-0");
        let any = ext.typed_config.expect("typed config");
        assert_eq!(any.type_url, ECDS_FILTER_TYPE_URL);
        let hm = HeaderMutation::decode(any.value.as_slice()).expect("decodes");
        let m = hm.mutations.expect("mutations");
        assert!(m.request_mutations.is_empty());
        let Some(Action::Append(opt)) = &m.response_mutations[0].action else {
            panic!("not an append");
        };
        let h = opt.header.as_ref().expect("header");
        assert_eq!((h.key.as_str(), h.value.as_str()), ("x-ecds", "v7"));
    }

    #[test]
    fn ecds_filter_precedes_the_router() {
        let l = make_http_listener_with_ecds(XdsMode::Ads, "l0", 10000, "r0", "ecds-0");
        let hcm = decode_hcm(&l.filter_chains[0]);
        assert_eq!(hcm.http_filters.len(), 2);
        let f = &hcm.http_filters[0];
        assert_eq!(f.name, "ecds-0");
        let Some(http_filter::ConfigType::ConfigDiscovery(src)) = &f.config_type else {
            panic!("not config discovery");
        };
        assert_eq!(src.config_source, Some(config_source(XdsMode::Ads)));
        assert_eq!(src.type_urls, vec![ECDS_FILTER_TYPE_URL.to_string()]);
        assert_eq!(hcm.http_filters[1].name, "envoy.filters.http.router");
    }
}
