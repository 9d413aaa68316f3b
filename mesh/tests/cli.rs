//! The `mesh` binary as a user runs it.

use std::process::Command;

fn mesh() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
}

#[test]
fn validate_accepts_the_demo() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.yaml");
    let out = mesh()
        .args(["validate", "-f", demo])
        .output()
        .expect("mesh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("valid (2 nodes"), "{stdout}");
}

#[test]
fn validate_reports_every_problem_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default}
spec: {nodeName: node-x, containers: [{name: app, image: x}]}
status: {podIP: not-an-ip}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: s}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "(unclosed"}}]
    backendRefs: [{name: s, port: 80}]
"#,
    )
    .expect("write");
    let out = mesh()
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .expect("mesh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "broken manifests must fail validation"
    );
    assert!(
        stdout.contains("broken.yaml"),
        "errors name the file: {stdout}"
    );
    assert!(
        stdout.contains("Pod default/a") && stdout.contains("status.podIP"),
        "{stdout}"
    );
    assert!(
        stdout.contains("HTTPRoute default/r") && stdout.contains("path"),
        "{stdout}"
    );
}

#[test]
fn validate_names_a_missing_path() {
    let out = mesh()
        .args(["validate", "-f", "/nonexistent/mesh.yaml"])
        .output()
        .expect("mesh runs");
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("/nonexistent/mesh.yaml"), "{all}");
}
