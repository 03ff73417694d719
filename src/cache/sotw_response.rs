//! Decides what a state-of-the-world watch gets from a snapshot, if anything.

use std::sync::Arc;

use super::{
    EncodedList, EncodedResource, ReturnedResources, Snapshot, SotwResponse, TypeResources,
    WatchRequest,
};
use crate::resource::ResourceType;

/// What a watch is answered with, decided while the cache still holds the
/// watch; joined with it into a [`SotwResponse`] once taken out.
#[derive(Debug)]
pub(crate) struct SotwAnswer {
    pub(crate) version: Arc<str>,
    pub(crate) resources: Arc<EncodedList>,
    pub(crate) returned: Arc<ReturnedResources>,
}

impl SotwAnswer {
    /// The response to `watch`, which it takes back to its stream.
    pub(crate) fn into_response(self, watch: WatchRequest) -> SotwResponse {
        SotwResponse {
            watch,
            version: self.version,
            resources: self.resources,
            returned: self.returned,
        }
    }
}

/// Evaluates a watch against a snapshot: `Some` is the answer to send now,
/// `None` means hold the watch until the snapshot changes.
///
/// - A version other than the snapshot's gets every subscribed resource
///   (every resource for a wildcard subscription).
/// - An equal version gets only newly subscribed resources, except for CDS
///   and LDS, which get the full state whenever anything they had changed.
/// - With `ads_hold`, a named subscription is held while none of the names
///   it asks for exists. Names the snapshot lacks are otherwise left out:
///   Envoy keeps naming the resources of a listener or cluster it is
///   replacing until the replacement has warmed, which needs the new
///   resources, so waiting for every name would stall it.
pub(crate) fn sotw_answer(
    snapshot: &Snapshot,
    watch: &WatchRequest,
    ads_hold: bool,
) -> Option<SotwAnswer> {
    let kind = ResourceType::from_type_url(watch.type_url())?;
    sotw_answer_of(snapshot, kind, watch, ads_hold)
}

/// As [`sotw_answer`], for a watch whose type is known already (a cache
/// keeps it with the watch rather than reading the request's text again).
pub(crate) fn sotw_answer_of(
    snapshot: &Snapshot,
    kind: ResourceType,
    watch: &WatchRequest,
    ads_hold: bool,
) -> Option<SotwAnswer> {
    let resources = snapshot.of_type(kind);
    let sub = &watch.subscription;
    if ads_hold
        && !sub.is_wildcard()
        && !sub.names().is_empty()
        && !sub.names().iter().any(|n| resources.contains(n))
    {
        return None;
    }
    let version = resources.shared_version();
    let full_state = kind.requires_full_state_in_sotw();
    if **version != *watch.version_info() {
        return Some(full_answer(watch, resources));
    }
    // The usual ACK: the client holds a full answer of this very snapshot.
    if resources.is_full_answer_of(sub) {
        return None;
    }
    let known = sub.returned();
    let added: Vec<&EncodedResource> = subscribed(sub, resources)
        .filter(|r| !known.contains_key(r.name()))
        .collect();
    let dropped = known
        .keys()
        .any(|name| !resources.contains(name) || !sub.wants(name));
    if added.is_empty() && !(full_state && dropped) {
        return None;
    }
    if full_state {
        return Some(full_answer(watch, resources));
    }
    let mut returned: ReturnedResources = known
        .iter()
        .filter(|(name, _)| resources.contains(name) && sub.wants(name))
        .map(|(name, v)| (Arc::clone(name), Arc::clone(v)))
        .collect();
    for r in &added {
        returned.insert(Arc::clone(r.shared_name()), Arc::clone(version));
    }
    Some(SotwAnswer {
        version: Arc::clone(version),
        resources: added.into_iter().cloned().collect(),
        returned: Arc::new(returned),
    })
}

/// Every subscribed resource that exists, with the snapshot's version.
/// Wildcard and plain named subscriptions share the answer with every other
/// watch subscribed alike.
pub(crate) fn full_answer(watch: &WatchRequest, resources: &TypeResources) -> SotwAnswer {
    let sub = &watch.subscription;
    let (items, returned) = if sub.is_wildcard() {
        resources.full_wildcard()
    } else if sub.prefixes().is_empty() {
        resources.full_named(sub.names())
    } else {
        let items: Arc<EncodedList> = subscribed(sub, resources).cloned().collect();
        let returned = Arc::new(resources.returned_of(&items));
        (items, returned)
    };
    SotwAnswer {
        version: Arc::clone(resources.shared_version()),
        resources: items,
        returned,
    }
}

/// The subscribed resources present in the snapshot, each once, by name.
fn subscribed<'a>(
    sub: &'a super::Subscription,
    resources: &'a TypeResources,
) -> Box<dyn Iterator<Item = &'a EncodedResource> + 'a> {
    if sub.is_wildcard() || !sub.prefixes().is_empty() {
        return Box::new(resources.resources().iter().filter(|r| sub.wants(r.name())));
    }
    // Names are kept sorted and unique.
    Box::new(sub.names().iter().filter_map(|n| resources.get(n)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Subscription;
    use crate::resource::type_url;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

    fn snapshot(version: &str, clusters: &[&str], endpoints: &[&str]) -> Snapshot {
        Snapshot::builder(version)
            .clusters(clusters.iter().map(|n| Cluster {
                name: n.to_string(),
                ..Default::default()
            }))
            .endpoints(endpoints.iter().map(|n| ClusterLoadAssignment {
                cluster_name: n.to_string(),
                ..Default::default()
            }))
            .build()
            .unwrap()
    }

    fn watch(type_url: &str, version: &str, names: &[&str], returned: &[&str]) -> WatchRequest {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut sub = Subscription::sotw(&names, true);
        sub.set_returned(
            returned
                .iter()
                .map(|n| (Arc::from(*n), Arc::from(version)))
                .collect(),
        );
        WatchRequest {
            node: None,
            request: Arc::new(DiscoveryRequest {
                type_url: type_url.into(),
                version_info: version.into(),
                resource_names: names,
                ..Default::default()
            }),
            rejected_version: None,
            subscription: Arc::new(sub),
        }
    }

    fn names(resp: &SotwAnswer) -> Vec<&str> {
        resp.resources.iter().map(|r| r.name()).collect()
    }

    fn returned(resp: &SotwAnswer) -> Vec<String> {
        let mut v: Vec<_> = resp.returned.keys().map(|k| k.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn new_version_sends_everything_subscribed() {
        let snap = snapshot("v2", &["a", "b"], &["a", "b", "c"]);
        let resp = sotw_answer(&snap, &watch(type_url::CLUSTER, "v1", &[], &[]), false).unwrap();
        assert_eq!(names(&resp), ["a", "b"]);
        assert_eq!(&*resp.version, "v2");
        let resp = sotw_answer(
            &snap,
            &watch(type_url::ENDPOINT, "", &["c", "a", "zz"], &[]),
            false,
        )
        .unwrap();
        assert_eq!(names(&resp), ["a", "c"]);
        assert_eq!(returned(&resp), ["a", "c"]);
    }

    #[test]
    fn same_version_holds_until_something_new_is_subscribed() {
        let snap = snapshot("v1", &["a"], &["a", "b"]);
        let held = watch(type_url::ENDPOINT, "v1", &["a"], &["a"]);
        assert!(sotw_answer(&snap, &held, false).is_none());
        let grown = watch(type_url::ENDPOINT, "v1", &["a", "b"], &["a"]);
        let resp = sotw_answer(&snap, &grown, false).unwrap();
        assert_eq!(names(&resp), ["b"]);
        assert_eq!(returned(&resp), ["a", "b"]);
        // Subscribing to a name that does not exist is not a change.
        let missing = watch(type_url::ENDPOINT, "v1", &["a", "nope"], &["a"]);
        assert!(sotw_answer(&snap, &missing, false).is_none());
    }

    #[test]
    fn full_state_types_resend_everything_after_a_deletion() {
        let snap = snapshot("v1", &["a"], &[]);
        let had_b = watch(type_url::CLUSTER, "v1", &[], &["a", "b"]);
        let resp = sotw_answer(&snap, &had_b, false).unwrap();
        assert_eq!(names(&resp), ["a"]);
        assert_eq!(returned(&resp), ["a"]);
        let up_to_date = watch(type_url::CLUSTER, "v1", &[], &["a"]);
        assert!(sotw_answer(&snap, &up_to_date, false).is_none());
    }

    #[test]
    fn ads_hold_waits_for_a_named_resource_to_exist() {
        let snap = snapshot("v2", &[], &["a"]);
        let w = watch(type_url::ENDPOINT, "v1", &["b", "c"], &[]);
        assert!(sotw_answer(&snap, &w, true).is_none());
        assert!(sotw_answer(&snap, &w, false).is_some());
        // Names the snapshot lacks (e.g. of a listener Envoy is replacing)
        // do not hold back the ones it has.
        let w = watch(type_url::ENDPOINT, "v1", &["a", "b"], &[]);
        let resp = sotw_answer(&snap, &w, true).unwrap();
        assert_eq!(names(&resp), ["a"]);
        // A subset of what exists is served (gRPC clients ask one at a time).
        let snap = snapshot("v2", &[], &["a", "b", "c"]);
        let resp = sotw_answer(&snap, &w, true).unwrap();
        assert_eq!(names(&resp), ["a", "b"]);
    }

    /// An ACK of a full answer is settled by identity; a subscription
    /// that changed since is evaluated name by name again.
    #[test]
    fn acks_of_full_answers_hold_and_changed_subscriptions_do_not() {
        let snap = snapshot("v1", &["a", "b"], &["a", "b", "c"]);
        for (type_url, asked) in [
            (type_url::CLUSTER, vec![]),
            (type_url::ENDPOINT, vec!["a".to_string(), "b".to_string()]),
        ] {
            let mut w = watch(type_url, "v0", &[], &[]);
            let mut sub = Subscription::sotw(&asked, true);
            let first = sotw_answer(
                &snap,
                &WatchRequest {
                    node: None,
                    subscription: Arc::new(sub.clone()),
                    ..w.clone()
                },
                false,
            )
            .unwrap();
            sub.set_shared_returned(Arc::clone(&first.returned));
            let resources = snap.by_type_url(type_url).unwrap();
            assert!(resources.is_full_answer_of(&sub), "{type_url}");
            Arc::make_mut(&mut w.request).version_info = "v1".into();
            w.subscription = Arc::new(sub.clone());
            assert!(sotw_answer(&snap, &w, false).is_none(), "{type_url}");
            if !asked.is_empty() {
                // One more name: the same record, no longer a full answer.
                sub.set_sotw_names(&["a".into(), "b".into(), "c".into()]);
                assert!(!resources.is_full_answer_of(&sub));
                w.subscription = Arc::new(sub);
                let resp = sotw_answer(&snap, &w, false).unwrap();
                assert_eq!(names(&resp), ["c"]);
            }
        }
    }

    #[test]
    fn unknown_types_are_held() {
        let snap = snapshot("v1", &["a"], &[]);
        let w = watch("type.googleapis.com/some.Other", "", &[], &[]);
        assert!(sotw_answer(&snap, &w, false).is_none());
    }

    #[test]
    fn explicit_wildcard_with_names_sends_each_resource_once() {
        let snap = snapshot("v1", &["a", "b"], &[]);
        let resp = sotw_answer(
            &snap,
            &watch(type_url::CLUSTER, "", &["*", "a"], &[]),
            false,
        )
        .unwrap();
        assert_eq!(names(&resp), ["a", "b"]);
    }

    #[test]
    fn prefix_subscriptions_match_by_name() {
        let snap = snapshot("v1", &[], &["svc/a", "svc/b", "other"]);
        let resp = sotw_answer(
            &snap,
            &watch(type_url::ENDPOINT, "", &["svc/*"], &[]),
            false,
        )
        .unwrap();
        assert_eq!(names(&resp), ["svc/a", "svc/b"]);
    }
}
