//! An immutable, versioned set of resources of every type for one node (or
//! a group of nodes sharing it).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

use bytes::Bytes;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, ScopedRouteConfiguration, VirtualHost,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::runtime::v3::Runtime;

use super::delta_response::RememberedDelta;
use super::subscription::same_names;
use super::{EncodedList, EncodedResource, ReturnedResources, Subscription};
use crate::resource::{ResourceType, XdsResource};

/// Errors from building a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Two resources of one type share a name.
    #[error("duplicate {type_url} resource named {name:?}")]
    DuplicateName {
        /// Type URL of the resources.
        type_url: String,
        /// The repeated name.
        name: String,
    },
    /// A resource has an empty name, so no client could ask for it.
    #[error("a {type_url} resource has an empty name")]
    EmptyName {
        /// Type URL of the resource.
        type_url: String,
    },
    /// A TTL was given for a resource the snapshot does not hold.
    #[error("a TTL was set for {type_url} {name:?}, which is not in the snapshot")]
    UnknownTtlResource {
        /// Type URL of the named resource.
        type_url: String,
        /// The name given.
        name: String,
    },
    /// A version is empty: clients send an empty version before they have
    /// any, so it could never be told apart from "nothing received".
    #[error("the version of {type_url} is empty")]
    EmptyVersion {
        /// Type URL whose version is empty.
        type_url: String,
    },
}

/// The resources of one type in a snapshot and their version.
#[derive(Default)]
pub struct TypeResources {
    version: Arc<str>,
    ordered: Arc<EncodedList>,
    index: HashMap<Arc<str>, usize, ahash::RandomState>,
    /// What a wildcard client has after a full response: built once.
    wildcard_returned: OnceLock<Arc<ReturnedResources>>,
    /// What a delta client holding every resource has: built once.
    delta_all_held: OnceLock<Arc<ReturnedResources>>,
    /// The last full response to a named subscription: every node of a
    /// fleet usually names the same resources, so they share one answer.
    named_full: Mutex<Option<NamedFull>>,
    /// The last delta answer: a fleet's clients usually subscribe alike and
    /// hold the same record (the previous snapshot's), so they share one
    /// evaluation.
    pub(crate) remembered_delta: Mutex<Option<RememberedDelta>>,
}

struct NamedFull {
    names: Arc<[String]>,
    resources: Arc<EncodedList>,
    returned: Arc<ReturnedResources>,
}

/// A full answer: the resources and what the client has afterwards.
pub(crate) type FullAnswer = (Arc<EncodedList>, Arc<ReturnedResources>);

impl TypeResources {
    fn new(version: &str, mut resources: Vec<EncodedResource>) -> Result<Self, SnapshotError> {
        resources.sort_by(|a, b| a.name().cmp(b.name()));
        let mut index =
            HashMap::with_capacity_and_hasher(resources.len(), ahash::RandomState::new());
        for (i, resource) in resources.iter().enumerate() {
            if index.insert(resource.shared_name().clone(), i).is_some() {
                return Err(SnapshotError::DuplicateName {
                    type_url: resource.type_url().to_string(),
                    name: resource.name().to_string(),
                });
            }
        }
        Ok(TypeResources {
            version: Arc::from(version),
            ordered: Arc::new(resources.into()),
            index,
            wildcard_returned: OnceLock::new(),
            delta_all_held: OnceLock::new(),
            named_full: Mutex::new(None),
            remembered_delta: Mutex::new(None),
        })
    }

    /// The full answer to a wildcard subscription, shared by all.
    pub(crate) fn full_wildcard(&self) -> FullAnswer {
        let returned = self
            .wildcard_returned
            .get_or_init(|| Arc::new(self.returned_of(&self.ordered)));
        (Arc::clone(&self.ordered), Arc::clone(returned))
    }

    /// The full answer to a subscription naming exactly `names` (sorted),
    /// shared with the last subscription that named the same.
    pub(crate) fn full_named(&self, names: &Arc<[String]>) -> FullAnswer {
        if let Some(memo) = self.named_full.lock().as_ref() {
            if same_names(&memo.names, names) {
                return (Arc::clone(&memo.resources), Arc::clone(&memo.returned));
            }
        }
        let resources: Arc<EncodedList> =
            names.iter().filter_map(|n| self.get(n)).cloned().collect();
        let returned = Arc::new(self.returned_of(&resources));
        *self.named_full.lock() = Some(NamedFull {
            names: Arc::clone(names),
            resources: Arc::clone(&resources),
            returned: Arc::clone(&returned),
        });
        (resources, returned)
    }

    /// Whether `sub` holds one of this type's shared full answers: then it
    /// has every resource it subscribes to, at this version, and nothing
    /// else. Checked by identity, so an ACK costs no per-resource work.
    pub(crate) fn is_full_answer_of(&self, sub: &Subscription) -> bool {
        let held = sub.shared_returned();
        if sub.is_wildcard() {
            return self
                .wildcard_returned
                .get()
                .is_some_and(|r| Arc::ptr_eq(r, held));
        }
        if !sub.prefixes().is_empty() {
            return false;
        }
        self.named_full
            .lock()
            .as_ref()
            .is_some_and(|memo| Arc::ptr_eq(&memo.returned, held) && sub.names_are(&memo.names))
    }

    /// Every resource at its own version: what a delta client holding them
    /// all has, shared by every such client.
    pub(crate) fn delta_all_held(&self) -> &Arc<ReturnedResources> {
        self.delta_all_held.get_or_init(|| {
            Arc::new(
                self.ordered
                    .iter()
                    .map(|r| (Arc::clone(r.shared_name()), Arc::clone(r.version())))
                    .collect(),
            )
        })
    }

    /// Every resource in `items` at this type's version.
    pub(crate) fn returned_of(&self, items: &[EncodedResource]) -> ReturnedResources {
        items
            .iter()
            .map(|r| (Arc::clone(r.shared_name()), Arc::clone(&self.version)))
            .collect()
    }

    /// The version of this type.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The version as a shared string (no copy).
    pub fn shared_version(&self) -> &Arc<str> {
        &self.version
    }

    /// Every resource, sorted by name.
    pub fn resources(&self) -> &[EncodedResource] {
        &self.ordered
    }

    /// The resource with this name.
    pub fn get(&self, name: &str) -> Option<&EncodedResource> {
        self.index.get(name).map(|&i| &self.ordered[i])
    }

    /// Whether a resource with this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    /// Whether there are no resources.
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }
}

/// A versioned set of resources of every type, encoded once when built.
///
/// Cloning is cheap (shared), so setting the same snapshot for many nodes
/// costs no copies.
///
/// ```
/// use xds_control_plane::cache::Snapshot;
/// use xds_control_plane::envoy_types::pb::envoy::config::cluster::v3::Cluster;
///
/// let snapshot = Snapshot::builder("v1")
///     .clusters([Cluster { name: "backend".into(), ..Default::default() }])
///     .build()
///     .unwrap();
/// assert_eq!(snapshot.version(xds_control_plane::resource::type_url::CLUSTER), Some("v1"));
/// ```
#[derive(Clone)]
pub struct Snapshot(Arc<[TypeResources; ResourceType::COUNT]>);

impl Snapshot {
    /// Starts a snapshot whose every type carries `version` unless a type is
    /// given its own with [`SnapshotBuilder::type_version`].
    pub fn builder(version: impl Into<String>) -> SnapshotBuilder {
        SnapshotBuilder {
            version: version.into(),
            type_versions: Default::default(),
            resources: Default::default(),
            ttls: Vec::new(),
        }
    }

    /// The resources of a known type.
    pub fn of_type(&self, resource_type: ResourceType) -> &TypeResources {
        &self.0[resource_type.index()]
    }

    /// The resources of a type URL, if it is a type snapshots hold.
    pub fn by_type_url(&self, type_url: &str) -> Option<&TypeResources> {
        ResourceType::from_type_url(type_url).map(|t| self.of_type(t))
    }

    /// The version of a type URL (`None` for types snapshots do not hold).
    pub fn version(&self, type_url: &str) -> Option<&str> {
        self.by_type_url(type_url).map(TypeResources::version)
    }

    /// Decodes the resource of type `T` with this name.
    pub fn get<T: XdsResource + Default>(
        &self,
        name: &str,
    ) -> Option<Result<T, prost::DecodeError>> {
        self.of_type(T::TYPE).get(name).map(EncodedResource::decode)
    }

    /// Whether both handles share the same contents.
    pub fn ptr_eq(&self, other: &Snapshot) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for t in ResourceType::ALL {
            let res = self.of_type(t);
            map.entry(
                &t,
                &format_args!("{} ({} resources)", res.version(), res.len()),
            );
        }
        map.finish()
    }
}

/// Collects resources for a [`Snapshot`]; see [`Snapshot::builder`].
#[derive(Debug)]
#[must_use]
pub struct SnapshotBuilder {
    version: String,
    type_versions: [Option<String>; ResourceType::COUNT],
    resources: [Vec<EncodedResource>; ResourceType::COUNT],
    ttls: Vec<(ResourceType, String, Duration)>,
}

macro_rules! typed_setters {
    ($($(#[$doc:meta])* $method:ident: $ty:ty,)*) => {$(
        $(#[$doc])*
        pub fn $method(self, items: impl IntoIterator<Item = $ty>) -> Self {
            self.resources(items)
        }
    )*};
}

impl SnapshotBuilder {
    /// Adds typed resources; each is encoded now, once.
    pub fn resources<T: XdsResource>(mut self, resources: impl IntoIterator<Item = T>) -> Self {
        let slot = &mut self.resources[T::TYPE.index()];
        slot.extend(
            resources
                .into_iter()
                .map(|r| EncodedResource::from_message(&r)),
        );
        self
    }

    typed_setters! {
        /// Adds clusters (CDS).
        clusters: Cluster,
        /// Adds cluster load assignments (EDS).
        endpoints: ClusterLoadAssignment,
        /// Adds listeners (LDS).
        listeners: Listener,
        /// Adds route configurations (RDS).
        routes: RouteConfiguration,
        /// Adds scoped route configurations (SRDS).
        scoped_routes: ScopedRouteConfiguration,
        /// Adds virtual hosts (VHDS, delta only).
        virtual_hosts: VirtualHost,
        /// Adds secrets (SDS).
        secrets: Secret,
        /// Adds runtime layers (RTDS).
        runtimes: Runtime,
        /// Adds extension configurations (ECDS).
        extension_configs: TypedExtensionConfig,
    }

    /// Adds a resource already serialized, under an explicit name (needed
    /// for LEDS entries, which carry no name).
    pub fn encoded(mut self, resource_type: ResourceType, name: &str, bytes: Bytes) -> Self {
        self.resources[resource_type.index()].push(EncodedResource::from_bytes(
            resource_type.type_url(),
            name,
            bytes,
        ));
        self
    }

    /// Gives a resource a time to live: clients drop it unless a new version
    /// or a heartbeat (see [`SnapshotCache::spawn_heartbeats`](super::SnapshotCache::spawn_heartbeats))
    /// reaches them within `ttl`.
    pub fn ttl(
        mut self,
        resource_type: ResourceType,
        name: impl Into<String>,
        ttl: Duration,
    ) -> Self {
        self.ttls.push((resource_type, name.into(), ttl));
        self
    }

    /// Gives one type its own version.
    pub fn type_version(mut self, resource_type: ResourceType, version: impl Into<String>) -> Self {
        self.type_versions[resource_type.index()] = Some(version.into());
        self
    }

    /// Checks names and versions and indexes the resources.
    pub fn build(mut self) -> Result<Snapshot, SnapshotError> {
        for (resource_type, name, ttl) in std::mem::take(&mut self.ttls) {
            let slot = &mut self.resources[resource_type.index()];
            let Some(resource) = slot.iter_mut().find(|r| r.name() == name) else {
                return Err(SnapshotError::UnknownTtlResource {
                    type_url: resource_type.type_url().to_string(),
                    name,
                });
            };
            *resource = resource.with_ttl(ttl);
        }
        let mut types: [TypeResources; ResourceType::COUNT] = Default::default();
        let entries = self.type_versions.into_iter().zip(self.resources);
        for (resource_type, (version, resources)) in ResourceType::ALL.into_iter().zip(entries) {
            let version = version.unwrap_or_else(|| self.version.clone());
            let type_url = resource_type.type_url();
            if version.is_empty() {
                return Err(SnapshotError::EmptyVersion {
                    type_url: type_url.to_string(),
                });
            }
            if resources.iter().any(|r| r.name().is_empty()) {
                return Err(SnapshotError::EmptyName {
                    type_url: type_url.to_string(),
                });
            }
            types[resource_type.index()] = TypeResources::new(&version, resources)?;
        }
        Ok(Snapshot(Arc::new(types)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::type_url;
    fn cluster(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_type_gets_the_version_unless_overridden() {
        let snapshot = Snapshot::builder("v1")
            .clusters([cluster("b"), cluster("a")])
            .type_version(ResourceType::Endpoint, "e7")
            .build()
            .unwrap();
        assert_eq!(snapshot.version(type_url::CLUSTER), Some("v1"));
        assert_eq!(snapshot.version(type_url::LISTENER), Some("v1"));
        assert_eq!(snapshot.version(type_url::ENDPOINT), Some("e7"));
        assert_eq!(snapshot.version("type.googleapis.com/other.Type"), None);
        let names: Vec<_> = snapshot
            .of_type(ResourceType::Cluster)
            .resources()
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(snapshot.get::<Cluster>("a").unwrap().unwrap(), cluster("a"));
        assert!(snapshot.get::<Cluster>("zzz").is_none());
    }

    #[test]
    fn rejects_duplicates_empty_names_and_versions() {
        let dup = Snapshot::builder("v1")
            .clusters([cluster("a"), cluster("a")])
            .build();
        assert_eq!(
            dup.unwrap_err(),
            SnapshotError::DuplicateName {
                type_url: type_url::CLUSTER.into(),
                name: "a".into()
            }
        );
        let empty_name = Snapshot::builder("v1").clusters([cluster("")]).build();
        assert!(matches!(empty_name, Err(SnapshotError::EmptyName { .. })));
        let empty_version = Snapshot::builder("").build();
        assert!(matches!(
            empty_version,
            Err(SnapshotError::EmptyVersion { .. })
        ));
        let err = Snapshot::builder("v")
            .type_version(ResourceType::Route, "")
            .build();
        assert!(err.unwrap_err().to_string().contains("RouteConfiguration"));
    }

    #[test]
    fn ttls_apply_to_named_resources_only() {
        let snapshot = Snapshot::builder("v1")
            .clusters([cluster("a"), cluster("b")])
            .ttl(ResourceType::Cluster, "a", Duration::from_secs(2))
            .build()
            .unwrap();
        let clusters = snapshot.of_type(ResourceType::Cluster);
        assert_eq!(
            clusters.get("a").unwrap().ttl(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(clusters.get("b").unwrap().ttl(), None);
        let missing = Snapshot::builder("v1")
            .ttl(ResourceType::Runtime, "nope", Duration::from_secs(1))
            .build();
        assert!(matches!(
            missing,
            Err(SnapshotError::UnknownTtlResource { .. })
        ));
    }

    #[test]
    fn clones_share_encodings() {
        let snapshot = Snapshot::builder("v1")
            .clusters([cluster("a")])
            .build()
            .unwrap();
        let copy = snapshot.clone();
        assert!(copy.ptr_eq(&snapshot));
        let a = &snapshot.of_type(ResourceType::Cluster).resources()[0];
        let b = &copy.of_type(ResourceType::Cluster).resources()[0];
        assert!(a.ptr_eq(b));
    }
}
