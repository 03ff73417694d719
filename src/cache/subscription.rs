//! What one stream has subscribed to for one type, and what it was sent.

use std::collections::HashMap;
use std::sync::Arc;

/// The explicit wildcard resource name.
pub const WILDCARD: &str = "*";
const GLOB_SUFFIX: &str = "/*";

/// Names sent to a client, each with the version it was sent at. Shared:
/// streams in the same state hold one copy.
pub type ReturnedResources = HashMap<Arc<str>, Arc<str>, ahash::RandomState>;

/// A stream's subscription to one resource type.
///
/// Wildcard follows the xDS rules: a first request with no names is a
/// (legacy) wildcard while later requests stay empty; once a client names
/// resources, only an explicit `*` means wildcard. Names ending in `/*`
/// subscribe to every resource under that prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    wildcard: bool,
    allow_legacy_wildcard: bool,
    /// Exact names, sorted and without duplicates; shared so that equal
    /// subscriptions can be recognised and their responses shared.
    names: Arc<[String]>,
    prefixes: Vec<String>,
    returned: Arc<ReturnedResources>,
}

impl Subscription {
    /// A state-of-the-world subscription from a first request's names.
    pub fn sotw(names: &[String], allow_legacy_wildcard: bool) -> Self {
        let mut sub = Subscription {
            wildcard: names.is_empty() && allow_legacy_wildcard,
            allow_legacy_wildcard,
            ..Default::default()
        };
        sub.set_sotw_names(names);
        sub
    }

    /// Applies the names of a later state-of-the-world request.
    ///
    /// Sent resources no longer subscribed are forgotten, so subscribing to
    /// them again sends them again.
    pub fn set_sotw_names(&mut self, names: &[String]) {
        if self.allow_legacy_wildcard {
            if names.is_empty() {
                return;
            }
            self.allow_legacy_wildcard = false;
        }
        if self.is_same_sotw_request(names) {
            return; // an ACK restating the subscription: nothing to redo
        }
        let mut exact = Vec::with_capacity(names.len());
        let mut prefixes = Vec::new();
        let mut wildcard = false;
        for name in names {
            if name == WILDCARD {
                wildcard = true;
            } else if let Some(prefix) = glob_prefix(name) {
                prefixes.push(prefix.to_string());
            } else {
                exact.push(name.clone());
            }
        }
        exact.sort_unstable();
        exact.dedup();
        self.wildcard = wildcard;
        self.names = exact.into();
        self.prefixes = prefixes;
        if !wildcard {
            let (names, prefixes) = (&self.names, &self.prefixes);
            let keep = |name: &Arc<str>| has(names, name) || matches_prefix(prefixes, name);
            if !self.returned.keys().all(keep) {
                Arc::make_mut(&mut self.returned).retain(|name, _| keep(name));
            }
        }
    }

    /// Whether `names` (a SotW request's list) says exactly what this
    /// subscription already holds, checked without allocating.
    fn is_same_sotw_request(&self, names: &[String]) -> bool {
        let entries = self.names.len() + self.prefixes.len() + usize::from(self.wildcard);
        if names.len() != entries || names.is_empty() {
            return false;
        }
        // Clients usually repeat their names in the same (often sorted)
        // order: one pass, no searching.
        if self.prefixes.is_empty() && !self.wildcard && names[..] == self.names[..] {
            return true;
        }
        names.iter().all(|n| {
            if n == WILDCARD {
                self.wildcard
            } else if let Some(prefix) = glob_prefix(n) {
                self.prefixes.iter().any(|p| p == prefix)
            } else {
                has(&self.names, n)
            }
        })
    }

    /// An incremental (delta) subscription from a first request: the names
    /// it subscribes and unsubscribes, and the versions the client already
    /// has (`initial_resource_versions`), which are not sent again.
    pub fn delta(
        subscribe: &[String],
        unsubscribe: &[String],
        initial_versions: &HashMap<String, String>,
        allow_legacy_wildcard: bool,
    ) -> Self {
        let mut sub = Subscription {
            wildcard: subscribe.is_empty() && allow_legacy_wildcard,
            allow_legacy_wildcard,
            returned: Arc::new(
                initial_versions
                    .iter()
                    .map(|(name, version)| (Arc::from(name.as_str()), Arc::from(version.as_str())))
                    .collect(),
            ),
            ..Default::default()
        };
        sub.update_delta(subscribe, unsubscribe);
        sub
    }

    /// Applies a later delta request. Subscribing or unsubscribing `*`
    /// toggles wildcard; naming resources does not end a wildcard. A name
    /// unsubscribed while wildcard is marked unknown, so it is either sent
    /// again or reported removed, as the protocol requires.
    pub fn update_delta(&mut self, subscribe: &[String], unsubscribe: &[String]) {
        // Legacy wildcard lasts while requests change nothing. Unlike
        // go-control-plane, unsubscribing `*` ends it too, as the xDS spec says.
        if self.allow_legacy_wildcard {
            if subscribe.is_empty() && unsubscribe.is_empty() {
                return;
            }
            self.allow_legacy_wildcard = false;
        }
        if subscribe.is_empty() && unsubscribe.is_empty() {
            return;
        }
        let mut names: Vec<String> = self.names.to_vec();
        for name in subscribe {
            if name == WILDCARD {
                self.wildcard = true;
            } else if let Some(prefix) = glob_prefix(name) {
                if !self.prefixes.iter().any(|p| p == prefix) {
                    self.prefixes.push(prefix.to_string());
                }
            } else {
                names.push(name.clone());
            }
        }
        names.sort_unstable();
        names.dedup();
        for name in unsubscribe {
            if name == WILDCARD {
                self.wildcard = false;
            } else if let Some(prefix) = glob_prefix(name) {
                self.prefixes.retain(|p| p != prefix);
                // The client drops what it no longer wants; forget it too.
                let (wildcard, prefixes) = (self.wildcard, &self.prefixes);
                Arc::make_mut(&mut self.returned).retain(|n, _| {
                    !n.starts_with(prefix)
                        || wildcard
                        || has(&names, n)
                        || matches_prefix(prefixes, n)
                });
            } else {
                let was_named = match names.binary_search(name) {
                    Ok(i) => {
                        names.remove(i);
                        true
                    }
                    Err(_) => false,
                };
                let returned = Arc::make_mut(&mut self.returned);
                if was_named && self.wildcard {
                    returned.insert(Arc::from(name.as_str()), Arc::from(""));
                } else {
                    returned.remove(name.as_str());
                }
            }
        }
        self.names = names.into();
    }

    /// Whether every resource of the type is subscribed.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// Names subscribed to explicitly (not `*`, not prefixes), sorted.
    pub fn names(&self) -> &Arc<[String]> {
        &self.names
    }

    /// Whether the explicit names are exactly `names` (often the very same
    /// shared list, recognised without comparing).
    pub(crate) fn names_are(&self, names: &Arc<[String]>) -> bool {
        same_names(&self.names, names)
    }

    /// Whether `name` is subscribed to explicitly.
    pub fn has_name(&self, name: &str) -> bool {
        has(&self.names, name)
    }

    /// Prefixes subscribed with `prefix/*` (stored with the trailing `/`).
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Whether a resource of this name is wanted.
    pub fn wants(&self, name: &str) -> bool {
        self.wildcard || has(&self.names, name) || matches_prefix(&self.prefixes, name)
    }

    /// What was sent, by name, with versions.
    pub fn returned(&self) -> &ReturnedResources {
        &self.returned
    }

    /// The same, shared.
    pub fn shared_returned(&self) -> &Arc<ReturnedResources> {
        &self.returned
    }

    /// Records what the client now has (set when a response is sent).
    pub fn set_returned(&mut self, returned: ReturnedResources) {
        self.returned = Arc::new(returned);
    }

    /// The same, sharing a map other streams may hold too.
    pub fn set_shared_returned(&mut self, returned: Arc<ReturnedResources>) {
        self.returned = returned;
    }
}

/// Whether the sorted `names` hold `name`.
/// Whether two sorted name lists are the same, by identity first.
pub(crate) fn same_names(a: &Arc<[String]>, b: &Arc<[String]>) -> bool {
    Arc::ptr_eq(a, b) || a[..] == b[..]
}

fn has(names: &[String], name: &str) -> bool {
    names.binary_search_by(|n| n.as_str().cmp(name)).is_ok()
}

/// `"svc/*"` subscribes to names starting with `"svc/"`.
fn glob_prefix(name: &str) -> Option<&str> {
    name.strip_suffix('*')
        .filter(|_| name.ends_with(GLOB_SUFFIX))
}

fn matches_prefix(prefixes: &[String], name: &str) -> bool {
    prefixes.iter().any(|p| name.starts_with(p.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn returned(list: &[&str]) -> ReturnedResources {
        list.iter()
            .map(|n| (Arc::from(*n), Arc::from("v1")))
            .collect()
    }

    #[test]
    fn legacy_wildcard_lasts_while_requests_stay_empty() {
        let mut sub = Subscription::sotw(&[], true);
        assert!(sub.is_wildcard());
        sub.set_sotw_names(&[]);
        assert!(sub.is_wildcard());
        sub.set_sotw_names(&names(&["a"]));
        assert!(!sub.is_wildcard());
        assert!(sub.wants("a") && !sub.wants("b"));
        // Once names were given, an empty list means nothing.
        sub.set_sotw_names(&[]);
        assert!(!sub.is_wildcard());
        assert!(!sub.wants("a"));
    }

    #[test]
    fn without_legacy_wildcard_empty_means_nothing() {
        let sub = Subscription::sotw(&[], false);
        assert!(!sub.is_wildcard());
        assert!(!sub.wants("a"));
    }

    #[test]
    fn explicit_wildcard_and_prefixes() {
        let sub = Subscription::sotw(&names(&["*", "x"]), true);
        assert!(sub.is_wildcard() && sub.wants("anything"));
        let sub = Subscription::sotw(&names(&["svc/*", "exact"]), true);
        assert!(!sub.is_wildcard());
        assert!(sub.wants("svc/a") && sub.wants("exact") && !sub.wants("svc"));
        assert_eq!(sub.prefixes(), ["svc/"]);
    }

    #[test]
    fn delta_wildcard_toggles_with_star_only() {
        let mut sub = Subscription::delta(&[], &[], &HashMap::new(), true);
        assert!(sub.is_wildcard());
        sub.update_delta(&names(&["a"]), &[]);
        assert!(sub.is_wildcard() && sub.has_name("a"));
        sub.update_delta(&[], &names(&["*"]));
        assert!(!sub.is_wildcard());
        assert!(sub.wants("a") && !sub.wants("b"));
        sub.update_delta(&names(&["*", "p/*"]), &[]);
        assert!(sub.is_wildcard());
        assert_eq!(sub.prefixes(), ["p/"]);
        sub.update_delta(&[], &names(&["p/*"]));
        assert!(sub.prefixes().is_empty());
        let mut legacy = Subscription::delta(&[], &[], &HashMap::new(), true);
        legacy.update_delta(&[], &names(&["*"]));
        assert!(!legacy.is_wildcard());
        let no_legacy = Subscription::delta(&[], &[], &HashMap::new(), false);
        assert!(!no_legacy.is_wildcard());
    }

    #[test]
    fn delta_unsubscribe_under_wildcard_forces_resend_or_removal() {
        let initial: HashMap<String, String> = [
            ("a".to_string(), "h1".to_string()),
            ("b".to_string(), "h2".to_string()),
        ]
        .into();
        let mut sub = Subscription::delta(&names(&["*", "a"]), &[], &initial, true);
        assert_eq!(sub.returned().get("a").map(|v| &**v), Some("h1"));
        sub.update_delta(&[], &names(&["a"]));
        assert_eq!(sub.returned().get("a").map(|v| &**v), Some(""));
        // Not wildcard: an unsubscribed name is simply forgotten.
        sub.update_delta(&names(&["b"]), &names(&["*"]));
        sub.update_delta(&[], &names(&["b"]));
        assert!(!sub.returned().contains_key("b"));
    }

    #[test]
    fn unsubscribed_names_are_forgotten_unless_wildcard() {
        let mut sub = Subscription::sotw(&names(&["a", "b", "p/*"]), true);
        sub.set_returned(returned(&["a", "b", "p/1"]));
        sub.set_sotw_names(&names(&["a", "p/*"]));
        let mut kept: Vec<_> = sub.returned().keys().map(|k| k.to_string()).collect();
        kept.sort();
        assert_eq!(kept, ["a", "p/1"]);
        sub.set_returned(returned(&["a", "z"]));
        sub.set_sotw_names(&names(&["*"]));
        assert_eq!(sub.returned().len(), 2);
    }
}
