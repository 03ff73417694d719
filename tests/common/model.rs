//! What the SotW and delta model tests (`robust_model*.rs`) share: the
//! resource names they draw from, and the probe barrier that tells when the
//! server has read every request sent so far.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::test_runner::TestCaseError;
use tokio::sync::Notify;
use tonic::Streaming;
use xds_control_plane::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use xds_control_plane::server::{Callbacks, SentDeltaResponse, SentResponse, StreamId};

use crate::common::PATIENCE;

/// A type URL no cache serves: a request for it only marks a point in the
/// request stream.
pub const PROBE: &str = "type.googleapis.com/xds.test.Probe";
pub const CLUSTERS: [&str; 4] = ["c0", "c1", "c2", "c3"];
pub const ENDPOINTS: [&str; 5] = ["e0", "e1", "e2", "e3", "e4"];
pub const MAX_OPS: usize = 40;
/// Index of each modelled type.
pub const CDS: usize = 0;
pub const EDS: usize = 1;

/// A case's failure: what went wrong, then the case's trace.
pub fn failure(message: &str, trace: &[String]) -> TestCaseError {
    TestCaseError::fail(format!("{message}\ntrace:\n{}", trace.join("\n")))
}

/// Fails the case with a message and the case's trace unless `$cond`.
macro_rules! check {
    ($case:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::model::failure(&format!($($msg)+), &$case.trace));
        }
    };
}
pub(crate) use check;

/// The names whose bits are set.
pub fn pick(bits: u8, names: &[&str]) -> BTreeSet<String> {
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// Counts probes the server has read and responses it has sent, on SotW
/// and delta streams alike.
#[derive(Default)]
pub struct Observer {
    probes: AtomicUsize,
    responses: AtomicUsize,
    probed: Notify,
}

impl Observer {
    fn probe_read(&self, type_url: &str) {
        if type_url == PROBE {
            self.probes.fetch_add(1, Ordering::SeqCst);
            self.probed.notify_one();
        }
    }

    /// Once the server has read `probes_sent` probes, every response it sent
    /// since `*responses_read`, read from `rx`; a failure carries `trace`.
    pub async fn responses_after_probe<T>(
        &self,
        probes_sent: usize,
        rx: &mut Streaming<T>,
        responses_read: &mut usize,
        trace: &[String],
    ) -> Result<Vec<T>, TestCaseError>
    where
        T: std::fmt::Debug,
    {
        let deadline = Instant::now() + PATIENCE;
        while self.probes.load(Ordering::SeqCst) < probes_sent {
            if Instant::now() >= deadline {
                return Err(failure("the server never read the probe", trace));
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), self.probed.notified()).await;
        }
        let sent = self.responses.load(Ordering::SeqCst);
        let mut responses = Vec::new();
        while *responses_read < sent {
            match tokio::time::timeout(PATIENCE, rx.message()).await {
                Ok(Ok(Some(response))) => responses.push(response),
                other => return Err(failure(&format!("expected a response: {other:?}"), trace)),
            }
            *responses_read += 1;
        }
        Ok(responses)
    }
}

impl Callbacks for Observer {
    fn on_stream_request(
        &self,
        _stream: StreamId,
        request: &DiscoveryRequest,
    ) -> Result<(), tonic::Status> {
        self.probe_read(&request.type_url);
        Ok(())
    }
    fn on_stream_response(
        &self,
        _stream: StreamId,
        _request: &DiscoveryRequest,
        _response: &SentResponse<'_>,
    ) {
        self.responses.fetch_add(1, Ordering::SeqCst);
    }
    fn on_stream_delta_request(
        &self,
        _stream: StreamId,
        request: &DeltaDiscoveryRequest,
    ) -> Result<(), tonic::Status> {
        self.probe_read(&request.type_url);
        Ok(())
    }
    fn on_stream_delta_response(
        &self,
        _stream: StreamId,
        _request: &DeltaDiscoveryRequest,
        _response: &SentDeltaResponse<'_>,
    ) {
        self.responses.fetch_add(1, Ordering::SeqCst);
    }
}
