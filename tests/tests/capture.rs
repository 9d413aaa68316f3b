//! Transparent capture in network namespaces: pods are namespaces on a bridge (an island with
//! no route to the host), the ztunnel listens inside each and writes its redirect rules, and
//! apps and clients run in their pods' namespaces with no proxy setting. Needs root (CI runs
//! as root); fails, never skips, when namespaces cannot be made.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use loadtest::echo::EchoServer;
use mesh::island::{Island, IslandPod};
use mesh_config::Store;
use mesh_hbone::{LocalCa, Pool, PoolConfig};
use mesh_runtime::Netns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use ztunnel::capture::Capture;
use ztunnel::{Ztunnel, ZtunnelSettings};

const MESH: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 127.0.120.1}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: default, labels: {app: sleep}}
spec:
  nodeName: node-a
  serviceAccountName: sleep
  containers: [{name: sleep, image: sleep}]
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: default, labels: {app: echo}}
spec:
  nodeName: node-a
  serviceAccountName: echo
  containers: [{name: echo, image: echo, ports: [{containerPort: 8080}, {containerPort: 9000}]}]
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: banner, port: 9000, targetPort: 9000}
"#;

const SLEEP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const ECHO: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
/// A namespace on the island that no config knows: outside the mesh, never captured.
const OUTSIDER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 99);
const SERVICE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// The island, its ztunnel and the echo pod's two apps.
struct Captured {
    island: Island,
    readiness: mesh_runtime::Readiness,
    store: Arc<Store>,
    registry: prometheus::Registry,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Captured {
    async fn start(tag: &str, extra_yaml: &str) -> anyhow::Result<Captured> {
        Captured::start_with(tag, extra_yaml, None).await
    }

    /// With `zds`, the ztunnel takes its pods from the node agent at that socket (which the
    /// test plays) instead of from the island's directory.
    async fn start_with(
        tag: &str,
        extra_yaml: &str,
        zds: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Captured> {
        let dir = tempfile::tempdir()?;
        let pods = [
            ("default.sleep", SLEEP),
            ("default.echo", ECHO),
            ("outside.client", OUTSIDER),
        ]
        .map(|(name, ip)| IslandPod {
            name: name.into(),
            ip,
        });
        let mut island = Island::create(
            &format!("mesh-{tag}-"),
            &dir.path().join("netns"),
            "10.244.0.0/16".parse()?,
        )
        .context("building the island of network namespaces (needs root, iproute2, iptables)")?;
        island.sync(&pods)?;
        let yaml = format!("{MESH}{extra_yaml}");
        let snapshot = mesh_config::compile(vec![("mesh.yaml".into(), yaml)])?;
        let ca = Arc::new(LocalCa::new(snapshot.trust_domain())?);
        let store = Store::new(snapshot);
        let ztunnel_store = store.clone();
        let registry = prometheus::Registry::new();
        let from_agent = zds.is_some();
        let capture = match zds {
            Some(socket) => Capture::Zds(socket),
            None => Capture::NetnsDir(island.dir().to_path_buf()),
        };
        let settings = ZtunnelSettings {
            capture,
            ..ZtunnelSettings::new("node-a")
        };
        let pool = Pool::new(ca.clone(), PoolConfig::default());
        let ztunnel = Ztunnel::new(settings, ztunnel_store, ca, pool, &registry)?;
        let readiness = ztunnel.readiness();
        let stop = CancellationToken::new();
        tokio::spawn(ztunnel.run(stop.clone()));
        let echo_netns = island.netns("default.echo")?;
        // One app on every address of its pod, one on the pod's address alone.
        let http = echo_netns.listen(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 8080))?;
        tokio::spawn(EchoServer::new("echo").serve(http, stop.clone()));
        let banner = echo_netns.listen(SocketAddr::new(ECHO.into(), 9000))?;
        tokio::spawn(serve_banner(banner, stop.clone()));
        // A ztunnel fed by a node agent is ready once the agent sent its snapshot.
        if !from_agent {
            wait_ready(&readiness).await?;
        }
        Ok(Captured {
            island,
            readiness,
            store,
            registry,
            stop,
            _dir: dir,
        })
    }

    /// Replaces the config with the base mesh plus `extra_yaml`.
    fn configure(&self, extra_yaml: &str) {
        let yaml = format!("{MESH}{extra_yaml}");
        let snapshot = mesh_config::compile(vec![("mesh.yaml".into(), yaml)]).expect("compiles");
        self.store.replace(snapshot);
    }

    fn pod(&self, name: &str) -> Netns {
        self.island.netns(name).expect("pod namespace")
    }

    /// [`Captured::metric`] once it reaches `expected` (a connection is counted closed just
    /// after its client sees it end), or after 3 s.
    async fn metric_until(&self, name: &str, labels: &[(&str, &str)], expected: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let value = self.metric(name, labels);
            if value == expected || tokio::time::Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sums the ztunnel's samples of `name` with all of `labels`.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("metrics encode");
        mesh_tests::sum_samples(&text, name, labels)
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn wait_ready(readiness: &mesh_runtime::Readiness) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !readiness.is_ready() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "ztunnel not ready in 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A server-first app: greets every connection before reading anything.
async fn serve_banner(listener: TcpListener, stop: CancellationToken) {
    loop {
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
            () = stop.cancelled() => return,
        };
        tokio::spawn(async move {
            let _ = stream
                .write_all(format!("hello {}\n", peer.ip()).as_bytes())
                .await;
        });
    }
}

/// A TCP connection made inside `netns`, with no proxy setting: what any app does.
async fn connect_from(netns: &Netns, to: SocketAddr) -> std::io::Result<TcpStream> {
    netns.tcp_socket(to.is_ipv4())?.connect(to).await
}

/// `GET /debug` over a new connection from `netns` to `to`; the response, head and body.
async fn get_debug(netns: &Netns, to: SocketAddr) -> anyhow::Result<String> {
    let mut stream = connect_from(netns, to).await?;
    let request = format!("GET /debug HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await??;
    Ok(response)
}

async fn read_line(netns: &Netns, to: SocketAddr) -> anyhow::Result<String> {
    let mut stream = connect_from(netns, to).await?;
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut line)).await??;
    Ok(line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pods_connection_to_a_service_is_captured_and_crosses_the_mesh_over_hbone() {
    let mesh = Captured::start("cap-service", "")
        .await
        .expect("mesh starts");
    let sleep = mesh.pod("default.sleep");
    // No route to a Service address exists but through the ztunnel: an answer proves capture.
    let response = get_debug(&sleep, SocketAddr::new(SERVICE.into(), 80))
        .await
        .expect("request through the mesh");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("x-echo-server: echo"), "{response}");
    // The app sees its real client's address (the ztunnel connected from it, transparently).
    assert!(response.contains(&format!("{SLEEP}:")), "{response}");
    let hbone = [
        ("reporter", "destination"),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert_eq!(
        mesh.metric("istio_tcp_connections_opened_total", &hbone),
        1.0
    );
    let source = [("reporter", "source"), ("source_workload", "sleep")];
    assert_eq!(
        mesh.metric("istio_tcp_connections_opened_total", &source),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_address_and_a_server_first_app_bound_to_the_pod_ip_work_through_capture() {
    let mesh = Captured::start("cap-pod", "").await.expect("mesh starts");
    let sleep = mesh.pod("default.sleep");
    // The server speaks first; nothing is sent by the client at all.
    let line = read_line(&sleep, SocketAddr::new(ECHO.into(), 9000))
        .await
        .expect("banner through the mesh");
    assert_eq!(line, format!("hello {SLEEP}\n"));
    let response = get_debug(&sleep, SocketAddr::new(ECHO.into(), 8080))
        .await
        .expect("request to the pod address");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let hbone = [
        ("reporter", "destination"),
        ("connection_security_policy", "mutual_tls"),
    ];
    assert_eq!(
        mesh.metric("istio_tcp_connections_opened_total", &hbone),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_from_outside_the_mesh_is_delivered_without_identity_when_permissive() {
    let mesh = Captured::start("cap-plain", "").await.expect("mesh starts");
    let outsider = mesh.pod("outside.client");
    let line = read_line(&outsider, SocketAddr::new(ECHO.into(), 9000))
        .await
        .expect("plaintext to a captured pod");
    assert_eq!(line, format!("hello {OUTSIDER}\n"));
    let plaintext = [
        ("reporter", "destination"),
        ("connection_security_policy", "none"),
    ];
    assert_eq!(
        mesh.metric("istio_tcp_connections_opened_total", &plaintext),
        1.0
    );
}

const STRICT_EXCEPT_9000: &str = r#"
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: default}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: banner-open, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  portLevelMtls:
    9000: {mode: PERMISSIVE}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_peer_authentication_refuses_plaintext_but_not_hbone_and_ports_can_be_exempt() {
    let mesh = Captured::start("cap-strict", STRICT_EXCEPT_9000)
        .await
        .expect("mesh starts");
    let outsider = mesh.pod("outside.client");
    let http = SocketAddr::new(ECHO.into(), 8080);
    // Plaintext to the STRICT port: accepted by the kernel (the capture listener), then reset.
    let refused = get_debug(&outsider, http).await;
    assert!(
        refused.as_ref().map_or(true, String::is_empty),
        "{refused:?}"
    );
    let denied = [
        ("reporter", "destination"),
        ("connection_security_policy", "none"),
        ("response_flags", "DENY"),
    ];
    let closed = mesh
        .metric_until("istio_tcp_connections_closed_total", &denied, 1.0)
        .await;
    assert_eq!(closed, 1.0);
    // The exempt port takes plaintext.
    let line = read_line(&outsider, SocketAddr::new(ECHO.into(), 9000))
        .await
        .expect("exempt port");
    assert_eq!(line, format!("hello {OUTSIDER}\n"));
    // A mesh client is unaffected.
    let response = get_debug(&mesh.pod("default.sleep"), http)
        .await
        .expect("HBONE");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_plaintext_connection_is_closed_when_strict_arrives() {
    let mesh = Captured::start("cap-revoke", "")
        .await
        .expect("mesh starts");
    let outsider = mesh.pod("outside.client");
    let mut open = connect_from(&outsider, SocketAddr::new(ECHO.into(), 8080))
        .await
        .expect("connect");
    open.write_all(b"GET /debug HTTP/1.1\r\nHost: echo\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = open.read(&mut buf).await.expect("first response");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    mesh.configure(STRICT_EXCEPT_9000);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match open.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    let plaintext = [
        ("reporter", "destination"),
        ("connection_security_policy", "none"),
    ];
    assert!(
        closed.is_ok(),
        "the plaintext connection outlived the STRICT policy (plaintext connections opened: {}, \
         config version {})",
        mesh.metric("istio_tcp_connections_opened_total", &plaintext),
        mesh.store.load().version(),
    );
}

/// The test's istio-cni node agent: a ZDS server on a SEQPACKET socket.
mod agent {
    use std::os::fd::AsFd;

    use prost::Message;
    use ztunnel::capture::zds::packet::SeqPacket;
    use ztunnel::capture::zds::proto::{
        AddWorkload, DelWorkload, Request, Response, SnapshotSent, WorkloadInfo, WorkloadRequest,
        WorkloadResponse, ZdsHello,
    };

    /// Reads the ztunnel's hello and checks it is version 1.
    pub async fn hello(conn: &SeqPacket) {
        let packet = conn.recv().await.expect("recv").expect("a hello");
        let hello = ZdsHello::decode(packet.data.as_slice()).expect("ZdsHello");
        assert_eq!(hello.version, 1);
    }

    /// Sends `bytes` (with `fd`) and returns the ack's error ("" when accepted).
    pub async fn request(conn: &SeqPacket, bytes: &[u8], fd: Option<&impl AsFd>) -> String {
        conn.send(bytes, fd.map(|f| f.as_fd())).await.expect("send");
        let packet = conn.recv().await.expect("recv").expect("an ack");
        let response = WorkloadResponse::decode(packet.data.as_slice()).expect("WorkloadResponse");
        match response.payload {
            Some(Response::Ack(ack)) => ack.error,
            None => panic!("a response without an ack"),
        }
    }

    pub fn add(uid: &str, namespace: &str, name: &str) -> Vec<u8> {
        let info = WorkloadInfo {
            name: name.into(),
            namespace: namespace.into(),
            service_account: name.into(),
        };
        let add = AddWorkload {
            uid: uid.into(),
            workload_info: Some(info),
        };
        WorkloadRequest {
            payload: Some(Request::Add(add)),
        }
        .encode_to_vec()
    }

    pub fn del(uid: &str) -> Vec<u8> {
        let del = DelWorkload { uid: uid.into() };
        WorkloadRequest {
            payload: Some(Request::Del(del)),
        }
        .encode_to_vec()
    }

    pub fn snapshot_sent() -> Vec<u8> {
        let sent = SnapshotSent {};
        WorkloadRequest {
            payload: Some(Request::SnapshotSent(sent)),
        }
        .encode_to_vec()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_handed_over_by_the_cni_node_agent_are_captured_and_bad_requests_refused_alone() {
    use ztunnel::capture::zds::packet::SeqPacketListener;

    let sockets = tempfile::tempdir().expect("tempdir");
    let socket = sockets.path().join("ztunnel.sock");
    let listener = SeqPacketListener::bind(&socket).expect("agent socket");
    let mesh = Captured::start_with("cap-zds", "", Some(socket))
        .await
        .expect("mesh starts");
    // As istio-cni does, the agent writes the pods' rules itself.
    for pod in ["default.sleep", "default.echo"] {
        ztunnel::capture::install(mesh.pod(pod), Default::default())
            .await
            .expect("rules");
    }
    let conn = listener.accept().await.expect("the ztunnel connects");
    agent::hello(&conn).await;
    assert!(
        !mesh.readiness.is_ready(),
        "ready before the agent's snapshot"
    );
    let netns_file = |pod: &str| std::fs::File::open(mesh.island.dir().join(pod)).expect("netns");
    let (sleep_ns, echo_ns) = (netns_file("default.sleep"), netns_file("default.echo"));
    let accepted = agent::request(
        &conn,
        &agent::add("uid-sleep", "default", "sleep"),
        Some(&sleep_ns),
    )
    .await;
    assert_eq!(accepted, "");
    let accepted = agent::request(
        &conn,
        &agent::add("uid-echo", "default", "echo"),
        Some(&echo_ns),
    )
    .await;
    assert_eq!(accepted, "");
    assert_eq!(
        agent::request(&conn, &agent::snapshot_sent(), None::<&std::fs::File>).await,
        ""
    );
    wait_ready(&mesh.readiness)
        .await
        .expect("ready after the snapshot");

    let sleep = mesh.pod("default.sleep");
    let service = SocketAddr::new(SERVICE.into(), 80);
    let response = get_debug(&sleep, service).await.expect("through the mesh");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // A descriptor that is not a network namespace: that pod is refused, the connection and
    // every other pod go on.
    let not_netns = tempfile::tempfile().expect("file");
    let refused = agent::request(
        &conn,
        &agent::add("uid-bad", "default", "bad"),
        Some(&not_netns),
    )
    .await;
    assert!(refused.contains("not a network namespace"), "{refused}");
    let response = get_debug(&sleep, service)
        .await
        .expect("still through the mesh");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // A connection open to the echo pod when the agent deletes the pod drains: it keeps
    // working, and new connections are no longer served.
    let mut open = connect_from(&sleep, SocketAddr::new(ECHO.into(), 8080))
        .await
        .expect("open");
    assert!(answered_on(&mut open).await, "the first request");
    assert_eq!(
        agent::request(&conn, &agent::del("uid-echo"), None::<&std::fs::File>).await,
        ""
    );
    let gone = async {
        loop {
            if get_debug(&sleep, service).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), gone)
        .await
        .expect("the deleted pod stops being served");
    assert!(answered_on(&mut open).await, "the open connection was cut");

    // A malformed message: refused, and the ztunnel makes a new connection (saying hello
    // again), serving what it served meanwhile.
    let refused = agent::request(&conn, b"\xff\xff\xff", None::<&std::fs::File>).await;
    assert!(refused.contains("undecodable"), "{refused}");
    assert!(
        conn.recv().await.expect("recv").is_none(),
        "the connection was not closed"
    );
    let again = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("reconnects")
        .expect("accept");
    agent::hello(&again).await;
    let line = read_line(&sleep, SocketAddr::new(ECHO.into(), 9000)).await;
    assert!(
        line.as_ref().map_or(true, String::is_empty),
        "echo was deleted: {line:?}"
    );
}

/// `mesh up --netns`'s mesh, in process: the demo in namespaces, through its waypoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_mesh_in_namespaces_captures_pods_through_ztunnels_and_the_waypoint() {
    use mesh::local::{LocalMesh, LocalNetwork, Tuning};

    let dir = tempfile::tempdir().expect("tempdir");
    let manifest =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo-netns.yaml");
    let network = LocalNetwork::Netns {
        prefix: "mtest-up-".into(),
        dir: dir.path().join("netns"),
    };
    let mesh = LocalMesh::start_from_path_in(&manifest, Tuning::default(), network)
        .await
        .expect("the mesh starts in namespaces (needs root, iproute2, iptables)");
    mesh.wait_ready(Duration::from_secs(10))
        .await
        .expect("ready");
    let pod = |name: &str| Netns::open(&dir.path().join("netns").join(name)).expect("pod netns");
    let reviews = SocketAddr::new(Ipv4Addr::new(10, 96, 0, 12).into(), 9080);
    // Through the waypoint: the policy lets productpage call reviews, not sleep.
    let denied = get_debug(&pod("default.sleep"), reviews)
        .await
        .expect("answered");
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    let allowed = get_debug(&pod("default.productpage-v1"), reviews)
        .await
        .expect("answered");
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    assert!(
        allowed.contains("x-mesh-route"),
        "the route's header is missing: {allowed}"
    );
    // Straight to another node's pod, ztunnel to ztunnel.
    let ratings = SocketAddr::new(Ipv4Addr::new(10, 96, 0, 11).into(), 9080);
    let direct = get_debug(&pod("default.productpage-v1"), ratings)
        .await
        .expect("answered");
    assert!(direct.starts_with("HTTP/1.1 200"), "{direct}");
    assert!(direct.contains("x-echo-server: ratings-v1"), "{direct}");
    // An app started by hand in a pod's namespace is reached like any pod.
    let sleep_ip = Ipv4Addr::new(10, 244, 1, 12);
    let by_hand = pod("default.sleep")
        .listen(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 8000))
        .expect("bind in sleep");
    let stop = CancellationToken::new();
    tokio::spawn(serve_banner(by_hand, stop.clone()));
    let line = read_line(
        &pod("default.productpage-v1"),
        SocketAddr::new(sleep_ip.into(), 8000),
    )
    .await
    .expect("the hand-started app answers");
    assert_eq!(line, "hello 10.244.1.10\n");
    stop.cancel();
    mesh.stop().await;
    // The namespaces go with the mesh.
    let left = std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("mtest-up-"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "namespaces left behind");
}

/// A keep-alive `GET /debug` on `open`: whether it was answered 200.
async fn answered_on(open: &mut TcpStream) -> bool {
    let request = b"GET /debug HTTP/1.1\r\nHost: echo\r\n\r\n";
    if open.write_all(request).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; 8192];
    match open.read(&mut buf).await {
        Ok(n) => buf[..n].starts_with(b"HTTP/1.1 200"),
        Err(_) => false,
    }
}

/// Reads until the peer closes or resets; how long that took, `None` after 5 s.
async fn closed_within(stream: &mut TcpStream) -> Option<Duration> {
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read_all)
        .await
        .ok()?;
    Some(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_connections_to_proxy_ports_close_only_themselves_and_never_loop() {
    let mesh = Captured::start("cap-bad", "").await.expect("mesh starts");
    let sleep = mesh.pod("default.sleep");
    // A pod's client that speaks HTTP to the pod's SOCKS5 entry is closed.
    let socks = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 15080);
    let mut garbage = connect_from(&sleep, socks)
        .await
        .expect("SOCKS5 inside the pod");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    assert!(
        closed_within(&mut garbage).await.is_some(),
        "SOCKS5 garbage kept open"
    );
    // Connections addressed to the ztunnel's own ports, here or in another pod, are refused
    // where they end; none comes back around.
    for port in [15001, 15006, 15008] {
        // Refused at once, maybe before the connect itself completes.
        let Ok(mut looped) = connect_from(&sleep, SocketAddr::new(ECHO.into(), port)).await else {
            continue;
        };
        let _ = looped.write_all(b"hello?").await;
        assert!(
            closed_within(&mut looped).await.is_some(),
            "port {port} kept open"
        );
    }
    // Addressed straight to the outbound listener (loopback is never redirected): refused
    // there, not passed through to itself.
    let direct = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 15001);
    if let Ok(mut looped) = connect_from(&sleep, direct).await {
        let _ = looped.write_all(b"hello?").await;
        assert!(
            closed_within(&mut looped).await.is_some(),
            "127.0.0.1:15001 kept open"
        );
    }
    // Each captured connection was one outbound connection: none was captured again.
    let source = [("reporter", "source"), ("source_workload", "sleep")];
    let opened = mesh
        .metric_until("istio_tcp_connections_opened_total", &source, 3.0)
        .await;
    assert_eq!(opened, 3.0);
    // Plaintext garbage is the app's to judge: delivered, answered 400 by the echo app.
    let outsider = mesh.pod("outside.client");
    let mut raw = connect_from(&outsider, SocketAddr::new(ECHO.into(), 8080))
        .await
        .expect("plaintext");
    raw.write_all(b"\x16\x03\x01 not http\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    // Everyone else is served throughout.
    let response = get_debug(&sleep, SocketAddr::new(SERVICE.into(), 80))
        .await
        .expect("served");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_leaving_the_config_loses_its_rules_and_its_open_connections_drain() {
    let mesh = Captured::start("cap-leave", "").await.expect("mesh starts");
    let sleep = mesh.pod("default.sleep");
    let echo = SocketAddr::new(ECHO.into(), 8080);
    let mut open = connect_from(&sleep, echo).await.expect("open");
    assert!(answered_on(&mut open).await, "the first request");
    // The sleep pod leaves the config (its namespace stays, as a pod's does while it ends).
    let without_sleep = MESH
        .replacen(
            "name: sleep, namespace: default",
            "name: gone, namespace: default",
            1,
        )
        .replacen("10.244.1.10", "10.244.1.77", 1);
    let snapshot =
        mesh_config::compile(vec![("mesh.yaml".into(), without_sleep)]).expect("compiles");
    mesh.store.replace(snapshot);
    let rules_gone = async {
        loop {
            let mut save = std::process::Command::new("iptables-save");
            let saved =
                (sleep.output(save.args(["-t", "nat"]), b"")).expect("iptables-save in the pod");
            if !String::from_utf8_lossy(&saved.stdout).contains("REDIRECT") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), rules_gone)
        .await
        .expect("the pod's redirects are removed");
    // Its open connection goes on until it ends.
    assert!(answered_on(&mut open).await, "the open connection was cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_island_left_by_a_crash_is_removed_by_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let network = "10.244.0.0/16".parse().expect("network");
    let mut crashed =
        Island::create("mtest-crash-", &dir.path().join("a"), network).expect("island");
    let pod = IslandPod {
        name: "default.p".into(),
        ip: SLEEP,
    };
    crashed.sync(std::slice::from_ref(&pod)).expect("pod");
    // A crash: nothing removes it.
    std::mem::forget(crashed);
    let mut next =
        Island::create("mtest-crash-", &dir.path().join("b"), network).expect("the next island");
    next.sync(&[pod]).expect("the same pod again");
    let names: Vec<String> = std::fs::read_dir("/var/run/netns")
        .expect("netns dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("mtest-crash-"))
        .collect();
    assert_eq!(
        names.len(),
        2,
        "one hub and one pod, not two of each: {names:?}"
    );
    drop(next);
}
