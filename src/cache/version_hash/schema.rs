//! The schema facts the canonical walker needs: which message types can
//! (transitively) hold a protobuf `map` or a `google.protobuf.Any`, and which
//! of their fields lead there. The data is in the generated `schema_table`.

use super::schema_table::TYPES;

/// How the walker treats one field of a message type. Type arguments are
/// indices into [`TYPES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A message field of type `TYPES[i]`.
    M(u16),
    /// A `google.protobuf.Any` field.
    A,
    /// A map field whose values hold nothing to canonicalize.
    Map,
    /// A map field whose values are messages of type `TYPES[i]`.
    MapM(u16),
    /// A map field whose values are `google.protobuf.Any`.
    MapA,
}

/// A field number and how to treat it.
pub(super) type Field = (u32, Kind);

/// The index of the message type `full_name` (like
/// `envoy.config.cluster.v3.Cluster`), if it can hold a map or an `Any`.
pub(super) fn type_index(full_name: &str) -> Option<u16> {
    TYPES
        .binary_search_by(|(name, _)| (*name).cmp(full_name))
        .ok()
        .map(|i| i as u16)
}

/// How to treat field `number` of type `ty`; `None`: as opaque bytes.
#[inline]
pub(super) fn field_kind(ty: u16, number: u32) -> Option<Kind> {
    let fields = TYPES[usize::from(ty)].1;
    // Most types list one to three fields: a linear scan beats bisection.
    fields.iter().find(|(n, _)| *n == number).map(|(_, k)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_consistent() {
        assert!(TYPES.len() < usize::from(u16::MAX));
        for w in TYPES.windows(2) {
            assert!(w[0].0 < w[1].0, "{} !< {}", w[0].0, w[1].0);
        }
        for (name, fields) in TYPES.iter() {
            assert!(!fields.is_empty(), "{name} lists no field");
            for w in fields.windows(2) {
                assert!(w[0].0 < w[1].0, "{name}: fields not sorted");
            }
            for (_, kind) in fields.iter() {
                if let Kind::M(i) | Kind::MapM(i) = kind {
                    assert!(usize::from(*i) < TYPES.len(), "{name}: bad index");
                }
            }
        }
    }

    #[test]
    fn lookups() {
        let cluster = type_index("envoy.config.cluster.v3.Cluster").unwrap();
        let metadata = type_index("envoy.config.core.v3.Metadata").unwrap();
        let strukt = type_index("google.protobuf.Struct").unwrap();
        // Cluster.metadata = 25.
        assert_eq!(field_kind(cluster, 25), Some(Kind::M(metadata)));
        assert_eq!(field_kind(cluster, 1), None);
        // Metadata.filter_metadata = 1, typed_filter_metadata = 2.
        assert_eq!(field_kind(metadata, 1), Some(Kind::MapM(strukt)));
        assert_eq!(field_kind(metadata, 2), Some(Kind::MapA));
        assert_eq!(type_index("google.protobuf.Duration"), None);
        assert_eq!(type_index("no.such.Type"), None);
    }
}
