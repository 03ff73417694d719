//! The Client Status Discovery Service (CSDS,
//! `envoy.service.status.v3.ClientStatusDiscoveryService`): which
//! configuration each connected client was sent, and whether it accepted it,
//! for tools that ask a control plane rather than each proxy.
//!
//! Answers come from [`Server::client_status`]: nothing is recorded for CSDS
//! beyond what the streams keep anyway, and resource bodies are read from
//! the cache only when asked for and only if they are still what was sent.

use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::{
    ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::google::protobuf::Timestamp;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::client_status::{StreamStatus, TypeStatus};
use super::node_matcher::NodeFilter;
use super::Server;
use crate::cache::EncodedResource;

/// The CSDS gRPC service of a [`Server`], from [`Server::csds_service`].
///
/// Both RPCs answer with [`Server::csds_response`]: `FetchClientStatus`
/// once, `StreamClientStatus` once per request, until the client half-closes
/// or [`Server::shutdown`] (which ends it with `UNAVAILABLE`). A request the
/// server cannot evaluate (see [`Server::csds_response`]) is answered with
/// `INVALID_ARGUMENT`, which also ends a stream.
#[derive(Debug, Clone)]
pub struct CsdsService {
    server: Server,
}

/// The responses of one `StreamClientStatus` call.
pub type CsdsResponseStream =
    Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send + 'static>>;

impl Server {
    /// The CSDS service, for `add_service` beside the xDS services.
    ///
    /// ```no_run
    /// use xds_control_plane::{IdHash, Server, SnapshotCache};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let cache = SnapshotCache::new(true, IdHash);
    /// let server = Server::new(cache, ());
    /// tonic::transport::Server::builder()
    ///     .add_service(server.ads_service())
    ///     .add_service(server.csds_service())
    ///     .serve("127.0.0.1:18000".parse()?)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn csds_service(&self) -> ClientStatusDiscoveryServiceServer<CsdsService> {
        ClientStatusDiscoveryServiceServer::new(CsdsService {
            server: self.clone(),
        })
    }

    /// Answers a CSDS request: one [`ClientConfig`] per connected node that
    /// the request's `node_matchers` select (any of them; none selects
    /// all), sorted by node id. The request's `node` (who asks) does not
    /// change the answer.
    ///
    /// Matchers: `node_id` and `node_metadatas` with string matchers
    /// `exact`, `prefix`, `suffix` and `contains` (each with `ignore_case`),
    /// and value matchers `null_match`, `double_match`, `string_match`,
    /// `bool_match`, `present_match`, `list_match` and `or_match`, evaluated
    /// as Envoy does. `safe_regex` and custom string matchers, and malformed
    /// matchers (no pattern, an empty prefix, suffix or contains, an empty
    /// path) are refused with `INVALID_ARGUMENT` naming the field.
    ///
    /// A node's streams (one ADS stream, or one per type, or an old and a
    /// new one while it reconnects) are merged: each type is reported from
    /// the newest stream that watches it, and `node` is the newest stream's.
    /// Streams that have not sent a request yet have no node and are left
    /// out.
    ///
    /// Every watched type gets one [`GenericXdsConfig`] per resource the
    /// client holds from its stream, sorted by type URL then name:
    ///
    /// - `name`; `version_info` is the version the resource was sent at
    ///   (state of the world: the `version_info` of the response that last
    ///   carried it; delta: the resource's own version).
    /// - `config_status` and `client_status` describe the type's latest
    ///   response, since clients ACK and NACK responses, not resources:
    ///
    ///   | latest response of the type          | `config_status` | `client_status` |
    ///   |--------------------------------------|-----------------|-----------------|
    ///   | acknowledged                         | `SYNCED`        | `ACKED`         |
    ///   | rejected (NACK)                      | `ERROR`         | `NACKED`        |
    ///   | sent, no ACK or NACK yet             | `STALE`         | `UNKNOWN`       |
    ///   | none sent yet (requested)            | `NOT_SENT`      | `REQUESTED`     |
    ///
    /// - `error_state` is set while a rejection is on record (until a later
    ///   version is acknowledged): the client's error message in `details`,
    ///   the rejected `version_info`, and `last_update_attempt`, the time of
    ///   the NACK. It can accompany `STALE`: a newer version went out after
    ///   the rejection.
    /// - `last_updated` is when the type's latest response was sent.
    /// - `xds_config` is the resource's body, read from the cache, only if
    ///   the cache still holds the version the client was sent (state of the
    ///   world: the type's version is unchanged; delta: the resource's
    ///   version is), and not when `exclude_resource_contents` is set.
    ///   Otherwise it is left empty rather than show config the client does
    ///   not run.
    /// - `is_static_resource` is false.
    ///
    /// A type with nothing held (nothing sent yet, or an empty response)
    /// gets one entry with an empty `name`, so that every watched type
    /// shows with its status.
    pub fn csds_response(
        &self,
        request: &ClientStatusRequest,
    ) -> Result<ClientStatusResponse, Status> {
        let filter = NodeFilter::new(&request.node_matchers)?;
        let mut by_node: BTreeMap<String, Vec<StreamStatus>> = BTreeMap::new();
        // Sorted by stream id: the last of a node's streams is its newest.
        for stream in self.client_status() {
            if let Some(id) = stream.node.as_ref().map(|node| node.id.clone()) {
                by_node.entry(id).or_default().push(stream);
            }
        }
        let mut config = Vec::new();
        for streams in by_node.values() {
            let Some(node) = streams.last().and_then(|s| s.node.as_ref()) else {
                continue;
            };
            if !filter.matches(node) {
                continue;
            }
            let mut reported = HashSet::new();
            let mut generic = Vec::new();
            for stream in streams.iter().rev() {
                for (type_url, status) in &stream.types {
                    if reported.insert(type_url.as_str()) {
                        let bodies = !request.exclude_resource_contents;
                        self.type_configs(
                            node,
                            stream.delta,
                            type_url,
                            status,
                            bodies,
                            &mut generic,
                        );
                    }
                }
            }
            generic.sort_by(|a, b| (&a.type_url, &a.name).cmp(&(&b.type_url, &b.name)));
            config.push(ClientConfig {
                node: Some(node.clone()),
                generic_xds_configs: generic,
                ..Default::default()
            });
        }
        Ok(ClientStatusResponse { config })
    }

    /// The entries of one type on one stream.
    fn type_configs(
        &self,
        node: &Node,
        delta: bool,
        type_url: &str,
        status: &TypeStatus,
        bodies: bool,
        out: &mut Vec<GenericXdsConfig>,
    ) {
        let (config_status, client_status) = classify(status);
        let entry = |name: &str, version: &str, body: Option<&EncodedResource>| GenericXdsConfig {
            type_url: type_url.to_string(),
            name: name.to_string(),
            version_info: version.to_string(),
            xds_config: body.map(EncodedResource::to_any),
            last_updated: status.sent.as_ref().and_then(|(_, at)| timestamp(*at)),
            config_status: config_status as i32,
            client_status: client_status as i32,
            error_state: status.rejected.as_ref().map(|r| UpdateFailureState {
                failed_configuration: None,
                last_update_attempt: timestamp(r.at),
                details: r.error.clone(),
                version_info: r.version.clone(),
            }),
            is_static_resource: false,
        };
        let held = status.held_resources();
        // An empty version marks a delta name the client dropped.
        let mut names: Vec<(&str, &str)> = held
            .iter()
            .flat_map(|held| held.iter())
            .filter(|(_, version)| !version.is_empty())
            .map(|(name, version)| (&**name, &**version))
            .collect();
        let Some((sent_version, _)) = &status.sent else {
            out.push(entry("", "", None));
            return;
        };
        if names.is_empty() {
            out.push(entry("", sent_version, None));
            return;
        }
        names.sort_unstable();
        let current = if bodies {
            let lookup: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
            self.shared.cache.current_resources(node, type_url, &lookup)
        } else {
            None
        };
        let body = |name: &str, version: &str| {
            let current = current.as_ref()?;
            let resource = current.resources.iter().find(|r| r.name() == name)?;
            // State of the world records the response's version, delta the
            // resource's: compare like with like.
            let unchanged = if delta {
                **resource.version() == *version
            } else {
                *current.version == *version
            };
            unchanged.then_some(resource)
        };
        for (name, version) in names {
            out.push(entry(name, version, body(name, version)));
        }
    }
}

/// The status of a type's latest response, as CSDS spells it.
fn classify(status: &TypeStatus) -> (ConfigStatus, ClientResourceStatus) {
    let Some((sent, _)) = &status.sent else {
        return (ConfigStatus::NotSent, ClientResourceStatus::Requested);
    };
    if status.rejected.as_ref().is_some_and(|r| r.version == *sent) {
        (ConfigStatus::Error, ClientResourceStatus::Nacked)
    } else if status.in_sync() {
        (ConfigStatus::Synced, ClientResourceStatus::Acked)
    } else {
        (ConfigStatus::Stale, ClientResourceStatus::Unknown)
    }
}

fn timestamp(at: SystemTime) -> Option<Timestamp> {
    let since = at.duration_since(UNIX_EPOCH).ok()?;
    Some(Timestamp {
        seconds: i64::try_from(since.as_secs()).ok()?,
        nanos: i32::try_from(since.subsec_nanos()).ok()?,
    })
}

#[tonic::async_trait]
impl ClientStatusDiscoveryService for CsdsService {
    type StreamClientStatusStream = CsdsResponseStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<CsdsResponseStream>, Status> {
        let shutdown = self.server.shared.shutdown.token();
        if shutdown.is_cancelled() {
            return Err(shutting_down());
        }
        let state = Some((self.server.clone(), request.into_inner()));
        // Each step answers one request; `None` as state ends the stream
        // after an error has been yielded.
        let responses = futures::stream::unfold(state, move |state| {
            let shutdown = shutdown.clone();
            async move {
                let (server, mut requests) = state?;
                let next = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return Some((Err(shutting_down()), None)),
                    next = requests.next() => next?,
                };
                match next.and_then(|request| server.csds_response(&request)) {
                    Ok(response) => Some((Ok(response), Some((server, requests)))),
                    Err(status) => Some((Err(status), None)),
                }
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        self.server
            .csds_response(request.get_ref())
            .map(Response::new)
    }
}

fn shutting_down() -> Status {
    Status::unavailable("xDS server is shutting down")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::client_status::RejectedVersion;
    use std::time::Duration;

    fn status(sent: Option<&str>, acked: Option<&str>, rejected: Option<&str>) -> TypeStatus {
        let at = UNIX_EPOCH + Duration::from_secs(1);
        let mut status = TypeStatus::default();
        status.sent = sent.map(|v| (v.to_string(), at));
        status.acked = acked.map(|v| (v.to_string(), at));
        status.rejected = rejected.map(|v| RejectedVersion {
            version: v.to_string(),
            error: "bad".into(),
            at,
        });
        status
    }

    #[test]
    fn status_mapping() {
        use ClientResourceStatus as C;
        use ConfigStatus as S;
        let cases = [
            (status(None, None, None), (S::NotSent, C::Requested)),
            (status(Some("v1"), None, None), (S::Stale, C::Unknown)),
            (status(Some("v1"), Some("v1"), None), (S::Synced, C::Acked)),
            (status(Some("v2"), Some("v1"), None), (S::Stale, C::Unknown)),
            (
                status(Some("v2"), Some("v1"), Some("v2")),
                (S::Error, C::Nacked),
            ),
            // Rejected v2, then v3 went out: waiting again.
            (
                status(Some("v3"), Some("v1"), Some("v2")),
                (S::Stale, C::Unknown),
            ),
        ];
        for (status, expected) in cases {
            assert_eq!(classify(&status), expected, "{status:?}");
        }
    }

    #[test]
    fn timestamps() {
        let at = UNIX_EPOCH + Duration::new(5, 7);
        assert_eq!(
            timestamp(at),
            Some(Timestamp {
                seconds: 5,
                nanos: 7
            })
        );
        assert_eq!(timestamp(UNIX_EPOCH - Duration::from_secs(1)), None);
    }
}
