//! Questions a test asks a running Envoy through its admin interface.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::error::{HarnessError, Result};
use super::http::{admin_get, admin_post, HttpResponse};
use super::process::{EnvoyProcess, ERROR_LOG_LINES};
use super::versions::{AppliedVersions, ResourceKind};

/// How often the `wait_*` methods poll.
const POLL: Duration = Duration::from_millis(100);

impl EnvoyProcess {
    /// `GET` an admin path; fails unless the status is 200.
    pub async fn admin(&self, path: &str) -> Result<HttpResponse> {
        let response = admin_get(self.admin_port(), path).await?;
        if response.status != 200 {
            return Err(HarnessError::Admin {
                path: path.to_owned(),
                port: self.admin_port(),
                reason: format!("status {}: {}", response.status, response.text()),
            });
        }
        Ok(response)
    }

    /// `POST` an admin path (e.g. `/runtime_modify?k=v`); fails unless the
    /// status is 200.
    pub async fn admin_post(&self, path: &str) -> Result<HttpResponse> {
        let response = admin_post(self.admin_port(), path).await?;
        if response.status != 200 {
            return Err(HarnessError::Admin {
                path: path.to_owned(),
                port: self.admin_port(),
                reason: format!("status {}: {}", response.status, response.text()),
            });
        }
        Ok(response)
    }

    async fn admin_json(&self, path: &str) -> Result<Value> {
        let response = self.admin(path).await?;
        serde_json::from_slice(&response.body).map_err(|source| HarnessError::Json {
            context: format!("admin {path}"),
            source,
        })
    }

    /// The whole configuration dump, endpoints included
    /// (`GET /config_dump?include_eds`).
    pub async fn config_dump(&self) -> Result<Value> {
        self.admin_json("/config_dump?include_eds").await
    }

    /// The runtime (`GET /runtime`): `{"layers": [names], "entries": {key:
    /// {"final_value", "layer_values"}}}`.
    pub async fn runtime(&self) -> Result<Value> {
        self.admin_json("/runtime").await
    }

    /// Every counter, gauge and text readout (`GET /stats?format=json`),
    /// name → value (numbers, or strings for text readouts such as
    /// `*.version_text`). Histograms are left out.
    pub async fn stats(&self) -> Result<BTreeMap<String, Value>> {
        let json = self.admin_json("/stats?format=json").await?;
        let mut out = BTreeMap::new();
        for stat in json
            .get("stats")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(name), Some(value)) =
                (stat.get("name").and_then(Value::as_str), stat.get("value"))
            {
                out.insert(name.to_owned(), value.clone());
            }
        }
        Ok(out)
    }

    /// Envoy's server state from `/server_info`: `LIVE`, `DRAINING`,
    /// `PRE_INITIALIZING` or `INITIALIZING`.
    pub async fn server_state(&self) -> Result<String> {
        let info = self.admin_json("/server_info").await?;
        Ok(info
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// The versions of the resources Envoy has applied (see
    /// [`AppliedVersions`] for where each comes from).
    pub async fn applied_versions(&self) -> Result<AppliedVersions> {
        let dump = self.config_dump().await?;
        let stats = self.stats().await?;
        Ok(AppliedVersions::from_admin(&dump, &stats))
    }

    /// Polls until, for every kind in `kinds`, Envoy has at least one
    /// subscription and all of them last accepted (ACKed) a response with
    /// version `version` ([`AppliedVersions::all_at`]); returns what it saw
    /// last. On timeout the error lists what it saw and Envoy's log tail.
    ///
    /// Accepted clusters and listeners may still be warming: before sending
    /// traffic, also [`wait_for_listener`](Self::wait_for_listener).
    pub async fn wait_for_version(
        &self,
        version: &str,
        kinds: &[ResourceKind],
        timeout: Duration,
    ) -> Result<AppliedVersions> {
        let what = format!("{kinds:?} at version {version:?}");
        self.wait_for_versions(&what, timeout, |av| {
            kinds.iter().all(|k| av.all_at(*k, version))
        })
        .await
    }

    /// Polls [`applied_versions`](Self::applied_versions) until `done`
    /// holds; `what` names the condition in the timeout error.
    pub async fn wait_for_versions(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&AppliedVersions) -> bool,
    ) -> Result<AppliedVersions> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.applied_versions().await;
            match &seen {
                Ok(av) if done(av) => return Ok(av.clone()),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(self.timeout_error(what, timeout, describe(&seen)));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether Envoy has an active listener bound to 127.0.0.1:`port` (it
    /// is listed in `/listeners` and a TCP connection to it succeeds).
    pub async fn listener_ready(&self, port: u16) -> Result<bool> {
        let listeners = self.admin_json("/listeners?format=json").await?;
        let listed = listeners
            .get("listener_statuses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|l| {
                let addresses = std::iter::once(l.get("local_address"))
                    .chain(
                        l.get("additional_local_addresses")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .map(Some),
                    )
                    .flatten();
                addresses
                    .filter_map(|a| a.pointer("/socket_address/port_value"))
                    .any(|p| p.as_u64() == Some(u64::from(port)))
            });
        if !listed {
            return Ok(false);
        }
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        Ok(matches!(
            tokio::time::timeout(Duration::from_secs(1), connect).await,
            Ok(Ok(_))
        ))
    }

    /// Polls until [`listener_ready`](Self::listener_ready)`(port)`.
    pub async fn wait_for_listener(&self, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.listener_ready(port).await;
            if matches!(seen, Ok(true)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let seen = match seen {
                    Ok(_) => match self.admin("/listeners").await {
                        Ok(r) => format!("listeners: {}", r.text().trim()),
                        Err(e) => e.to_string(),
                    },
                    Err(e) => e.to_string(),
                };
                let what = format!("a listener on port {port}");
                return Err(self.timeout_error(&what, timeout, seen));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until Envoy is `LIVE` (initialised: its first CDS/LDS
    /// responses applied, or their `initial_fetch_timeout` passed).
    pub async fn wait_live(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.server_state().await;
            if matches!(&seen, Ok(s) if s == "LIVE") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let seen = match seen {
                    Ok(s) => format!("state {s}"),
                    Err(e) => e.to_string(),
                };
                return Err(self.timeout_error("server state LIVE", timeout, seen));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn timeout_error(&self, what: &str, timeout: Duration, seen: String) -> HarnessError {
        HarnessError::Timeout {
            what: what.to_owned(),
            timeout,
            seen,
            log_tail: self.log_tail(ERROR_LOG_LINES),
        }
    }
}

fn describe(seen: &Result<AppliedVersions>) -> String {
    match seen {
        Ok(av) => av.to_string(),
        Err(e) => e.to_string(),
    }
}
