//! The resources of one answer, shared by every stream that gets it.

use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};

use super::EncodedResource;
use crate::protowire;

/// Field number of `resources` in `discovery.v3.DiscoveryResponse`.
const SOTW_RESOURCES_FIELD: u32 = 2;

/// The resources of an answer, in the order they are sent.
///
/// It dereferences to a slice of [`EncodedResource`]. A fleet subscribed
/// alike shares one list per answer, and with it the encoding of the
/// list as a `DiscoveryResponse`'s `resources` field, built when the
/// first stream sends it: every other stream sends those same bytes
/// without copying them.
///
/// ```
/// use std::sync::Arc;
/// use xds_control_plane::cache::{EncodedList, EncodedResource};
/// use xds_control_plane::envoy_types::pb::envoy::config::cluster::v3::Cluster;
///
/// let list: Arc<EncodedList> = ["a", "b"]
///     .into_iter()
///     .map(|name| EncodedResource::from_message(&Cluster { name: name.into(), ..Default::default() }))
///     .collect();
/// assert_eq!(list.len(), 2);
/// assert_eq!(list[1].name(), "b");
/// ```
#[derive(Default)]
pub struct EncodedList {
    items: Box<[EncodedResource]>,
    sotw_field: OnceLock<Bytes>,
}

impl EncodedList {
    /// A list of `items`, in this order.
    pub fn new(items: Vec<EncodedResource>) -> Self {
        EncodedList {
            items: items.into_boxed_slice(),
            sotw_field: OnceLock::new(),
        }
    }

    /// Every resource as an element of a `DiscoveryResponse`'s `resources`
    /// (field 2), concatenated; built once.
    pub(crate) fn sotw_field(&self) -> &Bytes {
        self.sotw_field.get_or_init(|| {
            let len = self
                .items
                .iter()
                .map(|r| protowire::field_len(SOTW_RESOURCES_FIELD, r.sotw_wire().len()))
                .sum();
            let mut buf = BytesMut::with_capacity(len);
            for resource in self.items.iter() {
                protowire::put_field(&mut buf, SOTW_RESOURCES_FIELD, resource.sotw_wire());
            }
            buf.freeze()
        })
    }
}

impl Deref for EncodedList {
    type Target = [EncodedResource];

    fn deref(&self) -> &[EncodedResource] {
        &self.items
    }
}

impl From<Vec<EncodedResource>> for EncodedList {
    fn from(items: Vec<EncodedResource>) -> Self {
        EncodedList::new(items)
    }
}

impl FromIterator<EncodedResource> for EncodedList {
    fn from_iter<I: IntoIterator<Item = EncodedResource>>(iter: I) -> Self {
        EncodedList::new(iter.into_iter().collect())
    }
}

impl FromIterator<EncodedResource> for Arc<EncodedList> {
    fn from_iter<I: IntoIterator<Item = EncodedResource>>(iter: I) -> Self {
        Arc::new(iter.into_iter().collect())
    }
}

impl fmt::Debug for EncodedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.items.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use prost::Message;

    #[test]
    fn the_resources_field_is_built_once_and_decodes_as_sent() {
        let list: Arc<EncodedList> = ["a", "b", "c"]
            .into_iter()
            .map(|name| {
                EncodedResource::from_message(&Cluster {
                    name: name.into(),
                    ..Default::default()
                })
            })
            .collect();
        let field = list.sotw_field().clone();
        assert_eq!(field.as_ptr(), list.sotw_field().as_ptr());
        let decoded = DiscoveryResponse::decode(field).unwrap();
        let want: Vec<_> = list.iter().map(EncodedResource::to_sotw_any).collect();
        assert_eq!(decoded.resources, want);
        assert!(EncodedList::default().sotw_field().is_empty());
    }
}
