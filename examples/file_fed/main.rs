//! A control plane fed from a file: it serves the services a JSON file
//! describes to every Envoy that connects (over ADS), watches the file, and
//! serves each valid new version of it. An invalid file is reported, with
//! the line and column of the mistake, and the last good configuration
//! stays in place until the file is fixed.
//!
//! ```text
//! cp examples/file_fed.json /tmp/services.json
//! cargo run --example file_fed -- --file /tmp/services.json    # xDS on 127.0.0.1:18000
//! envoy -c examples/bootstrap-ads.yaml                          # any node id is served
//! python3 -m http.server 8080                                   # an upstream for "web"
//! curl http://127.0.0.1:10000/        # then edit /tmp/services.json and curl again
//! ```
//!
//! Options: `--file PATH` (default `examples/file_fed.json`), `--port PORT`
//! (xDS port, default 18000), `--poll-ms MS` (default 500), `--duration SECS`
//! (default: until Ctrl-C), `--help`.
//!
//! # The file
//!
//! ```json
//! {
//!   "services": [
//!     { "name": "web", "port": 10000, "prefix": "/", "endpoints": ["127.0.0.1:8080"] },
//!     { "name": "api", "port": 10000, "prefix": "/api/",
//!       "endpoints": ["127.0.0.1:8081", "127.0.0.1:8082"] }
//!   ]
//! }
//! ```
//!
//! `services`: at least one (an empty list is refused rather than taken as
//! "remove every listener"). Each service has:
//!
//! - `name`: 1 to 64 characters out of `A-Z a-z 0-9 . _ -`, unique. It names
//!   the service's cluster.
//! - `port`: the listener (on 127.0.0.1) that routes to it. Services with the
//!   same port share one listener.
//! - `prefix` (default `/`): the path prefix routed to it, starting with `/`.
//!   On a shared listener the longest matching prefix wins; as in Envoy,
//!   `/api` also matches `/apiary`, so write `/api/` to mean "under /api".
//!   Two services may not route the same prefix on the same port.
//! - `endpoints`: `IP:port` strings (`[::1]:8080` for IPv6), balanced round
//!   robin. Envoy takes IP addresses only, not host names. An empty list is
//!   allowed: requests then get `503`.
//!
//! Unknown fields are errors, so that a misspelt field is not silently
//! ignored.
//!
//! # Versions and reloading
//!
//! The version is a digest of the validated services (their order in the
//! file and its spacing do not count): a restarted control plane, or a
//! second replica reading the same file, serves the same version, and
//! Envoy is not sent a configuration it already has. The file is read every
//! `--poll-ms`; rewrite it atomically (write a temporary file, rename it
//! over) so that a poll never sees it half-written. Every node gets the
//! same snapshot; to serve node groups differently, key the cache with
//! `ClusterHash` and feed one file per group (see the `node_groups` example).

#[path = "../support/ads_server.rs"]
mod ads_server;
mod config;
#[path = "../support/flags.rs"]
mod flags;
mod watch;

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use watch::{every_node, Event, FileFeed};
use xds_control_plane::{Server, SnapshotCache};

const USAGE: &str = "\
Usage: cargo run --example file_fed -- [OPTIONS]

Serves (over ADS, to every node) the services a JSON file describes, and
reloads the file when it changes; an invalid file keeps the last good one.

Options:
  --file PATH     the services file (default: examples/file_fed.json)
  --port PORT     xDS port on 127.0.0.1 (default: 18000)
  --poll-ms MS    how often to read the file (default: 500)
  --duration SECS stop after SECS seconds (default: run until Ctrl-C)
  -h, --help      print this help
";

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("file_fed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let mut flags = flags::Flags::parse(USAGE, &[])?;
    let file: String = flags.get("file", "examples/file_fed.json".to_string())?;
    let port: u16 = flags.get("port", 18000)?;
    let poll_ms: u64 = flags.get("poll-ms", 500)?;
    let duration: Option<f64> = flags.opt("duration")?;
    flags.finish()?;
    if poll_ms == 0 {
        return Err("--poll-ms must be at least 1".into());
    }

    let cache = SnapshotCache::new(true, every_node);
    let mut feed = FileFeed::new(&file, cache.clone());
    // Refuse to start on a bad file: there is nothing good to serve, and an
    // operator starting a control plane wants to know at once.
    match feed.poll().await {
        Some(event @ Event::Applied { .. }) => println!("{event}"),
        Some(event) => return Err(event.to_string().into()),
        None => return Err(format!("{file}: nothing read").into()),
    }

    let server = Server::new(cache.clone(), ());
    let (xds_addr, _stop_server) = ads_server::start_ads(&server, port).await?;
    println!("xDS server (ADS) on {xds_addr}; watching {file} every {poll_ms} ms");

    let watching = feed.run(Duration::from_millis(poll_ms), |event| match event {
        Event::Rejected { .. } => eprintln!("{event}"),
        _ => println!("{event}"),
    });
    let stop = async {
        match duration {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::select! {
        _ = watching => {}
        _ = stop => println!("stopping"),
    }
    Ok(())
}
