//! Property tests (fuzz-style, bounded for CI): compiling arbitrary manifests never panics,
//! authorities round-trip, and Gateway API route precedence is a total order (the compiled
//! order does not depend on the order the routes were written in).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use common::*;
use mesh_config::{compile, split_authority};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "status",
    "rules",
    "matches",
    "path",
    "type",
    "value",
    "headers",
    "queryParams",
    "method",
    "filters",
    "backendRefs",
    "parentRefs",
    "port",
    "ports",
    "targetPort",
    "weight",
    "selector",
    "clusterIP",
    "podIP",
    "nodeName",
    "containers",
    "containerPort",
    "gatewayClassName",
    "listeners",
    "action",
    "from",
    "to",
    "when",
    "source",
    "operation",
    "principals",
    "key",
    "values",
    "targetRefs",
    "group",
    "timeouts",
    "request",
    "addresses",
    "address",
];
const KINDS: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "Node"),
    ("v1", "Service"),
    ("v1", "Pod"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("v9", "Thing"),
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u32..70000).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "/",
            "/a",
            "127.0.0.1",
            "10.0.0.0/8",
            "PathPrefix",
            "Exact",
            "RegularExpression",
            "(",
            "ALLOW",
            "DENY",
            "Service",
            "default",
            "1s",
            "-1s"
        ])
        .prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|pairs| {
                Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    (prop::sample::select(KINDS), "[a-z]{0,3}", value(), value()).prop_map(
        |((api, kind), name, spec, status)| {
            let mut obj = Map::new();
            obj.insert("apiVersion".into(), api.into());
            obj.insert("kind".into(), kind.into());
            obj.insert(
                "metadata".into(),
                json!({"name": name, "namespace": "default"}),
            );
            obj.insert("spec".into(), spec);
            obj.insert("status".into(), status);
            Value::Object(obj)
        },
    )
}

fn path_match() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["Exact", "PathPrefix", "RegularExpression"]),
        prop::sample::select(vec!["/", "/a", "/a/b", "/b", "/a/.*"]),
    )
        .prop_map(|(kind, value)| json!({"type": kind, "value": value}))
}

fn route_match() -> impl Strategy<Value = Value> {
    (
        path_match(),
        prop::option::of(prop::sample::select(vec!["GET", "POST"])),
        0usize..3,
    )
        .prop_map(|(path, method, headers)| {
            let headers: Vec<Value> = (0..headers)
                .map(|i| json!({"name": format!("x-{i}"), "value": "v"}))
                .collect();
            let mut m = json!({"path": path, "headers": headers});
            if let Some(method) = method {
                m["method"] = json!(method);
            }
            m
        })
}

/// Routes `r0..rN` on Service `svc`, each with rules of random matches and an optional age.
fn routes() -> impl Strategy<Value = Vec<Value>> {
    let rule = prop::collection::vec(route_match(), 0..3).prop_map(
        |matches| json!({"matches": matches, "backendRefs": [{"name": "svc", "port": 80}]}),
    );
    let route = (prop::collection::vec(rule, 1..3), prop::option::of(0u8..3));
    prop::collection::vec(route, 1..5).prop_map(|routes| {
        routes
            .into_iter()
            .enumerate()
            .map(|(i, (rules, age))| {
                let parent = json!([{"group": "", "kind": "Service", "name": "svc"}]);
                let mut r = http_route("default", &format!("r{i}"), parent, json!(rules));
                if let Some(age) = age {
                    r["metadata"]["creationTimestamp"] =
                        json!(format!("2026-01-0{}T00:00:00Z", age + 1));
                }
                r
            })
            .collect()
    })
}

fn order(routes: &[Value]) -> Vec<(String, usize)> {
    let snap = must_compile(&with_svc(routes.iter().cloned()));
    let svc = snap.service("default", "svc").expect("svc");
    snap.routes(svc, 80)
        .iter()
        .map(|r| (r.route.name.clone(), r.rule_index))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn compiling_arbitrary_objects_never_panics(objs in prop::collection::vec(object(), 0..6)) {
        let _ = compile(vec![(PathBuf::from("fuzz.yaml"), yaml(&objs))]);
    }

    #[test]
    fn compiling_arbitrary_text_never_panics(text in "[ -~\n\t]{0,400}") {
        let _ = compile(vec![(PathBuf::from("fuzz.yaml"), text)]);
    }

    #[test]
    fn authorities_round_trip(ip in any::<IpAddr>(), port in any::<u16>(), text in ".{0,40}") {
        let _ = split_authority(&text);
        let written = SocketAddr::new(ip, port).to_string();
        let (host, parsed_port) = split_authority(&written).expect("ip:port");
        prop_assert_eq!(parsed_port, port);
        prop_assert_eq!(host.parse::<IpAddr>().ok(), Some(ip));
    }

    #[test]
    fn route_precedence_is_a_total_order(routes in routes(), seed in any::<u64>()) {
        let forward = order(&routes);
        let mut shuffled = routes.clone();
        let len = shuffled.len();
        shuffled.rotate_left((seed as usize) % len);
        if seed % 2 == 0 {
            shuffled.reverse();
        }
        prop_assert_eq!(&forward, &order(&shuffled));
        let total: usize = routes.iter().map(|r| r["spec"]["rules"].as_array().map_or(0, Vec::len)).sum();
        prop_assert_eq!(forward.len(), total);
    }
}
