//! A linear cache's resources, and what a state-of-the-world watch gets
//! from them.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::super::delta_response::ResourceSet;
use super::super::sotw_response::SotwAnswer;
use super::super::{EncodedResource, ReturnedResources, Subscription, WatchRequest};

/// One stored resource and the cache version it was last set at.
pub(super) struct Entry {
    pub(super) resource: EncodedResource,
    /// The SotW per-resource version: the cache version when last set.
    pub(super) version: Arc<str>,
    /// The counter behind `version`, to re-stamp it if the prefix changes.
    pub(super) set_at: u64,
}

/// Every resource of the cache, by name (sorted, so prefix subscriptions
/// are a range scan), and the cache version.
pub(super) struct Resources {
    pub(super) map: BTreeMap<Arc<str>, Entry>,
    pub(super) version: Arc<str>,
}

impl ResourceSet for Resources {
    fn system_version(&self) -> Arc<str> {
        Arc::clone(&self.version)
    }
    fn get(&self, name: &str) -> Option<&EncodedResource> {
        self.map.get(name).map(|e| &e.resource)
    }
    fn iter(&self) -> impl Iterator<Item = &EncodedResource> {
        self.map.values().map(|e| &e.resource)
    }
}

impl Resources {
    /// The subscribed resources that exist, each once, sorted by name. Costs
    /// what the subscription names, not the size of the cache (except for a
    /// wildcard subscription, which wants everything).
    pub(super) fn subscribed(&self, sub: &Subscription) -> Vec<&Entry> {
        if sub.is_wildcard() {
            return self.map.values().collect();
        }
        let mut picked: BTreeMap<&str, &Entry> = BTreeMap::new();
        for name in sub.names().iter() {
            if let Some((key, entry)) = self.map.get_key_value(name.as_str()) {
                picked.insert(key, entry);
            }
        }
        for prefix in sub.prefixes() {
            let from = (Bound::Included(prefix.as_str()), Bound::Unbounded);
            for (key, entry) in self
                .map
                .range::<str, _>(from)
                .take_while(|(key, _)| key.starts_with(prefix.as_str()))
            {
                picked.insert(key, entry);
            }
        }
        picked.into_values().collect()
    }

    /// Every subscribed resource, at the cache version.
    pub(super) fn full_answer(&self, watch: &WatchRequest) -> SotwAnswer {
        let entries = self.subscribed(&watch.subscription);
        self.answer(&entries, returned_of(&entries))
    }

    fn answer(&self, entries: &[&Entry], returned: ReturnedResources) -> SotwAnswer {
        SotwAnswer {
            version: Arc::clone(&self.version),
            resources: entries.iter().map(|e| e.resource.clone()).collect(),
            returned: Arc::new(returned),
        }
    }
}

fn returned_of(entries: &[&Entry]) -> ReturnedResources {
    entries
        .iter()
        .map(|e| (Arc::clone(e.resource.shared_name()), Arc::clone(&e.version)))
        .collect()
}

/// Evaluates a state-of-the-world watch: `Some` is the answer to send now,
/// `None` means hold the watch until a resource it wants changes.
///
/// - A version that is empty or lacks `prefix` (a first request, or a client
///   coming from another instance) gets every subscribed resource, even none.
/// - Otherwise the resources whose version differs from what the client has
///   are sent. `full_state` types (CDS, LDS) then get every subscribed
///   resource, also when the only change is a deletion.
/// - Other types cannot express a deletion; a deleted name is dropped from
///   `returned` so that adding it back sends it again.
pub(super) fn sotw_answer(
    resources: &Resources,
    prefix: &str,
    full_state: bool,
    watch: &WatchRequest,
) -> Option<SotwAnswer> {
    let version = watch.version_info();
    if version.is_empty() || !version.starts_with(prefix) {
        return Some(resources.full_answer(watch));
    }
    let sub = &*watch.subscription;
    let known = sub.returned();
    let wanted = resources.subscribed(sub);
    let changed: Vec<&Entry> = wanted
        .iter()
        .copied()
        .filter(|e| known.get(e.resource.name()) != Some(&e.version))
        .collect();
    let gone = |name: &str| !resources.map.contains_key(name) || !sub.wants(name);
    if full_state {
        if changed.is_empty() && !known.keys().any(|name| gone(name)) {
            return None;
        }
        return Some(resources.answer(&wanted, returned_of(&wanted)));
    }
    if changed.is_empty() {
        return None;
    }
    let mut returned: ReturnedResources = known
        .iter()
        .filter(|(name, _)| !gone(name))
        .map(|(name, v)| (Arc::clone(name), Arc::clone(v)))
        .collect();
    returned.extend(returned_of(&changed));
    Some(resources.answer(&changed, returned))
}
