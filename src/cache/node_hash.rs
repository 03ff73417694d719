//! How a request's node is turned into the key its snapshot is stored under.

use std::borrow::Cow;

use envoy_types::pb::envoy::config::core::v3::Node;

/// Maps the node of a request to a cache key.
///
/// Implement it to share one snapshot across a group of proxies, for example
/// keying by `node.cluster` ([`ClusterHash`] does that, with a fallback for
/// nodes without a cluster):
///
/// ```
/// use xds_control_plane::cache::NodeHash;
/// use xds_control_plane::envoy_types::pb::envoy::config::core::v3::Node;
///
/// struct ByCluster;
/// impl NodeHash for ByCluster {
///     fn id(&self, node: Option<&Node>) -> String {
///         node.map(|n| n.cluster.clone()).unwrap_or_default()
///     }
/// }
/// ```
pub trait NodeHash: Send + Sync + 'static {
    /// The key for this node (`None` when the request carries no node).
    fn id(&self, node: Option<&Node>) -> String;

    /// The same key, borrowed where it can be: caches look the node up on
    /// every request (each ACK), and a key that is a field of the node or
    /// of the hash needs no copy. Defaults to [`NodeHash::id`]; override it
    /// to return the same key without allocating.
    fn id_of<'a>(&'a self, node: Option<&'a Node>) -> Cow<'a, str> {
        Cow::Owned(self.id(node))
    }
}

/// Keys nodes by `node.id`, the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdHash;

impl NodeHash for IdHash {
    fn id(&self, node: Option<&Node>) -> String {
        self.id_of(node).into_owned()
    }

    fn id_of<'a>(&'a self, node: Option<&'a Node>) -> Cow<'a, str> {
        Cow::Borrowed(node.map_or("", |n| n.id.as_str()))
    }
}

/// Keys nodes by `node.cluster`, so that every proxy of one service cluster
/// (Envoy's `--service-cluster`, or `node.cluster` in its bootstrap) shares
/// one snapshot: set a snapshot per group with
/// `cache.set_snapshot("<cluster>", snapshot)`.
///
/// A node whose cluster is empty, and a request carrying no node, join the
/// fallback group: [`DEFAULT_GROUP`](Self::DEFAULT_GROUP) unless
/// [`with_fallback`](Self::with_fallback) names another. Envoy itself
/// always has a cluster (it refuses to start on ADS without one), but other
/// xDS clients, such as gRPC's, may send none. A `NodeHash` cannot refuse a
/// node: falling back to a group that has a snapshot serves such clients a
/// deliberate configuration, while a fallback group left without a snapshot
/// makes them wait, as an unknown node id does with [`IdHash`]. A node
/// whose cluster is literally the fallback's name is in that group too.
///
/// ```
/// use xds_control_plane::cache::{ClusterHash, NodeHash};
/// use xds_control_plane::envoy_types::pb::envoy::config::core::v3::Node;
///
/// let node = |cluster: &str| Node { id: "envoy-1".into(), cluster: cluster.into(), ..Default::default() };
/// let hash = ClusterHash::default();
/// assert_eq!(hash.id(Some(&node("blue"))), "blue");
/// assert_eq!(hash.id(Some(&node(""))), ClusterHash::DEFAULT_GROUP);
/// assert_eq!(ClusterHash::with_fallback("unassigned").id(None), "unassigned");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHash {
    fallback: String,
}

impl ClusterHash {
    /// The group of nodes without a cluster, unless another is chosen.
    pub const DEFAULT_GROUP: &'static str = "default";

    /// Keys by `node.cluster`; nodes without one go to group `fallback`.
    pub fn with_fallback(fallback: impl Into<String>) -> Self {
        ClusterHash {
            fallback: fallback.into(),
        }
    }

    /// The group of nodes without a cluster.
    pub fn fallback(&self) -> &str {
        &self.fallback
    }
}

impl Default for ClusterHash {
    /// Falls back to [`DEFAULT_GROUP`](Self::DEFAULT_GROUP).
    fn default() -> Self {
        Self::with_fallback(Self::DEFAULT_GROUP)
    }
}

impl NodeHash for ClusterHash {
    fn id(&self, node: Option<&Node>) -> String {
        self.id_of(node).into_owned()
    }

    fn id_of<'a>(&'a self, node: Option<&'a Node>) -> Cow<'a, str> {
        match node {
            Some(node) if !node.cluster.is_empty() => Cow::Borrowed(&node.cluster),
            _ => Cow::Borrowed(&self.fallback),
        }
    }
}

impl<F> NodeHash for F
where
    F: Fn(Option<&Node>) -> String + Send + Sync + 'static,
{
    fn id(&self, node: Option<&Node>) -> String {
        self(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hash_uses_node_id() {
        let node = Node {
            id: "n1".into(),
            cluster: "c".into(),
            ..Default::default()
        };
        assert_eq!(IdHash.id(Some(&node)), "n1");
        assert_eq!(IdHash.id(None), "");
        let by_cluster = |n: Option<&Node>| n.map(|n| n.cluster.clone()).unwrap_or_default();
        assert_eq!(by_cluster.id(Some(&node)), "c");
        // The same keys, borrowed where the hash can, owned by default.
        assert!(matches!(IdHash.id_of(Some(&node)), Cow::Borrowed("n1")));
        assert!(matches!(IdHash.id_of(None), Cow::Borrowed("")));
        assert!(matches!(by_cluster.id_of(Some(&node)), Cow::Owned(key) if key == "c"));
    }

    #[test]
    fn cluster_hash_groups_by_cluster_and_falls_back() {
        let node = |id: &str, cluster: &str| Node {
            id: id.into(),
            cluster: cluster.into(),
            ..Default::default()
        };
        let hash = ClusterHash::default();
        assert_eq!(hash.fallback(), "default");
        // Two proxies of one cluster share a key whatever their ids.
        assert_eq!(hash.id(Some(&node("a", "blue"))), "blue");
        assert_eq!(hash.id(Some(&node("b", "blue"))), "blue");
        assert_eq!(hash.id(Some(&node("a", "green"))), "green");
        assert_eq!(hash.id(Some(&node("a", ""))), "default");
        assert_eq!(hash.id(None), "default");
        let custom = ClusterHash::with_fallback("lobby");
        assert_eq!(custom.id(Some(&node("a", ""))), "lobby");
        assert_eq!(custom.id(None), "lobby");
        assert_eq!(custom.id(Some(&node("a", "blue"))), "blue");
        for n in [Some(node("a", "blue")), Some(node("a", "")), None] {
            let key = custom.id_of(n.as_ref());
            assert!(matches!(key, Cow::Borrowed(_)) && key == custom.id(n.as_ref()));
        }
    }
}
