//! Metrics (the `metrics` feature) and tracing spans, observed from outside:
//! real tonic clients over 127.0.0.1, a global metrics recorder and a
//! tracing subscriber installed once for this test binary.
//!
//! The recorder is global and its gauges are shared by every test here, so
//! the tests take turns (`SERIAL`) and each ends with every stream and
//! watch gone.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Duration;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use prost::Message;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use xds_control_plane::cache::LinearCache;
use xds_control_plane::envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use xds_control_plane::metrics as m;
use xds_control_plane::resource::type_url::CLUSTER;

/// Each test holds this while it runs.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Metric series as (kind, name, sorted labels).
type Series = (MetricKind, String, Vec<(String, String)>);

/// Everything recorded so far. `DebuggingRecorder` snapshots reset the
/// values they read, so this adds every snapshot up (gauges here only move
/// by increments, so their sum is their value).
#[derive(Default)]
struct Totals {
    values: HashMap<Series, f64>,
    samples: HashMap<Series, Vec<f64>>,
    described: HashMap<String, String>,
}

struct Observed {
    snapshotter: Snapshotter,
    totals: StdMutex<Totals>,
    spans: Arc<StdMutex<Vec<SpanRecord>>>,
}

/// Installs the recorder and the subscriber, once.
fn observed() -> &'static Observed {
    static OBSERVED: OnceLock<Observed> = OnceLock::new();
    OBSERVED.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this binary");
        m::describe_metrics();
        let spans = Arc::new(StdMutex::new(Vec::new()));
        let layer = Capture {
            spans: Arc::clone(&spans),
        };
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the only subscriber of this binary");
        Observed {
            snapshotter,
            totals: StdMutex::new(Totals::default()),
            spans,
        }
    })
}

/// Reads the recorder into the totals and runs `f` on them.
fn read<T>(f: impl FnOnce(&Totals) -> T) -> T {
    let observed = observed();
    let mut totals = observed.totals.lock().unwrap();
    for (key, _unit, description, value) in observed.snapshotter.snapshot().into_vec() {
        let (kind, key) = key.into_parts();
        let mut labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        labels.sort();
        let series = (kind, key.name().to_string(), labels);
        if let Some(description) = description {
            totals
                .described
                .insert(key.name().to_string(), description.to_string());
        }
        match value {
            DebugValue::Counter(n) => *totals.values.entry(series).or_default() += n as f64,
            DebugValue::Gauge(g) => *totals.values.entry(series).or_default() += g.into_inner(),
            DebugValue::Histogram(samples) => totals
                .samples
                .entry(series)
                .or_default()
                .extend(samples.into_iter().map(|s| s.into_inner())),
        }
    }
    f(&totals)
}

fn matches(series: &Series, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> bool {
    series.0 == kind
        && series.1 == name
        && labels
            .iter()
            .all(|(k, v)| series.2.iter().any(|(sk, sv)| sk == k && sv == v))
}

/// Sum of a counter's series having these labels.
fn counter(name: &str, labels: &[(&str, &str)]) -> f64 {
    read(|t| {
        t.values
            .iter()
            .filter(|(s, _)| matches(s, MetricKind::Counter, name, labels))
            .map(|(_, v)| v)
            .sum()
    })
}

/// Sum of a gauge's series having these labels.
fn gauge(name: &str, labels: &[(&str, &str)]) -> f64 {
    read(|t| {
        t.values
            .iter()
            .filter(|(s, _)| matches(s, MetricKind::Gauge, name, labels))
            .map(|(_, v)| v)
            .sum()
    })
}

/// Every sample of a histogram's series having these labels.
fn samples(name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    read(|t| {
        t.samples
            .iter()
            .filter(|(s, _)| matches(s, MetricKind::Histogram, name, labels))
            .flat_map(|(_, v)| v.iter().copied())
            .collect()
    })
}

/// Polls until `check` holds; the server records on its own tasks.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every stream ended and every watch let go: the gauges are back to 0.
async fn all_closed() {
    eventually("no stream open", || gauge(m::STREAMS_OPEN, &[]) == 0.0).await;
    eventually("no watch open", || gauge(m::WATCHES_OPEN, &[]) == 0.0).await;
}

/// The encoded size of a response as the server counts it: with its gRPC
/// frame header.
fn wire_size(message: &impl Message) -> f64 {
    (message.encoded_len() + 5) as f64
}

#[tokio::test]
async fn sotw_streams_requests_acks_nacks_responses_bytes_and_latency() {
    let _turn = SERIAL.lock().await;
    observed();
    all_closed().await;
    let sotw_cds = [("kind", "sotw"), ("type_url", CLUSTER)];
    let ads = [("kind", "sotw"), ("service", "ads")];
    let requests0 = counter(m::REQUESTS, &sotw_cds);
    let acks0 = counter(m::ACKS, &sotw_cds);
    let nacks0 = counter(m::NACKS, &sotw_cds);
    let responses0 = counter(m::RESPONSES, &sotw_cds);
    let bytes0 = counter(m::RESPONSE_BYTES, &sotw_cds);
    let opened0 = counter(m::STREAMS_OPENED, &ads);
    let closed0 = counter(m::STREAMS_CLOSED, &ads);
    let updates0 = counter(m::CACHE_UPDATES, &[("cache", "snapshot")]);
    let latency0 = samples(m::PUSH_LATENCY, &[("kind", "sotw")]).len();

    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n1", snapshot("v1", &["a", "b"], &[], &[], &[]));
    let mut stream = ts.ads().await;
    stream.send(request("n1", CLUSTER, "", "", &[])).await;
    let first = stream.recv().await;
    assert_eq!(gauge(m::STREAMS_OPEN, &ads), 1.0);
    assert_eq!(counter(m::STREAMS_OPENED, &ads), opened0 + 1.0);
    stream.ack("n1", &first, &[]).await;
    ts.wait_for_watches("n1", 1).await;
    // The cache lists the watch a moment before its handle exists.
    eventually("one watch open", || gauge(m::WATCHES_OPEN, &[]) == 1.0).await;
    assert_eq!(counter(m::ACKS, &sotw_cds), acks0 + 1.0);

    // An update: its answer is a push-latency sample.
    ts.cache
        .set_snapshot("n1", snapshot("v2", &["c"], &[], &[], &[]));
    let second = stream.recv().await;
    eventually("a push latency sample", || {
        samples(m::PUSH_LATENCY, &[("kind", "sotw")]).len() == latency0 + 1
    })
    .await;
    let latency = samples(m::PUSH_LATENCY, &[("kind", "sotw")]);
    assert!(latency
        .iter()
        .all(|s| *s >= 0.0 && *s < PATIENCE.as_secs_f64()));
    assert_eq!(
        counter(m::CACHE_UPDATES, &[("cache", "snapshot")]),
        updates0 + 2.0
    );
    assert!(!samples(m::CACHE_UPDATE_DURATION, &[("cache", "snapshot")]).is_empty());

    stream.nack("n1", &second, "v1", &[]).await;
    eventually("the NACK counted", || {
        counter(m::NACKS, &sotw_cds) == nacks0 + 1.0
    })
    .await;
    assert_eq!(counter(m::REQUESTS, &sotw_cds), requests0 + 3.0);
    assert_eq!(counter(m::ACKS, &sotw_cds), acks0 + 1.0, "a NACK is no ACK");
    assert_eq!(counter(m::RESPONSES, &sotw_cds), responses0 + 2.0);
    assert_eq!(
        counter(m::RESPONSE_BYTES, &sotw_cds),
        bytes0 + wire_size(&first) + wire_size(&second)
    );

    drop(stream);
    all_closed().await;
    assert_eq!(counter(m::STREAMS_CLOSED, &ads), closed0 + 1.0);
}

#[tokio::test]
async fn delta_and_per_type_streams_are_labelled_apart() {
    let _turn = SERIAL.lock().await;
    observed();
    all_closed().await;
    let delta_cds = [("kind", "delta"), ("type_url", CLUSTER)];
    let acks0 = counter(m::ACKS, &delta_cds);
    let nacks0 = counter(m::NACKS, &delta_cds);
    let responses0 = counter(m::RESPONSES, &delta_cds);
    let bytes0 = counter(m::RESPONSE_BYTES, &delta_cds);
    let latency0 = samples(m::PUSH_LATENCY, &[("kind", "delta")]).len();

    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("n2", snapshot("v1", &["a"], &[], &[], &[]));
    let mut delta = ts.delta_ads().await;
    delta.send(delta_request("n2", CLUSTER, &[], &[])).await;
    let first = delta.recv().await;
    delta.ack("n2", &first).await;
    ts.wait_for_delta_watches("n2", 1).await;
    ts.cache
        .set_snapshot("n2", snapshot("v2", &["a", "b"], &[], &[], &[]));
    let second = delta.recv().await;
    delta.nack("n2", &second).await;
    eventually("the delta NACK counted", || {
        counter(m::NACKS, &delta_cds) == nacks0 + 1.0
    })
    .await;
    assert_eq!(counter(m::ACKS, &delta_cds), acks0 + 1.0);
    assert_eq!(counter(m::RESPONSES, &delta_cds), responses0 + 2.0);
    assert_eq!(
        counter(m::RESPONSE_BYTES, &delta_cds),
        bytes0 + wire_size(&first) + wire_size(&second)
    );
    eventually("a delta push latency sample", || {
        samples(m::PUSH_LATENCY, &[("kind", "delta")]).len() > latency0
    })
    .await;
    assert_eq!(
        gauge(m::STREAMS_OPEN, &[("kind", "delta"), ("service", "ads")]),
        1.0
    );

    // A per-type service is its own `service`.
    let mut client = ClusterDiscoveryServiceClient::new(ts.channel().await);
    let mut cds =
        XdsStream::open(|requests| async move { client.stream_clusters(requests).await }).await;
    cds.send(request("n2", "", "", "", &[])).await;
    let answer = cds.recv().await;
    assert_eq!(answer.type_url, CLUSTER);
    assert_eq!(
        gauge(m::STREAMS_OPEN, &[("kind", "sotw"), ("service", "cds")]),
        1.0
    );

    // A type nobody knows is counted under `other`, not under its name.
    let other0 = counter(m::REQUESTS, &[("type_url", "other")]);
    let odd = ts.ads().await;
    odd.send(request(
        "n2",
        "type.googleapis.com/no.such.Type",
        "",
        "",
        &[],
    ))
    .await;
    eventually("the odd request counted", || {
        counter(m::REQUESTS, &[("type_url", "other")]) == other0 + 1.0
    })
    .await;
    assert!(read(|t| t
        .values
        .keys()
        .all(|s| s.2.iter().all(|(_, v)| !v.contains("no.such")))));

    drop((delta, cds, odd));
    all_closed().await;
}

#[tokio::test]
async fn linear_cache_updates_are_counted_and_metrics_described() {
    let _turn = SERIAL.lock().await;
    observed();
    let linear = [("cache", "linear")];
    let updates0 = counter(m::CACHE_UPDATES, &linear);
    let cache = LinearCache::new(CLUSTER);
    cache.update_resource("a", &cluster("a")).unwrap();
    cache.delete_resource("a");
    assert_eq!(counter(m::CACHE_UPDATES, &linear), updates0 + 2.0);
    assert!(samples(m::CACHE_UPDATE_DURATION, &linear).len() >= 2);
    let described = read(|t| t.described.clone());
    for name in [m::STREAMS_OPEN, m::CACHE_UPDATES] {
        assert!(described.contains_key(name), "{name} has no description");
    }
}

/// A span or event the subscriber saw: its name and string fields.
#[derive(Debug, Clone)]
struct SpanRecord {
    id: Option<u64>,
    name: String,
    fields: HashMap<String, String>,
    /// For an event: the fields of the span it happened in.
    span_fields: HashMap<String, String>,
}

struct Capture {
    spans: Arc<StdMutex<Vec<SpanRecord>>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if !attrs.metadata().target().starts_with("xds_control_plane") {
            return;
        }
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.spans.lock().unwrap().push(SpanRecord {
            id: Some(id.into_u64()),
            name: attrs.metadata().name().to_string(),
            fields,
            span_fields: HashMap::new(),
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.spans.lock().unwrap();
        if let Some(span) = spans.iter_mut().rev().find(|s| s.id == Some(id.into_u64())) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !event.metadata().target().starts_with("xds_control_plane") {
            return;
        }
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let mut spans = self.spans.lock().unwrap();
        let span_fields = ctx
            .event_span(event)
            .and_then(|span| {
                spans
                    .iter()
                    .rev()
                    .find(|s| s.id == Some(span.id().into_u64()))
            })
            .map(|s| s.fields.clone())
            .unwrap_or_default();
        spans.push(SpanRecord {
            id: None,
            name: fields.get("message").cloned().unwrap_or_default(),
            fields,
            span_fields,
        });
    }
}

#[tokio::test]
async fn each_stream_has_a_span_with_its_node_and_events_inside() {
    let _turn = SERIAL.lock().await;
    let observed = observed();
    let ts = TestServer::start(false).await;
    ts.cache
        .set_snapshot("traced-node", snapshot("v1", &["a"], &[], &[], &[]));
    let mut stream = ts.ads().await;
    stream
        .send(request("traced-node", CLUSTER, "", "", &[]))
        .await;
    let first = stream.recv().await;
    stream.ack("traced-node", &first, &[]).await;
    ts.wait_for_watches("traced-node", 1).await;
    let mut delta = ts.delta_ads().await;
    delta
        .send(delta_request("traced-node", CLUSTER, &[], &[]))
        .await;
    delta.recv().await;

    let spans = observed.spans.lock().unwrap().clone();
    let stream_span = |node: &str, kind: &str| {
        spans.iter().any(|s| {
            s.name == m::STREAM_SPAN
                && s.fields.get("node_id").map(String::as_str) == Some(node)
                && s.fields.get("kind").map(String::as_str) == Some(kind)
                && s.fields.get("service").map(String::as_str) == Some("ads")
                && s.fields.contains_key("stream_id")
        })
    };
    assert!(stream_span("traced-node", "sotw"), "{spans:#?}");
    assert!(stream_span("traced-node", "delta"), "{spans:#?}");
    // The request and response events carry the stream's span, node and all.
    let event_in_span = |message: &str| {
        spans.iter().any(|s| {
            s.id.is_none()
                && s.name == message
                && s.fields.get("type_url").map(String::as_str) == Some(CLUSTER)
                && s.fields.contains_key("nonce")
                && s.span_fields.get("node_id").map(String::as_str) == Some("traced-node")
        })
    };
    assert!(event_in_span("request"), "{spans:#?}");
    assert!(event_in_span("response"), "{spans:#?}");

    drop((stream, delta));
    all_closed().await;
}
