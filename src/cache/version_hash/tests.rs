use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use envoy_types::pb::envoy::service::runtime::v3::Runtime;
use envoy_types::pb::google::protobuf::{value::Kind, Any, ListValue, Struct, Value};
use envoy_types::util::pack_any;
use prost::{Message, Name};

use super::*;

/// How many times each resource is rebuilt from fresh maps.
const ROUNDS: usize = 40;

fn url<M: Name>() -> String {
    format!("type.googleapis.com/{}", M::full_name())
}

fn version<M: Message + Name>(m: &M) -> String {
    resource_version(&url::<M>(), &m.encode_to_vec())
}

/// The canonical bytes of `m`.
fn canonical<M: Message + Name>(m: &M) -> Vec<u8> {
    let ty = schema::type_index(&M::full_name()).expect("type in table");
    let mut out = Vec::new();
    canonical::write_canonical(ty, &m.encode_to_vec(), &mut out).expect("well-formed");
    out
}

fn s(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.to_string())),
    }
}

fn n(v: f64) -> Value {
    Value {
        kind: Some(Kind::NumberValue(v)),
    }
}

fn list(values: Vec<Value>) -> Value {
    Value {
        kind: Some(Kind::ListValue(ListValue { values })),
    }
}

/// A fresh map (a fresh `RandomState`) holding `entries`, inserted starting
/// at `rot`.
fn map<V: Clone>(entries: &[(&str, V)], rot: usize) -> HashMap<String, V> {
    let mut m = HashMap::new();
    for i in 0..entries.len() {
        let (k, v) = &entries[(i + rot) % entries.len()];
        m.insert(k.to_string(), v.clone());
    }
    m
}

/// A struct with several fields, one a nested struct, one a list of structs.
fn strukt(tag: &str, rot: usize) -> Struct {
    let inner = |x: &str| Struct {
        fields: map(
            &[("x", s(x)), ("y", n(1.5)), ("z", s("zz")), ("w", n(-2.0))],
            rot,
        ),
    };
    let fields = [
        ("alpha", s(tag)),
        ("beta", n(42.0)),
        (
            "gamma",
            Value {
                kind: Some(Kind::StructValue(inner(tag))),
            },
        ),
        (
            "delta",
            list(vec![
                Value {
                    kind: Some(Kind::StructValue(inner("l1"))),
                },
                Value {
                    kind: Some(Kind::StructValue(inner("l2"))),
                },
            ]),
        ),
        (
            "epsilon",
            Value {
                kind: Some(Kind::BoolValue(true)),
            },
        ),
        ("zeta", s("z")),
    ];
    Struct {
        fields: map(&fields, rot),
    }
}

fn metadata(rot: usize) -> Metadata {
    let filter = [
        ("envoy.lb", strukt("lb", rot)),
        ("com.acme.widget", strukt("acme", rot + 1)),
        ("envoy.filters.http.rbac", strukt("rbac", rot + 2)),
        ("x", strukt("x", rot + 3)),
    ];
    let typed = [
        ("typed.one", pack_any(strukt("t1", rot))),
        ("typed.two", pack_any(strukt("t2", rot + 2))),
        ("typed.three", pack_any(strukt("t3", rot + 1))),
    ];
    Metadata {
        filter_metadata: map(&filter, rot),
        typed_filter_metadata: map(&typed, rot),
    }
}

fn cluster(rot: usize) -> Cluster {
    Cluster {
        name: "c1".into(),
        metadata: Some(metadata(rot)),
        ..Default::default()
    }
}

fn route(name: &str, prefix: &str, rot: usize) -> Route {
    Route {
        name: name.into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster("c1".into())),
            ..Default::default()
        })),
        metadata: Some(metadata(rot)),
        typed_per_filter_config: map(
            &[
                ("f.a", pack_any(strukt("pa", rot))),
                ("f.b", pack_any(strukt("pb", rot))),
                ("f.c", pack_any(strukt("pc", rot))),
            ],
            rot,
        ),
        ..Default::default()
    }
}

fn route_config(rot: usize, routes: Vec<Route>) -> RouteConfiguration {
    RouteConfiguration {
        name: "rc".into(),
        virtual_hosts: vec![VirtualHost {
            name: "vh".into(),
            domains: vec!["*".into()],
            routes,
            metadata: Some(metadata(rot + 1)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A listener whose filter chain holds an HttpConnectionManager, packed in
/// an Any, with an inline route configuration full of maps.
fn listener(rot: usize, routes: Vec<Route>) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: "http".into(),
        route_specifier: Some(RouteSpecifier::RouteConfig(route_config(rot, routes))),
        ..Default::default()
    };
    Listener {
        name: "l1".into(),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            metadata: Some(metadata(rot + 2)),
            ..Default::default()
        }],
        metadata: Some(metadata(rot)),
        ..Default::default()
    }
}

fn two_routes(rot: usize) -> Vec<Route> {
    vec![route("r1", "/a", rot), route("r2", "/", rot + 1)]
}

fn runtime(rot: usize) -> Runtime {
    Runtime {
        name: "rt".into(),
        layer: Some(strukt("layer", rot)),
    }
}

/// Encodes `build(round)` for many rounds: the bytes must differ at least
/// once (else the test shows nothing), the versions and canonical bytes
/// never. The canonical bytes are a valid encoding, and canonical.
fn assert_stable<M: Message + Name + Default>(build: impl Fn(usize) -> M) {
    let mut encodings = BTreeSet::new();
    let mut versions = BTreeSet::new();
    let mut canon = BTreeSet::new();
    for round in 0..ROUNDS {
        let m = build(round);
        let bytes = m.encode_to_vec();
        let c = canonical(&m);
        assert_eq!(c.len(), bytes.len());
        let decoded = M::decode(c.as_slice()).expect("canonical decodes");
        assert_eq!(canonical(&decoded), c);
        encodings.insert(bytes);
        versions.insert(version(&m));
        canon.insert(c);
    }
    assert!(
        encodings.len() > 1,
        "{}: encodings never differed",
        M::full_name()
    );
    assert_eq!(versions.len(), 1, "{}: versions differ", M::full_name());
    assert_eq!(canon.len(), 1);
}

#[test]
fn equal_cluster_content_equal_versions() {
    assert_stable(cluster);
}

#[test]
fn equal_listener_content_equal_versions() {
    assert_stable(|rot| listener(rot, two_routes(rot)));
}

#[test]
fn equal_route_configuration_content_equal_versions() {
    assert_stable(|rot| route_config(rot, two_routes(rot)));
}

#[test]
fn equal_runtime_content_equal_versions() {
    assert_stable(runtime);
}

/// Where no `Any` hides map entries in bytes, canonical bytes decode to the
/// very same message.
#[test]
fn canonical_bytes_decode_to_the_same_message() {
    for rot in 0..5 {
        let r = runtime(rot);
        assert_eq!(Runtime::decode(canonical(&r).as_slice()).unwrap(), r);
        let mut c = cluster(rot);
        c.metadata.as_mut().unwrap().typed_filter_metadata.clear();
        assert_eq!(Cluster::decode(canonical(&c).as_slice()).unwrap(), c);
    }
}

#[test]
fn map_value_change_changes_version() {
    let base = version(&cluster(0));
    let mut c = cluster(1);
    let md = c.metadata.as_mut().unwrap();
    md.filter_metadata
        .get_mut("x")
        .unwrap()
        .fields
        .insert("beta".into(), n(43.0));
    assert_ne!(version(&c), base);

    // Deep inside an Any inside an Any: listener → HCM → route → typed
    // per-filter config → Struct.
    let base = version(&listener(0, two_routes(0)));
    let mut routes = two_routes(3);
    routes[1]
        .typed_per_filter_config
        .insert("f.b".into(), pack_any(strukt("changed", 3)));
    assert_ne!(version(&listener(3, routes)), base);

    // A map key changes.
    let mut r = runtime(2);
    let layer = r.layer.as_mut().unwrap();
    let v = layer.fields.remove("zeta").unwrap();
    layer.fields.insert("zeta2".into(), v);
    assert_ne!(version(&r), version(&runtime(0)));
}

#[test]
fn reordering_repeated_fields_changes_version() {
    let mut routes = two_routes(0);
    let forward = version(&listener(0, routes.clone()));
    routes.reverse();
    assert_ne!(version(&listener(0, routes)), forward);

    let endpoint = |port| LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
            hostname: format!("h{port}"),
            ..Default::default()
        })),
        ..Default::default()
    };
    let cla = |lb_endpoints| ClusterLoadAssignment {
        cluster_name: "c1".into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            metadata: Some(metadata(0)),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_ne!(
        version(&cla(vec![endpoint(1), endpoint(2)])),
        version(&cla(vec![endpoint(2), endpoint(1)]))
    );

    // A list inside a Struct is a repeated field too.
    let l = |a: &str, b: &str| Runtime {
        name: "rt".into(),
        layer: Some(Struct {
            fields: map(&[("l", list(vec![s(a), s(b)]))], 0),
        }),
    };
    assert_ne!(version(&l("a", "b")), version(&l("b", "a")));
}

/// A fixed resource with multi-entry maps has a fixed version: a change of
/// the algorithm (or of prost's encoding) shows here. Other processes agree
/// because nothing here depends on the process. The expected value is also
/// the SHA-256 prefix of Python protobuf's (upb's)
/// `SerializeToString(deterministic=True)` of the same Cluster (its Anys
/// packed deterministically), checked when this test was written.
#[test]
fn golden_version() {
    let c = Cluster {
        name: "golden".into(),
        metadata: Some(Metadata {
            filter_metadata: map(
                &[
                    (
                        "b",
                        Struct {
                            fields: map(&[("k1", s("v1")), ("k2", n(2.0)), ("k3", s("v3"))], 1),
                        },
                    ),
                    (
                        "a",
                        Struct {
                            fields: map(&[("x", s("y")), ("z", list(vec![s("1"), s("2")]))], 0),
                        },
                    ),
                    (
                        "c",
                        Struct {
                            fields: map(
                                &[(
                                    "only",
                                    Value {
                                        kind: Some(Kind::BoolValue(true)),
                                    },
                                )],
                                0,
                            ),
                        },
                    ),
                ],
                2,
            ),
            typed_filter_metadata: map(
                &[
                    (
                        "t2",
                        pack_any(Struct {
                            fields: map(&[("p", s("q")), ("r", s("s"))], 1),
                        }),
                    ),
                    (
                        "t1",
                        pack_any(Struct {
                            fields: map(&[("u", n(-1.0)), ("v", s("w"))], 0),
                        }),
                    ),
                ],
                1,
            ),
        }),
        ..Default::default()
    };
    assert_eq!(version(&c), "e6a5d8f0e3d644eef96706ef2bc81079");
}

#[test]
fn without_maps_the_version_is_the_plain_digest() {
    let c = Cluster {
        name: "plain".into(),
        ..Default::default()
    };
    let bytes = c.encode_to_vec();
    let plain = hex(&Sha256::digest(&bytes)[..16]);
    assert_eq!(resource_version(&url::<Cluster>(), &bytes), plain);
    assert_eq!(
        resource_version("type.googleapis.com/unknown.Type", b"abc"),
        hex(&Sha256::digest(b"abc")[..16])
    );
}

#[test]
fn equal_bytes_equal_versions() {
    let a = resource_version("t", b"abc");
    assert_eq!(a, resource_version("t", b"abc"));
    assert_ne!(a, resource_version("t", b"abd"));
    assert_eq!(a.len(), 32);
}

#[test]
fn any_of_unknown_type_is_opaque() {
    let mut md = metadata(0);
    md.typed_filter_metadata.insert(
        "u".into(),
        Any {
            type_url: "type.googleapis.com/no.Such".into(),
            value: vec![0xff, 0xff],
        },
    );
    md.typed_filter_metadata.insert(
        "v".into(),
        Any {
            type_url: "google.protobuf.Struct".into(),
            value: strukt("v", 0).encode_to_vec(),
        },
    );
    let c = Cluster {
        metadata: Some(md),
        ..Default::default()
    };
    // The unknown type's garbage value is not parsed: canonical succeeds.
    let _ = canonical(&c);
}

/// Unknown fields of every wire type (varint, i64, len, group, i32) are
/// passed over in order, inside a type that holds maps and at the top.
#[test]
fn unknown_fields_of_every_wire_type() {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut unknown = Vec::new();
    let tag = |n: u64, w: u64, out: &mut Vec<u8>| varint(n << 3 | w, out);
    tag(1000, 0, &mut unknown);
    varint(300, &mut unknown);
    tag(1001, 1, &mut unknown);
    unknown.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    tag(1002, 2, &mut unknown);
    unknown.extend_from_slice(&[3, 0xff, 0xfe, 0xfd]);
    tag(1003, 3, &mut unknown); // a group holding a varint and a group
    tag(1, 0, &mut unknown);
    unknown.push(7);
    tag(2, 3, &mut unknown);
    tag(2, 4, &mut unknown);
    tag(1003, 4, &mut unknown);
    tag(1004, 5, &mut unknown);
    unknown.extend_from_slice(&[9, 9, 9, 9]);

    let with_unknown = |rot| {
        let mut b = unknown.clone();
        b.extend(cluster(rot).encode_to_vec());
        b.extend_from_slice(&unknown);
        b
    };
    let ty = schema::type_index(&Cluster::full_name()).unwrap();
    let canon = |b: &[u8]| {
        let mut out = Vec::new();
        canonical::write_canonical(ty, b, &mut out).expect("well-formed");
        out
    };
    let reference = canon(&with_unknown(0));
    assert!(reference.starts_with(&unknown) && reference.ends_with(&unknown));
    for rot in 1..10 {
        assert_eq!(canon(&with_unknown(rot)), reference);
    }
    assert_ne!(
        resource_version(&url::<Cluster>(), &with_unknown(0)),
        version(&cluster(0))
    );
    // A group that does not end, or ends with another number: malformed,
    // hashed as is.
    let mut bad = Vec::new();
    tag(5, 3, &mut bad);
    tag(6, 4, &mut bad);
    bad.extend(cluster(0).encode_to_vec());
    assert!(canonical::write_canonical(ty, &bad, &mut Vec::new()).is_err());
    assert_eq!(
        resource_version(&url::<Cluster>(), &bad),
        hex(&Sha256::digest(&bad)[..16])
    );
}

/// A tiny deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn malformed_input_does_not_panic() {
    let urls = [
        url::<Cluster>(),
        url::<Listener>(),
        url::<Runtime>(),
        url::<Struct>(),
        url::<Metadata>(),
        url::<RouteConfiguration>(),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Random bytes.
    for _ in 0..3000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        for u in &urls {
            assert_eq!(resource_version(u, &bytes).len(), 32);
        }
    }
    // Valid encodings, damaged: bytes flipped, truncated, spliced.
    let valid = [
        cluster(0).encode_to_vec(),
        listener(0, two_routes(0)).encode_to_vec(),
        runtime(0).encode_to_vec(),
    ];
    for _ in 0..3000 {
        let mut bytes = valid[rng.below(valid.len())].clone();
        match rng.below(3) {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(bytes.len());
                    bytes[i] = rng.next() as u8;
                }
            }
            1 => bytes.truncate(rng.below(bytes.len())),
            _ => {
                let i = rng.below(bytes.len());
                let j = rng.below(bytes.len());
                let (i, j) = (i.min(j), i.max(j));
                bytes.drain(i..j);
            }
        }
        for u in &urls {
            assert_eq!(resource_version(u, &bytes).len(), 32);
        }
    }
}

#[test]
fn deep_nesting_does_not_overflow() {
    let mut v = s("leaf");
    for i in 0..400 {
        let fields = map(&[("n", v), ("i", n(f64::from(i)))], i as usize);
        v = Value {
            kind: Some(Kind::StructValue(Struct { fields })),
        };
    }
    let Some(Kind::StructValue(layer)) = v.kind else {
        unreachable!()
    };
    let r = Runtime {
        name: "deep".into(),
        layer: Some(layer),
    };
    // Too deep to canonicalize: hashed as is, without overflowing the stack.
    let bytes = r.encode_to_vec();
    assert_eq!(
        resource_version(&url::<Runtime>(), &bytes),
        hex(&Sha256::digest(&bytes)[..16])
    );
}

/// Throughput, for the record: `cargo test --release --lib
/// version_hash::tests::throughput -- --ignored --nocapture`. Best of a few
/// batches, as other work on the machine adds noise.
#[test]
#[ignore]
fn throughput() {
    fn best(bytes: usize, mut f: impl FnMut()) -> f64 {
        let rounds = (5_000_000 / bytes).max(1);
        let mut best = f64::MAX;
        for _ in 0..7 {
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                f();
            }
            best = best.min(t.elapsed().as_secs_f64() / rounds as f64);
        }
        bytes as f64 / best / 1e6
    }
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "Cluster, Struct-heavy metadata",
            url::<Cluster>(),
            cluster(0).encode_to_vec(),
        ),
        (
            "Listener, HCM + routes in Anys",
            url::<Listener>(),
            listener(0, two_routes(0)).encode_to_vec(),
        ),
        (
            "Runtime, one Struct layer",
            url::<Runtime>(),
            runtime(0).encode_to_vec(),
        ),
        (
            "ClusterLoadAssignment, 200 endpoints with 2-key metadata",
            url::<ClusterLoadAssignment>(),
            eds_200().encode_to_vec(),
        ),
        (
            "Cluster, no maps",
            url::<Cluster>(),
            Cluster {
                name: "no maps".repeat(100),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ];
    for (what, u, bytes) in &cases {
        let ty = schema::type_index(u.rsplit('/').next().unwrap()).unwrap();
        let mut out = Vec::with_capacity(bytes.len());
        let version = best(bytes.len(), || {
            std::hint::black_box(resource_version(u, std::hint::black_box(bytes)));
        });
        let walk = best(bytes.len(), || {
            out.clear();
            canonical::write_canonical(ty, std::hint::black_box(bytes), &mut out).unwrap();
            std::hint::black_box(&out);
        });
        let plain = best(bytes.len(), || {
            std::hint::black_box(Sha256::digest(std::hint::black_box(bytes)));
        });
        println!(
            "{what} ({} B): version {version:.0} MB/s; walk alone {walk:.0} MB/s; plain SHA-256 {plain:.0} MB/s",
            bytes.len()
        );
    }
}

/// An EDS resource as subset load balancing has them: many endpoints, each
/// with a little metadata.
fn eds_200() -> ClusterLoadAssignment {
    let lb_endpoints = (0..200)
        .map(|i| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                hostname: format!("host-{i}.example"),
                ..Default::default()
            })),
            metadata: Some(Metadata {
                filter_metadata: map(
                    &[(
                        "envoy.lb",
                        Struct {
                            fields: map(&[("version", s("v1")), ("zone", s("a"))], i),
                        },
                    )],
                    0,
                ),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: "c1".into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}
