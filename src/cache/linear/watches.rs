//! A linear cache's open watches and the indexes that find the ones a
//! change concerns.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::super::{
    DeltaResponse, DeltaWatchRequest, ResponseSink, SotwResponse, Subscription, WatchRequest,
};

/// An open watch, state of the world or delta.
pub(super) enum Watch {
    Sotw(WatchRequest, ResponseSink<SotwResponse>),
    Delta(DeltaWatchRequest, ResponseSink<DeltaResponse>),
}

impl Watch {
    fn subscription(&self) -> &Arc<Subscription> {
        match self {
            Watch::Sotw(request, _) => &request.subscription,
            Watch::Delta(request, _) => &request.subscription,
        }
    }
}

/// Open watches by id, indexed three ways: a wildcard watch only under
/// `wildcard`; any other under each name it subscribes and each prefix
/// (`svc/` for `svc/*`). A change to a name then concerns the watches under
/// that name, under each prefix of the name, and the wildcard ones: finding
/// them costs the length of the name, not the number of watches or prefixes.
#[derive(Default)]
pub(super) struct Watches {
    next_id: u64,
    open: HashMap<u64, Watch>,
    by_name: HashMap<String, HashSet<u64>>,
    by_prefix: HashMap<String, HashSet<u64>>,
    wildcard: HashSet<u64>,
}

impl Watches {
    /// Stores a watch and indexes it; returns its id.
    pub(super) fn insert(&mut self, watch: Watch) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let sub = watch.subscription();
        if sub.is_wildcard() {
            self.wildcard.insert(id);
        } else {
            for name in sub.names().iter() {
                self.by_name.entry(name.clone()).or_default().insert(id);
            }
            for prefix in sub.prefixes() {
                self.by_prefix.entry(prefix.clone()).or_default().insert(id);
            }
        }
        self.open.insert(id, watch);
        id
    }

    /// Removes a watch from the store and from every index.
    pub(super) fn remove(&mut self, id: u64) -> Option<Watch> {
        let watch = self.open.remove(&id)?;
        let sub = watch.subscription();
        if sub.is_wildcard() {
            self.wildcard.remove(&id);
        } else {
            for name in sub.names().iter() {
                unindex(&mut self.by_name, name, id);
            }
            for prefix in sub.prefixes() {
                unindex(&mut self.by_prefix, prefix, id);
            }
        }
        Some(watch)
    }

    pub(super) fn get(&self, id: u64) -> Option<&Watch> {
        self.open.get(&id)
    }

    /// The watches a change to these names concerns, in opening order.
    pub(super) fn affected<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> BTreeSet<u64> {
        let mut ids: BTreeSet<u64> = self.wildcard.iter().copied().collect();
        for name in names {
            if let Some(watches) = self.by_name.get(name) {
                ids.extend(watches);
            }
            if self.by_prefix.is_empty() {
                continue;
            }
            // Prefixes end with '/': look up each of the name's.
            for (at, _) in name.match_indices('/') {
                if let Some(watches) = self.by_prefix.get(&name[..=at]) {
                    ids.extend(watches);
                }
            }
        }
        ids
    }

    /// Open watches in all.
    pub(super) fn len(&self) -> usize {
        self.open.len()
    }

    /// Open watches that want `name`: under it, a prefix of it, or wildcard.
    pub(super) fn count_for(&self, name: &str) -> usize {
        self.affected([name]).len()
    }

    pub(super) fn wildcard_count(&self) -> usize {
        self.wildcard.len()
    }

    /// Watches subscribed to at least one prefix.
    pub(super) fn prefix_count(&self) -> usize {
        let ids: HashSet<u64> = self.by_prefix.values().flatten().copied().collect();
        ids.len()
    }

    /// Number of index entries, for tests checking nothing is left behind.
    #[cfg(test)]
    pub(super) fn index_sizes(&self) -> (usize, usize, usize) {
        (
            self.by_name.len(),
            self.by_prefix.len(),
            self.wildcard.len(),
        )
    }
}

fn unindex(index: &mut HashMap<String, HashSet<u64>>, key: &str, id: u64) {
    if let Some(ids) = index.get_mut(key) {
        ids.remove(&id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}
