//! How a request's node is turned into the key its snapshot is stored under.

use envoy_types::pb::envoy::config::core::v3::Node;

/// Maps the node of a request to a cache key.
///
/// Implement it to share one snapshot across a group of proxies, for example
/// keying by `node.cluster`:
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
}

/// Keys nodes by `node.id`, the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdHash;

impl NodeHash for IdHash {
    fn id(&self, node: Option<&Node>) -> String {
        node.map(|n| n.id.clone()).unwrap_or_default()
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
    }
}
