//! Decides what an incremental (delta) watch gets from a set of resources.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{
    DeltaResponse, DeltaWatchRequest, EncodedResource, ReturnedResources, Subscription,
    TypeResources,
};

/// What a delta watch is answered with, decided while the cache still
/// holds the watch; joined with it into a [`DeltaResponse`] once taken out.
#[derive(Debug)]
pub(crate) struct DeltaAnswer {
    pub(crate) system_version: Arc<str>,
    pub(crate) resources: Vec<EncodedResource>,
    pub(crate) removed: Vec<String>,
    pub(crate) returned: Arc<ReturnedResources>,
    pub(crate) heartbeat: bool,
}

impl DeltaAnswer {
    /// The response to `watch`, which it takes back to its stream.
    pub(crate) fn into_response(self, watch: DeltaWatchRequest) -> DeltaResponse {
        DeltaResponse {
            watch,
            system_version: self.system_version,
            resources: self.resources,
            removed: self.removed,
            returned: self.returned,
            heartbeat: self.heartbeat,
        }
    }
}

/// A set of resources of one type that delta watches are evaluated against.
pub(crate) trait ResourceSet {
    /// The set's version (`system_version_info`).
    fn system_version(&self) -> Arc<str>;
    /// The resource with this name.
    fn get(&self, name: &str) -> Option<&EncodedResource>;
    /// Every resource.
    fn iter(&self) -> impl Iterator<Item = &EncodedResource>;
    /// What a client holding every resource at its version has, shared by
    /// every such client; `None` where the set keeps no such record.
    fn all_held(&self) -> Option<&Arc<ReturnedResources>> {
        None
    }
    /// Where the set remembers its last answer; `None` where it does not.
    fn memo(&self) -> Option<&Mutex<Option<RememberedDelta>>> {
        None
    }
}

/// A delta answer for a client holding `known` and subscribed to every
/// resource (`names` `None`) or to exactly `names`: it depends on nothing
/// else, so the clients of a fleet, which hold the same shared record, get
/// it without evaluating again.
pub(crate) struct RememberedDelta {
    /// Kept alive so its address identifies it.
    known: Arc<ReturnedResources>,
    names: Option<Arc<[String]>>,
    answer: Option<Changes>,
}

impl RememberedDelta {
    fn answers(&self, sub: &Subscription) -> bool {
        Arc::ptr_eq(&self.known, sub.shared_returned())
            && match &self.names {
                None => sub.is_wildcard(),
                Some(names) => !sub.is_wildcard() && sub.names_are(names),
            }
    }
}

/// What a delta answer changes on the client.
#[derive(Clone)]
struct Changes {
    resources: Vec<EncodedResource>,
    removed: Vec<String>,
    returned: Arc<ReturnedResources>,
}

impl ResourceSet for TypeResources {
    fn system_version(&self) -> Arc<str> {
        Arc::clone(self.shared_version())
    }
    fn get(&self, name: &str) -> Option<&EncodedResource> {
        TypeResources::get(self, name)
    }
    fn iter(&self) -> impl Iterator<Item = &EncodedResource> {
        self.resources().iter()
    }
    fn all_held(&self) -> Option<&Arc<ReturnedResources>> {
        Some(self.delta_all_held())
    }
    fn memo(&self) -> Option<&Mutex<Option<RememberedDelta>>> {
        Some(&self.remembered_delta)
    }
}

/// Evaluates a delta watch: `Some` is the answer to send now, `None` means
/// hold the watch until the resources change.
///
/// Sends every wanted resource whose version differs from what the client
/// has, and removes every name the client has that is gone. A wildcard
/// subscription's first request is answered even when empty, so the client
/// can finish initializing.
pub(crate) fn delta_answer(
    resources: &impl ResourceSet,
    watch: &DeltaWatchRequest,
) -> Option<DeltaAnswer> {
    let sub = &watch.subscription;
    // A first request is answered even when empty; prefixes are rare.
    let memo = match resources.memo() {
        Some(memo) if !watch.first && sub.prefixes().is_empty() => Some(memo),
        _ => None,
    };
    let remembered = memo.and_then(|memo| {
        let memo = memo.lock();
        let last = memo.as_ref().filter(|m| m.answers(sub))?;
        Some(last.answer.clone())
    });
    let answer = match remembered {
        Some(answer) => answer,
        None => {
            let answer = evaluate(resources, watch);
            if let Some(memo) = memo {
                *memo.lock() = Some(RememberedDelta {
                    known: Arc::clone(sub.shared_returned()),
                    names: (!sub.is_wildcard()).then(|| Arc::clone(sub.names())),
                    answer: answer.clone(),
                });
            }
            answer
        }
    }?;
    Some(DeltaAnswer {
        system_version: resources.system_version(),
        resources: answer.resources,
        removed: answer.removed,
        returned: answer.returned,
        heartbeat: false,
    })
}

fn evaluate(resources: &impl ResourceSet, watch: &DeltaWatchRequest) -> Option<Changes> {
    let sub = &watch.subscription;
    let known = sub.returned();
    let changed = |r: &&EncodedResource| known.get(r.name()).is_none_or(|v| v != r.version());
    let send: Vec<EncodedResource> = if sub.is_wildcard() || !sub.prefixes().is_empty() {
        resources
            .iter()
            .filter(|r| sub.wants(r.name()))
            .filter(changed)
            .cloned()
            .collect()
    } else {
        let mut names: Vec<&String> = sub.names().iter().collect();
        names.sort();
        names
            .into_iter()
            .filter_map(|n| resources.get(n))
            .filter(changed)
            .cloned()
            .collect()
    };
    let mut removed: Vec<String> = known
        .keys()
        .filter(|name| resources.get(name).is_none())
        .map(|name| name.to_string())
        .collect();
    removed.sort();
    if send.is_empty() && removed.is_empty() && !(watch.first && sub.is_wildcard()) {
        return None;
    }
    let mut returned = known.clone();
    for name in &removed {
        returned.remove(name.as_str());
    }
    for r in &send {
        returned.insert(Arc::clone(r.shared_name()), Arc::clone(r.version()));
    }
    Some(Changes {
        resources: send,
        removed,
        returned: shared_if_all(resources, returned),
    })
}

/// `returned`, or the set's shared record when they are the same: a fleet
/// of clients that each hold every resource then keeps one map, not one
/// per stream.
fn shared_if_all(
    resources: &impl ResourceSet,
    returned: ReturnedResources,
) -> Arc<ReturnedResources> {
    match resources.all_held() {
        Some(all)
            if all.len() == returned.len()
                && all.iter().all(|(name, version)| {
                    returned
                        .get(name)
                        .is_some_and(|v| Arc::ptr_eq(v, version) || v == version)
                }) =>
        {
            Arc::clone(all)
        }
        _ => Arc::new(returned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Snapshot, Subscription};
    use crate::resource::{type_url, ResourceType};
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    use std::collections::HashMap;

    fn cla(name: &str, marker: u32) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: name.into(),
            policy: Some(Default::default()).filter(|_| marker > 0),
            ..Default::default()
        }
    }

    fn snapshot(items: &[(&str, u32)]) -> Snapshot {
        Snapshot::builder("s1")
            .endpoints(items.iter().map(|(n, m)| cla(n, *m)))
            .build()
            .unwrap()
    }

    fn eds(snapshot: &Snapshot) -> &TypeResources {
        snapshot.of_type(ResourceType::Endpoint)
    }

    fn watch(sub: Subscription, first: bool) -> DeltaWatchRequest {
        DeltaWatchRequest {
            node: None,
            request: Arc::new(DeltaDiscoveryRequest {
                type_url: type_url::ENDPOINT.into(),
                ..Default::default()
            }),
            subscription: Arc::new(sub),
            first,
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn sent(resp: &DeltaAnswer) -> Vec<&str> {
        resp.resources.iter().map(|r| r.name()).collect()
    }

    #[test]
    fn clients_holding_everything_share_one_record() {
        let snap = snapshot(&[("a", 0), ("b", 0)]);
        let all = Subscription::delta(&strings(&["a", "b"]), &[], &HashMap::new(), true);
        let one = delta_answer(eds(&snap), &watch(all.clone(), true)).unwrap();
        let two = delta_answer(eds(&snap), &watch(all, true)).unwrap();
        assert!(Arc::ptr_eq(&one.returned, &two.returned));
        assert_eq!(one.returned.len(), 2);
        // A client holding a part keeps its own.
        let part = Subscription::delta(&strings(&["a"]), &[], &HashMap::new(), true);
        let three = delta_answer(eds(&snap), &watch(part, true)).unwrap();
        assert!(!Arc::ptr_eq(&one.returned, &three.returned));
        assert_eq!(
            three.returned.keys().map(|k| &**k).collect::<Vec<_>>(),
            ["a"]
        );
    }

    /// Clients subscribed alike holding the same record share one
    /// evaluation; a client holding another record, or naming other
    /// resources, is evaluated on its own.
    #[test]
    fn clients_subscribed_alike_holding_one_record_share_the_answer() {
        let old = snapshot(&[("a", 0), ("b", 0), ("gone", 0)]);
        let next = snapshot(&[("a", 0), ("b", 1), ("new", 0)]);
        let wildcard = || Subscription::delta(&[], &[], &HashMap::new(), true);
        let first = delta_answer(eds(&old), &watch(wildcard(), true)).unwrap();
        let mut holding_old = wildcard();
        holding_old.set_shared_returned(Arc::clone(&first.returned));
        let one = delta_answer(eds(&next), &watch(holding_old.clone(), false)).unwrap();
        let two = delta_answer(eds(&next), &watch(holding_old, false)).unwrap();
        for resp in [&one, &two] {
            assert_eq!(sent(resp), ["b", "new"]);
            assert_eq!(resp.removed, ["gone"]);
        }
        assert!(Arc::ptr_eq(&one.returned, &two.returned));
        assert!(Arc::ptr_eq(&one.returned, eds(&next).delta_all_held()));
        // Another record, even with equal contents, gets its own evaluation.
        let mut holding_a = wildcard();
        holding_a.set_returned(
            [(
                Arc::from("a"),
                Arc::clone(eds(&next).get("a").unwrap().version()),
            )]
            .into_iter()
            .collect(),
        );
        let three = delta_answer(eds(&next), &watch(holding_a, false)).unwrap();
        assert_eq!(sent(&three), ["b", "new"]);
        assert!(three.removed.is_empty());
        // Named subscriptions share an answer only with the same names.
        let named = |names: &[&str]| {
            let mut sub = Subscription::delta(&strings(names), &[], &HashMap::new(), true);
            sub.set_shared_returned(Arc::clone(&first.returned));
            sub
        };
        let ab = delta_answer(eds(&next), &watch(named(&["a", "b"]), false)).unwrap();
        let ab_too = delta_answer(eds(&next), &watch(named(&["a", "b"]), false)).unwrap();
        assert!(Arc::ptr_eq(&ab.returned, &ab_too.returned));
        assert_eq!((sent(&ab), &ab.removed), (vec!["b"], &strings(&["gone"])));
        let a = delta_answer(eds(&next), &watch(named(&["a"]), false)).unwrap();
        assert!(a.resources.is_empty() && a.removed == ["gone"]);
        // Holding the new record: nothing to send, also when remembered.
        let mut current = wildcard();
        current.set_shared_returned(Arc::clone(&one.returned));
        for _ in 0..2 {
            assert!(delta_answer(eds(&next), &watch(current.clone(), false)).is_none());
        }
    }

    #[test]
    fn sends_only_what_the_client_lacks() {
        let snap = snapshot(&[("a", 0), ("b", 0)]);
        let sub = Subscription::delta(&strings(&["a", "b", "zz"]), &[], &HashMap::new(), true);
        let first = delta_answer(eds(&snap), &watch(sub, true)).unwrap();
        assert_eq!(sent(&first), ["a", "b"]);
        assert_eq!(&*first.system_version, "s1");
        assert!(first.removed.is_empty());

        let mut sub = Subscription::delta(&strings(&["a", "b"]), &[], &HashMap::new(), true);
        sub.set_shared_returned(first.returned.clone());
        assert!(delta_answer(eds(&snap), &watch(sub.clone(), false)).is_none());

        // b changes, a does not: only b is sent.
        let next = snapshot(&[("a", 0), ("b", 1)]);
        let resp = delta_answer(eds(&next), &watch(sub, false)).unwrap();
        assert_eq!(sent(&resp), ["b"]);
    }

    #[test]
    fn initial_versions_are_not_resent() {
        let snap = snapshot(&[("a", 0), ("b", 0)]);
        let a_version = eds(&snap).get("a").unwrap().version().to_string();
        let initial: HashMap<String, String> = [
            ("a".to_string(), a_version),
            ("gone".to_string(), "x".to_string()),
        ]
        .into();
        let sub = Subscription::delta(&strings(&["a", "b", "gone"]), &[], &initial, true);
        let resp = delta_answer(eds(&snap), &watch(sub, true)).unwrap();
        assert_eq!(sent(&resp), ["b"]);
        assert_eq!(resp.removed, ["gone"]);
        assert!(!resp.returned.contains_key("gone"));
    }

    #[test]
    fn first_wildcard_request_is_answered_even_when_empty() {
        let empty = snapshot(&[]);
        let sub = Subscription::delta(&[], &[], &HashMap::new(), true);
        let resp = delta_answer(eds(&empty), &watch(sub.clone(), true)).unwrap();
        assert!(resp.resources.is_empty() && resp.removed.is_empty());
        assert!(delta_answer(eds(&empty), &watch(sub, false)).is_none());
        let named = Subscription::delta(&strings(&["a"]), &[], &HashMap::new(), false);
        assert!(delta_answer(eds(&empty), &watch(named, true)).is_none());
    }

    #[test]
    fn deleted_resources_are_removed() {
        let before = snapshot(&[("a", 0), ("b", 0)]);
        let sub = Subscription::delta(&[], &[], &HashMap::new(), true);
        let first = delta_answer(eds(&before), &watch(sub.clone(), true)).unwrap();
        let mut sub = sub;
        sub.set_shared_returned(first.returned);
        let after = snapshot(&[("b", 0)]);
        let resp = delta_answer(eds(&after), &watch(sub, false)).unwrap();
        assert!(resp.resources.is_empty());
        assert_eq!(resp.removed, ["a"]);
        assert_eq!(resp.returned.len(), 1);
    }

    #[test]
    fn unsubscribing_under_wildcard_resends() {
        let snap = snapshot(&[("a", 0)]);
        let mut sub = Subscription::delta(&strings(&["*", "a"]), &[], &HashMap::new(), true);
        let first = delta_answer(eds(&snap), &watch(sub.clone(), true)).unwrap();
        sub.set_shared_returned(first.returned);
        sub.update_delta(&[], &strings(&["a"]));
        let resp = delta_answer(eds(&snap), &watch(sub, false)).unwrap();
        assert_eq!(sent(&resp), ["a"]);
    }

    #[test]
    fn prefixes_select_by_name() {
        let snap = snapshot(&[("svc/a", 0), ("svc/b", 0), ("other", 0)]);
        let sub = Subscription::delta(&strings(&["svc/*"]), &[], &HashMap::new(), false);
        let resp = delta_answer(eds(&snap), &watch(sub, true)).unwrap();
        assert_eq!(sent(&resp), ["svc/a", "svc/b"]);
    }
}
