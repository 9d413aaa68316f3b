//! Manifest builders shared by the integration tests (YAML is a superset of JSON).
#![allow(dead_code)]

use std::path::PathBuf;

pub use mesh_config::fixtures::*;
use mesh_config::{ConfigErrors, Snapshot, compile};
use serde_json::Value;

pub fn compile_objs(objs: &[Value]) -> Result<Snapshot, ConfigErrors> {
    compile(vec![(PathBuf::from("test.yaml"), yaml(objs))])
}

pub fn must_compile(objs: &[Value]) -> Snapshot {
    match compile_objs(objs) {
        Ok(s) => s,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

pub fn must_fail(objs: &[Value]) -> ConfigErrors {
    match compile_objs(objs) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    }
}

/// The nodes, Service `default/svc` (VIP 127.0.100.1, port 80) and then `objs`.
pub fn with_svc(objs: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut all = nodes();
    all.push(service(
        "default",
        "svc",
        "127.0.100.1",
        serde_json::json!({"app": "a"}),
    ));
    all.extend(objs);
    all
}

/// Asserts exactly one error mentions all of `needles`.
pub fn assert_error(errors: &ConfigErrors, needles: &[&str]) {
    let text = errors.to_string();
    let found = text.lines().any(|l| needles.iter().all(|n| l.contains(n)));
    assert!(found, "no error line containing {needles:?} in:\n{text}");
}

/// The nodes, waypoint `default/wp` (pod 127.0.1.50), and Services `default/web`
/// (127.0.100.1) and `default/db` (127.0.100.2) for the waypoint's policies to target.
pub fn waypoint_and_two_services() -> Vec<Value> {
    let mut objs = nodes();
    objs.push(waypoint_gateway("default", "wp", None));
    objs.push(waypoint_pod("default", "wp", "127.0.1.50"));
    objs.push(service(
        "default",
        "web",
        "127.0.100.1",
        serde_json::json!({"app": "web"}),
    ));
    objs.push(service(
        "default",
        "db",
        "127.0.100.2",
        serde_json::json!({"app": "db"}),
    ));
    objs
}
