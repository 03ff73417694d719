//! SDS resources and downstream TLS referencing them.

use envoy_types::pb::envoy::config::core::v3::{
    data_source::Specifier, transport_socket, DataSource, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    Secret, TlsCertificate,
};
use envoy_types::util::pack_any;

use super::{config_source, XdsMode};

/// A TLS certificate secret from inline PEM.
pub fn make_tls_secret(name: &str, cert_chain_pem: &str, private_key_pem: &str) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(cert_chain_pem)),
            private_key: Some(inline(private_key_pem)),
            ..Default::default()
        })),
    }
}

/// A validation context secret trusting the CA certificates in `ca_pem`.
pub fn make_validation_secret(name: &str, ca_pem: &str) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(ca_pem)),
                ..Default::default()
            },
        )),
    }
}

/// Terminates TLS on every filter chain of `listener` (the default chain
/// included), with the certificate fetched by SDS as `secret_name` from
/// `config_source(mode)`.
pub fn add_downstream_tls(listener: &mut Listener, mode: XdsMode, secret_name: &str) {
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: secret_name.to_string(),
                sds_config: Some(config_source(mode)),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let socket = TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(context))),
    };
    let chains = listener
        .filter_chains
        .iter_mut()
        .chain(listener.default_filter_chain.as_mut());
    for chain in chains {
        chain.transport_socket = Some(socket.clone());
    }
}

fn inline(pem: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineString(pem.to_string())),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_support::{make_http_listener, make_http_listener_default_chain};
    use envoy_types::pb::envoy::config::listener::v3::FilterChain;
    use prost::Message;

    /// The SDS secret names a chain's downstream TLS context asks for.
    pub(crate) fn sds_names(chain: &FilterChain) -> Vec<(String, XdsMode)> {
        let Some(ts) = &chain.transport_socket else {
            return Vec::new();
        };
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
            panic!("no typed config");
        };
        assert_eq!(
            any.type_url,
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
        );
        let ctx = DownstreamTlsContext::decode(any.value.as_slice()).expect("decodes");
        let common = ctx.common_tls_context.expect("common context");
        common
            .tls_certificate_sds_secret_configs
            .into_iter()
            .map(|c| {
                let mode = [XdsMode::Ads, XdsMode::Xds, XdsMode::Rest, XdsMode::Delta]
                    .into_iter()
                    .find(|m| c.sds_config == Some(config_source(*m)))
                    .expect("a known config source");
                (c.name, mode)
            })
            .collect()
    }

    #[test]
    fn tls_secret_holds_inline_pem() {
        let s = make_tls_secret("cert", "CHAIN", "KEY");
        let Some(secret::Type::TlsCertificate(c)) = s.r#type else {
            panic!("not a certificate");
        };
        assert_eq!(c.certificate_chain, Some(inline("CHAIN")));
        assert_eq!(c.private_key, Some(inline("KEY")));
    }

    #[test]
    fn validation_secret_holds_the_ca() {
        let s = make_validation_secret("ca", "CA");
        let Some(secret::Type::ValidationContext(v)) = s.r#type else {
            panic!("not a validation context");
        };
        assert_eq!(v.trusted_ca, Some(inline("CA")));
    }

    #[test]
    fn every_chain_gets_sds_tls() {
        let mut l = make_http_listener(XdsMode::Xds, "l", 1, "r");
        l.filter_chains.push(l.filter_chains[0].clone());
        add_downstream_tls(&mut l, XdsMode::Xds, "cert");
        for chain in &l.filter_chains {
            assert_eq!(sds_names(chain), vec![("cert".to_string(), XdsMode::Xds)]);
        }

        let mut d = make_http_listener_default_chain(XdsMode::Rest, "d", 2, "r");
        add_downstream_tls(&mut d, XdsMode::Rest, "cert");
        let chain = d.default_filter_chain.as_ref().expect("default chain");
        assert_eq!(sds_names(chain), vec![("cert".to_string(), XdsMode::Rest)]);
    }
}
