//! What every connected client has been sent, has acknowledged and has
//! rejected, per type: the answer to "which config does this proxy run?".

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
use parking_lot::Mutex;

use super::callbacks::StreamId;
use crate::cache::ReturnedResources;

/// A version a client rejected, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedVersion {
    /// The version rejected.
    pub version: String,
    /// The client's `error_detail` message.
    pub error: String,
    /// When the rejection arrived.
    pub at: SystemTime,
}

/// One type's status on one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// The version of the latest response sent, and when.
    pub sent: Option<(String, SystemTime)>,
    /// The latest version the client acknowledged, and when.
    pub acked: Option<(String, SystemTime)>,
    /// The latest rejection (NACK), kept until a later version is acked.
    pub rejected: Option<RejectedVersion>,
    /// What the stream records as held by the client: not a copy, a weak
    /// link to the map the stream keeps anyway, so that reporting costs a
    /// stream nothing.
    held: Held,
}

/// A weak link to a stream's record of the names and versions it sent.
/// Weak, so that the stream alone owns the map and can keep changing it in
/// place; equal when both point at the same map.
#[derive(Clone, Default)]
struct Held(Weak<ReturnedResources>);

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        Weak::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Held {}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.upgrade() {
            Some(held) => write!(f, "{} resources", held.len()),
            None => f.write_str("none"),
        }
    }
}

impl TypeStatus {
    /// The resources the client holds of this type, by name, with the
    /// version each was sent at (state of the world: the response's
    /// `version_info`; delta: the resource's own version), as the stream
    /// records them *now*, which may be later than the rest of this status.
    /// `None` once the stream has closed.
    ///
    /// A delta name whose version is empty was unsubscribed while wildcard:
    /// the client dropped it.
    pub fn held_resources(&self) -> Option<Arc<ReturnedResources>> {
        self.held.0.upgrade()
    }

    /// Whether the client runs what it was last sent.
    pub fn in_sync(&self) -> bool {
        match (&self.sent, &self.acked) {
            (Some((sent, _)), Some((acked, _))) => sent == acked,
            _ => false,
        }
    }
}

/// One stream's status: its node and every type it watches.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamStatus {
    /// The stream.
    pub stream: StreamId,
    /// Whether it speaks incremental (delta) xDS.
    pub delta: bool,
    /// The node it last sent.
    pub node: Option<Node>,
    /// Status by type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// A stream's status as the stream keeps it: its few types in a short list
/// (a map node would cost more than the list, on every connection).
#[derive(Debug)]
struct StreamRecord {
    stream: StreamId,
    delta: bool,
    node: Option<Node>,
    types: Vec<(String, TypeStatus)>,
}

impl StreamRecord {
    fn to_status(&self) -> StreamStatus {
        StreamStatus {
            stream: self.stream,
            delta: self.delta,
            node: self.node.clone(),
            types: self.types.iter().cloned().collect(),
        }
    }
}

/// The status of every open stream. Streams update their own entry under
/// their own lock; the registry's lock is taken only when a stream opens or
/// closes and when someone asks.
#[derive(Debug, Default)]
pub(crate) struct ClientStatusRegistry {
    streams: Mutex<HashMap<StreamId, Arc<Mutex<StreamRecord>>>>,
}

impl ClientStatusRegistry {
    /// Registers a stream; its entry goes away when the handle is dropped.
    pub(crate) fn open(self: &Arc<Self>, stream: StreamId, delta: bool) -> StatusHandle {
        let status = Arc::new(Mutex::new(StreamRecord {
            stream,
            delta,
            node: None,
            types: Vec::new(),
        }));
        self.streams.lock().insert(stream, Arc::clone(&status));
        StatusHandle {
            registry: Arc::clone(self),
            status,
        }
    }

    /// A copy of every stream's status, by stream id.
    pub(crate) fn all(&self) -> Vec<StreamStatus> {
        let entries: Vec<_> = self.streams.lock().values().cloned().collect();
        let mut all: Vec<StreamStatus> = entries.iter().map(|s| s.lock().to_status()).collect();
        all.sort_by_key(|s| s.stream);
        all
    }
}

/// A stream's way to record its status.
#[derive(Debug)]
pub(crate) struct StatusHandle {
    registry: Arc<ClientStatusRegistry>,
    status: Arc<Mutex<StreamRecord>>,
}

impl StatusHandle {
    pub(crate) fn set_node(&self, node: Option<&Node>) {
        let mut status = self.status.lock();
        if node.is_some() && status.node.as_ref() != node {
            status.node = node.cloned();
        }
    }

    /// A response went out; `held` is the stream's record of what the
    /// client now has.
    pub(crate) fn sent(&self, type_url: &str, version: &str, held: &Arc<ReturnedResources>) {
        self.update(type_url, |t| {
            stamp(&mut t.sent, version);
            if !std::ptr::eq(t.held.0.as_ptr(), Arc::as_ptr(held)) {
                t.held = Held(Arc::downgrade(held));
            }
        });
    }

    /// The stream watches a type (first request) or replaced its record of
    /// what the client holds (a subscription change dropped names).
    pub(crate) fn holds(&self, type_url: &str, held: &Arc<ReturnedResources>) {
        self.update(type_url, |t| t.held = Held(Arc::downgrade(held)));
    }

    pub(crate) fn acked(&self, type_url: &str, version: &str) {
        self.update(type_url, |t| {
            let newer = t.acked.as_ref().is_none_or(|(v, _)| v != version);
            if newer {
                stamp(&mut t.acked, version);
            }
            if t.rejected.as_ref().is_some_and(|r| r.version != version) && newer {
                t.rejected = None;
            }
        });
    }

    pub(crate) fn rejected(&self, type_url: &str, version: &str, error: &str) {
        self.update(type_url, |t| {
            t.rejected = Some(RejectedVersion {
                version: version.to_string(),
                error: error.to_string(),
                at: SystemTime::now(),
            })
        });
    }

    fn update(&self, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        let mut status = self.status.lock();
        let types = &mut status.types;
        let i = types
            .iter()
            .position(|(t, _)| t == type_url)
            .unwrap_or_else(|| {
                types.push((type_url.to_owned(), TypeStatus::default()));
                types.len() - 1
            });
        f(&mut types[i].1);
    }
}

/// Records `version` as of now, reusing the previous record's buffer: a
/// stream stamps a version per response and per ACK.
fn stamp(record: &mut Option<(String, SystemTime)>, version: &str) {
    let now = SystemTime::now();
    match record {
        Some((recorded, at)) => {
            version.clone_into(recorded);
            *at = now;
        }
        None => *record = Some((version.to_owned(), now)),
    }
}

impl Drop for StatusHandle {
    fn drop(&mut self) {
        let stream = self.status.lock().stream;
        self.registry.streams.lock().remove(&stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_sent_acked_and_rejected_versions_until_the_stream_closes() {
        let registry = Arc::new(ClientStatusRegistry::default());
        let handle = registry.open(7, false);
        handle.set_node(Some(&Node {
            id: "n1".into(),
            ..Default::default()
        }));
        let held = Arc::new(ReturnedResources::default());
        handle.sent("t", "v1", &held);
        handle.acked("t", "v1");
        handle.sent("t", "v2", &held);
        handle.rejected("t", "v2", "bad");
        let status = registry.all();
        assert_eq!(status.len(), 1);
        assert_eq!(status[0].node.as_ref().unwrap().id, "n1");
        let t = &status[0].types["t"];
        assert_eq!(t.acked.as_ref().unwrap().0, "v1");
        assert_eq!(t.rejected.as_ref().unwrap().error, "bad");
        assert!(!t.in_sync());
        handle.sent("t", "v3", &held);
        handle.acked("t", "v3");
        let t = registry.all()[0].types["t"].clone();
        assert!(t.in_sync() && t.rejected.is_none());
        // The status links to the stream's record of what the client holds,
        // without keeping it alive.
        assert!(Arc::ptr_eq(&t.held_resources().unwrap(), &held));
        drop(held);
        assert!(registry.all()[0].types["t"].held_resources().is_none());
        drop(handle);
        assert!(registry.all().is_empty());
    }
}
