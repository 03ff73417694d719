//! Exercises the Envoy harness (feature `envoy-harness`) against a real
//! Envoy, through its public API only. Needs Envoy: the harness finds it or
//! installs it with `scripts/install-envoy.sh`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use xds_control_plane::test_support::envoy::*;
use xds_control_plane::test_support::XdsMode;

const WAIT: Duration = Duration::from_secs(20);

/// Whether a process with this pid exists and is not a zombie.
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn wait_pid_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) {
        assert!(Instant::now() < deadline, "Envoy pid {pid} still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn envoy_binary_is_found_and_runs() {
    let bin = envoy_binary().unwrap();
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{} --version failed", bin.display());
    assert!(
        text.contains("version:"),
        "unexpected --version output {text:?}"
    );
}

#[tokio::test]
async fn upstream_answers_with_its_name_and_counts() {
    let upstream = Upstream::start("backend-a").await.unwrap();
    assert_eq!(upstream.name(), "backend-a");
    for _ in 0..2 {
        let r = http_get(upstream.port(), "/hello", &[("x-test", "1")])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "backend-a");
        assert_eq!(r.header("x-upstream"), Some("backend-a"));
    }
    assert_eq!(upstream.request_count(), 2);

    // Keep-alive: two requests on one connection.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", upstream.port()))
        .await
        .unwrap();
    let req = "GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 2, "{raw}");
    assert_eq!(upstream.request_count(), 4);

    let port = upstream.port();
    drop(upstream);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        http_get(port, "/", &[]).await.is_err(),
        "still serving after drop"
    );
}

#[test]
fn free_port_is_bindable() {
    let port = free_port().unwrap();
    assert_ne!(port, 0);
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}

#[tokio::test]
async fn https_get_trusts_only_the_given_ca() {
    let certs = TestCerts::generate(&["localhost", "127.0.0.1"]).unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(certs.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(certs.private_key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut buf = vec![0u8; 4096];
            let _ = tls.read(&mut buf).await;
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure")
                .await;
            let _ = tls.shutdown().await;
        }
    });

    let r = https_get(port, "/", &[], &certs.ca_pem, "localhost")
        .await
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "secure"));

    let other = TestCerts::generate(&["localhost"]).unwrap();
    let err = https_get(port, "/", &[], &other.ca_pem, "localhost")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    let err = https_get(port, "/", &[], &certs.ca_pem, "elsewhere.test")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS handshake"), "{err}");
    server.abort();
}

/// Envoy pointed at a port where no control plane listens: the admin
/// interface answers, nothing dynamic is applied, the runtime has its
/// static layer, and dropping the handle kills the process.
#[tokio::test]
async fn envoy_starts_without_control_plane_and_dies_on_drop() {
    let nothing_there = free_port().unwrap();
    let bootstrap = Bootstrap::new(XdsMode::Ads, nothing_there)
        .node_id("harness-node")
        .rtds_layer("rtds-0")
        .static_runtime("harness.flag", "on")
        .initial_fetch_timeout(Duration::from_secs(1));
    let envoy = EnvoyProcess::start(&bootstrap, EnvoyOptions::default())
        .await
        .unwrap();
    let pid = envoy.pid();
    assert!(pid_alive(pid));

    let ready = admin_get(envoy.admin_port(), "/ready").await.unwrap();
    assert!(matches!(ready.status, 200 | 503), "{ready:?}");

    let dump = envoy.config_dump().await.unwrap();
    let configs = dump["configs"].as_array().unwrap();
    let boot = configs
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump")
        .unwrap();
    assert_eq!(boot["bootstrap"]["node"]["id"], "harness-node");

    let versions = envoy.applied_versions().await.unwrap();
    assert!(versions.is_empty(), "{versions}");

    let runtime = envoy.runtime().await.unwrap();
    assert_eq!(
        runtime["layers"],
        json!([STATIC_RUNTIME_LAYER, "rtds-0", ADMIN_RUNTIME_LAYER])
    );
    assert_eq!(runtime["entries"]["harness.flag"]["final_value"], "on");

    let stats = envoy.stats().await.unwrap();
    assert!(stats.contains_key("server.uptime"));
    assert!(!envoy.listener_ready(free_port().unwrap()).await.unwrap());

    // After initial_fetch_timeout (1 s) Envoy goes LIVE without xDS.
    envoy.wait_live(WAIT).await.unwrap();

    // Bounded waits fail with what they saw and the log.
    let err = envoy
        .wait_for_version("1", &[ResourceKind::Cluster], Duration::from_millis(300))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("timed out") && msg.contains("Envoy log tail"),
        "{msg}"
    );
    assert!(envoy.log_tail(5).lines().count() >= 1);

    drop(envoy);
    wait_pid_gone(pid).await;
}

/// Every mode's bootstrap is accepted by Envoy; `stop()` kills it.
#[tokio::test]
async fn every_mode_bootstrap_starts() {
    for mode in [
        XdsMode::Ads,
        XdsMode::Xds,
        XdsMode::Rest,
        XdsMode::Delta,
        XdsMode::DeltaAds,
    ] {
        let bootstrap = Bootstrap::new(mode, free_port().unwrap()).rtds_layer("rtds-0");
        let mut envoy = EnvoyProcess::start(&bootstrap, EnvoyOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let dump = envoy.config_dump().await.unwrap();
        let boot = &dump["configs"][0]["bootstrap"];
        assert_eq!(
            boot["static_resources"]["clusters"][0]["name"],
            "xds_cluster"
        );
        let pid = envoy.pid();
        envoy.stop().await.unwrap();
        assert!(!pid_alive(pid), "{mode:?}: pid {pid} alive after stop()");
    }
}

#[tokio::test]
async fn start_failure_reports_the_log() {
    let mut bootstrap = Bootstrap::new(XdsMode::Ads, 1).to_json();
    bootstrap["no_such_field"] = json!(true);
    let err = EnvoyProcess::start_json(&bootstrap, EnvoyOptions::default())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("failed to start"), "{msg}");
    assert!(msg.contains("no_such_field"), "log tail missing: {msg}");
}

// ---- Dynamic resources from files (no control plane needed) ----

fn path_source(path: &Path) -> Value {
    json!({ "resource_api_version": "V3", "path_config_source": { "path": path } })
}

/// Writes a DiscoveryResponse file atomically (Envoy watches for moves).
fn write_response(dir: &Path, file: &str, version: &str, resources: Vec<Value>) {
    let body = json!({ "version_info": version, "resources": resources });
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&body).unwrap()).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

fn hcm(dir: &Path) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "ingress",
            "rds": { "route_config_name": "routes", "config_source": path_source(&dir.join("rds.json")) },
            "http_filters": [{ "name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }],
        }
    })
}

fn eds_cluster(dir: &Path, name: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "name": name, "type": "EDS", "connect_timeout": "1s",
        "eds_cluster_config": { "eds_config": path_source(&dir.join(format!("eds-{name}.json"))) },
    })
}

fn load_assignment(cluster: &str, port: u16) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": cluster,
        "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
            "socket_address": { "address": "127.0.0.1", "port_value": port } } } }] }],
    })
}

fn route_config(cluster: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": "routes",
        "virtual_hosts": [{ "name": "all", "domains": ["*"],
            "routes": [{ "match": { "prefix": "/" }, "route": { "cluster": cluster } }] }],
    })
}

/// Envoy reading CDS/EDS/LDS/RDS/SDS/RTDS from files (so that no control
/// plane is needed) routes plain and TLS traffic to upstreams, and
/// `applied_versions`/`wait_for_version` follow a version change.
#[tokio::test]
async fn file_xds_versions_and_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let a = Upstream::start("a").await.unwrap();
    let b = Upstream::start("b").await.unwrap();
    let certs = TestCerts::generate(&["localhost"]).unwrap();
    let (http_port, https_port) = (free_port().unwrap(), free_port().unwrap());

    let write_all = |version: &str, backend: &str| {
        let secret = json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": "server_cert",
            "tls_certificate": {
                "certificate_chain": { "inline_string": certs.cert_chain_pem },
                "private_key": { "inline_string": certs.private_key_pem },
            },
        });
        let runtime = json!({
            "@type": "type.googleapis.com/envoy.service.runtime.v3.Runtime",
            "name": "rtds-0", "layer": { "served.by": backend },
        });
        let tls_listener = json!({
            "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
            "name": "https",
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": https_port } },
            "filter_chains": [{
                "filters": [hcm(dir)],
                "transport_socket": { "name": "envoy.transport_sockets.tls", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "common_tls_context": { "tls_certificate_sds_secret_configs": [{
                        "name": "server_cert", "sds_config": path_source(&dir.join("sds.json")) }] },
                }},
            }],
        });
        let listener = json!({
            "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
            "name": "http",
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": http_port } },
            "filter_chains": [{ "filters": [hcm(dir)] }],
        });
        // A file-based EDS subscription takes exactly one resource.
        write_response(
            dir,
            "eds-a.json",
            version,
            vec![load_assignment("a", a.port())],
        );
        write_response(
            dir,
            "eds-b.json",
            version,
            vec![load_assignment("b", b.port())],
        );
        let clusters = vec![eds_cluster(dir, "a"), eds_cluster(dir, "b")];
        write_response(dir, "cds.json", version, clusters);
        write_response(dir, "rds.json", version, vec![route_config(backend)]);
        write_response(dir, "sds.json", version, vec![secret]);
        write_response(dir, "rtds.json", version, vec![runtime]);
        write_response(dir, "lds.json", version, vec![listener, tls_listener]);
    };
    write_all("v1", "a");

    let mut bootstrap = Bootstrap::new(XdsMode::Ads, free_port().unwrap())
        .rtds_layer("rtds-0")
        .to_json();
    bootstrap["dynamic_resources"] = json!({
        "cds_config": path_source(&dir.join("cds.json")),
        "lds_config": path_source(&dir.join("lds.json")),
    });
    bootstrap["layered_runtime"]["layers"][1]["rtds_layer"]["rtds_config"] =
        path_source(&dir.join("rtds.json"));
    let envoy = EnvoyProcess::start_json(&bootstrap, EnvoyOptions::default())
        .await
        .unwrap();

    let all = [
        ResourceKind::Cluster,
        ResourceKind::Endpoint,
        ResourceKind::Listener,
        ResourceKind::Route,
        ResourceKind::Secret,
        ResourceKind::Runtime,
    ];
    let seen = envoy.wait_for_version("v1", &all, WAIT).await.unwrap();
    assert!(seen.accepted(ResourceKind::ScopedRoute).is_empty());
    assert!(seen.resources(ResourceKind::Cluster).contains("v1"));
    envoy.wait_for_listener(http_port, WAIT).await.unwrap();
    envoy.wait_for_listener(https_port, WAIT).await.unwrap();
    let r = http_get(http_port, "/", &[]).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "a"), "{r:?}");
    let r = https_get(https_port, "/", &[], &certs.ca_pem, "localhost")
        .await
        .unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "a"), "{r:?}");
    let runtime = envoy.runtime().await.unwrap();
    assert_eq!(runtime["entries"]["served.by"]["final_value"], "a");

    write_all("v2", "b");
    let seen = envoy.wait_for_version("v2", &all, WAIT).await.unwrap();
    // Envoy keeps the old per-resource version of resources that came back
    // unchanged; only the route configuration changed.
    assert_eq!(
        seen.resources(ResourceKind::Cluster),
        ["v1".to_owned()].into()
    );
    assert_eq!(
        seen.resources(ResourceKind::Route),
        ["v2".to_owned()].into()
    );
    let r = http_get(http_port, "/", &[]).await.unwrap();
    assert_eq!(r.text(), "b");
    assert!(b.request_count() >= 1);
    let runtime = envoy.runtime().await.unwrap();
    assert_eq!(runtime["entries"]["served.by"]["final_value"], "b");
}
