//! Per-resource versions for incremental (delta) xDS: a digest of the
//! resource's serialized form, taken once per encoded resource.

mod schema;
#[cfg(test)]
mod schema_gen;
mod schema_table;

use sha2::{Digest, Sha256};

/// The delta version of a serialized resource of `type_url`: the first 128
/// bits of its SHA-256, in hex.
pub(crate) fn resource_version(type_url: &str, bytes: &[u8]) -> String {
    let _ = type_url;
    let digest = Sha256::digest(bytes);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bytes_equal_versions() {
        let a = resource_version("t", b"abc");
        assert_eq!(a, resource_version("t", b"abc"));
        assert_ne!(a, resource_version("t", b"abd"));
        assert_eq!(a.len(), 32);
    }
}
