//! Objects from the Kubernetes API: one bad object is left out, reported with its errors,
//! and never holds back the others (a file is all or nothing; a cluster cannot be).

mod common;

use common::*;
use mesh_config::{Location, compile_objects};
use serde_json::{Value, json};

fn from_api(objs: Vec<Value>) -> Vec<(Location, Value)> {
    (objs.into_iter().enumerate())
        .map(|(i, obj)| {
            let location = Location::Kube {
                uid: format!("uid-{i}"),
                resource_version: "1".into(),
            };
            (location, obj)
        })
        .collect()
}

fn route(name: &str, rules: Value) -> Value {
    let parent = json!([{"group": "", "kind": "Service", "name": "svc", "port": 80}]);
    http_route("default", name, parent, rules)
}

#[test]
fn a_bad_object_is_left_out_and_the_rest_served() {
    let good = route(
        "good",
        json!([{"backendRefs": [{"name": "svc", "port": 80}]}]),
    );
    let bad_regex = json!([{"matches": [{"path": {"type": "RegularExpression", "value": "(("}}],
                            "backendRefs": [{"name": "svc", "port": 80}]}]);
    let bad = route("bad", bad_regex);
    let compiled = compile_objects(&from_api(with_svc([good, bad]))).expect("compiles");
    let svc = compiled.snapshot.service("default", "svc").expect("svc");
    let served: Vec<&str> = (compiled.snapshot.routes(svc, 80).iter())
        .map(|r| r.route.name.as_str())
        .collect();
    assert_eq!(served, ["good"]);
    assert_eq!(compiled.left_out.len(), 1, "{:?}", compiled.left_out);
    let error = &compiled.left_out[0];
    assert_eq!(error.object, "HTTPRoute default/bad");
    assert!(error.field.contains("path.value"), "{error}");
}

/// Leaving one object out can make another wrong: that one goes too, and says why.
#[test]
fn objects_that_depend_on_a_left_out_one_follow_it() {
    let mirror_target = service("default", "shadow", "not-an-ip", json!({"app": "a"}));
    let mirroring = route(
        "mirroring",
        json!([{"filters": [{"type": "RequestMirror", "requestMirror": {
                    "backendRef": {"name": "shadow", "port": 80}}}],
                "backendRefs": [{"name": "svc", "port": 80}]}]),
    );
    let plain = route(
        "plain",
        json!([{"backendRefs": [{"name": "svc", "port": 80}]}]),
    );
    let objects = from_api(with_svc([mirror_target, mirroring, plain]));
    let compiled = compile_objects(&objects).expect("compiles");
    let left: Vec<&str> = compiled
        .left_out
        .iter()
        .map(|e| e.object.as_str())
        .collect();
    assert!(left.contains(&"Service default/shadow"), "{left:?}");
    assert!(left.contains(&"HTTPRoute default/mirroring"), "{left:?}");
    let svc = compiled.snapshot.service("default", "svc").expect("svc");
    let served: Vec<&str> = (compiled.snapshot.routes(svc, 80).iter())
        .map(|r| r.route.name.as_str())
        .collect();
    assert_eq!(served, ["plain"]);
    assert!(compiled.snapshot.service("default", "shadow").is_none());
}
