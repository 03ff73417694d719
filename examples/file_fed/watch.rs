//! Watching the services file and serving each good version of it (used by
//! `main.rs`, and by `tests/envoy_examples.rs` with `#[path]`).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use xds_control_plane::envoy_types::pb::envoy::config::core::v3::Node;
use xds_control_plane::{NodeHash, SnapshotCache};

use super::config::Config;

/// The one cache key every node maps to: the file describes the whole
/// fleet, so every proxy shares one snapshot.
pub const ALL_NODES: &str = "all";

/// The [`NodeHash`] of a cache whose every node gets the file's snapshot.
pub fn every_node(_node: Option<&Node>) -> String {
    ALL_NODES.to_string()
}

/// What a poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new configuration is being served.
    Applied {
        version: String,
        services: usize,
        ports: Vec<u16>,
    },
    /// The file changed but the configuration it describes did not (spacing,
    /// order of services): nothing to push.
    Unchanged { version: String },
    /// The file cannot be read or is invalid; `serving` is the version still
    /// served (`None` before the first good file).
    Rejected {
        error: String,
        serving: Option<String>,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Applied {
                version,
                services,
                ports,
            } => write!(
                f,
                "serving version {version}: {services} service(s) on port(s) {ports:?}"
            ),
            Event::Unchanged { version } => {
                write!(f, "file rewritten, same services: still version {version}")
            }
            Event::Rejected {
                error,
                serving: Some(version),
            } => write!(f, "{error}; still serving version {version}"),
            Event::Rejected {
                error,
                serving: None,
            } => write!(f, "{error}; nothing to serve yet"),
        }
    }
}

/// What the last poll read, to tell a change from the same content (or
/// the same failure) seen again.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Content([u8; 32]),
    Unreadable(String),
}

/// Feeds `cache` from the file at `path`: every poll reads it, and when its
/// content changed, parses it and, if it is valid, sets its snapshot for
/// [`ALL_NODES`]; when it is not, the last good snapshot stays.
pub struct FileFeed<H: NodeHash> {
    path: PathBuf,
    cache: SnapshotCache<H>,
    seen: Option<Seen>,
    serving: Option<String>,
}

impl<H: NodeHash> FileFeed<H> {
    /// A feed that has read nothing yet. `cache` should key every node to
    /// [`ALL_NODES`] ([`every_node`]).
    pub fn new(path: impl Into<PathBuf>, cache: SnapshotCache<H>) -> Self {
        FileFeed {
            path: path.into(),
            cache,
            seen: None,
            serving: None,
        }
    }

    /// Reads the file once. Returns `None` when it is as the previous poll
    /// found it (the same bytes, or the same read error), so a bad file is
    /// reported once, not at every poll.
    ///
    /// The whole file is read and hashed every time rather than trusting
    /// its modification time, which some file systems keep to the second
    /// (a quick second edit would go unseen) and some tools preserve.
    /// Services files are small; reading one costs microseconds.
    pub async fn poll(&mut self) -> Option<Event> {
        let read = tokio::fs::read(&self.path).await;
        let seen = match &read {
            Ok(bytes) => Seen::Content(Sha256::digest(bytes).into()),
            Err(e) => Seen::Unreadable(e.to_string()),
        };
        if self.seen.as_ref() == Some(&seen) {
            return None;
        }
        self.seen = Some(seen);
        let path = self.path.display();
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => return Some(self.rejected(format!("cannot read {path}: {e}"))),
        };
        let config = match std::str::from_utf8(&bytes) {
            Ok(text) => Config::parse(text),
            Err(e) => return Some(self.rejected(format!("{path} is not UTF-8: {e}"))),
        };
        let config = match config {
            Ok(config) => config,
            Err(e) => return Some(self.rejected(format!("{path} is invalid: {e}"))),
        };
        let version = config.version();
        if self.serving.as_deref() == Some(version.as_str()) {
            return Some(Event::Unchanged { version });
        }
        match config.snapshot() {
            Ok(snapshot) => {
                self.cache.set_snapshot(ALL_NODES, snapshot);
                self.serving = Some(version.clone());
                Some(Event::Applied {
                    version,
                    services: config.services.len(),
                    ports: config.ports(),
                })
            }
            Err(e) => Some(self.rejected(format!("{path}: cannot build a snapshot: {e}"))),
        }
    }

    fn rejected(&self, error: String) -> Event {
        Event::Rejected {
            error,
            serving: self.serving.clone(),
        }
    }

    /// Polls every `interval`, forever, handing every event to `report`.
    ///
    /// A writer that rewrites the file in place may be caught half-way: that
    /// poll reports an error, keeps the last good snapshot, and the next one
    /// picks up the whole file. Writing a temporary file and renaming it over
    /// the watched one avoids the spurious error.
    pub async fn run(mut self, interval: Duration, mut report: impl FnMut(&Event)) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Some(event) = self.poll().await {
                report(&event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_control_plane::resource::type_url;
    use xds_control_plane::IdHash;

    const GOOD: &str =
        r#"{"services": [{"name": "a", "port": 10000, "endpoints": ["127.0.0.1:1"]}]}"#;

    /// The version served to a node with any id.
    fn served(cache: &SnapshotCache<fn(Option<&Node>) -> String>) -> Option<String> {
        let key = every_node(Some(&Node {
            id: "any".into(),
            ..Default::default()
        }));
        cache
            .snapshot(&key)
            .and_then(|s| s.version(type_url::LISTENER).map(str::to_owned))
    }

    #[tokio::test]
    async fn changes_apply_and_bad_files_keep_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("services.json");
        let cache = SnapshotCache::new(true, every_node as fn(Option<&Node>) -> String);
        let mut feed = FileFeed::new(&path, cache.clone());

        // Missing file: reported once, nothing served.
        let Some(Event::Rejected {
            error,
            serving: None,
        }) = feed.poll().await
        else {
            panic!("a missing file is an error")
        };
        assert!(error.contains("cannot read"), "{error}");
        assert_eq!(feed.poll().await, None, "the same error is not repeated");

        std::fs::write(&path, GOOD).unwrap();
        let v1 = Config::parse(GOOD).unwrap().version();
        assert_eq!(
            feed.poll().await,
            Some(Event::Applied {
                version: v1.clone(),
                services: 1,
                ports: vec![10000]
            })
        );
        assert_eq!(served(&cache), Some(v1.clone()));
        assert_eq!(feed.poll().await, None, "same bytes: nothing to do");

        // Only the layout changes: same version, no push.
        std::fs::write(&path, format!("\n{GOOD}\n")).unwrap();
        assert_eq!(
            feed.poll().await,
            Some(Event::Unchanged {
                version: v1.clone()
            })
        );

        // Invalid: rejected with line and column, v1 stays.
        std::fs::write(
            &path,
            "{\"services\": [\n  {\"name\": \"a\", \"port\": 10000,}\n]}",
        )
        .unwrap();
        let Some(Event::Rejected { error, serving }) = feed.poll().await else {
            panic!("invalid JSON is rejected")
        };
        assert!(error.contains("line 2 column"), "{error}");
        assert_eq!(serving, Some(v1.clone()));
        assert_eq!(served(&cache), Some(v1.clone()));

        // Fixed, with a change: served.
        let good2 = GOOD.replace("127.0.0.1:1", "127.0.0.1:2");
        std::fs::write(&path, &good2).unwrap();
        let v2 = Config::parse(&good2).unwrap().version();
        assert!(matches!(feed.poll().await, Some(Event::Applied { version, .. }) if version == v2));
        assert_eq!(served(&cache), Some(v2));
    }

    #[test]
    fn every_node_shares_one_key() {
        let node = |id: &str| Node {
            id: id.into(),
            cluster: id.into(),
            ..Default::default()
        };
        assert_eq!(every_node(Some(&node("a"))), ALL_NODES);
        assert_eq!(every_node(Some(&node("b"))), ALL_NODES);
        assert_eq!(every_node(None), ALL_NODES);
        // Unlike the default, which keys by id.
        assert_ne!(IdHash.id(Some(&node("a"))), IdHash.id(Some(&node("b"))));
    }
}
