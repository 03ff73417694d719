//! TTLs against a real Envoy: a runtime layer with a TTL is kept while the
//! control plane sends heartbeats and expires once they stop, over a
//! state-of-the-world and over a delta ADS stream, with no NACK.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Recorder, Served};
use xds_control_plane::cache::Snapshot;
use xds_control_plane::resource::ResourceType;
use xds_control_plane::test_support::envoy::{
    Bootstrap, EnvoyOptions, EnvoyProcess, DEFAULT_NODE_ID,
};
use xds_control_plane::test_support::{make_runtime, XdsMode};
use xds_control_plane::{IdHash, Server, SnapshotCache};

const LAYER: &str = "ttl-layer";
const KEY: &str = "ttl.key";
const TTL: Duration = Duration::from_secs(2);
const HEARTBEAT: Duration = Duration::from_millis(400);

/// The runtime value Envoy reports for [`KEY`], if any.
async fn value(envoy: &EnvoyProcess) -> Option<String> {
    let runtime = envoy.runtime().await.expect("admin /runtime");
    runtime["entries"][KEY]["final_value"]
        .as_str()
        .map(str::to_owned)
}

/// Polls until `KEY` reads `want` (None: absent), failing after `limit`.
async fn wait_for(envoy: &EnvoyProcess, want: Option<&str>, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got = value(envoy).await;
        if got.as_deref() == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{KEY} is {got:?}, want {want:?} within {limit:?}\n{}",
            envoy.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ttl_is_kept_by_heartbeats_and_expires_without(mode: XdsMode) {
    let cache = SnapshotCache::new(true, IdHash);
    let recorder = Arc::new(Recorder::default());
    let served = Served::start(&Server::new(cache.clone(), Arc::clone(&recorder))).await;
    let snapshot = Snapshot::builder("v1")
        .runtimes([make_runtime(LAYER, &[(KEY, "alive")])])
        .ttl(ResourceType::Runtime, LAYER, TTL)
        .build()
        .unwrap();
    cache.set_snapshot(DEFAULT_NODE_ID, snapshot);
    let heartbeats = cache.spawn_heartbeats(HEARTBEAT);

    let bootstrap = Bootstrap::new(mode, served.addr.port()).rtds_layer(LAYER);
    let envoy = EnvoyProcess::start(&bootstrap, EnvoyOptions::default())
        .await
        .expect("start Envoy");
    wait_for(&envoy, Some("alive"), Duration::from_secs(10)).await;

    // Three TTLs with heartbeats: still there.
    let kept_until = Instant::now() + 3 * TTL;
    while Instant::now() < kept_until {
        assert_eq!(
            value(&envoy).await.as_deref(),
            Some("alive"),
            "{mode:?}: expired despite heartbeats"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        recorder.nacks.lock().is_empty(),
        "{mode:?}: {:?}",
        recorder.nacks.lock()
    );

    // No more heartbeats: it expires about one TTL later.
    drop(heartbeats);
    let gone_after = wait_for(&envoy, None, 4 * TTL).await;
    eprintln!("{mode:?}: expired {gone_after:?} after the heartbeats stopped");
    assert!(
        gone_after >= TTL / 2,
        "{mode:?}: gone after only {gone_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sotw_ttl_is_kept_by_heartbeats_and_expires_without() {
    ttl_is_kept_by_heartbeats_and_expires_without(XdsMode::Ads).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delta_ttl_is_kept_by_heartbeats_and_expires_without() {
    ttl_is_kept_by_heartbeats_and_expires_without(XdsMode::DeltaAds).await;
}
