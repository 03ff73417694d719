//! What a linear cache accepts as a resource, and why it refuses one.

use bytes::Bytes;

use super::super::EncodedResource;

/// Why a [`LinearCache`](super::LinearCache) refused a resource. The cache is left unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinearCacheError {
    /// A resource was given an empty name.
    #[error("resource name is empty")]
    EmptyName,
    /// A resource is of another type than the cache serves.
    #[error("resource {name:?} is a {actual}, but this cache serves {expected}")]
    TypeMismatch {
        /// The resource's name.
        name: String,
        /// The cache's type URL.
        expected: String,
        /// The resource's type URL.
        actual: String,
    },
    /// An [`EncodedResource`] was given under another name than its own.
    #[error("resource {actual:?} was given under the name {name:?}")]
    NameMismatch {
        /// The name it was given under.
        name: String,
        /// Its own name.
        actual: String,
    },
}

/// Something a [`LinearCache`](super::LinearCache) can store under a name: an
/// [`EncodedResource`] (kept as is, shared), or a reference to a typed
/// message (`&ClusterLoadAssignment`, …), encoded once.
pub trait LinearResource {
    /// Checks the resource against the cache's type URL and the name it is
    /// stored under, and encodes it if needed.
    fn into_encoded(self, type_url: &str, name: &str) -> Result<EncodedResource, LinearCacheError>;
}

impl LinearResource for EncodedResource {
    fn into_encoded(self, type_url: &str, name: &str) -> Result<EncodedResource, LinearCacheError> {
        check_name(name)?;
        if self.name() != name {
            return Err(LinearCacheError::NameMismatch {
                name: name.to_string(),
                actual: self.name().to_string(),
            });
        }
        check_type(type_url, name, self.type_url())?;
        Ok(self)
    }
}

/// Messages name their type with [`prost::Name`]; the messages of
/// `envoy_types` all do. For a type URL of your own, build an
/// [`EncodedResource`] with [`EncodedResource::from_bytes`].
impl<M: prost::Name> LinearResource for &M {
    fn into_encoded(self, type_url: &str, name: &str) -> Result<EncodedResource, LinearCacheError> {
        check_name(name)?;
        check_type(type_url, name, &M::type_url())?;
        Ok(EncodedResource::from_bytes(
            type_url,
            name,
            Bytes::from(self.encode_to_vec()),
        ))
    }
}

fn check_name(name: &str) -> Result<(), LinearCacheError> {
    if name.is_empty() {
        return Err(LinearCacheError::EmptyName);
    }
    Ok(())
}

fn check_type(expected: &str, name: &str, actual: &str) -> Result<(), LinearCacheError> {
    if actual != expected {
        return Err(LinearCacheError::TypeMismatch {
            name: name.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}
