//! What every connected client has been sent, has acknowledged and has
//! rejected, per type: the answer to "which config does this proxy run?".

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;

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

/// What a stream keeps of one type for its status, beside what its
/// protocol state records anyway (the version sent, what the client holds):
/// kept in the stream's own per-type state, so recording costs a stream no
/// lock and no memory of its own; the server reads it when asked.
#[derive(Debug, Default)]
pub(crate) struct TypeRecord {
    sent_at: Option<SystemTime>,
    acked: Option<(Arc<str>, SystemTime)>,
    /// Boxed: rare, and every stream keeps a record per type.
    rejected: Option<Box<RejectedVersion>>,
}

impl TypeRecord {
    /// A response went out.
    pub(crate) fn sent(&mut self) {
        self.sent_at = Some(SystemTime::now());
    }

    /// The client acknowledged `version`; `sent` is the version last sent,
    /// shared rather than copied when they are the same (the usual ACK).
    pub(crate) fn acked(&mut self, version: &str, sent: &Arc<str>) {
        let newer = self.acked.as_ref().is_none_or(|(v, _)| **v != *version);
        if !newer {
            return;
        }
        if self.rejected.as_ref().is_some_and(|r| r.version != version) {
            self.rejected = None;
        }
        let version = if **sent == *version {
            Arc::clone(sent)
        } else {
            Arc::from(version)
        };
        self.acked = Some((version, SystemTime::now()));
    }

    /// The client rejected `version` with `error`.
    pub(crate) fn rejected(&mut self, version: &str, error: &str) {
        self.rejected = Some(Box::new(RejectedVersion {
            version: version.to_string(),
            error: error.to_string(),
            at: SystemTime::now(),
        }));
    }

    /// The type's status: `sent` is the version last sent ("" before any),
    /// `held` the stream's record of what the client has.
    pub(crate) fn status(&self, sent: &str, held: &Arc<ReturnedResources>) -> TypeStatus {
        TypeStatus {
            sent: self.sent_at.map(|at| (sent.to_string(), at)),
            acked: self.acked.as_ref().map(|(v, at)| (v.to_string(), *at)),
            rejected: self.rejected.as_deref().cloned(),
            held: Held(Arc::downgrade(held)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_sent_acked_and_rejected_versions() {
        let mut record = TypeRecord::default();
        let held = Arc::new(ReturnedResources::default());
        let v1: Arc<str> = Arc::from("v1");
        record.sent();
        record.acked("v1", &v1);
        let t = record.status("v1", &held);
        assert!(t.in_sync());
        // The ACK of the version sent shares it.
        assert!(Arc::ptr_eq(&record.acked.as_ref().unwrap().0, &v1));
        let v2: Arc<str> = Arc::from("v2");
        record.sent();
        record.rejected("v2", "bad");
        let t = record.status("v2", &held);
        assert_eq!(t.acked.as_ref().unwrap().0, "v1");
        assert_eq!(t.rejected.as_ref().unwrap().error, "bad");
        assert!(!t.in_sync());
        // Acking the old version again does not take the rejection back.
        record.acked("v1", &v2);
        assert!(record.status("v2", &held).rejected.is_some());
        let v3: Arc<str> = Arc::from("v3");
        record.sent();
        record.acked("v3", &v3);
        let t = record.status("v3", &held);
        assert!(t.in_sync() && t.rejected.is_none());
        // The status links to the stream's record of what the client holds,
        // without keeping it alive.
        assert!(Arc::ptr_eq(&t.held_resources().unwrap(), &held));
        drop(held);
        assert!(t.held_resources().is_none());
    }
}
