//! RTDS resources: runtime layers.

use envoy_types::pb::envoy::service::runtime::v3::Runtime;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

/// An RTDS layer named `name` holding string `fields` (key, value).
pub fn make_runtime(name: &str, fields: &[(&str, &str)]) -> Runtime {
    let fields = fields
        .iter()
        .map(|(k, v)| {
            let value = Value {
                kind: Some(Kind::StringValue((*v).to_string())),
            };
            ((*k).to_string(), value)
        })
        .collect();
    Runtime {
        name: name.to_string(),
        layer: Some(Struct { fields }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_holds_the_fields() {
        let r = make_runtime("rt", &[("a.b", "1"), ("c", "x")]);
        assert_eq!(r.name, "rt");
        let layer = r.layer.expect("layer");
        assert_eq!(layer.fields.len(), 2);
        assert_eq!(
            layer.fields["a.b"].kind,
            Some(Kind::StringValue("1".into()))
        );
    }
}
