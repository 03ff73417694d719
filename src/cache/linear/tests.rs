use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

use super::*;
use crate::cache::{
    Cache, DeltaWatchRequest, FetchError, ResponseQueue, ReturnedResources, Subscription,
    WatchRequest,
};
use crate::resource::type_url::{CLUSTER, ENDPOINT};

/// An endpoint; a non-zero `marker` gives it other content.
fn cla(name: &str, marker: u32) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.into(),
        policy: (marker > 0).then(Default::default),
        endpoints: (0..marker).map(|_| Default::default()).collect(),
        ..Default::default()
    }
}

fn cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        ..Default::default()
    }
}

fn eds(names: &[&str]) -> LinearCache {
    let items: Vec<_> = names.iter().map(|n| (*n, cla(n, 0))).collect();
    LinearCache::new(ENDPOINT)
        .with_version_prefix("p-")
        .with_initial_resources(items.iter().map(|(n, c)| (*n, c)))
        .unwrap()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A SotW watch for `names` (empty: wildcard) from a client at `version`
/// holding `had` (name, per-resource version).
fn sotw(type_url: &str, version: &str, names: &[&str], had: &[(&str, &str)]) -> WatchRequest {
    let mut sub = Subscription::sotw(&strings(names), true);
    sub.set_returned(
        had.iter()
            .map(|(n, v)| (Arc::from(*n), Arc::from(*v)))
            .collect(),
    );
    WatchRequest {
        node: None,
        request: Arc::new(DiscoveryRequest {
            type_url: type_url.into(),
            version_info: version.into(),
            resource_names: strings(names),
            ..Default::default()
        }),
        rejected_version: None,
        subscription: Arc::new(sub),
    }
}

/// What the client has after a response, as `sotw`'s `had`.
fn had(returned: &ReturnedResources) -> Vec<(String, String)> {
    let mut v: Vec<_> = returned
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

fn names(resources: &[EncodedResource]) -> Vec<&str> {
    resources.iter().map(|r| r.name()).collect()
}

struct Client {
    queue: Arc<ResponseQueue<SotwResponse>>,
}

impl Client {
    fn new() -> Self {
        Client {
            queue: ResponseQueue::new(),
        }
    }

    fn watch(&self, cache: &LinearCache, request: WatchRequest) -> WatchHandle {
        cache.create_watch(request, self.queue.sink(1)).unwrap()
    }

    /// The one answer delivered, if any.
    fn answer(&self) -> Option<SotwResponse> {
        let mut all = self.queue.take();
        assert!(all.len() <= 1, "a watch is answered at most once");
        all.pop().map(|(_, r)| r)
    }
}

#[test]
fn versions_follow_the_prefix_and_bump_once_per_mutation() {
    let cache = LinearCache::new(ENDPOINT);
    assert_eq!(cache.version(), "0");
    let cache = cache.with_version_prefix("p-");
    assert_eq!(cache.version(), "p-0");
    cache.update_resource("a", &cla("a", 0)).unwrap();
    assert_eq!(cache.version(), "p-1");
    cache
        .update_resources([("b", &cla("b", 0)), ("c", &cla("c", 0))], ["a"])
        .unwrap();
    assert_eq!(cache.version(), "p-2");
    assert_eq!(names(&cache.resources()), ["b", "c"]);
    // Setting what is already there, or deleting what is not, changes nothing.
    cache.update_resource("b", &cla("b", 0)).unwrap();
    cache.delete_resource("nope");
    assert_eq!(cache.version(), "p-2");
    cache.set_resources([("c", &cla("c", 1))]).unwrap();
    assert_eq!(cache.version(), "p-3");
    assert_eq!(names(&cache.resources()), ["c"]);
    cache.delete_resources(["c"]);
    assert_eq!(
        (cache.version().as_str(), cache.num_resources()),
        ("p-4", 0)
    );
}

#[test]
fn each_resource_keeps_the_version_it_was_set_at() {
    let cache = eds(&["a", "b"]);
    cache.update_resource("b", &cla("b", 1)).unwrap();
    let client = Client::new();
    let _w = client.watch(&cache, sotw(ENDPOINT, "", &["a", "b"], &[]));
    let resp = client.answer().unwrap();
    assert_eq!(&*resp.version, "p-2");
    assert_eq!(
        had(&resp.returned),
        [("a".into(), "p-1".into()), ("b".into(), "p-2".into())]
    );
    // A prefix given after the resources re-stamps them.
    let late = LinearCache::new(ENDPOINT)
        .with_initial_resources([("a", &cla("a", 0))])
        .unwrap()
        .with_version_prefix("x");
    assert_eq!(late.version(), "x1");
    let _w = client.watch(&late, sotw(ENDPOINT, "", &["a"], &[]));
    assert_eq!(&*client.answer().unwrap().returned["a"], "x1");
}

#[test]
fn bad_resources_are_refused_and_change_nothing() {
    let cache = eds(&["a"]);
    let err = cache.update_resource("", &cla("x", 0)).unwrap_err();
    assert_eq!(err, LinearCacheError::EmptyName);
    let err = cache.update_resource("c", &cluster("c")).unwrap_err();
    assert!(matches!(err, LinearCacheError::TypeMismatch { .. }));
    assert!(err.to_string().contains("Cluster"), "{err}");
    let encoded = EncodedResource::from_message(&cla("real", 0));
    let err = cache
        .set_resources([("alias", encoded.clone())])
        .unwrap_err();
    assert!(matches!(err, LinearCacheError::NameMismatch { .. }));
    let other_type = EncodedResource::from_message(&cluster("a"));
    assert!(cache.update_encoded_resource(other_type).is_err());
    // A batch with one bad entry is refused whole.
    let good = cla("b", 0);
    let bad = cla("", 0);
    assert!(cache
        .update_resources([("b", &good), ("", &bad)], ["a"])
        .is_err());
    assert_eq!(
        (cache.version().as_str(), cache.num_resources()),
        ("p-1", 1)
    );
    cache.update_encoded_resource(encoded).unwrap();
    assert_eq!(names(&cache.resources()), ["a", "real"]);
}

#[test]
fn a_first_or_foreign_version_gets_the_full_set_even_empty() {
    let cache = eds(&["a", "b", "c"]);
    let client = Client::new();
    let _w = client.watch(&cache, sotw(ENDPOINT, "", &["c", "a", "zz"], &[]));
    let resp = client.answer().unwrap();
    assert_eq!(names(&resp.resources), ["a", "c"]);
    // Nothing subscribed exists: still answered, empty.
    let _w = client.watch(&cache, sotw(ENDPOINT, "", &["zz"], &[]));
    assert!(client.answer().unwrap().resources.is_empty());
    // Another instance's version (no prefix): everything, even what the
    // client claims to have.
    let foreign = sotw(ENDPOINT, "other-9", &["a"], &[("a", "p-1")]);
    let _w = client.watch(&cache, foreign);
    assert_eq!(names(&client.answer().unwrap().resources), ["a"]);
    // Our prefix and up to date: held.
    let current = sotw(ENDPOINT, "p-1", &["a"], &[("a", "p-1")]);
    let _w = client.watch(&cache, current);
    assert!(client.answer().is_none());
    assert_eq!(cache.num_watches("a"), 1);
}

#[test]
fn partial_updates_for_eds_full_state_for_cds() {
    let cache = eds(&["a", "b"]);
    let client = Client::new();
    let up_to_date = [("a", "p-1"), ("b", "p-1")];
    let _w = client.watch(&cache, sotw(ENDPOINT, "p-1", &["a", "b"], &up_to_date));
    cache.update_resource("b", &cla("b", 1)).unwrap();
    let resp = client.answer().unwrap();
    assert_eq!(names(&resp.resources), ["b"]);
    assert_eq!(&*resp.version, "p-2");
    assert_eq!(
        had(&resp.returned),
        [("a".into(), "p-1".into()), ("b".into(), "p-2".into())]
    );

    let cds = LinearCache::new(CLUSTER)
        .with_initial_resources([("x", &cluster("x")), ("y", &cluster("y"))])
        .unwrap();
    let _w = client.watch(&cds, sotw(CLUSTER, "1", &[], &[("x", "1"), ("y", "1")]));
    cds.update_resource("z", &cluster("z")).unwrap();
    assert_eq!(names(&client.answer().unwrap().resources), ["x", "y", "z"]);
    // A deletion alone answers a full-state type, without the deleted one.
    let _w = client.watch(
        &cds,
        sotw(CLUSTER, "2", &[], &[("x", "1"), ("y", "1"), ("z", "2")]),
    );
    cds.delete_resource("y");
    let resp = client.answer().unwrap();
    assert_eq!(names(&resp.resources), ["x", "z"]);
    assert_eq!(resp.returned.len(), 2);
}

#[test]
fn eds_deletions_are_silent_and_a_re_add_is_sent() {
    let cache = eds(&["a", "b"]);
    let client = Client::new();
    let _w = client.watch(
        &cache,
        sotw(ENDPOINT, "p-1", &["a", "b"], &[("a", "p-1"), ("b", "p-1")]),
    );
    cache.delete_resource("a");
    assert!(
        client.answer().is_none(),
        "SotW EDS cannot express a deletion"
    );
    assert_eq!(cache.num_watches("a"), 1);
    // The next answer forgets the deleted name...
    cache.update_resource("b", &cla("b", 1)).unwrap();
    let resp = client.answer().unwrap();
    assert_eq!(names(&resp.resources), ["b"]);
    assert_eq!(had(&resp.returned), [("b".into(), "p-3".into())]);
    // ...so adding it back sends it, even with the same content.
    let _w = client.watch(&cache, sotw(ENDPOINT, "p-3", &["a", "b"], &[("b", "p-3")]));
    cache.update_resource("a", &cla("a", 0)).unwrap();
    assert_eq!(names(&client.answer().unwrap().resources), ["a"]);
}

#[test]
fn a_nacked_version_is_not_sent_again() {
    let cache = eds(&["a"]);
    let client = Client::new();
    // After a NACK the stream asks with the rejected version and what it sent.
    let _w = client.watch(&cache, sotw(ENDPOINT, "p-1", &["a"], &[("a", "p-1")]));
    assert!(client.answer().is_none());
}

#[test]
fn only_the_watches_of_changed_names_are_evaluated() {
    let cache = eds(&[]);
    let clients: Vec<Client> = (0..50).map(|_| Client::new()).collect();
    let handles: Vec<WatchHandle> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| c.watch(&cache, sotw(ENDPOINT, "p-0", &[&format!("ep-{i}")], &[])))
        .collect();
    assert_eq!(cache.num_open_watches(), 50);
    cache.update_resource("ep-7", &cla("ep-7", 0)).unwrap();
    assert_eq!(cache.evaluations(), 1);
    assert!(clients[7].answer().is_some());
    assert!(clients.iter().all(|c| c.answer().is_none()));
    assert_eq!(cache.num_open_watches(), 49);

    // A batch evaluates each concerned watch once; wildcard watches always.
    let wildcard = Client::new();
    let _w = wildcard.watch(&cache, sotw(ENDPOINT, "p-1", &[], &[("ep-7", "p-1")]));
    let items: Vec<_> = ["ep-1", "ep-2", "unwatched"]
        .iter()
        .map(|n| (*n, cla(n, 0)))
        .collect();
    cache
        .update_resources(items.iter().map(|(n, c)| (*n, c)), ["ep-1"])
        .unwrap();
    assert_eq!(cache.evaluations(), 1 + 3);
    // ep-1 was set and deleted in the same call: only ep-2 and the wildcard.
    assert!(clients[1].answer().is_none() && clients[2].answer().is_some());
    assert_eq!(
        names(&wildcard.answer().unwrap().resources),
        ["ep-2", "unwatched"]
    );
    drop(handles);
}

#[test]
fn prefix_watches_see_changes_under_their_prefix_only() {
    let cache = eds(&["svc/a", "other"]);
    let client = Client::new();
    let _w = client.watch(&cache, sotw(ENDPOINT, "", &["svc/*", "exact"], &[]));
    let first = client.answer().unwrap();
    assert_eq!(names(&first.resources), ["svc/a"]);
    let had_a = [("svc/a", "p-1")];
    let _w = client.watch(&cache, sotw(ENDPOINT, "p-1", &["svc/*", "exact"], &had_a));
    assert_eq!(cache.num_prefix_watches(), 1);
    assert_eq!(cache.num_watches("svc/deep/x"), 1);
    assert_eq!(cache.num_watches("other"), 0);
    cache.update_resource("other", &cla("other", 1)).unwrap();
    cache.update_resource("svcx", &cla("svcx", 0)).unwrap();
    assert_eq!(cache.evaluations(), 0);
    cache
        .update_resource("svc/deep/b", &cla("svc/deep/b", 0))
        .unwrap();
    assert_eq!(cache.evaluations(), 1);
    assert_eq!(names(&client.answer().unwrap().resources), ["svc/deep/b"]);
}

#[test]
fn cancelling_removes_the_watch_from_every_index() {
    let cache = eds(&[]);
    let client = Client::new();
    let named = client.watch(&cache, sotw(ENDPOINT, "p-0", &["a", "b", "p/*"], &[]));
    let wildcard = client.watch(&cache, sotw(ENDPOINT, "p-0", &[], &[]));
    let delta_queue = ResponseQueue::new();
    let delta = cache
        .create_delta_watch(delta_watch(&["c", "q/*"], false), delta_queue.sink(2))
        .unwrap();
    assert_eq!(cache.inner.state.lock().watches.index_sizes(), (3, 2, 1));
    assert_eq!(
        (
            cache.num_watches("a"),
            cache.num_watches("p/x"),
            cache.num_wildcard_watches()
        ),
        (2, 2, 1)
    );
    drop(named);
    drop(wildcard);
    drop(delta);
    assert_eq!(cache.inner.state.lock().watches.index_sizes(), (0, 0, 0));
    assert_eq!(cache.num_open_watches(), 0);
    cache
        .update_resources([("a", &cla("a", 0)), ("c", &cla("c", 0))], ["x"])
        .unwrap();
    assert_eq!(cache.evaluations(), 0);
    assert!(client.answer().is_none() && delta_queue.take().is_empty());
}

#[test]
fn answered_watches_leave_the_indexes() {
    let cache = eds(&[]);
    let client = Client::new();
    let _w = client.watch(&cache, sotw(ENDPOINT, "p-0", &["a", "p/*"], &[]));
    cache.update_resource("a", &cla("a", 0)).unwrap();
    assert!(client.answer().is_some());
    assert_eq!(cache.inner.state.lock().watches.index_sizes(), (0, 0, 0));
}

fn delta_watch(subscribe: &[&str], first: bool) -> DeltaWatchRequest {
    delta_watch_with(
        Subscription::delta(&strings(subscribe), &[], &HashMap::new(), true),
        first,
    )
}

fn delta_watch_with(sub: Subscription, first: bool) -> DeltaWatchRequest {
    DeltaWatchRequest {
        node: None,
        request: Arc::new(DeltaDiscoveryRequest {
            type_url: ENDPOINT.into(),
            ..Default::default()
        }),
        subscription: Arc::new(sub),
        first,
    }
}

#[test]
fn delta_sends_changes_and_removals_with_content_versions() {
    let cache = eds(&[]);
    let queue = ResponseQueue::new();
    // A first wildcard request is answered even with nothing to send.
    let _w = cache
        .create_delta_watch(delta_watch(&[], true), queue.sink(1))
        .unwrap();
    let (_, empty) = queue.take().pop().unwrap();
    assert!(empty.resources.is_empty() && empty.removed.is_empty());
    assert_eq!(&*empty.system_version, "p-0");

    let mut sub = Subscription::delta(&strings(&["a", "b"]), &[], &HashMap::new(), true);
    let _w = cache
        .create_delta_watch(delta_watch_with(sub.clone(), false), queue.sink(2))
        .unwrap();
    assert!(queue.take().is_empty());
    cache
        .update_resources([("a", &cla("a", 0)), ("b", &cla("b", 0))], ["x"])
        .unwrap();
    let (_, resp) = queue.take().pop().unwrap();
    assert_eq!(names(&resp.resources), ["a", "b"]);
    assert_eq!(&*resp.system_version, "p-1");
    let a = EncodedResource::from_message(&cla("a", 0));
    assert_eq!(resp.returned["a"], *a.version(), "a content digest");
    sub.set_shared_returned(resp.returned);

    let _w = cache
        .create_delta_watch(delta_watch_with(sub.clone(), false), queue.sink(3))
        .unwrap();
    cache
        .update_resources([("b", &cla("b", 2))], ["a"])
        .unwrap();
    let (_, resp) = queue.take().pop().unwrap();
    assert_eq!(names(&resp.resources), ["b"]);
    assert_eq!(resp.removed, ["a"]);
    assert!(!resp.returned.contains_key("a"));

    // A client reconnecting with what it has gets only what differs.
    let initial: HashMap<String, String> = [("b".to_string(), a.version().to_string())].into();
    let back = Subscription::delta(&strings(&["b"]), &[], &initial, true);
    let _w = cache
        .create_delta_watch(delta_watch_with(back, true), queue.sink(4))
        .unwrap();
    assert_eq!(names(&queue.take().pop().unwrap().1.resources), ["b"]);
}

#[test]
fn fetch_serves_the_current_state() {
    let cache = eds(&["a", "b"]);
    let req = |version: &str, names: &[&str]| DiscoveryRequest {
        type_url: ENDPOINT.into(),
        version_info: version.into(),
        resource_names: strings(names),
        ..Default::default()
    };
    let all = cache.fetch(&req("", &[])).unwrap();
    assert_eq!(
        (names(&all.resources), &*all.version),
        (vec!["a", "b"], "p-1")
    );
    let some = cache.fetch(&req("p-0", &["b", "missing"])).unwrap();
    assert_eq!(names(&some.resources), ["b"]);
    assert_eq!(
        cache.fetch(&req("p-1", &[])).unwrap_err(),
        FetchError::UpToDate
    );
    let mut other = req("", &[]);
    other.type_url = CLUSTER.into();
    assert_eq!(
        cache.fetch(&other).unwrap_err(),
        FetchError::UnknownType(CLUSTER.into())
    );
}

#[test]
fn other_types_are_refused() {
    let cache = eds(&["a"]);
    let client = Client::new();
    let err = cache
        .create_watch(sotw(CLUSTER, "", &[], &[]), client.queue.sink(1))
        .unwrap_err();
    assert_eq!(err, CacheError::UnsupportedType(CLUSTER.into()));
    let mut delta = delta_watch(&[], true);
    Arc::make_mut(&mut delta.request).type_url = CLUSTER.into();
    let queue = ResponseQueue::new();
    assert!(cache.create_delta_watch(delta, queue.sink(1)).is_err());
}

#[test]
fn updates_never_wait_for_streams_that_do_not_read() {
    let cache = eds(&[]);
    let clients: Vec<Client> = (0..20).map(|_| Client::new()).collect();
    for round in 0..3u32 {
        let handles: Vec<WatchHandle> = clients
            .iter()
            .map(|c| c.watch(&cache, sotw(ENDPOINT, "p-0", &["shared"], &[])))
            .collect();
        cache
            .update_resource("shared", &cla("shared", round + 1))
            .unwrap();
        drop(handles);
    }
    // Nobody drained: each queue holds one answer per round.
    assert!(clients.iter().all(|c| c.queue.take().len() == 3));
}
