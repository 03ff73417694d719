//! The `node_groups` and `file_fed` examples against a real Envoy. Their
//! pieces are included here with `#[path]`, so these tests run the code the
//! examples run (their unit tests come along and run here too). Needs Envoy:
//! the harness finds it or installs it with `scripts/install-envoy.sh`.

#[path = "../examples/support/ads_server.rs"]
mod ads_server;
#[allow(dead_code)]
#[path = "../examples/file_fed/config.rs"]
mod config;
#[allow(dead_code)]
#[path = "../examples/node_groups/groups.rs"]
mod groups;
#[allow(dead_code)]
#[path = "../examples/file_fed/watch.rs"]
mod watch;

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use xds_control_plane::test_support::envoy::{
    free_port, http_get, Bootstrap, EnvoyOptions, EnvoyProcess, ResourceKind, Upstream,
};
use xds_control_plane::test_support::XdsMode;
use xds_control_plane::{Server, SnapshotCache};

use config::Config;
use groups::{group_snapshot, GroupPorts};
use watch::{every_node, Event, FileFeed};

/// How long Envoy may take to apply a version.
const APPLY: Duration = Duration::from_secs(20);

const ALL_KINDS: [ResourceKind; 4] = [
    ResourceKind::Cluster,
    ResourceKind::Endpoint,
    ResourceKind::Listener,
    ResourceKind::Route,
];

/// Starts an Envoy with node `id` in `cluster` on ADS to `xds_port`.
async fn envoy(xds_port: u16, id: &str, cluster: &str) -> EnvoyProcess {
    let bootstrap = Bootstrap::new(XdsMode::Ads, xds_port)
        .node_id(id)
        .node_cluster(cluster);
    EnvoyProcess::start(&bootstrap, EnvoyOptions::default())
        .await
        .unwrap()
}

/// GETs `path` through the listener on `port` until the body is `expected`.
///
/// Envoy reports a version as applied on its main thread a moment before
/// its worker uses it, so the first request after a change may still see
/// the previous configuration.
async fn assert_answers(port: u16, path: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let answer = match http_get(port, path, &[]).await {
            Ok(r) if r.status == 200 => r.text(),
            Ok(r) => format!("status {}", r.status),
            Err(e) => e.to_string(),
        };
        if answer == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "GET 127.0.0.1:{port}{path}: {answer:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two groups, one with two proxies: each Envoy gets its group's snapshot
/// and its traffic reaches its group's upstream; a change to one group
/// reaches its proxies and leaves the other group alone.
///
/// (Envoy cannot join the fallback group: it refuses to start on ADS
/// without a `node.cluster`. The unit tests cover the fallback.)
#[tokio::test(flavor = "multi_thread")]
async fn node_groups_route_each_group_to_its_upstream() {
    let started = Instant::now();
    let cache = SnapshotCache::new(true, groups::node_hash());
    let server = Server::new(cache.clone(), ());
    let (addr, _stop) = ads_server::start_ads(&server, 0).await.unwrap();
    let blue = Upstream::start("blue").await.unwrap();
    let green = Upstream::start("green").await.unwrap();
    let green2 = Upstream::start("green-2").await.unwrap();
    let blue_ports = GroupPorts {
        listener: free_port().unwrap(),
        upstream: blue.port(),
    };
    let green_ports = GroupPorts {
        listener: free_port().unwrap(),
        upstream: green.port(),
    };
    // Versions name their group, so an Envoy's versions show which
    // group's snapshot it got.
    cache.set_snapshot("blue", group_snapshot("blue-1", blue_ports).unwrap());
    cache.set_snapshot("green", group_snapshot("green-1", green_ports).unwrap());

    let xds = addr.port();
    let (in_blue, in_green, also_blue) = tokio::join!(
        envoy(xds, "proxy-a", "blue"),
        envoy(xds, "proxy-b", "green"),
        envoy(xds, "proxy-c", "blue"),
    );
    for (proxy, version, port) in [
        (&in_blue, "blue-1", blue_ports.listener),
        (&in_green, "green-1", green_ports.listener),
        // Both blue proxies listen on blue's port (Envoy sets SO_REUSEPORT),
        // and either answers "blue".
        (&also_blue, "blue-1", blue_ports.listener),
    ] {
        proxy
            .wait_for_version(version, &ALL_KINDS, APPLY)
            .await
            .unwrap();
        proxy.wait_for_listener(port, APPLY).await.unwrap();
    }
    // Keyed by group, not by node id: two groups, three proxies.
    let mut keys = cache.status_keys();
    keys.sort();
    assert_eq!(keys, ["blue", "green"]);
    assert_answers(blue_ports.listener, "/", "blue").await;
    assert_answers(green_ports.listener, "/", "green").await;

    // Green's backend moves; blue's proxies see nothing of it.
    let green_ports = GroupPorts {
        upstream: green2.port(),
        ..green_ports
    };
    cache.set_snapshot("green", group_snapshot("green-2", green_ports).unwrap());
    in_green
        .wait_for_version("green-2", &[ResourceKind::Endpoint], APPLY)
        .await
        .unwrap();
    assert_answers(green_ports.listener, "/", "green-2").await;
    for proxy in [&in_blue, &also_blue] {
        let applied = proxy.applied_versions().await.unwrap();
        assert!(
            applied.all_at(ResourceKind::Endpoint, "blue-1"),
            "{applied:?}"
        );
    }
    assert_answers(blue_ports.listener, "/", "blue").await;
    eprintln!("node groups: {:?}", started.elapsed());
}

/// Replaces the file's content at once, as the example asks writers to.
fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// The services file of the test: `web` on `/` and, if given, `api` on
/// `/api/`, both on `port`.
fn services(port: u16, web: &Upstream, api: Option<&Upstream>) -> String {
    let mut services = vec![format!(
        r#"{{"name": "web", "port": {port}, "endpoints": ["127.0.0.1:{}"]}}"#,
        web.port()
    )];
    if let Some(api) = api {
        services.push(format!(
            r#"{{"name": "api", "port": {port}, "prefix": "/api/", "endpoints": ["127.0.0.1:{}"]}}"#,
            api.port()
        ));
    }
    format!("{{\"services\": [\n  {}\n]}}\n", services.join(",\n  "))
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("no event from the file feed within 5 s")
        .expect("the file feed stopped")
}

/// The file drives Envoy: its first version routes per the file, an edit
/// moves traffic, an invalid file changes nothing, and the next good one
/// applies (here removing a service, whose prefix falls back to `/`).
#[tokio::test(flavor = "multi_thread")]
async fn file_fed_envoy_follows_the_file() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("services.json");
    let web = Upstream::start("web").await.unwrap();
    let web2 = Upstream::start("web-2").await.unwrap();
    let api = Upstream::start("api").await.unwrap();
    let port = free_port().unwrap();

    let first = services(port, &web, Some(&api));
    write_atomically(&path, &first);
    let cache = SnapshotCache::new(true, every_node);
    let mut feed = FileFeed::new(&path, cache.clone());
    let v1 = Config::parse(&first).unwrap().version();
    assert!(matches!(feed.poll().await, Some(Event::Applied { version, .. }) if version == v1));
    let server = Server::new(cache.clone(), ());
    let (addr, _stop) = ads_server::start_ads(&server, 0).await.unwrap();
    let (sender, mut events) = mpsc::unbounded_channel();
    let watching = tokio::spawn(feed.run(Duration::from_millis(50), move |event| {
        let _ = sender.send(event.clone());
    }));

    // Any node id gets the file's configuration.
    let envoy = envoy(addr.port(), "any-node", "any-cluster").await;
    envoy
        .wait_for_version(&v1, &ALL_KINDS, APPLY)
        .await
        .unwrap();
    envoy.wait_for_listener(port, APPLY).await.unwrap();
    assert_answers(port, "/", "web").await;
    assert_answers(port, "/api/users", "api").await;

    // An edit: web moves to another endpoint.
    let second = services(port, &web2, Some(&api));
    write_atomically(&path, &second);
    let v2 = Config::parse(&second).unwrap().version();
    assert!(
        matches!(next_event(&mut events).await, Event::Applied { version, .. } if version == v2)
    );
    envoy
        .wait_for_version(&v2, &ALL_KINDS, APPLY)
        .await
        .unwrap();
    assert_answers(port, "/", "web-2").await;
    assert_answers(port, "/api/users", "api").await;

    // Invalid JSON: reported with where, v2 still served and applied.
    write_atomically(&path, &second.replace("\"web\",", "\"web\""));
    let Event::Rejected { error, serving } = next_event(&mut events).await else {
        panic!("invalid JSON must be rejected")
    };
    assert!(error.contains("line 2 column"), "{error}");
    assert_eq!(serving.as_deref(), Some(v2.as_str()));
    // A few polls later nothing has moved.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        events.try_recv().is_err(),
        "the same bad file is reported once"
    );
    let applied = envoy.applied_versions().await.unwrap();
    for kind in ALL_KINDS {
        assert!(applied.all_at(kind, &v2), "{kind:?}: {applied:?}");
    }
    assert_answers(port, "/", "web-2").await;
    assert_answers(port, "/api/users", "api").await;

    // Fixed, without api: its requests now match `/` and go to web.
    let third = services(port, &web2, None);
    write_atomically(&path, &third);
    let v3 = Config::parse(&third).unwrap().version();
    assert!(
        matches!(next_event(&mut events).await, Event::Applied { version, .. } if version == v3)
    );
    envoy
        .wait_for_version(&v3, &[ResourceKind::Cluster, ResourceKind::Route], APPLY)
        .await
        .unwrap();
    assert_answers(port, "/api/users", "web-2").await;
    watching.abort();
    eprintln!("file fed: {:?}", started.elapsed());
}
