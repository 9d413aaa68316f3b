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
    let status = "HTTPRoute default/reviews\n  parent Service default/reviews port 9080: \
                  Accepted=True (Accepted), ResolvedRefs=True (ResolvedRefs)";
    assert!(stdout.contains(status), "{stdout}");
}

/// A route that is only partly right is served, and its status says what is wrong, as a
/// controller's would.
#[test]
fn validate_prints_route_status_conditions() {
    let demo = include_str!("../../examples/demo.yaml");
    let yaml = demo.replacen(
        "- name: reviews-v2\n          port: 9080",
        "- name: reviews-v9\n          port: 9080",
        1,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("partly.yaml");
    std::fs::write(&file, yaml).expect("write");
    let out = mesh()
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .expect("mesh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let status = "parent Service default/reviews port 9080: Accepted=True (Accepted), \
                  ResolvedRefs=False (BackendNotFound: spec.rules[0].backendRefs[1].name: \
                  Service default/reviews-v9 does not exist";
    assert!(stdout.contains(status), "{stdout}");
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

/// SIGTERM (how Kubernetes and `kill` stop a process) stops `mesh up` as cleanly as Ctrl-C:
/// exit 0, and nothing left behind in the temporary directory.
#[test]
fn up_stops_cleanly_on_sigterm_and_sigint() {
    for signal in ["TERM", "INT"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let manifest = tmp.path().join("mesh.yaml");
        let block = if signal == "TERM" {
            "127.77."
        } else {
            "127.78."
        };
        let demo = include_str!("../../examples/demo.yaml").replace("127.0.", block);
        std::fs::write(&manifest, demo).expect("write manifest");
        let runtime = tmp.path().join("runtime");
        std::fs::create_dir(&runtime).expect("runtime dir");
        // One run logs JSON lines (LOG_FORMAT=json), the other text.
        let log = tmp.path().join("stderr.log");
        let stderr = std::fs::File::create(&log).expect("log file");
        let format = if signal == "TERM" { "json" } else { "plain" };
        let mut child = mesh()
            .args(["up", "-f"])
            .arg(&manifest)
            .env("TMPDIR", &runtime)
            .env("LOG_FORMAT", format)
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("mesh up starts");
        let stdout = child.stdout.take().expect("stdout");
        let up = std::io::BufRead::lines(std::io::BufReader::new(stdout))
            .map_while(Result::ok)
            .any(|line| line.starts_with("mesh is up"));
        assert!(up, "mesh up never reported ready");
        assert_eq!(
            std::fs::read_dir(&runtime).expect("list").count(),
            0,
            "mesh up needs no temporary files"
        );
        let kill = Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(kill.success());
        let status = wait_bounded(&mut child, std::time::Duration::from_secs(15));
        assert!(status.success(), "SIG{signal}: exit {status}");
        assert_eq!(
            std::fs::read_dir(&runtime).expect("list").count(),
            0,
            "SIG{signal}: something was left behind"
        );
        let logged = std::fs::read_to_string(&log).expect("log");
        let lines: Vec<&str> = logged.lines().filter(|l| !l.is_empty()).collect();
        assert!(!lines.is_empty(), "mesh up logged nothing");
        for line in lines {
            let parsed = serde_json::from_str::<serde_json::Value>(line);
            match format {
                "json" => {
                    let event = parsed.unwrap_or_else(|e| panic!("{e}: {line}"));
                    assert!(
                        event["level"].is_string() && event["message"].is_string(),
                        "{line}"
                    );
                }
                _ => assert!(parsed.is_err(), "text expected: {line}"),
            }
        }
    }
}

/// Waits for `child`, killing it after `limit`.
fn wait_bounded(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("mesh up did not stop within {limit:?}");
        }
        #[allow(
            clippy::disallowed_methods,
            reason = "a synchronous test polls a child"
        )]
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `mesh waypoint generate` prints a Gateway `mesh validate` accepts as a waypoint; `render`
/// prints what it runs as, ready for `kubectl apply`.
#[test]
fn waypoint_generate_and_render_print_manifests() {
    let out = mesh()
        .args(["waypoint", "generate", "-n", "shop", "--for", "all"])
        .output()
        .expect("mesh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gateway = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        gateway.contains("gatewayClassName: mesh-waypoint"),
        "{gateway}"
    );
    assert!(gateway.contains("istio.io/waypoint-for: all"), "{gateway}");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gateway.yaml");
    let namespace = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n";
    std::fs::write(&file, format!("{gateway}{namespace}")).expect("write");
    let validated = mesh()
        .args(["validate", "-f"])
        .arg(&file)
        .output()
        .expect("mesh runs");
    let stdout = String::from_utf8_lossy(&validated.stdout);
    assert!(validated.status.success(), "{stdout}");
    assert!(stdout.contains("1 waypoints"), "{stdout}");

    let dir = tempfile::tempdir().expect("tempdir");
    let parameters = dir.path().join("params.yaml");
    std::fs::write(
        &parameters,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: params, namespace: shop}\n\
         data:\n  horizontalPodAutoscaler: 'spec: {minReplicas: 2, maxReplicas: 4}'\n",
    )
    .expect("write");
    let out = mesh()
        .args(["waypoint", "render", "-n", "shop", "--image"])
        .args(["example/waypoint:1", "--parameters"])
        .arg(&parameters)
        .output()
        .expect("mesh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).expect("utf-8");
    let kinds: Vec<&str> = (rendered.lines())
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    let expected = [
        "ClusterRole",
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "ClusterRoleBinding",
    ];
    assert_eq!(kinds, expected);
    assert!(rendered.contains("image: example/waypoint:1"), "{rendered}");
    assert!(rendered.contains("maxReplicas: 4"), "{rendered}");
    assert!(!rendered.contains("\n  replicas"), "{rendered}");

    std::fs::write(
        &parameters,
        "metadata: {name: params, namespace: shop}\ndata: {deploy: 'spec: {}'}\n",
    )
    .expect("write");
    let refused = mesh()
        .args(["waypoint", "render", "--image", "x", "--parameters"])
        .arg(&parameters)
        .output()
        .expect("mesh runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("params.yaml") && stderr.contains("unknown key \"deploy\""),
        "{stderr}"
    );

    let refused = mesh()
        .args(["waypoint", "generate", "--for", "everything"])
        .output()
        .expect("mesh runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--for \"everything\""));
}
