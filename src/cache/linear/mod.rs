//! `LinearCache`: one collection of resources of a single type, served
//! alike to every client (no per-node state), with versions it manages.

mod input;
mod resources;
mod serve;
mod watches;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::delta_response::delta_answer;
use super::{CacheError, DeltaResponse, EncodedResource, ResponseSink, SotwResponse, WatchHandle};
use crate::resource;
use resources::{sotw_answer, Entry, Resources};
use watches::{Watch, Watches};

pub use input::{LinearCacheError, LinearResource};

/// A collection of resources of one type URL, shared by the whole fleet: no
/// per-node state, so one update serves every proxy. Typically EDS beside a
/// [`SnapshotCache`](super::SnapshotCache) for the rest, combined with a
/// [`MuxCache`](super::MuxCache).
///
/// - The cache version is `<prefix><counter>`; each mutation call that
///   changes something bumps the counter once. A state-of-the-world
///   resource's version is the cache version it was last set at; a delta
///   resource's version is a digest of its content.
/// - A change re-evaluates only the watches of the changed names, the
///   prefix watches matching them and the wildcard watches, so its cost
///   follows what changed, not the size of the fleet.
/// - No lock is held while answering a watch: answers are collected under
///   the lock and delivered after.
///
/// Cloning gives another handle to the same cache.
///
/// ```
/// use xds_control_plane::cache::LinearCache;
/// use xds_control_plane::envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
/// use xds_control_plane::resource::type_url;
///
/// let eds = LinearCache::new(type_url::ENDPOINT).with_version_prefix("eds-");
/// let cla = ClusterLoadAssignment { cluster_name: "backend".into(), ..Default::default() };
/// eds.update_resource("backend", &cla).unwrap();
/// assert_eq!(eds.version(), "eds-1");
/// assert_eq!(eds.num_resources(), 1);
/// ```
#[derive(Clone)]
pub struct LinearCache {
    inner: Arc<Inner>,
}

struct Inner {
    type_url: Arc<str>,
    full_state: bool,
    // One lock for resources and watches, held to mutate, to evaluate and to
    // take the watches answered; never while delivering.
    state: Mutex<State>,
}

struct State {
    prefix: String,
    counter: u64,
    resources: Resources,
    watches: Watches,
    /// Watches evaluated after mutations, so tests can check only the
    /// affected ones are.
    evaluations: u64,
}

/// Answers collected under the lock, delivered once it is released.
#[derive(Default)]
struct Answers {
    sotw: Vec<(ResponseSink<SotwResponse>, SotwResponse)>,
    delta: Vec<(ResponseSink<DeltaResponse>, DeltaResponse)>,
}

impl Answers {
    fn deliver(self) {
        for (sink, response) in self.sotw {
            sink.send(response);
        }
        for (sink, response) in self.delta {
            sink.send(response);
        }
    }
}

impl State {
    fn stamp(&self, counter: u64) -> Arc<str> {
        Arc::from(format!("{}{counter}", self.prefix))
    }

    /// Re-evaluates the watches a change to `modified` concerns, taking out
    /// the ones that now have an answer.
    fn notify(&mut self, modified: &[Arc<str>], full_state: bool) -> Answers {
        let mut answers = Answers::default();
        let affected = self.watches.affected(modified.iter().map(|n| &**n));
        for id in affected {
            self.evaluations += 1;
            let resources = &self.resources;
            match self.watches.get(id) {
                Some(Watch::Sotw(request, _)) => {
                    if let Some(answer) = sotw_answer(resources, &self.prefix, full_state, request)
                    {
                        if let Some(Watch::Sotw(request, sink)) = self.watches.remove(id) {
                            answers.sotw.push((sink, answer.into_response(request)));
                        }
                    }
                }
                Some(Watch::Delta(request, _)) => {
                    if let Some(answer) = delta_answer(resources, request) {
                        if let Some(Watch::Delta(request, sink)) = self.watches.remove(id) {
                            answers.delta.push((sink, answer.into_response(request)));
                        }
                    }
                }
                None => {}
            }
        }
        answers
    }
}

impl LinearCache {
    /// An empty cache serving `type_url`, at version `0`.
    pub fn new(type_url: impl Into<String>) -> Self {
        let type_url: String = type_url.into();
        LinearCache {
            inner: Arc::new(Inner {
                full_state: resource::requires_full_state_in_sotw(&type_url),
                type_url: Arc::from(type_url),
                state: Mutex::new(State {
                    prefix: String::new(),
                    counter: 0,
                    resources: Resources {
                        map: BTreeMap::new(),
                        version: Arc::from("0"),
                    },
                    watches: Watches::default(),
                    evaluations: 0,
                }),
            }),
        }
    }

    /// Versions become `<prefix><counter>`. A client whose version lacks the
    /// prefix (it was served by another instance) gets every subscribed
    /// resource at once. Meant for construction, before serving.
    pub fn with_version_prefix(self, prefix: impl Into<String>) -> Self {
        {
            let mut state = self.inner.state.lock();
            state.prefix = prefix.into();
            state.resources.version = state.stamp(state.counter);
            let prefix = state.prefix.clone();
            for entry in state.resources.map.values_mut() {
                entry.version = Arc::from(format!("{prefix}{}", entry.set_at));
            }
        }
        self
    }

    /// Adds resources, as one [`update_resources`](Self::update_resources).
    pub fn with_initial_resources<N, R>(
        self,
        resources: impl IntoIterator<Item = (N, R)>,
    ) -> Result<Self, LinearCacheError>
    where
        N: AsRef<str>,
        R: LinearResource,
    {
        self.update_resources(resources, std::iter::empty::<&str>())?;
        Ok(self)
    }

    /// The type URL this cache serves.
    pub fn type_url(&self) -> &str {
        &self.inner.type_url
    }

    /// Sets (adds or replaces) one resource.
    pub fn update_resource<M: prost::Name>(
        &self,
        name: &str,
        resource: &M,
    ) -> Result<(), LinearCacheError> {
        self.update_resources([(name, resource)], std::iter::empty::<&str>())
    }

    /// Sets one already encoded resource, under its own name.
    pub fn update_encoded_resource(
        &self,
        resource: EncodedResource,
    ) -> Result<(), LinearCacheError> {
        let name = resource.shared_name().clone();
        self.update_resources([(name, resource)], std::iter::empty::<&str>())
    }

    /// Removes one resource; removing a name that does not exist does nothing.
    pub fn delete_resource(&self, name: &str) {
        self.delete_resources([name]);
    }

    /// Removes resources, with one version bump and one notification pass.
    pub fn delete_resources<D: AsRef<str>>(&self, names: impl IntoIterator<Item = D>) {
        self.apply(
            Vec::new(),
            names.into_iter().map(|n| n.as_ref().to_string()).collect(),
            false,
        );
    }

    /// Sets `upserts` and removes `deletes` (applied after the upserts),
    /// with one version bump and one notification pass: much cheaper than a
    /// loop of single updates when many watches are open.
    ///
    /// Every upsert is checked first; on an error nothing changes. A
    /// resource set to the bytes it already has is not a change.
    pub fn update_resources<N, R, D>(
        &self,
        upserts: impl IntoIterator<Item = (N, R)>,
        deletes: impl IntoIterator<Item = D>,
    ) -> Result<(), LinearCacheError>
    where
        N: AsRef<str>,
        R: LinearResource,
        D: AsRef<str>,
    {
        let encoded = self.encode_all(upserts)?;
        let deletes = deletes
            .into_iter()
            .map(|n| n.as_ref().to_string())
            .collect();
        self.apply(encoded, deletes, false);
        Ok(())
    }

    /// Replaces every resource with `resources`: the others are deleted.
    /// One version bump and one notification pass; on an error nothing
    /// changes.
    pub fn set_resources<N, R>(
        &self,
        resources: impl IntoIterator<Item = (N, R)>,
    ) -> Result<(), LinearCacheError>
    where
        N: AsRef<str>,
        R: LinearResource,
    {
        let encoded = self.encode_all(resources)?;
        self.apply(encoded, Vec::new(), true);
        Ok(())
    }

    /// Every resource, sorted by name.
    pub fn resources(&self) -> Vec<EncodedResource> {
        let state = self.inner.state.lock();
        state
            .resources
            .map
            .values()
            .map(|e| e.resource.clone())
            .collect()
    }

    /// The resource of this name.
    pub fn resource(&self, name: &str) -> Option<EncodedResource> {
        let state = self.inner.state.lock();
        state.resources.map.get(name).map(|e| e.resource.clone())
    }

    /// How many resources the cache holds.
    pub fn num_resources(&self) -> usize {
        self.inner.state.lock().resources.map.len()
    }

    /// Open watches wanting `name`: by name, by a prefix of it, or wildcard.
    pub fn num_watches(&self, name: &str) -> usize {
        self.inner.state.lock().watches.count_for(name)
    }

    /// Open wildcard watches.
    pub fn num_wildcard_watches(&self) -> usize {
        self.inner.state.lock().watches.wildcard_count()
    }

    /// Open watches subscribed to at least one prefix (`svc/*`).
    pub fn num_prefix_watches(&self) -> usize {
        self.inner.state.lock().watches.prefix_count()
    }

    /// Open watches in all, state of the world and delta.
    pub fn num_open_watches(&self) -> usize {
        self.inner.state.lock().watches.len()
    }

    /// The cache version, `<prefix><counter>`.
    pub fn version(&self) -> String {
        self.inner.state.lock().resources.version.to_string()
    }

    #[cfg(test)]
    fn evaluations(&self) -> u64 {
        self.inner.state.lock().evaluations
    }

    fn encode_all<N, R>(
        &self,
        resources: impl IntoIterator<Item = (N, R)>,
    ) -> Result<Vec<EncodedResource>, LinearCacheError>
    where
        N: AsRef<str>,
        R: LinearResource,
    {
        resources
            .into_iter()
            .map(|(name, r)| r.into_encoded(&self.inner.type_url, name.as_ref()))
            .collect()
    }

    /// Applies one mutation: bumps the version once if anything changed,
    /// answers the watches it concerns after releasing the lock.
    fn apply(&self, upserts: Vec<EncodedResource>, deletes: Vec<String>, replace_all: bool) {
        let _update = crate::metrics::CacheUpdate::linear();
        let answers = {
            let mut guard = self.inner.state.lock();
            let state = &mut *guard;
            let counter = state.counter + 1;
            let version = state.stamp(counter);
            let mut modified: Vec<Arc<str>> = Vec::new();
            if replace_all {
                let kept: HashSet<&str> = upserts.iter().map(EncodedResource::name).collect();
                state.resources.map.retain(|name, _| {
                    let keep = kept.contains(&**name);
                    if !keep {
                        modified.push(Arc::clone(name));
                    }
                    keep
                });
            }
            for resource in upserts {
                let name = Arc::clone(resource.shared_name());
                if let Some(old) = state.resources.map.get(&*name) {
                    if old.resource.bytes() == resource.bytes()
                        && old.resource.ttl() == resource.ttl()
                    {
                        continue;
                    }
                }
                let entry = Entry {
                    resource,
                    version: Arc::clone(&version),
                    set_at: counter,
                };
                state.resources.map.insert(Arc::clone(&name), entry);
                modified.push(name);
            }
            for name in deletes {
                if let Some((name, _)) = state.resources.map.remove_entry(name.as_str()) {
                    modified.push(name);
                }
            }
            if modified.is_empty() {
                return;
            }
            state.counter = counter;
            state.resources.version = version;
            state.notify(&modified, self.inner.full_state)
        };
        answers.deliver();
    }

    fn check_type(&self, type_url: &str) -> Result<(), CacheError> {
        if type_url != &*self.inner.type_url {
            return Err(CacheError::UnsupportedType(type_url.to_string()));
        }
        Ok(())
    }

    /// Stores a watch that has no answer yet; its handle cancels it.
    fn hold(&self, state: &mut State, watch: Watch) -> WatchHandle {
        let id = state.watches.insert(watch);
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        WatchHandle::new(move || {
            if let Some(inner) = inner.upgrade() {
                let removed = inner.state.lock().watches.remove(id);
                drop(removed);
            }
        })
    }
}

impl fmt::Debug for LinearCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("LinearCache")
            .field("type_url", &self.inner.type_url)
            .field("version", &state.resources.version)
            .field("resources", &state.resources.map.len())
            .field("watches", &state.watches.len())
            .finish()
    }
}
