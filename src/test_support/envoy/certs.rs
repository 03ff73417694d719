//! Throw-away TLS certificates for listeners whose certificates come from
//! SDS.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::error::Result;

/// A fresh CA and a server certificate it signed, all PEM.
///
/// Put `cert_chain_pem`/`private_key_pem` in an SDS `tls_certificate`
/// secret; give `ca_pem` to [`https_get`](super::https_get) (or to Envoy as
/// a validation context).
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The CA certificate.
    pub ca_pem: String,
    /// The server certificate (leaf only; the CA signed it directly).
    pub cert_chain_pem: String,
    /// The server's private key (PKCS#8, ECDSA P-256).
    pub private_key_pem: String,
    /// A client certificate signed by the same CA, for mutual TLS.
    pub client_cert_chain_pem: String,
    /// The client certificate's private key.
    pub client_private_key_pem: String,
}

impl TestCerts {
    /// Generates a CA and a server certificate valid for `hostnames` (DNS
    /// names, or IP addresses such as `127.0.0.1`), the first also being the
    /// subject's common name.
    pub fn generate(hostnames: &[&str]) -> Result<TestCerts> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "xds-control-plane test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let names: Vec<String> = hostnames.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        if let Some(first) = hostnames.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;

        let mut client_params = CertificateParams::new(vec!["xds-client".to_owned()])?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "xds-client");
        client_params.use_authority_key_identifier_extension = true;
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate()?;
        let client_cert = client_params.signed_by(&client_key, &issuer)?;

        Ok(TestCerts {
            ca_pem: ca_cert.pem(),
            cert_chain_pem: cert.pem(),
            private_key_pem: key.serialize_pem(),
            client_cert_chain_pem: client_cert.pem(),
            client_private_key_pem: client_key.serialize_pem(),
        })
    }
}
