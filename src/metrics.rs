//! Metrics and tracing of the server and its caches.
//!
//! # Metrics
//!
//! With the `metrics` cargo feature, the server and the caches record the
//! metrics below through the [`metrics`](https://docs.rs/metrics) facade,
//! to whatever recorder (Prometheus exporter, StatsD, ...) the application
//! installs. Without the feature (the default) none of it is compiled: no
//! atomics, no clock reads, no allocation, and the `metrics` crate is not
//! even a dependency.
//!
//! | Name | Type | Unit | Labels | What |
//! | --- | --- | --- | --- | --- |
//! | `xds_streams_open` | gauge | streams | `kind`, `service` | xDS streams being served |
//! | `xds_streams_opened_total` | counter | streams | `kind`, `service` | streams accepted |
//! | `xds_streams_closed_total` | counter | streams | `kind`, `service` | streams ended, for any reason |
//! | `xds_watches_open` | gauge | watches | — | watches a cache holds for streams, waiting for data |
//! | `xds_requests_total` | counter | requests | `kind`, `type_url` | discovery requests received |
//! | `xds_acks_total` | counter | requests | `kind`, `type_url` | requests acknowledging the latest response |
//! | `xds_nacks_total` | counter | requests | `kind`, `type_url` | requests rejecting a response (`error_detail` set) |
//! | `xds_responses_total` | counter | responses | `kind`, `type_url` | responses sent |
//! | `xds_response_bytes_total` | counter | bytes | `kind`, `type_url` | encoded size of those responses (gRPC message framing included) |
//! | `xds_push_latency_seconds` | histogram | seconds | `kind` | from a cache update to its responses being queued for the wire |
//! | `xds_cache_updates_total` | counter | updates | `cache` | `SnapshotCache::set_snapshot` calls and `LinearCache` update calls |
//! | `xds_cache_update_duration_seconds` | histogram | seconds | `cache` | how long such an update took, answering stale watches included |
//!
//! Labels take few values, so series stay few whatever the number of
//! clients; node ids are never labels (they are on the tracing spans):
//!
//! - `kind`: `sotw` (state of the world) or `delta` (incremental);
//! - `service`: `ads`, or the per-type service: `cds`, `eds`, `leds`,
//!   `lds`, `rds`, `srds`, `vhds`, `sds`, `rtds`, `ecds`;
//! - `type_url`: the full type URL of one of the types in
//!   [`ResourceType`](crate::resource::ResourceType), or `other` for any
//!   other (client-chosen strings never become label values);
//! - `cache`: `snapshot` ([`SnapshotCache`](crate::SnapshotCache)) or
//!   `linear` ([`LinearCache`](crate::cache::LinearCache)).
//!
//! `xds_push_latency_seconds` gets one sample each time a stream sends
//! responses that a cache update produced: the time from the start of that
//! update (`set_snapshot`, or the `LinearCache` call) to the last of those
//! responses being handed to the stream's send queue, which includes
//! waiting for a client slow to read. Answers to requests (not to updates)
//! and heartbeats are not samples.
//!
//! `xds_watches_open` counts the [`WatchHandle`](crate::cache::WatchHandle)s
//! of watches a cache stored: from when the cache stores one until the
//! stream lets go of it (answered, replaced or closed). Custom caches that
//! return [`WatchHandle::new`](crate::cache::WatchHandle::new) are counted
//! too.
//!
//! Each metric's handle is registered with the recorder the first time it
//! is used and kept, so recording is an atomic operation on the recorder's
//! handle, without lookup, lock or allocation. **Install the recorder
//! before serving**: a metric first used before that stays unrecorded.
//! [`describe_metrics`] gives every metric its unit and help text.
//!
//! ```ignore
//! // Cargo.toml: xds-control-plane = { version = "0.1", features = ["metrics"] }
//! //             metrics-exporter-prometheus = "0.18"
//! metrics_exporter_prometheus::PrometheusBuilder::new()
//!     .with_http_listener(([0, 0, 0, 0], 9000))
//!     .install()?;
//! xds_control_plane::metrics::describe_metrics();
//! // ... then build the cache and the server, and serve.
//! ```
//!
//! # Tracing
//!
//! Always on, through [`tracing`](https://docs.rs/tracing) (free when no
//! subscriber listens): each stream runs in an `INFO` span named
//! [`STREAM_SPAN`] with fields `stream_id`, `kind`, `service` and
//! `node_id`, the last recorded when the first request carrying a node
//! arrives, so every event of the stream (NACK warnings included) carries
//! the node. Each request and each response is a `DEBUG` event with
//! `type_url`, `nonce` and, where the message has one, `version`.

#[cfg(feature = "metrics")]
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

use crate::cache::{DeltaResponse, SotwResponse};
use crate::server::StreamId;

/// Gauge: xDS streams being served. Labels `kind`, `service`.
pub const STREAMS_OPEN: &str = "xds_streams_open";
/// Counter: streams accepted. Labels `kind`, `service`.
pub const STREAMS_OPENED: &str = "xds_streams_opened_total";
/// Counter: streams ended. Labels `kind`, `service`.
pub const STREAMS_CLOSED: &str = "xds_streams_closed_total";
/// Gauge: watches caches hold for streams. No labels.
pub const WATCHES_OPEN: &str = "xds_watches_open";
/// Counter: discovery requests received. Labels `kind`, `type_url`.
pub const REQUESTS: &str = "xds_requests_total";
/// Counter: requests acknowledging the latest response. Labels `kind`,
/// `type_url`.
pub const ACKS: &str = "xds_acks_total";
/// Counter: requests rejecting a response. Labels `kind`, `type_url`.
pub const NACKS: &str = "xds_nacks_total";
/// Counter: responses sent. Labels `kind`, `type_url`.
pub const RESPONSES: &str = "xds_responses_total";
/// Counter: bytes of the responses sent. Labels `kind`, `type_url`.
pub const RESPONSE_BYTES: &str = "xds_response_bytes_total";
/// Histogram, seconds: cache update to responses queued for the wire.
/// Label `kind`.
pub const PUSH_LATENCY: &str = "xds_push_latency_seconds";
/// Counter: cache updates. Label `cache`.
pub const CACHE_UPDATES: &str = "xds_cache_updates_total";
/// Histogram, seconds: duration of a cache update. Label `cache`.
pub const CACHE_UPDATE_DURATION: &str = "xds_cache_update_duration_seconds";

/// Name of the span each stream runs in.
pub const STREAM_SPAN: &str = "xds_stream";

/// Gives every metric of this crate its unit and help text, for recorders
/// that show them (Prometheus `# HELP`). Call once, after installing the
/// recorder. Without the `metrics` feature it does nothing, so it can be
/// called either way.
///
/// ```
/// // With no recorder installed this does nothing, harmlessly.
/// xds_control_plane::metrics::describe_metrics();
/// ```
pub fn describe_metrics() {
    #[cfg(feature = "metrics")]
    describe();
}

#[cfg(feature = "metrics")]
fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(STREAMS_OPEN, Unit::Count, "xDS streams being served");
    describe_counter!(STREAMS_OPENED, Unit::Count, "xDS streams accepted");
    describe_counter!(STREAMS_CLOSED, Unit::Count, "xDS streams ended");
    describe_gauge!(
        WATCHES_OPEN,
        Unit::Count,
        "Watches caches hold for streams, waiting for data"
    );
    describe_counter!(REQUESTS, Unit::Count, "Discovery requests received");
    describe_counter!(
        ACKS,
        Unit::Count,
        "Requests acknowledging the latest response"
    );
    describe_counter!(NACKS, Unit::Count, "Requests rejecting a response (NACK)");
    describe_counter!(RESPONSES, Unit::Count, "Discovery responses sent");
    describe_counter!(
        RESPONSE_BYTES,
        Unit::Bytes,
        "Encoded bytes of the discovery responses sent"
    );
    describe_histogram!(
        PUSH_LATENCY,
        Unit::Seconds,
        "Time from a cache update to its responses being queued for the wire"
    );
    describe_counter!(CACHE_UPDATES, Unit::Count, "Cache updates");
    describe_histogram!(
        CACHE_UPDATE_DURATION,
        Unit::Seconds,
        "Duration of a cache update, answering stale watches included"
    );
}

/// State of the world or delta: a label and a span field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Sotw,
    Delta,
}

impl StreamKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StreamKind::Sotw => "sotw",
            StreamKind::Delta => "delta",
        }
    }
}

/// The label of a service (`ads` for `None`, else its type's service
/// name) and its position among services: `ads`, each type's, `other`.
fn service(service_type: Option<&str>) -> (usize, &'static str) {
    use crate::resource::ResourceType as T;
    let Some(type_url) = service_type else {
        return (0, "ads");
    };
    let Some(t) = T::from_type_url(type_url) else {
        return (T::COUNT + 1, "other");
    };
    let name = match t {
        T::Cluster => "cds",
        T::Endpoint => "eds",
        T::LbEndpoint => "leds",
        T::Listener => "lds",
        T::Route => "rds",
        T::ScopedRoute => "srds",
        T::VirtualHost => "vhds",
        T::Secret => "sds",
        T::Runtime => "rtds",
        T::ExtensionConfig => "ecds",
    };
    (t.index() + 1, name)
}

/// What watches one stream while it is open: its tracing span, and its
/// count among open streams, which ends when this is dropped.
pub(crate) struct StreamObserver {
    span: tracing::Span,
    _open: imp::OpenStream,
}

impl StreamObserver {
    /// The span the stream's work runs in.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }
}

/// Starts observing a stream: counts it open and opens its span.
pub(crate) fn observe_stream(
    id: StreamId,
    kind: StreamKind,
    service_type: Option<&'static str>,
) -> StreamObserver {
    let (slot, service) = service(service_type);
    let span = tracing::info_span!(
        "xds_stream",
        stream_id = id,
        kind = kind.as_str(),
        service,
        node_id = tracing::field::Empty,
    );
    StreamObserver {
        span,
        _open: imp::OpenStream::new(kind, slot, service),
    }
}

/// The stream learnt (or changed) its node: put its id on the stream span.
pub(crate) fn node_known(node: &Node) {
    tracing::Span::current().record("node_id", node.id.as_str());
}

/// A state-of-the-world request whose type is checked.
pub(crate) fn sotw_request(request: &DiscoveryRequest) {
    imp::REQUESTS.count(StreamKind::Sotw, &request.type_url, 1);
    tracing::debug!(
        type_url = request.type_url,
        version = request.version_info,
        nonce = request.response_nonce,
        nack = request.error_detail.is_some(),
        "request"
    );
}

/// A delta request whose type is checked.
pub(crate) fn delta_request(request: &DeltaDiscoveryRequest) {
    imp::REQUESTS.count(StreamKind::Delta, &request.type_url, 1);
    tracing::debug!(
        type_url = request.type_url,
        nonce = request.response_nonce,
        subscribe = request.resource_names_subscribe.len(),
        unsubscribe = request.resource_names_unsubscribe.len(),
        nack = request.error_detail.is_some(),
        "delta request"
    );
}

/// A request acknowledged the latest response of its type.
pub(crate) fn ack(kind: StreamKind, type_url: &str) {
    imp::ACKS.count(kind, type_url, 1);
}

/// A request rejected a response of its type.
pub(crate) fn nack(kind: StreamKind, type_url: &str) {
    imp::NACKS.count(kind, type_url, 1);
}

/// A state-of-the-world response of `bytes` encoded bytes was produced.
pub(crate) fn sotw_response(response: &SotwResponse, type_url: &str, nonce: &str, bytes: usize) {
    imp::response(StreamKind::Sotw, type_url, bytes);
    tracing::debug!(
        type_url,
        version = &*response.version,
        nonce,
        resources = response.resources.len(),
        bytes,
        "response"
    );
}

/// A delta response of `bytes` encoded bytes was produced.
pub(crate) fn delta_response(response: &DeltaResponse, type_url: &str, nonce: &str, bytes: usize) {
    imp::response(StreamKind::Delta, type_url, bytes);
    tracing::debug!(
        type_url,
        version = &*response.system_version,
        nonce,
        resources = response.resources.len(),
        removed = response.removed.len(),
        heartbeat = response.heartbeat,
        bytes,
        "delta response"
    );
}

pub(crate) use imp::{pushed, watch_closed, watch_opened, CacheUpdate, PendingSince};

#[cfg(feature = "metrics")]
mod imp {
    use std::cell::Cell;
    use std::sync::OnceLock;

    use ::metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

    use super::*;
    use crate::resource::ResourceType;

    /// Handles registered on first use, then kept: recording is then one
    /// atomic operation on the recorder's handle.
    struct Slots<T, const N: usize>([OnceLock<T>; N]);

    impl<T, const N: usize> Slots<T, N> {
        const fn new() -> Self {
            Slots([const { OnceLock::new() }; N])
        }

        fn get(&self, slot: usize, register: impl FnOnce() -> T) -> &T {
            self.0[slot].get_or_init(register)
        }
    }

    const KINDS: usize = 2;
    /// Every known type, then `other`.
    const TYPES: usize = ResourceType::COUNT + 1;
    /// `ads`, every per-type service, `other`.
    const SERVICES: usize = ResourceType::COUNT + 2;

    /// A counter labelled by kind and type URL.
    pub(super) struct ByType {
        name: &'static str,
        slots: Slots<Counter, { KINDS * TYPES }>,
    }

    impl ByType {
        const fn new(name: &'static str) -> Self {
            ByType {
                name,
                slots: Slots::new(),
            }
        }

        pub(super) fn count(&self, kind: StreamKind, type_url: &str, n: u64) {
            // Only known types are label values.
            let (index, label) = match ResourceType::from_type_url(type_url) {
                Some(t) => (t.index(), t.type_url()),
                None => (ResourceType::COUNT, "other"),
            };
            self.slots
                .get(
                    kind_index(kind) * TYPES + index,
                    || counter!(self.name, "kind" => kind.as_str(), "type_url" => label),
                )
                .increment(n);
        }
    }

    pub(super) static REQUESTS: ByType = ByType::new(super::REQUESTS);
    pub(super) static ACKS: ByType = ByType::new(super::ACKS);
    pub(super) static NACKS: ByType = ByType::new(super::NACKS);
    static RESPONSES: ByType = ByType::new(super::RESPONSES);
    static RESPONSE_BYTES: ByType = ByType::new(super::RESPONSE_BYTES);
    static STREAMS_OPEN: Slots<Gauge, { KINDS * SERVICES }> = Slots::new();
    static STREAMS_OPENED: Slots<Counter, { KINDS * SERVICES }> = Slots::new();
    static STREAMS_CLOSED: Slots<Counter, { KINDS * SERVICES }> = Slots::new();
    static PUSH_LATENCY: Slots<Histogram, KINDS> = Slots::new();
    static WATCHES_OPEN: OnceLock<Gauge> = OnceLock::new();
    static CACHE_UPDATES: Slots<Counter, 2> = Slots::new();
    static CACHE_UPDATE_DURATION: Slots<Histogram, 2> = Slots::new();

    fn kind_index(kind: StreamKind) -> usize {
        match kind {
            StreamKind::Sotw => 0,
            StreamKind::Delta => 1,
        }
    }

    pub(super) fn response(kind: StreamKind, type_url: &str, bytes: usize) {
        RESPONSES.count(kind, type_url, 1);
        RESPONSE_BYTES.count(kind, type_url, bytes as u64);
    }

    /// Counts a stream open until dropped.
    pub(super) struct OpenStream {
        slot: usize,
        kind: StreamKind,
        service: &'static str,
    }

    impl OpenStream {
        pub(super) fn new(kind: StreamKind, service_slot: usize, service: &'static str) -> Self {
            let open = OpenStream {
                slot: kind_index(kind) * SERVICES + service_slot,
                kind,
                service,
            };
            open.opened().increment(1);
            open.gauge().increment(1.0);
            open
        }

        fn gauge(&self) -> &Gauge {
            STREAMS_OPEN.get(self.slot, || {
                gauge!(super::STREAMS_OPEN, "kind" => self.kind.as_str(), "service" => self.service)
            })
        }

        fn opened(&self) -> &Counter {
            STREAMS_OPENED.get(self.slot, || {
                counter!(super::STREAMS_OPENED, "kind" => self.kind.as_str(), "service" => self.service)
            })
        }

        fn closed(&self) -> &Counter {
            STREAMS_CLOSED.get(self.slot, || {
                counter!(super::STREAMS_CLOSED, "kind" => self.kind.as_str(), "service" => self.service)
            })
        }
    }

    impl Drop for OpenStream {
        fn drop(&mut self) {
            self.gauge().decrement(1.0);
            self.closed().increment(1);
        }
    }

    fn watches() -> &'static Gauge {
        WATCHES_OPEN.get_or_init(|| gauge!(super::WATCHES_OPEN))
    }

    /// A cache stored a watch for a stream.
    pub(crate) fn watch_opened() {
        watches().increment(1.0);
    }

    /// A stream let go of a stored watch.
    pub(crate) fn watch_closed() {
        watches().decrement(1.0);
    }

    thread_local! {
        /// When the cache update running on this thread started: answers
        /// it delivers are stamped with it.
        static UPDATE_START: Cell<Option<Instant>> = const { Cell::new(None) };
    }

    /// A cache update in progress on this thread: counts it, times it, and
    /// stamps the answers it delivers with its start.
    pub(crate) struct CacheUpdate {
        slot: usize,
        start: Instant,
        outer: Option<Instant>,
    }

    impl CacheUpdate {
        /// `SnapshotCache::set_snapshot`.
        pub(crate) fn snapshot() -> Self {
            Self::start(0)
        }

        /// A `LinearCache` change.
        pub(crate) fn linear() -> Self {
            Self::start(1)
        }

        fn start(slot: usize) -> Self {
            let start = Instant::now();
            let outer = UPDATE_START.with(|s| s.replace(Some(start)));
            CacheUpdate { slot, start, outer }
        }
    }

    impl Drop for CacheUpdate {
        fn drop(&mut self) {
            UPDATE_START.with(|s| s.set(self.outer));
            let label = if self.slot == 0 { "snapshot" } else { "linear" };
            CACHE_UPDATES
                .get(
                    self.slot,
                    || counter!(super::CACHE_UPDATES, "cache" => label),
                )
                .increment(1);
            CACHE_UPDATE_DURATION
                .get(
                    self.slot,
                    || histogram!(super::CACHE_UPDATE_DURATION, "cache" => label),
                )
                .record(self.start.elapsed().as_secs_f64());
        }
    }

    /// When the oldest cache update with an answer pending in a stream's
    /// queue started; kept in the queue, under its lock.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct PendingSince(Option<Instant>);

    impl PendingSince {
        /// No answer pending.
        pub(crate) const fn new() -> Self {
            PendingSince(None)
        }

        /// An answer is being queued: the first one since the queue was
        /// last emptied starts the clock, if a cache update delivers it.
        pub(crate) fn mark(&mut self) {
            if self.0.is_none() {
                self.0 = UPDATE_START.with(Cell::get);
            }
        }

        /// The queue was emptied.
        pub(crate) fn clear(&mut self) {
            self.0 = None;
        }
    }

    /// A stream handed `messages` responses to its send queue, taken when
    /// its answers were pending since `since`.
    pub(crate) fn pushed(kind: StreamKind, since: PendingSince, messages: usize) {
        if let (Some(start), true) = (since.0, messages > 0) {
            let kind_label = kind.as_str();
            PUSH_LATENCY
                .get(
                    kind_index(kind),
                    || histogram!(super::PUSH_LATENCY, "kind" => kind_label),
                )
                .record(start.elapsed().as_secs_f64());
        }
    }
}

/// Without the `metrics` feature: nothing, and nothing to keep.
#[cfg(not(feature = "metrics"))]
mod imp {
    use super::StreamKind;

    pub(super) struct ByType;

    impl ByType {
        #[inline(always)]
        pub(super) fn count(&self, _: StreamKind, _: &str, _: u64) {}
    }

    pub(super) static REQUESTS: ByType = ByType;
    pub(super) static ACKS: ByType = ByType;
    pub(super) static NACKS: ByType = ByType;

    #[inline(always)]
    pub(super) fn response(_: StreamKind, _: &str, _: usize) {}

    pub(super) struct OpenStream;

    impl OpenStream {
        #[inline(always)]
        pub(super) fn new(_: StreamKind, _: usize, _: &'static str) -> Self {
            OpenStream
        }
    }

    #[inline(always)]
    pub(crate) fn watch_opened() {}

    #[inline(always)]
    pub(crate) fn watch_closed() {}

    pub(crate) struct CacheUpdate;

    impl CacheUpdate {
        #[inline(always)]
        pub(crate) fn snapshot() -> Self {
            CacheUpdate
        }

        #[inline(always)]
        pub(crate) fn linear() -> Self {
            CacheUpdate
        }
    }

    #[derive(Debug, Clone, Copy)]
    pub(crate) struct PendingSince;

    impl PendingSince {
        #[inline(always)]
        pub(crate) const fn new() -> Self {
            PendingSince
        }

        #[inline(always)]
        pub(crate) fn mark(&mut self) {}

        #[inline(always)]
        pub(crate) fn clear(&mut self) {}
    }

    #[inline(always)]
    pub(crate) fn pushed(_: StreamKind, _: PendingSince, _: usize) {}
}
