//! The smallest useful control plane: ADS and the per-type services on
//! 127.0.0.1:18000, serving node `test-id` one listener on :10000 that routes
//! to a cluster whose endpoint is 127.0.0.1:8080.
//!
//! ```text
//! cargo run --example quickstart               # serve until Ctrl-C
//! cargo run --example quickstart -- --for 10   # serve for 10 seconds
//! envoy -c examples/bootstrap-ads.yaml         # point your own Envoy at it
//! ```

use std::time::Duration;

use xds_control_plane::test_support::{
    make_cluster, make_endpoint, make_http_listener, make_route_config, XdsMode,
};
use xds_control_plane::{IdHash, Server, Snapshot, SnapshotCache};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run_for = parse_run_for()?;
    // 1. A cache keyed by node id; `true`: the proxy uses one ADS stream.
    let cache = SnapshotCache::new(true, IdHash);
    // 2. The server, answering from the cache, with no callbacks.
    let server = Server::new(cache.clone(), ());
    // 3. A snapshot for node `test-id`.
    let snapshot = Snapshot::builder("v1")
        .clusters([make_cluster(XdsMode::Ads, "backend")])
        .endpoints([make_endpoint("backend", "127.0.0.1", 8080)])
        .routes([make_route_config("local_route", "backend")])
        .listeners([make_http_listener(
            XdsMode::Ads,
            "listener_0",
            10000,
            "local_route",
        )])
        .build()?;
    snapshot.consistent()?;
    cache.set_snapshot("test-id", snapshot);

    // 4. Register the services on a tonic server.
    let addr = "127.0.0.1:18000".parse()?;
    println!("xDS server on {addr}; try: envoy -c examples/bootstrap-ads.yaml");
    let shutdown = async move {
        match run_for {
            Some(limit) => tokio::time::sleep(limit).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tonic::transport::Server::builder()
        .add_service(server.ads_service())
        .add_service(server.cds_service())
        .add_service(server.eds_service())
        .add_service(server.lds_service())
        .add_service(server.rds_service())
        .serve_with_shutdown(addr, shutdown)
        .await?;
    println!("stopped");
    Ok(())
}

fn parse_run_for() -> Result<Option<Duration>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(None),
        [flag, secs] if flag == "--for" => secs
            .parse::<f64>()
            .map(|s| Some(Duration::from_secs_f64(s)))
            .map_err(|e| format!("--for takes seconds: {e}")),
        _ => Err("usage: quickstart [--for SECONDS]".into()),
    }
}
