//! `envoy.type.matcher.v3.NodeMatcher`: which nodes a CSDS request asks
//! about.
//!
//! A request's matchers are checked once, before any node is looked at, so
//! a matcher this crate cannot evaluate is an `INVALID_ARGUMENT` naming the
//! field, never a silent "matches nothing". Regular expressions are refused:
//! honouring them correctly needs a regex engine (RE2 semantics), which this
//! crate does not depend on.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    double_matcher, list_matcher, string_matcher, struct_matcher::path_segment, value_matcher,
    DoubleMatcher, NodeMatcher, StringMatcher, StructMatcher, ValueMatcher,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use tonic::Status;

/// The node matchers of one request, checked: a node is selected when any
/// matcher accepts it (none selects every node).
#[derive(Debug)]
pub(crate) struct NodeFilter<'a> {
    matchers: &'a [NodeMatcher],
}

impl<'a> NodeFilter<'a> {
    /// Checks every matcher; the error names the first one this crate
    /// cannot evaluate.
    pub(crate) fn new(matchers: &'a [NodeMatcher]) -> Result<Self, Status> {
        for (i, matcher) in matchers.iter().enumerate() {
            let at = format!("node_matchers[{i}]");
            if let Some(id) = &matcher.node_id {
                check_string(id, &format!("{at}.node_id"))?;
            }
            for (j, metadata) in matcher.node_metadatas.iter().enumerate() {
                check_struct(metadata, &format!("{at}.node_metadatas[{j}]"))?;
            }
        }
        Ok(NodeFilter { matchers })
    }

    /// Whether the request asks about `node`.
    pub(crate) fn matches(&self, node: &Node) -> bool {
        self.matchers.is_empty() || self.matchers.iter().any(|m| node_matches(m, node))
    }
}

/// Within one matcher every criterion must hold.
fn node_matches(matcher: &NodeMatcher, node: &Node) -> bool {
    matcher
        .node_id
        .as_ref()
        .is_none_or(|id| string_matches(id, &node.id))
        && matcher
            .node_metadatas
            .iter()
            .all(|m| struct_matches(m, node.metadata.as_ref()))
}

fn invalid(at: &str, what: &str) -> Status {
    Status::invalid_argument(format!("{at}: {what}"))
}

fn check_string(matcher: &StringMatcher, at: &str) -> Result<(), Status> {
    use string_matcher::MatchPattern as P;
    match &matcher.match_pattern {
        None => Err(invalid(
            at,
            "a string matcher needs one of exact, prefix, suffix or contains",
        )),
        // Envoy refuses these empty too: they would match everything.
        Some(P::Prefix(s)) if s.is_empty() => Err(invalid(at, "prefix must not be empty")),
        Some(P::Suffix(s)) if s.is_empty() => Err(invalid(at, "suffix must not be empty")),
        Some(P::Contains(s)) if s.is_empty() => Err(invalid(at, "contains must not be empty")),
        Some(P::SafeRegex(_)) => Err(invalid(at, "regex matchers are not supported")),
        Some(P::Custom(_)) => Err(invalid(at, "custom string matchers are not supported")),
        Some(P::Exact(_) | P::Prefix(_) | P::Suffix(_) | P::Contains(_)) => Ok(()),
    }
}

fn check_struct(matcher: &StructMatcher, at: &str) -> Result<(), Status> {
    if matcher.path.is_empty() {
        return Err(invalid(at, "path must name at least one key"));
    }
    if let Some(i) = matcher.path.iter().position(|s| s.segment.is_none()) {
        return Err(invalid(
            &format!("{at}.path[{i}]"),
            "a path segment needs a key",
        ));
    }
    match &matcher.value {
        Some(value) => check_value(value, &format!("{at}.value")),
        None => Err(invalid(at, "value is required")),
    }
}

fn check_value(matcher: &ValueMatcher, at: &str) -> Result<(), Status> {
    use value_matcher::MatchPattern as P;
    match &matcher.match_pattern {
        None => Err(invalid(at, "a value matcher needs a match pattern")),
        Some(P::DoubleMatch(DoubleMatcher {
            match_pattern: None,
        })) => Err(invalid(
            &format!("{at}.double_match"),
            "a double matcher needs range or exact",
        )),
        Some(P::StringMatch(s)) => check_string(s, &format!("{at}.string_match")),
        Some(P::ListMatch(list)) => match &list.match_pattern {
            Some(list_matcher::MatchPattern::OneOf(one_of)) => {
                check_value(one_of, &format!("{at}.list_match.one_of"))
            }
            None => Err(invalid(
                &format!("{at}.list_match"),
                "a list matcher needs one_of",
            )),
        },
        Some(P::OrMatch(or)) => {
            if or.value_matchers.is_empty() {
                return Err(invalid(
                    &format!("{at}.or_match"),
                    "value_matchers must not be empty",
                ));
            }
            for (i, m) in or.value_matchers.iter().enumerate() {
                check_value(m, &format!("{at}.or_match.value_matchers[{i}]"))?;
            }
            Ok(())
        }
        Some(P::NullMatch(_) | P::DoubleMatch(_) | P::BoolMatch(_) | P::PresentMatch(_)) => Ok(()),
    }
}

/// Matches as Envoy does: `ignore_case` folds ASCII letters only.
pub(crate) fn string_matches(matcher: &StringMatcher, value: &str) -> bool {
    use string_matcher::MatchPattern as P;
    let value = value.as_bytes();
    let eq = |a: &[u8], b: &str| {
        if matcher.ignore_case {
            a.eq_ignore_ascii_case(b.as_bytes())
        } else {
            a == b.as_bytes()
        }
    };
    match &matcher.match_pattern {
        Some(P::Exact(p)) => eq(value, p),
        Some(P::Prefix(p)) => value.len() >= p.len() && eq(&value[..p.len()], p),
        Some(P::Suffix(p)) => value.len() >= p.len() && eq(&value[value.len() - p.len()..], p),
        // `windows(0)` would panic: an empty needle is refused up front.
        Some(P::Contains(p)) if !p.is_empty() => value.windows(p.len()).any(|w| eq(w, p)),
        // Refused by `check_string`; never matches if reached anyway.
        _ => false,
    }
}

/// The value at the matcher's path in `metadata`, then the value matcher.
fn struct_matches(matcher: &StructMatcher, metadata: Option<&Struct>) -> bool {
    let Some(value_matcher) = &matcher.value else {
        return false;
    };
    value_matches(value_matcher, lookup(metadata, matcher))
}

/// Walks the path key by key through nested structs; `None` when a key is
/// missing or an intermediate value is not a struct.
fn lookup<'a>(metadata: Option<&'a Struct>, matcher: &StructMatcher) -> Option<&'a Value> {
    let mut current = metadata?;
    let mut found = None;
    for (i, segment) in matcher.path.iter().enumerate() {
        let path_segment::Segment::Key(key) = segment.segment.as_ref()?;
        let value = current.fields.get(key)?;
        if i + 1 == matcher.path.len() {
            found = Some(value);
        } else if let Some(Kind::StructValue(inner)) = &value.kind {
            current = inner;
        } else {
            return None;
        }
    }
    found
}

/// `value` is `None` when the path led nowhere; like Envoy, only
/// `present_match: true` distinguishes that (it then does not match), and
/// `present_match: false` never matches.
fn value_matches(matcher: &ValueMatcher, value: Option<&Value>) -> bool {
    use value_matcher::MatchPattern as P;
    let kind = value.and_then(|v| v.kind.as_ref());
    match (&matcher.match_pattern, kind) {
        (Some(P::NullMatch(_)), Some(Kind::NullValue(_))) => true,
        (Some(P::DoubleMatch(d)), Some(Kind::NumberValue(n))) => double_matches(d, *n),
        (Some(P::StringMatch(s)), Some(Kind::StringValue(v))) => string_matches(s, v),
        (Some(P::BoolMatch(b)), Some(Kind::BoolValue(v))) => b == v,
        (Some(P::PresentMatch(present)), kind) => *present && kind.is_some(),
        (Some(P::ListMatch(list)), Some(Kind::ListValue(values))) => match &list.match_pattern {
            Some(list_matcher::MatchPattern::OneOf(one_of)) => {
                values.values.iter().any(|v| value_matches(one_of, Some(v)))
            }
            None => false,
        },
        (Some(P::OrMatch(or)), _) => or.value_matchers.iter().any(|m| value_matches(m, value)),
        _ => false,
    }
}

/// A range is half open: `[start, end)`.
fn double_matches(matcher: &DoubleMatcher, n: f64) -> bool {
    match &matcher.match_pattern {
        Some(double_matcher::MatchPattern::Range(range)) => range.start <= n && n < range.end,
        Some(double_matcher::MatchPattern::Exact(exact)) => n == *exact,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::r#type::matcher::v3::{
        struct_matcher::PathSegment, ListMatcher, OrMatcher, RegexMatcher,
    };
    use envoy_types::pb::envoy::r#type::v3::DoubleRange;
    use string_matcher::MatchPattern as S;
    use value_matcher::MatchPattern as V;

    fn string(pattern: S, ignore_case: bool) -> StringMatcher {
        StringMatcher {
            ignore_case,
            match_pattern: Some(pattern),
        }
    }

    fn value(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    fn structure(fields: &[(&str, Value)]) -> Struct {
        Struct {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    fn at(path: &[&str], pattern: V) -> StructMatcher {
        StructMatcher {
            path: path
                .iter()
                .map(|k| PathSegment {
                    segment: Some(path_segment::Segment::Key(k.to_string())),
                })
                .collect(),
            value: Some(ValueMatcher {
                match_pattern: Some(pattern),
            }),
        }
    }

    fn node(id: &str, metadata: Option<Struct>) -> Node {
        Node {
            id: id.into(),
            metadata,
            ..Default::default()
        }
    }

    #[test]
    fn string_matchers_with_and_without_case() {
        // (pattern, input, ignore_case, expected)
        let cases = [
            (S::Exact("Node-1".into()), "node-1", true, true),
            (S::Exact("Node-1".into()), "node-1", false, false),
            (S::Exact("Node-1".into()), "Node-1", false, true),
            (S::Prefix("SIDECAR~".into()), "sidecar~10.0.0.1", true, true),
            (
                S::Prefix("SIDECAR~".into()),
                "sidecar~10.0.0.1",
                false,
                false,
            ),
            (
                S::Prefix("sidecar~10.0.0.1x".into()),
                "sidecar~10.0.0.1",
                true,
                false,
            ),
            (
                S::Suffix(".CLUSTER.local".into()),
                "a.b.cluster.local",
                true,
                true,
            ),
            (
                S::Suffix(".CLUSTER.local".into()),
                "a.b.cluster.local",
                false,
                false,
            ),
            (S::Suffix(".cluster.local".into()), "local", false, false),
            (S::Contains("~POD~".into()), "sidecar~pod~x", true, true),
            (S::Contains("~POD~".into()), "sidecar~pod~x", false, false),
            (S::Contains("~pod~".into()), "sidecar~pod~x", false, true),
            (S::Contains("~pod~".into()), "~po", true, false),
        ];
        for (pattern, input, ignore_case, expected) in cases {
            let matcher = string(pattern, ignore_case);
            assert_eq!(
                string_matches(&matcher, input),
                expected,
                "{matcher:?} on {input:?}"
            );
        }
        // Non-ASCII text is compared as is; folding is ASCII only.
        assert!(string_matches(&string(S::Exact("é".into()), true), "é"));
        assert!(!string_matches(&string(S::Exact("É".into()), true), "é"));
    }

    #[test]
    fn unsupported_or_malformed_matchers_are_invalid_arguments() {
        let with_id = |m: StringMatcher| NodeMatcher {
            node_id: Some(m),
            node_metadatas: vec![],
        };
        let regex = with_id(string(S::SafeRegex(RegexMatcher::default()), false));
        let err = NodeFilter::new(std::slice::from_ref(&regex)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("regex matchers are not supported"));
        assert!(err.message().contains("node_matchers[0].node_id"));

        let empty_prefix = [
            NodeMatcher::default(),
            with_id(string(S::Prefix("".into()), false)),
        ];
        let err = NodeFilter::new(&empty_prefix).unwrap_err();
        assert!(
            err.message().starts_with("node_matchers[1].node_id"),
            "{err}"
        );
        let unset = [with_id(StringMatcher::default())];
        assert!(NodeFilter::new(&unset).is_err());

        let deep = [NodeMatcher {
            node_id: None,
            node_metadatas: vec![at(
                &["a"],
                V::ListMatch(Box::new(ListMatcher {
                    match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(
                        ValueMatcher {
                            match_pattern: Some(V::StringMatch(string(
                                S::SafeRegex(RegexMatcher::default()),
                                false,
                            ))),
                        },
                    ))),
                })),
            )],
        }];
        let err = NodeFilter::new(&deep).unwrap_err();
        assert_eq!(
            err.message(),
            "node_matchers[0].node_metadatas[0].value.list_match.one_of.string_match: \
             regex matchers are not supported"
        );
        let no_path = [NodeMatcher {
            node_id: None,
            node_metadatas: vec![at(&[], V::BoolMatch(true))],
        }];
        assert!(NodeFilter::new(&no_path).is_err());
    }

    #[test]
    fn matchers_are_ored_and_criteria_anded() {
        let meta = structure(&[
            ("cluster", value(Kind::StringValue("east".into()))),
            (
                "labels",
                value(Kind::StructValue(structure(&[
                    ("version", value(Kind::StringValue("v2".into()))),
                    ("canary", value(Kind::BoolValue(true))),
                    ("weight", value(Kind::NumberValue(0.5))),
                ]))),
            ),
        ]);
        let n = node("sidecar~1", Some(meta));
        let by_prefix = NodeMatcher {
            node_id: Some(string(S::Prefix("sidecar~".into()), false)),
            node_metadatas: vec![],
        };
        let east_v2 = NodeMatcher {
            node_id: None,
            node_metadatas: vec![
                at(
                    &["cluster"],
                    V::StringMatch(string(S::Exact("east".into()), false)),
                ),
                at(
                    &["labels", "version"],
                    V::StringMatch(string(S::Exact("v2".into()), false)),
                ),
            ],
        };
        let west = NodeMatcher {
            node_id: Some(string(S::Prefix("sidecar~".into()), false)),
            node_metadatas: vec![at(
                &["cluster"],
                V::StringMatch(string(S::Exact("west".into()), false)),
            )],
        };
        let select = |ms: &[NodeMatcher]| NodeFilter::new(ms).unwrap().matches(&n);
        assert!(select(&[]));
        assert!(select(std::slice::from_ref(&by_prefix)));
        assert!(select(std::slice::from_ref(&east_v2)));
        assert!(!select(std::slice::from_ref(&west)));
        assert!(select(&[west.clone(), east_v2]));
        // No metadata at all: metadata criteria fail.
        assert!(!NodeFilter::new(std::slice::from_ref(&west))
            .unwrap()
            .matches(&node("sidecar~2", None)));
    }

    #[test]
    fn value_matchers() {
        let meta = structure(&[
            ("null", value(Kind::NullValue(0))),
            ("n", value(Kind::NumberValue(3.0))),
            ("b", value(Kind::BoolValue(false))),
            (
                "list",
                value(Kind::ListValue(
                    envoy_types::pb::google::protobuf::ListValue {
                        values: vec![
                            value(Kind::StringValue("m".into())),
                            value(Kind::StringValue("n".into())),
                        ],
                    },
                )),
            ),
            ("s", value(Kind::StringValue("x".into()))),
        ]);
        let is = |path: &[&str], pattern: V| struct_matches(&at(path, pattern), Some(&meta));
        let range = |start, end| {
            V::DoubleMatch(DoubleMatcher {
                match_pattern: Some(double_matcher::MatchPattern::Range(DoubleRange {
                    start,
                    end,
                })),
            })
        };
        let exact_str = |s: &str| ValueMatcher {
            match_pattern: Some(V::StringMatch(string(S::Exact(s.into()), false))),
        };
        assert!(is(&["null"], V::NullMatch(Default::default())));
        assert!(!is(&["n"], V::NullMatch(Default::default())));
        assert!(is(&["n"], range(3.0, 4.0)));
        assert!(!is(&["n"], range(2.0, 3.0)), "the end is exclusive");
        assert!(is(
            &["n"],
            V::DoubleMatch(DoubleMatcher {
                match_pattern: Some(double_matcher::MatchPattern::Exact(3.0)),
            })
        ));
        assert!(is(&["b"], V::BoolMatch(false)));
        assert!(!is(&["b"], V::BoolMatch(true)));
        assert!(!is(&["s"], V::BoolMatch(false)), "a string is not a bool");
        assert!(is(&["list"], V::PresentMatch(true)));
        assert!(!is(&["missing"], V::PresentMatch(true)));
        assert!(!is(&["missing"], V::PresentMatch(false)));
        assert!(!is(&["s", "deeper"], V::PresentMatch(true)));
        let one_of = |s: &str| {
            V::ListMatch(Box::new(ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(exact_str(s)))),
            }))
        };
        assert!(is(&["list"], one_of("n")));
        assert!(!is(&["list"], one_of("o")));
        assert!(!is(&["s"], one_of("x")), "a string is not a list");
        let or = V::OrMatch(OrMatcher {
            value_matchers: vec![exact_str("y"), exact_str("x")],
        });
        assert!(is(&["s"], or));
    }
}
