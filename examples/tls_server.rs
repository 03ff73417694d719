//! xDS over mutual TLS: the server proves itself with a certificate and only
//! serves clients presenting one signed by a CA it trusts.
//!
//! ```text
//! cargo run --example tls_server -- --cert server.pem --key server.key --client-ca ca.pem
//! cargo run --example tls_server -- --generate target/xds-tls --for 10
//! ```
//!
//! `--generate DIR` makes a throwaway CA, server and client certificate in
//! DIR (for trying it out); point a client at 127.0.0.1:18443 with
//! `DIR/ca.pem` as its root and `DIR/client.pem` + `DIR/client.key` as its
//! identity. In Envoy, that is a `transport_socket` with an
//! `UpstreamTlsContext` on the `xds_cluster`.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use xds_control_plane::test_support::envoy::TestCerts;
use xds_control_plane::test_support::{make_cluster, make_endpoint, XdsMode};
use xds_control_plane::{IdHash, Server, Snapshot, SnapshotCache};

struct Args {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    run_for: Option<Duration>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            std::fs::read(&args.cert)?,
            std::fs::read(&args.key)?,
        ))
        .client_ca_root(Certificate::from_pem(std::fs::read(&args.client_ca)?));

    let cache = SnapshotCache::new(true, IdHash);
    let server = Server::new(cache.clone(), ());
    let snapshot = Snapshot::builder("v1")
        .clusters([make_cluster(XdsMode::Ads, "backend")])
        .endpoints([make_endpoint("backend", "127.0.0.1", 8080)])
        .build()?;
    cache.set_snapshot("test-id", snapshot);

    let addr = "127.0.0.1:18443".parse()?;
    println!("xDS over mutual TLS on {addr}");
    let run_for = args.run_for;
    tonic::transport::Server::builder()
        .tls_config(tls)?
        .add_service(server.ads_service())
        .serve_with_shutdown(addr, async move {
            match run_for {
                Some(limit) => tokio::time::sleep(limit).await,
                None => drop(tokio::signal::ctrl_c().await),
            }
        })
        .await?;
    Ok(())
}

fn parse_args() -> Result<Args, Box<dyn std::error::Error>> {
    let usage =
        "usage: tls_server (--cert F --key F --client-ca F | --generate DIR) [--for SECONDS]";
    let (mut cert, mut key, mut client_ca, mut run_for) = (None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(usage)?;
        match flag.as_str() {
            "--cert" => cert = Some(PathBuf::from(value)),
            "--key" => key = Some(PathBuf::from(value)),
            "--client-ca" => client_ca = Some(PathBuf::from(value)),
            "--for" => run_for = Some(Duration::from_secs_f64(value.parse()?)),
            "--generate" => {
                let dir = PathBuf::from(value);
                generate(&dir)?;
                cert = Some(dir.join("server.pem"));
                key = Some(dir.join("server.key"));
                client_ca = Some(dir.join("ca.pem"));
            }
            _ => return Err(usage.into()),
        }
    }
    match (cert, key, client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Ok(Args {
            cert,
            key,
            client_ca,
            run_for,
        }),
        _ => Err(usage.into()),
    }
}

/// Writes a throwaway CA, server and client certificate into `dir`.
fn generate(dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let certs = TestCerts::generate(&["localhost", "127.0.0.1"])?;
    std::fs::create_dir_all(dir)?;
    for (file, pem) in [
        ("ca.pem", &certs.ca_pem),
        ("server.pem", &certs.cert_chain_pem),
        ("server.key", &certs.private_key_pem),
        ("client.pem", &certs.client_cert_chain_pem),
        ("client.key", &certs.client_private_key_pem),
    ] {
        std::fs::write(dir.join(file), pem)?;
    }
    println!(
        "wrote ca.pem, server.pem/.key, client.pem/.key to {}",
        dir.display()
    );
    Ok(())
}
