//! What a cache knows about one node's streams.

use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;

/// A node's status in a cache: its last seen node, its open watches, and
/// when it last asked for data.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusInfo {
    /// The node as last sent by one of its streams.
    pub node: Option<Node>,
    /// Number of open (unanswered) state-of-the-world watches.
    pub num_watches: usize,
    /// Number of open (unanswered) incremental (delta) watches.
    pub num_delta_watches: usize,
    /// When a stream of this node last opened a watch.
    pub last_watch_request_time: Option<SystemTime>,
}
