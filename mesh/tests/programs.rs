//! The `waypoint` and `ztunnel` programs as separate processes, as a cluster runs them: two
//! ztunnels signing pod certificates under a CA from files (`mesh ca init`), a waypoint with
//! its own certificate in Istio's file-mounted layout (`mesh ca mint`), configured by Istio's
//! environment variables; traffic from a pod through both ztunnels and the waypoint; and the
//! waypoint draining on SIGTERM with a request in flight.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use loadtest::echo::EchoServer;
use mesh::client::MeshClient;
use mesh_runtime::CancellationToken;
use tokio::process::{Child, Command};

/// The loopback block of the traffic test; the others use their own.
const BLOCK: &str = "127.106.";
const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn addr(rest: &str, port: u16) -> SocketAddr {
    addr_in(BLOCK, rest, port)
}

fn addr_in(block: &str, rest: &str, port: u16) -> SocketAddr {
    format!("{block}{rest}:{port}").parse().expect("address")
}

fn program(name: &str) -> Command {
    let path = match name {
        "mesh" => env!("CARGO_BIN_EXE_mesh"),
        "waypoint" => env!("CARGO_BIN_EXE_waypoint"),
        "waypoint-controller" => env!("CARGO_BIN_EXE_waypoint-controller"),
        _ => env!("CARGO_BIN_EXE_ztunnel"),
    };
    let mut command = Command::new(path);
    command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run_mesh(args: &[&str]) {
    let out = program("mesh")
        .args(args)
        .output()
        .await
        .expect("mesh runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mesh {args:?}: {stderr}");
}

/// Waits until the readiness port at `status` answers "ready".
async fn wait_ready(what: &str, status: SocketAddr, child: &mut Child) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(body) = http_get(status, "/healthz/ready").await
            && body == "ready\n"
        {
            return;
        }
        if let Ok(Some(exit)) = child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use tokio::io::AsyncReadExt;
                let _ = pipe.read_to_string(&mut stderr).await;
            }
            panic!("{what} exited ({exit}) before it was ready: {stderr}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not ready in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain HTTP/1.1 GET, returning the body.
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let request = http::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<bytes::Bytes>::new())?;
    let body = sender
        .send_request(request)
        .await?
        .into_body()
        .collect()
        .await?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

/// The `waypoint` program as the demo's waypoint pod (`default/waypoint-0`).
fn demo_waypoint() -> Command {
    let mut command = program("waypoint");
    command
        .env("POD_NAMESPACE", "default")
        .env("GATEWAY_NAME", "waypoint")
        .env("POD_NAME", "waypoint-0");
    command
}

/// Runs `command`, which must fail; returns what it said.
async fn refusal(command: &mut Command) -> String {
    let out = command.output().await.expect("the program runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stderr}");
    stderr
}

/// A CA in `dir/ca` (`mesh ca init`) and a certificate for `identity` from it in `dir/certs`
/// (`mesh ca mint`).
async fn ca_and_certificate(dir: &Path, identity: &str) -> (PathBuf, PathBuf) {
    let (ca, certs) = (dir.join("ca"), dir.join("certs"));
    let ca_arg = ca.to_str().expect("utf-8 path");
    run_mesh(&["ca", "init", "--dir", ca_arg]).await;
    let out = certs.to_str().expect("utf-8 path");
    let mint = [
        "ca",
        "mint",
        "--ca-dir",
        ca_arg,
        "--identity",
        identity,
        "--out",
        out,
    ];
    run_mesh(&mint).await;
    (ca, certs)
}

/// The demo's manifest, moved to `block`.
fn manifest(dir: &Path, block: &str) -> PathBuf {
    let path = dir.join("mesh.yaml");
    let yaml = mesh::demo::DEMO_YAML.replace("127.0.", block);
    std::fs::write(&path, yaml).expect("write the manifest");
    path
}

/// The demo's reviews apps (v1 and v2) on their pods' addresses in `block`, until the guard
/// drops.
async fn reviews_apps(block: &str) -> tokio_util::sync::DropGuard {
    let apps = CancellationToken::new();
    for (name, pod) in [("reviews-v1", "2.10"), ("reviews-v2", "2.11")] {
        let listener = tokio::net::TcpListener::bind(addr_in(block, pod, 9080))
            .await
            .expect("bind app");
        tokio::spawn(EchoServer::new(name).serve(listener, apps.clone()));
    }
    apps.drop_guard()
}

/// A ztunnel for each of the demo's nodes in `block`, each ready; `setup` says where its
/// config and certificates come from; admin ports from `admin_port`.
async fn ztunnels(block: &str, admin_port: u16, setup: impl Fn(&mut Command, &str)) -> Vec<Child> {
    let mut ztunnels = Vec::new();
    for (i, node) in ["node-a", "node-b"].into_iter().enumerate() {
        let mut command = program("ztunnel");
        command.env("NODE_NAME", node).env(
            "ADMIN_ADDRESS",
            format!("127.0.0.1:{}", admin_port + i as u16),
        );
        setup(&mut command, node);
        let mut ztunnel = command.spawn().expect("ztunnel starts");
        let status = addr_in(block, &format!("{}.1", i + 1), 15021);
        wait_ready(node, status, &mut ztunnel).await;
        ztunnels.push(ztunnel);
    }
    ztunnels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waypoint_between_two_ztunnels_as_separate_programs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = manifest(tmp.path(), BLOCK);
    let identity = "spiffe://cluster.local/ns/default/sa/waypoint";
    let (ca, waypoint_certs) = ca_and_certificate(tmp.path(), identity).await;

    // The apps: reviews v1 and v2, on their pods' addresses.
    let _apps = reviews_apps(BLOCK).await;
    let ztunnels = ztunnels(BLOCK, 25060, |ztunnel, _| {
        ztunnel.env("MESH_CONFIG", &config).env("CA_DIR", &ca);
    })
    .await;
    let mut waypoint = demo_waypoint()
        .env("MESH_CONFIG", &config)
        .env("CERT_DIR", &waypoint_certs)
        .env("ADMIN_ADDRESS", "127.0.0.1:25062")
        .env("TERMINATION_DRAIN_DURATION_SECONDS", "60")
        .spawn()
        .expect("waypoint starts");
    wait_ready("waypoint", addr("2.20", 15021), &mut waypoint).await;

    // productpage → its ztunnel → the waypoint (policy, route) → reviews' ztunnel → the app.
    let mut productpage = MeshClient::connect(addr("1.10", 15080), REVIEWS, 9080)
        .await
        .expect("SOCKS5 entry");
    let seen = productpage.get("/debug").await.expect("a response");
    assert_eq!(seen.status, 200, "{seen:?}");
    let seen = seen.json().expect("the app's echo");
    let xfcc = seen["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default();
    assert!(xfcc.starts_with(&format!("By={identity};")), "{xfcc}");
    assert!(xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage"));
    assert_eq!(
        seen["headers"]["x-mesh-route"], "reviews",
        "the route applied"
    );
    // The waypoint's policy: only productpage may call.
    let mut sleep = MeshClient::connect(addr("1.12", 15080), REVIEWS, 9080)
        .await
        .expect("SOCKS5 entry");
    assert_eq!(sleep.get("/debug").await.expect("a response").status, 403);
    // The admin server dumps the config the waypoint serves.
    let dump = http_get("127.0.0.1:25062".parse().expect("addr"), "/config_dump")
        .await
        .expect("config dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("JSON");
    assert_eq!(dump["services"], 5, "{dump}");

    // SIGTERM with a request in flight: it is answered, then the process exits 0, well
    // before its 60 s grace: sleep's idle keep-alive connection is closed, not waited for.
    let slow = tokio::spawn(async move { productpage.get("/debug?delay=1s").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = waypoint.id().expect("running").to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(kill.expect("kill runs").success());
    let answered = slow
        .await
        .expect("join")
        .expect("the in-flight request is answered");
    assert_eq!(answered.status, 200);
    let exit = tokio::time::timeout(Duration::from_secs(20), waypoint.wait())
        .await
        .expect("the waypoint exits once its connections are done")
        .expect("wait");
    assert!(exit.success(), "waypoint exit: {exit}");
    assert!(
        tokio::net::TcpStream::connect(addr("2.20", 15008))
            .await
            .is_err(),
        "nothing listens after the drain"
    );
    for mut ztunnel in ztunnels {
        let pid = ztunnel.id().expect("running").to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status().await;
        assert!(kill.expect("kill runs").success());
        let exit = tokio::time::timeout(Duration::from_secs(15), ztunnel.wait()).await;
        assert!(exit.expect("ztunnel exits").expect("wait").success());
    }
}

/// A waypoint given a certificate for another identity than its pod's refuses to start,
/// naming both.
#[tokio::test]
async fn a_waypoint_with_a_foreign_certificate_refuses_to_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = manifest(tmp.path(), "127.107.");
    let other = "spiffe://cluster.local/ns/default/sa/sleep";
    let (ca, certs) = ca_and_certificate(tmp.path(), other).await;
    let mut waypoint = demo_waypoint();
    waypoint.env("MESH_CONFIG", &config).env("CERT_DIR", &certs);
    let stderr = refusal(&mut waypoint).await;
    assert!(stderr.contains(other), "{stderr}");
    assert!(stderr.contains("sa/waypoint"), "{stderr}");

    // A trust domain the config's identities are not in is refused, not half-served.
    let mut waypoint = demo_waypoint();
    waypoint.env("MESH_CONFIG", &config).env("CA_DIR", &ca);
    let stderr = refusal(waypoint.env("TRUST_DOMAIN", "other.example")).await;
    assert!(
        stderr.contains("TRUST_DOMAIN \"other.example\""),
        "{stderr}"
    );
}

/// A waypoint whose CA (`CA_ADDRESS`) does not answer is not ready and says why, and a
/// SIGTERM still stops it at once.
#[tokio::test]
async fn a_waypoint_waits_for_its_ca_and_stops_when_told() {
    let block = "127.108.";
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = manifest(tmp.path(), block);
    let ca = tmp.path().join("ca");
    run_mesh(&["ca", "init", "--dir", ca.to_str().expect("utf-8 path")]).await;
    let token = tmp.path().join("token");
    std::fs::write(&token, "token").expect("token");
    // Nothing listens on port 1.
    let mut waypoint = demo_waypoint()
        .env("MESH_CONFIG", &config)
        .env("CA_ADDRESS", "127.0.0.1:1")
        .env("ALT_CA_HOSTNAME", "istiod.istio-system.svc")
        .env("CA_ROOT_CA", ca.join("root-cert.pem"))
        .env("CA_TOKEN_FILE", &token)
        .env("ADMIN_ADDRESS", "127.0.0.1:25063")
        .spawn()
        .expect("waypoint starts");
    let mut stderr = tokio::io::BufReader::new(waypoint.stderr.take().expect("stderr"));
    let mut said = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !said.contains("no certificate yet") {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        let read = tokio::time::timeout_at(deadline, stderr.read_line(&mut line)).await;
        assert!(
            matches!(read, Ok(Ok(n)) if n > 0),
            "the waypoint never said why: {said}"
        );
        said.push_str(&line);
    }
    assert!(said.contains("127.0.0.1:1"), "{said}");
    let ready = http_get(addr_in(block, "2.20", 15021), "/healthz/ready").await;
    assert!(
        ready.is_err(),
        "not serving without a certificate: {ready:?}"
    );
    let pid = waypoint.id().expect("running").to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(kill.expect("kill runs").success());
    let exit = tokio::time::timeout(Duration::from_secs(10), waypoint.wait()).await;
    assert!(exit.expect("stops at once").expect("wait").success());
}

/// The demo's objects, each as the API would serve it, in `block`.
fn demo_objects(block: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let yaml = mesh::demo::DEMO_YAML.replace("127.0.", block);
    serde_norway::Deserializer::from_str(&yaml)
        .map(|doc| serde_json::Value::deserialize(doc).expect("a YAML document"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// A kubeconfig in `dir` for the API server at `server`.
fn kubeconfig(dir: &Path, server: SocketAddr) -> PathBuf {
    let path = dir.join("kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
         clusters: [{{name: test, cluster: {{server: \"http://{server}\"}}}}]\n\
         users: [{{name: test, user: {{}}}}]\n\
         contexts: [{{name: test, context: {{cluster: test, user: test}}}}]\n"
    );
    std::fs::write(&path, config).expect("kubeconfig");
    path
}

/// The three programs with no manifest: each reads the Kubernetes API (a scripted server
/// behind `KUBECONFIG`), and follows it: a policy added there is enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_programs_read_their_config_from_the_kubernetes_api() {
    let block = "127.109.";
    let api = mesh_kubernetes::testing::FakeApi::default();
    for obj in demo_objects(block) {
        api.put(obj);
    }
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let server = mesh_kubernetes::testing::serve(api.clone(), stop.clone()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kubeconfig(tmp.path(), server);
    let ca = tmp.path().join("ca");
    run_mesh(&["ca", "init", "--dir", ca.to_str().expect("utf-8 path")]).await;
    let _apps = reviews_apps(block).await;
    let mut children = ztunnels(block, 25064, |ztunnel, _| {
        ztunnel
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("KUBECONFIG", &kubeconfig)
            .env("CA_DIR", &ca);
    })
    .await;
    let mut waypoint = demo_waypoint()
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", &kubeconfig)
        .env("CA_DIR", &ca)
        .env("ADMIN_ADDRESS", "127.0.0.1:25066")
        .spawn()
        .expect("waypoint starts");
    wait_ready("waypoint", addr_in(block, "2.20", 15021), &mut waypoint).await;
    children.push(waypoint);

    let get = || async {
        let mut client = MeshClient::connect(addr_in(block, "1.10", 15080), REVIEWS, 9080)
            .await
            .expect("SOCKS5 entry");
        client.get("/debug").await.expect("a response").status
    };
    assert_eq!(get().await, 200);
    // A DENY policy for productpage, added through the API.
    let deny = mesh_config::fixtures::policy(
        "default",
        "deny-productpage",
        serde_json::json!({
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                            "name": "waypoint"}],
            "action": "DENY",
            "rules": [{"from": [{"source": {"principals":
                ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]}]
        }),
    );
    api.put(deny);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get().await != 403 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the policy never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for mut child in children.into_iter().rev() {
        let pid = child.id().expect("running").to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status().await;
        assert!(kill.expect("kill runs").success());
        let exit = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
        assert!(exit.expect("exits").expect("wait").success());
    }
}

/// `mesh waypoint apply --enroll-namespace --wait` against a cluster where the
/// `waypoint-controller` program runs: the Gateway is applied, the namespace enrolled, the
/// controller renders the waypoint and sets its address, and the command returns with it.
/// Without a controller, `--wait` fails in its time and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_programs_the_waypoint_the_cli_applies() {
    let api = mesh_kubernetes::testing::FakeApi::default();
    api.put(serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": "shop"}}));
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let server = mesh_kubernetes::testing::serve(api.clone(), stop.clone()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kubeconfig(tmp.path(), server);
    let apply = |timeout: &str| {
        let mut command = program("mesh");
        (command.env("KUBECONFIG", &kubeconfig))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::piped())
            .args(["waypoint", "apply", "-n", "shop", "--enroll-namespace"])
            .args(["--wait", "--timeout", timeout]);
        command
    };
    // No controller yet: the wait ends in its time, saying what is missing.
    let out = apply("1s").output().await.expect("mesh runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("shop/waypoint was not programmed within 1s")
            && stderr.contains("is the waypoint controller running?"),
        "{stderr}"
    );

    let mut controller = program("waypoint-controller")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", &kubeconfig)
        .env("WAYPOINT_IMAGE", "registry.example/waypoint:1")
        .env("INSTANCE_IP", "127.110.0.1")
        .spawn()
        .expect("the controller starts");
    wait_ready(
        "waypoint-controller",
        addr_in("127.110.", "0.1", 15021),
        &mut controller,
    )
    .await;
    let out = apply("20s").output().await.expect("mesh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let service = api.get("services", "shop", "waypoint").expect("a Service");
    let ip = service["spec"]["clusterIP"].as_str().expect("an IP");
    assert!(
        stdout.contains(&format!(
            "waypoint shop/waypoint programmed at {ip}, waypoint.shop.svc.cluster.local"
        )),
        "{stdout}"
    );
    let namespace = api.get("namespaces", "", "shop").expect("namespace");
    assert_eq!(
        namespace["metadata"]["labels"]["istio.io/use-waypoint"],
        "waypoint"
    );
    let deployment = api
        .get("deployments", "shop", "waypoint")
        .expect("deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/waypoint:1");
    // The Gateway the controller programmed is one the waypoint's own config serves.
    let gateway = api.get("gateways", "shop", "waypoint").expect("gateway");
    let mut resources = mesh_config::Resources::default();
    resources.add_object(mesh_config::Location::file("api"), gateway);
    let snapshot = resources.compile().expect("valid");
    assert!(
        snapshot
            .waypoint(&mesh_config::ObjectRef::new("shop", "waypoint"))
            .is_some()
    );
    controller.start_kill().expect("stop the controller");
}

/// A second pod of the demo's waypoint, `waypoint-1` on node-b at `2.21`.
const SECOND_WAYPOINT_POD: &str = "---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-1
  namespace: default
  labels:
    gateway.networking.k8s.io/gateway-name: waypoint
spec:
  nodeName: node-b
  serviceAccountName: waypoint
  containers:
    - name: waypoint
      image: waypoint
status:
  podIP: BLOCK2.21
";

/// A file in `dir` for a program's log, which would fill a pipe nobody reads under load.
fn log_file(dir: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file")
}

/// What the load workers saw.
#[derive(Default)]
struct Seen {
    answered: std::sync::atomic::AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Seen {
    fn answered(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn fail(&self, why: String) {
        self.failures.lock().expect("lock").push(why);
    }
}

/// Asks for `/` through productpage's SOCKS5 entry until `stop` (or 20 failures), on one
/// keep-alive connection at a time, opening another when told `connection: close`.
async fn keep_asking(socks: SocketAddr, stop: CancellationToken, seen: Arc<Seen>) {
    let limit = Duration::from_secs(5);
    let mut client = None;
    while !stop.is_cancelled() && seen.failures.lock().expect("lock").len() < 20 {
        let connected = match client.take() {
            Some(client) => client,
            None => {
                match tokio::time::timeout(limit, MeshClient::connect(socks, REVIEWS, 9080)).await {
                    Ok(Ok(connected)) => connected,
                    Ok(Err(e)) => {
                        seen.fail(format!("connect: {e:#}"));
                        continue;
                    }
                    Err(_) => {
                        seen.fail("connect: timed out".into());
                        continue;
                    }
                }
            }
        };
        let mut connected = connected;
        match tokio::time::timeout(limit, connected.get("/")).await {
            Ok(Ok(response)) if response.status == 200 => {
                seen.answered
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if response.header("connection") != Some("close") {
                    client = Some(connected);
                }
            }
            Ok(Ok(response)) => seen.fail(format!("status {}", response.status)),
            Ok(Err(e)) => seen.fail(format!("request: {e:#}")),
            Err(_) => seen.fail("request: timed out".into()),
        }
    }
}

/// Requests the waypoint pod at `status` has answered, from its `istio_requests_total`.
async fn requests_served(status: SocketAddr) -> f64 {
    let metrics = http_get(status, "/metrics").await.expect("metrics");
    metrics
        .lines()
        .filter(|line| line.starts_with("istio_requests_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (at most 20 s) until `seen` has `count` answers.
async fn until_answered(seen: &Seen, count: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.answered() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} requests answered in 20 s",
            seen.answered()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A rollout or scale-down under load: one of two waypoint pods is told SIGTERM while twelve
/// callers keep asking through it. Not one request fails: those under way are answered,
/// callers between requests are told `connection: close` on their next answer, and the
/// ztunnel takes their new connections to the other pod once the draining one stops
/// accepting (the config still lists it, as it would until the API says the pod is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waypoint_drains_under_load_without_failing_a_request() {
    let block = "127.111.";
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = manifest(tmp.path(), block);
    let mut yaml = std::fs::read_to_string(&config).expect("manifest");
    yaml.push_str(&SECOND_WAYPOINT_POD.replace("BLOCK", block));
    std::fs::write(&config, yaml).expect("write the manifest");
    let identity = "spiffe://cluster.local/ns/default/sa/waypoint";
    let (ca, waypoint_certs) = ca_and_certificate(tmp.path(), identity).await;

    let _apps = reviews_apps(block).await;
    let _ztunnels = ztunnels(block, 25074, |ztunnel, node| {
        (ztunnel.stderr(log_file(tmp.path(), node)))
            .env("MESH_CONFIG", &config)
            .env("CA_DIR", &ca);
    })
    .await;
    let mut waypoints = Vec::new();
    for (i, pod) in ["waypoint-0", "waypoint-1"].into_iter().enumerate() {
        let mut waypoint = demo_waypoint()
            .stderr(log_file(tmp.path(), pod))
            .env("POD_NAME", pod)
            .env("MESH_CONFIG", &config)
            .env("CERT_DIR", &waypoint_certs)
            .env("ADMIN_ADDRESS", format!("127.0.0.1:{}", 25076 + i))
            .env("TERMINATION_DRAIN_DURATION_SECONDS", "30")
            .spawn()
            .expect("waypoint starts");
        wait_ready(
            pod,
            addr_in(block, &format!("2.2{i}"), 15021),
            &mut waypoint,
        )
        .await;
        waypoints.push(waypoint);
    }

    let stop = CancellationToken::new();
    let seen = Arc::new(Seen::default());
    let socks = addr_in(block, "1.10", 15080);
    let workers: Vec<_> = (0..12)
        .map(|_| tokio::spawn(keep_asking(socks, stop.clone(), seen.clone())))
        .collect();
    until_answered(&seen, 300).await;
    let draining = addr_in(block, "2.20", 15020);
    assert!(
        requests_served(draining).await > 0.0,
        "waypoint-0 serves its share before it drains"
    );

    let mut waypoint = waypoints.remove(0);
    let pid = waypoint.id().expect("running").to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().await;
    assert!(kill.expect("kill runs").success());
    let exit = tokio::time::timeout(Duration::from_secs(20), waypoint.wait())
        .await
        .expect("waypoint-0 exits once its callers moved on")
        .expect("wait");
    assert!(exit.success(), "waypoint-0 exit: {exit}");
    // The load goes on, all of it through waypoint-1 now.
    until_answered(&seen, seen.answered() + 300).await;
    stop.cancel();
    for worker in workers {
        worker.await.expect("worker");
    }
    let failures = std::mem::take(&mut *seen.failures.lock().expect("lock"));
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        seen.answered() + failures.len() as u64,
        &failures[..failures.len().min(5)]
    );
    assert!(requests_served(addr_in(block, "2.21", 15020)).await >= 300.0);
}

/// The `ztunnel` program with `CAPTURE=zds` takes its pods from istio-cni's node agent (the
/// test plays it): it connects to `INPOD_UDS`, says hello, and is ready once the agent's
/// snapshot is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ztunnel_capturing_through_istio_cni_is_ready_once_the_agent_sent_its_snapshot() {
    use prost::Message;
    use ztunnel::capture::zds::packet::SeqPacketListener;
    use ztunnel::capture::zds::proto::{
        Request, Response, SnapshotSent, WorkloadRequest, WorkloadResponse, ZdsHello,
    };

    // A setting of another capture mode is refused, not ignored.
    let mut mixed = program("ztunnel");
    mixed
        .env("NODE_NAME", "node-a")
        .env("CAPTURE", "zds")
        .env("NETNS_DIR", "/run/x");
    let stderr = refusal(&mut mixed).await;
    assert!(
        stderr.contains("NETNS_DIR") && stderr.contains("netns-dir only"),
        "{stderr}"
    );

    let block = "127.119.";
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = manifest(tmp.path(), block);
    let (ca, _) = ca_and_certificate(tmp.path(), "spiffe://cluster.local/ns/default/sa/x").await;
    let socket = tmp.path().join("ztunnel.sock");
    let agent = SeqPacketListener::bind(&socket).expect("agent socket");
    let mut ztunnel = program("ztunnel")
        .env("NODE_NAME", "node-a")
        .env("ADMIN_ADDRESS", "127.0.0.1:25078")
        .env("MESH_CONFIG", &config)
        .env("CA_DIR", &ca)
        .env("CAPTURE", "zds")
        .env("INPOD_UDS", &socket)
        .spawn()
        .expect("ztunnel starts");
    let conn = tokio::time::timeout(Duration::from_secs(20), agent.accept())
        .await
        .expect("the ztunnel connects to the agent")
        .expect("accept");
    let hello = conn.recv().await.expect("recv").expect("hello");
    let hello = ZdsHello::decode(hello.data.as_slice()).expect("ZdsHello");
    assert_eq!(hello.version, 1);
    let status = addr_in(block, "1.1", 15021);
    let early = http_get(status, "/healthz/ready").await;
    assert!(
        early.as_deref().map_or(true, |body| body != "ready\n"),
        "ready before the snapshot"
    );
    let sent = WorkloadRequest {
        payload: Some(Request::SnapshotSent(SnapshotSent {})),
    };
    conn.send(&sent.encode_to_vec(), None).await.expect("send");
    let ack = conn.recv().await.expect("recv").expect("ack");
    let ack = WorkloadResponse::decode(ack.data.as_slice()).expect("WorkloadResponse");
    assert!(matches!(ack.payload, Some(Response::Ack(a)) if a.error.is_empty()));
    wait_ready("node-a", status, &mut ztunnel).await;
    let pid = ztunnel.id().expect("running").to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let exit = tokio::time::timeout(Duration::from_secs(15), ztunnel.wait()).await;
    assert!(exit.expect("ztunnel exits").expect("wait").success());
}
