//! Heartbeats: refresh the TTL of resources clients already have (delta:
//! without their bodies; SotW: the full state again, which Envoy requires).

use std::sync::Arc;

use super::delta_response::DeltaAnswer;
use super::sotw_response::{full_answer, SotwAnswer};
use super::{DeltaWatchRequest, EncodedResource, Snapshot, Subscription, WatchRequest};

/// The TTL'd resources a client is up to date on, if any.
fn ttl_resources<'a>(
    sub: &'a Subscription,
    resources: &'a [EncodedResource],
    has: impl Fn(&EncodedResource) -> bool + 'a,
) -> Vec<EncodedResource> {
    resources
        .iter()
        .filter(|r| r.ttl().is_some() && sub.wants(r.name()) && has(r))
        .cloned()
        .collect()
}

/// A heartbeat for a held state-of-the-world watch whose client is current
/// and has resources with a TTL: the full current state again, bodies
/// included. Envoy's state-of-the-world handling cannot take body-less
/// heartbeats (its legacy mux ignores them, its unified mux hands
/// subscriptions an empty update, which RTDS rejects), and a partial answer
/// would delete the rest of a CDS or LDS state.
pub(crate) fn sotw_heartbeat(snapshot: &Snapshot, watch: &WatchRequest) -> Option<SotwAnswer> {
    let resources = snapshot.by_type_url(watch.type_url())?;
    if resources.version() != watch.version_info() {
        return None;
    }
    let sub = &watch.subscription;
    let has_ttl = !ttl_resources(sub, resources.resources(), |r| {
        sub.returned().contains_key(r.name())
    })
    .is_empty();
    has_ttl.then(|| full_answer(watch, resources))
}

/// A heartbeat for a held delta watch: the TTL'd resources the client has at
/// their current version.
pub(crate) fn delta_heartbeat(
    snapshot: &Snapshot,
    watch: &DeltaWatchRequest,
) -> Option<DeltaAnswer> {
    let resources = snapshot.by_type_url(watch.type_url())?;
    let sub = &watch.subscription;
    let current = |r: &EncodedResource| sub.returned().get(r.name()) == Some(r.version());
    let beats = ttl_resources(sub, resources.resources(), current);
    (!beats.is_empty()).then(|| DeltaAnswer {
        system_version: Arc::clone(resources.shared_version()),
        resources: beats,
        removed: Vec::new(),
        returned: Arc::clone(sub.shared_returned()),
        heartbeat: true,
    })
}

/// The background task sending heartbeats; dropping it stops them.
#[derive(Debug)]
#[must_use = "dropping the task stops the heartbeats"]
pub struct HeartbeatTask(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for HeartbeatTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
