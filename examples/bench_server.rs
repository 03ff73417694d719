//! Benchmark server for the reference workload "W1" (the same shape as the
//! benchmark server built on go-control-plane, so results compare).
//!
//! Serves ADS (and CDS/EDS/LDS/RDS) on 127.0.0.1:`--port`. Sets the W1
//! snapshot of update 0 for nodes `node-0` … `node-<N-1>` before serving,
//! then a new one every `--interval` seconds, `--updates` times (0: until
//! Ctrl-C), then serves `--linger` more seconds and stops.
//!
//! Every type's version is `v<seq>-<unix nanoseconds>`, the time taken just
//! before the `set_snapshot` calls of that update (after the resources were
//! encoded), so a client on this machine measures the latency of an update
//! as its receive time minus that timestamp. Only indexing the already
//! encoded resources under the new version (`index_ms`) happens after it.
//!
//! ```text
//! cargo run --release --example bench_server -- --clusters 1000 --nodes 1000 --updates 5
//! ```
//! Drive it with `examples/load_client.rs`, or all at once with
//! `scripts/bench-w1.sh`.

#[path = "support/flags.rs"]
mod flags;
#[path = "support/w1.rs"]
mod w1;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use xds_control_plane::server::{Callbacks, Nack, StreamId};
use xds_control_plane::{IdHash, Server, SnapshotCache};

// glibc's malloc spends a quarter of the server's time fragmenting and
// consolidating under thousands of streams; a server embedding this crate
// should pick an allocator built for that, as this one does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: bench_server [--port 18000] [--clusters 1000] [--endpoints 10] [--nodes 1]
                    [--interval 2] [--updates 0] [--linger 5] [--ads | --no-ads]
                    [--pid-file PATH] [--wait-streams 0] [--wait-timeout 120]

  --updates K        updates after the initial snapshot; 0 = until Ctrl-C
  --linger S         seconds to keep serving after the last update
  --ads / --no-ads   SnapshotCache::new(ads, IdHash); ADS is the default
  --wait-streams S   start the update clock only once S streams are open
                     (at most --wait-timeout seconds), so updates do not
                     overlap the clients' cold start";

struct Args {
    port: u16,
    clusters: usize,
    endpoints: usize,
    nodes: usize,
    interval: Duration,
    updates: u64,
    linger: Duration,
    ads: bool,
    pid_file: Option<PathBuf>,
    wait_streams: i64,
    wait_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut f = flags::Flags::parse(USAGE, &["ads", "no-ads"])?;
    let secs = |v: f64, name: &str| {
        Duration::try_from_secs_f64(v).map_err(|e| format!("--{name} {v}: {e}"))
    };
    let ads = f.flag("ads");
    let no_ads = f.flag("no-ads");
    if ads && no_ads {
        return Err("--ads and --no-ads are exclusive".into());
    }
    let args = Args {
        port: f.get("port", 18000)?,
        clusters: f.get("clusters", 1000)?,
        endpoints: f.get("endpoints", 10)?,
        nodes: f.get("nodes", 1)?,
        interval: secs(f.get("interval", 2.0)?, "interval")?,
        updates: f.get("updates", 0)?,
        linger: secs(f.get("linger", 5.0)?, "linger")?,
        ads: !no_ads,
        pid_file: f.opt("pid-file")?,
        wait_streams: f.get("wait-streams", 0)?,
        wait_timeout: secs(f.get("wait-timeout", 120.0)?, "wait-timeout")?,
    };
    f.finish()?;
    if args.interval.is_zero() {
        return Err("--interval must be positive".into());
    }
    Ok(args)
}

/// Counts streams and NACKs.
#[derive(Default)]
struct Counters {
    open: AtomicI64,
    opened: AtomicU64,
    nacks: AtomicU64,
}

impl Callbacks for Counters {
    fn on_stream_open(&self, _stream: StreamId, _type_url: &str) -> Result<(), tonic::Status> {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn on_stream_closed(
        &self,
        _stream: StreamId,
        _node: Option<&xds_control_plane::envoy_types::pb::envoy::config::core::v3::Node>,
    ) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    fn on_stream_nack(&self, _stream: StreamId, _nack: &Nack<'_>) {
        self.nacks.fetch_add(1, Ordering::Relaxed);
    }

    // Delta streams count too, so `--wait-streams` also waits for
    // `load_client --delta`.
    fn on_delta_stream_open(&self, stream: StreamId, type_url: &str) -> Result<(), tonic::Status> {
        self.on_stream_open(stream, type_url)
    }

    fn on_delta_stream_closed(
        &self,
        stream: StreamId,
        node: Option<&xds_control_plane::envoy_types::pb::envoy::config::core::v3::Node>,
    ) {
        self.on_stream_closed(stream, node)
    }
}

/// Builds update `seq` and sets it for every node. Runs on a blocking thread.
fn update(
    cache: &SnapshotCache,
    node_ids: &[String],
    seq: u64,
    clusters: usize,
    endpoints: usize,
) -> Result<UpdateTimes, String> {
    let started = Instant::now();
    let encoded = w1::Encoded::new(seq, clusters, endpoints);
    let build = started.elapsed();
    // The timestamp clients measure from: after encoding, before setting.
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_nanos();
    let version = format!("v{seq}-{stamp}");
    let started = Instant::now();
    let snapshot = encoded.snapshot(&version).map_err(|e| e.to_string())?;
    let index = started.elapsed();
    let started = Instant::now();
    for node in node_ids {
        cache.set_snapshot(node, snapshot.clone());
    }
    let set = started.elapsed();
    Ok(UpdateTimes {
        version,
        bytes: encoded.byte_len(),
        build,
        index,
        set,
    })
}

struct UpdateTimes {
    version: String,
    bytes: usize,
    build: Duration,
    index: Duration,
    set: Duration,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn run_update(
    cache: &SnapshotCache,
    node_ids: &Arc<Vec<String>>,
    counters: &Counters,
    args: &Args,
    seq: u64,
) -> Result<(), String> {
    let (cache, nodes) = (cache.clone(), Arc::clone(node_ids));
    let (clusters, endpoints) = (args.clusters, args.endpoints);
    let times =
        tokio::task::spawn_blocking(move || update(&cache, &nodes, seq, clusters, endpoints))
            .await
            .map_err(|e| e.to_string())??;
    println!(
        "update seq={seq} version={} build_ms={:.2} index_ms={:.2} set_ms={:.2} nodes={} open_streams={} bytes={} rss_mib={:.1}",
        times.version,
        ms(times.build),
        ms(times.index),
        ms(times.set),
        node_ids.len(),
        counters.open.load(Ordering::Relaxed),
        times.bytes,
        rss_mib(),
    );
    Ok(())
}

/// Sets updates 1..=K on schedule, then lingers.
async fn updates(
    cache: SnapshotCache,
    node_ids: Arc<Vec<String>>,
    counters: Arc<Counters>,
    args: &Args,
) -> Result<(), String> {
    if args.wait_streams > 0 {
        let deadline = Instant::now() + args.wait_timeout;
        while counters.open.load(Ordering::Relaxed) < args.wait_streams {
            if Instant::now() >= deadline {
                println!(
                    "waited {:?} for {} streams, {} open; updating anyway",
                    args.wait_timeout,
                    args.wait_streams,
                    counters.open.load(Ordering::Relaxed)
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "streams open: {}; first update in {:?}",
            counters.open.load(Ordering::Relaxed),
            args.interval
        );
    }
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0;
    while args.updates == 0 || seq < args.updates {
        ticks.tick().await;
        seq += 1;
        run_update(&cache, &node_ids, &counters, args, seq).await?;
    }
    println!("last update set; serving {:?} more", args.linger);
    tokio::time::sleep(args.linger).await;
    Ok(())
}

async fn terminated() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "interrupt";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupt",
        _ = term.recv() => "terminate",
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(path) = &args.pid_file {
        std::fs::write(path, format!("{}\n", std::process::id()))?;
    }
    let cache = SnapshotCache::new(args.ads, IdHash);
    let counters = Arc::new(Counters::default());
    let server = Server::new(cache.clone(), Arc::clone(&counters));
    let node_ids: Arc<Vec<String>> =
        Arc::new((0..args.nodes).map(|i| format!("node-{i}")).collect());

    run_update(&cache, &node_ids, &counters, &args, 0).await?;

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "serving on {addr}: clusters={} endpoints={} nodes={} interval={:?} updates={} ads={} pid={}",
        args.clusters,
        args.endpoints,
        args.nodes,
        args.interval,
        args.updates,
        args.ads,
        std::process::id()
    );
    // TCP_NODELAY as Go's net package (so go-control-plane) sets it: with
    // Nagle, a response written in more than one piece can wait for the
    // client's delayed ACK (40 ms on Linux).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let stop = CancellationToken::new();
    let serving = {
        let stop = stop.clone();
        let router = tonic::transport::Server::builder()
            .add_service(server.ads_service())
            .add_service(server.cds_service())
            .add_service(server.eds_service())
            .add_service(server.lds_service())
            .add_service(server.rds_service());
        tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, stop.cancelled())
                .await
        })
    };

    let outcome = tokio::select! {
        done = updates(cache.clone(), Arc::clone(&node_ids), Arc::clone(&counters), &args) => match done {
            Ok(()) => "done".to_string(),
            Err(e) => format!("update failed: {e}"),
        },
        signal = terminated() => signal.to_string(),
    };
    println!(
        "stopping ({outcome}): open_streams={} streams_opened={} nacks={}",
        counters.open.load(Ordering::Relaxed),
        counters.opened.load(Ordering::Relaxed),
        counters.nacks.load(Ordering::Relaxed)
    );
    server.shutdown();
    stop.cancel();
    match tokio::time::timeout(Duration::from_secs(5), serving).await {
        Ok(Ok(Ok(()))) => println!("stopped"),
        Ok(Ok(Err(e))) => println!("server error: {e}"),
        Ok(Err(e)) => println!("server task failed: {e}"),
        Err(_) => println!("connections still open after 5s; exiting anyway"),
    }
    if let Some(path) = &args.pid_file {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
