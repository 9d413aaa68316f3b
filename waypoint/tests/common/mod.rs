//! A waypoint on its own, for testing one L7 feature at a time: real HBONE in (a client with
//! the identity a test chooses), the real waypoint (Pingora, egress, pool), and real HBONE out
//! to test backends that play each endpoint's ztunnel and serve HTTP/1.1 and h2c inside the
//! tunnel. Everything binds its own loopback block, so tests run in parallel.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_config::fixtures::{self, yaml};
use mesh_config::{ObjectRef, Store};
use mesh_hbone::{
    CertificateProvider, ConnectRequest, Identity, LocalCa, Pool, PoolConfig, PoolKey,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use waypoint::{WaypointServer, WaypointSettings};

pub const TRUST_DOMAIN: &str = "cluster.local";

/// `127.<block>.<rest>`.
pub fn ip(block: u8, rest: &str) -> IpAddr {
    format!("127.{block}.{rest}").parse().expect("test address")
}

/// A mesh of the smallest shape a waypoint test needs, in loopback block `block`: node `node-a`,
/// a waypoint `default/waypoint` (pod `127.<block>.2.20`), Service `reviews` (VIP
/// `127.<block>.100.12`, port 9080, bound to the waypoint) with pods `reviews-v1`
/// (`127.<block>.2.10`) and `reviews-v2` (`127.<block>.2.11`), and a caller pod `sleep`
/// (`127.<block>.1.10`). `extra` objects (routes, policies) are added as given. The reviews
/// port is named `http`, so backends are spoken to in HTTP/1.1.
pub fn manifest(block: u8, extra: &[Value]) -> String {
    manifest_with_port(block, "http", extra)
}

/// As [`manifest`], with the reviews port named `port_name` (`grpc`: HTTP/2 to backends;
/// a name that declares no protocol: as the caller speaks).
pub fn manifest_with_port(block: u8, port_name: &str, extra: &[Value]) -> String {
    let at = |rest: &str| ip(block, rest).to_string();
    let mut reviews = fixtures::service(
        "default",
        "reviews",
        &at("100.12"),
        json!({"app": "reviews"}),
    );
    reviews["metadata"]["labels"] = json!({"istio.io/use-waypoint": "waypoint"});
    reviews["spec"]["ports"] = json!([{"name": port_name, "port": 9080, "targetPort": 9080}]);
    let mut objs = vec![
        fixtures::node("node-a", &at("0.1")),
        fixtures::waypoint_gateway("default", "waypoint", Some("service")),
        fixtures::waypoint_pod("default", "waypoint", &at("2.20")),
        reviews,
        fixtures::pod(
            "default",
            "reviews-v1",
            &at("2.10"),
            json!({"app": "reviews", "version": "v1"}),
        ),
        fixtures::pod(
            "default",
            "reviews-v2",
            &at("2.11"),
            json!({"app": "reviews", "version": "v2"}),
        ),
        fixtures::pod("default", "sleep", &at("1.10"), json!({"app": "sleep"})),
    ];
    objs.extend_from_slice(extra);
    yaml(&objs)
}

/// An HTTPRoute `default/reviews` on the reviews Service port with `rules`.
pub fn route_to_reviews(rules: Value) -> Value {
    let parent = json!([{"group": "", "kind": "Service", "name": "reviews", "port": 9080}]);
    fixtures::http_route("default", "reviews", parent, rules)
}

/// A running waypoint and the CA every party's certificate comes from.
pub struct Harness {
    pub block: u8,
    pub store: Arc<Store>,
    pub registry: prometheus::Registry,
    pub ca: Arc<LocalCa>,
    pub waypoint_addr: SocketAddr,
    pub client_pool: Pool,
    shutdown: CancellationToken,
}

impl Harness {
    /// Starts waypoint `default/waypoint` from `manifest` (see [`manifest`]).
    pub async fn start(block: u8, manifest: &str) -> anyhow::Result<Self> {
        Self::start_with(block, manifest, waypoint::Timeouts::default()).await
    }

    /// As [`Harness::start`], with `timeouts`.
    pub async fn start_with(
        block: u8,
        manifest: &str,
        timeouts: waypoint::Timeouts,
    ) -> anyhow::Result<Self> {
        Self::start_trusting(block, manifest, timeouts, None).await
    }

    /// As [`Harness::start_with`], verifying `https` key servers with `jwks_tls`.
    pub async fn start_trusting(
        block: u8,
        manifest: &str,
        timeouts: waypoint::Timeouts,
        jwks_tls: Option<Arc<rustls::ClientConfig>>,
    ) -> anyhow::Result<Self> {
        let snapshot = mesh_config::compile(vec![("test.yaml".into(), manifest.to_string())])
            .map_err(|e| anyhow::anyhow!("manifest: {e}"))?;
        let store = Store::new(snapshot);
        let ca = Arc::new(LocalCa::new(TRUST_DOMAIN)?);
        let certs: Arc<dyn CertificateProvider> = ca.clone();
        let settings = WaypointSettings {
            waypoint: ObjectRef::new("default", "waypoint"),
            address: ip(block, "2.20"),
            hbone_port: mesh_core::ports::HBONE,
            identity: Identity::new(TRUST_DOMAIN, "default", "waypoint-0"),
            header_limits: waypoint::HeaderLimits::default(),
            timeouts,
            jwks_tls,
            netns: None,
        };
        let registry = prometheus::Registry::new();
        let pool = Pool::new(certs.clone(), waypoint::upstream_pool_config());
        let server = WaypointServer::bind(settings, store.clone(), certs.clone(), pool, &registry)
            .await
            .context("binding the waypoint")?;
        let waypoint_addr = server.local_addr()?;
        let shutdown = CancellationToken::new();
        tokio::spawn(server.run(shutdown.clone()));
        Ok(Harness {
            block,
            store,
            registry,
            ca: ca.clone(),
            waypoint_addr,
            client_pool: Pool::new(certs, PoolConfig::default()),
            shutdown,
        })
    }

    /// An HBONE tunnel to the waypoint from pod `127.<block>.<source>` with service account
    /// `caller` (`namespace/name`, or a name in `default`), addressed to `authority` (what the
    /// caller's ztunnel would send).
    pub async fn tunnel(
        &self,
        caller: &str,
        source: &str,
        authority: &str,
    ) -> anyhow::Result<mesh_hbone::HboneStream> {
        let (namespace, account) = caller.split_once('/').unwrap_or(("default", caller));
        let key = PoolKey {
            source: Identity::new(TRUST_DOMAIN, namespace, account),
            source_ip: Some(ip(self.block, source)),
            source_netns: None,
            destination: self.waypoint_addr,
            expected: vec![Identity::new(TRUST_DOMAIN, "default", "waypoint-0")],
        };
        let request = ConnectRequest {
            authority: authority.to_string(),
            headers: http::HeaderMap::new(),
        };
        Ok(self.client_pool.connect(&key, request).await?)
    }

    /// An HTTP/1.1 client inside a tunnel from `sleep` to the reviews VIP.
    pub async fn http1(&self, caller: &str) -> anyhow::Result<Client> {
        let stream = self.tunnel(caller, "1.10", &self.reviews_vip()).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Client::Http1(sender))
    }

    /// An h2c client inside a tunnel from `sleep` to the reviews VIP.
    pub async fn h2c(&self, caller: &str) -> anyhow::Result<Client> {
        let stream = self.tunnel(caller, "1.10", &self.reviews_vip()).await?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        Ok(Client::Http2(sender))
    }

    pub fn reviews_vip(&self) -> String {
        SocketAddr::new(ip(self.block, "100.12"), 9080).to_string()
    }

    /// Starts the backend pod `reviews-<version>` (`v1` at `.2.10`, `v2` at `.2.11`),
    /// serving HTTP/1.1 and h2c.
    pub async fn backend(&self, version: &str) -> anyhow::Result<Backend> {
        self.backend_speaking(version, Protocols::Both).await
    }

    /// As [`Harness::backend`], speaking only `protocols`.
    pub async fn backend_speaking(
        &self,
        version: &str,
        protocols: Protocols,
    ) -> anyhow::Result<Backend> {
        let rest = match version {
            "v1" => "2.10",
            "v2" => "2.11",
            other => anyhow::bail!("no backend pod reviews-{other}"),
        };
        let identity = Identity::new(TRUST_DOMAIN, "default", format!("reviews-{version}"));
        Backend::start(
            self.ca.clone(),
            ip(self.block, rest),
            identity,
            version,
            protocols,
        )
        .await
    }

    /// [`Harness::metric`] once it reaches `at_least` (metrics are recorded as a request's
    /// log is written, just after its response), or its value after 2 s.
    pub async fn wait_metric(&self, metric: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        for _ in 0..100 {
            let value = self.metric(metric, labels);
            if value >= at_least {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.metric(metric, labels)
    }

    /// The value of `metric` whose labels include all of `labels` (summed), from the registry:
    /// a counter's count, or a histogram's sum of observations.
    pub fn metric(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        let mut total = 0.0;
        for family in self.registry.gather().iter().filter(|f| f.name() == metric) {
            for m in family.get_metric() {
                let all = labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                });
                if all {
                    total += m.get_counter().get_value() + m.get_histogram().get_sample_sum();
                }
            }
        }
        total
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A request body a test writes: whole, or streamed from a task.
pub type TestBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A client on one tunnel.
pub enum Client {
    Http1(hyper::client::conn::http1::SendRequest<TestBody>),
    Http2(hyper::client::conn::http2::SendRequest<TestBody>),
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    pub trailers: Option<http::HeaderMap>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> anyhow::Result<Reply> {
        let request = request.map(|body| body.map_err(|never| match never {}).boxed());
        let response = self.start(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let collected =
            tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
                .await
                .context("response body timed out")??;
        let trailers = collected.trailers().cloned();
        let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
        Ok(Reply {
            status,
            headers,
            body,
            trailers,
        })
    }

    /// Sends `request` and returns as soon as the response head is in.
    pub async fn start(
        &mut self,
        request: Request<TestBody>,
    ) -> anyhow::Result<Response<Incoming>> {
        Ok(match self {
            Client::Http1(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
            Client::Http2(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
        })
    }

    /// `GET path` with the reviews Service as host.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Reply> {
        let request = Request::get(format!("http://reviews.default:9080{path}"))
            .header(http::header::HOST, "reviews.default:9080")
            .body(Full::new(Bytes::new()))?;
        self.send(request).await
    }

    /// A unary gRPC-shaped call (`POST /<service>/<method>`, `content-type: application/grpc`).
    pub async fn grpc(&mut self, path: &str) -> anyhow::Result<Reply> {
        let request = Request::post(format!("http://reviews.default:9080{path}"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))?;
        self.send(request).await
    }
}

const BACKEND_MAX_HEADERS: usize = 200;

/// What a backend app speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocols {
    Both,
    Http1Only,
    /// HTTP/1.1 only, and a connection's second request closes it unanswered, with no
    /// `Connection: close` before (an app whose keep-alive timeout fires as a request
    /// arrives): the request reached the app, but no response will come.
    Http1DroppingReused,
}

/// A backend pod: its "ztunnel" (an HBONE server presenting the pod's identity) and, inside
/// each tunnel, an echo app. Each response says which backend served it (`x-backend`) over
/// which protocol (`x-backend-protocol`) and echoes the request's headers as
/// `x-echo-<name>`; gRPC calls get `grpc-status: 0` trailers. A path ending in `/echo` streams
/// the request body back; `/big` answers 8 MiB; `/stall` never answers; `/slow` answers after
/// 200 ms. A path with a segment `fail-<version>` (this backend's) or `fail-all` misbehaves as
/// the next segment says (see [`Fault`]).
pub struct Backend {
    shutdown: CancellationToken,
    open_tunnels: Arc<std::sync::atomic::AtomicUsize>,
    tunnels_opened: Arc<std::sync::atomic::AtomicUsize>,
    seen: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// Each request that reached the app: path, `Host`, and (for paths ending in
    /// `/count-body`, whose body the app reads whole) the body's length.
    requests: Arc<std::sync::Mutex<Vec<Seen>>>,
}

/// One request as the app saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub host: String,
    pub body_len: Option<usize>,
}

impl Backend {
    pub async fn start(
        ca: Arc<LocalCa>,
        ip: IpAddr,
        identity: Identity,
        name: &str,
        protocols: Protocols,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::new(ip, mesh_core::ports::HBONE)).await?;
        let tls = mesh_hbone::server_config(ca, identity)?;
        let shutdown = CancellationToken::new();
        let name: Arc<str> = name.into();
        let open_tunnels = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = open_tunnels.clone();
        let tunnels_opened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let opened = tunnels_opened.clone();
        let seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let seen_by_app = seen.clone();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let requests_by_app = requests.clone();
        let handler = move |connect: mesh_hbone::InboundConnect| {
            let name = name.clone();
            let open = OpenTunnel::count(counter.clone());
            opened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let seen = seen_by_app.clone();
            let requests = requests_by_app.clone();
            async move {
                let _open = open;
                let Ok(stream) = connect.accept(http::HeaderMap::new()) else {
                    return;
                };
                let served = std::sync::atomic::AtomicUsize::new(0);
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let path = req.uri().path().to_owned();
                    *seen.lock().expect("seen").entry(path.clone()).or_default() += 1;
                    let host = (req.headers().get(http::header::HOST))
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned)
                        .or_else(|| req.uri().authority().map(|a| a.to_string()))
                        .unwrap_or_default();
                    if path.ends_with("/count-body") {
                        let requests = requests.clone();
                        let name = name.clone();
                        return futures::future::Either::Left(async move {
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let body_len = body.as_ref().ok().map(Bytes::len);
                            let seen = Seen {
                                path,
                                host,
                                body_len,
                            };
                            requests.lock().expect("requests").push(seen);
                            let text = format!("{name} {body_len:?}");
                            let response = Response::builder()
                                .header("x-backend", &*name)
                                .body(
                                    Full::new(Bytes::from(text))
                                        .map_err(|never| match never {})
                                        .boxed(),
                                )
                                .expect("valid response");
                            Ok::<_, std::io::Error>(response)
                        });
                    }
                    let seen = Seen {
                        path,
                        host,
                        body_len: None,
                    };
                    requests.lock().expect("requests").push(seen);
                    let nth = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let drop_it = (protocols == Protocols::Http1DroppingReused && nth > 0)
                        || Fault::asked(&name, req.uri().path()) == Some(Fault::Reset);
                    let answer = echo(name.clone(), req);
                    futures::future::Either::Right(async move {
                        if drop_it {
                            return Err(std::io::Error::other("dropped unanswered"));
                        }
                        answer.await.map_err(|never| match never {})
                    })
                });
                let io = TokioIo::new(stream);
                let _ = match protocols {
                    Protocols::Both => {
                        let mut builder =
                            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        // Above the waypoint's own header limits, so the waypoint's are tested.
                        builder.http1().max_headers(BACKEND_MAX_HEADERS);
                        builder.serve_connection(io, service).await
                    }
                    Protocols::Http1Only | Protocols::Http1DroppingReused => {
                        hyper::server::conn::http1::Builder::new()
                            .max_headers(BACKEND_MAX_HEADERS)
                            .serve_connection(io, service)
                            .await
                            .map_err(Into::into)
                    }
                };
            }
        };
        tokio::spawn(mesh_hbone::Server::new(tls).serve(listener, handler, shutdown.clone()));
        Ok(Backend {
            shutdown,
            open_tunnels,
            tunnels_opened,
            seen,
            requests,
        })
    }

    /// How many requests for `path` reached the app.
    pub fn times_seen(&self, path: &str) -> usize {
        self.seen
            .lock()
            .expect("seen")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Every request that reached the app so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.requests.lock().expect("requests").clone()
    }

    /// Tunnels (app connections) this backend has accepted, ever.
    pub fn tunnels_opened(&self) -> usize {
        self.tunnels_opened
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Tunnels into this backend whose app connection is still being served.
    pub fn open_tunnels(&self) -> usize {
        self.open_tunnels.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Counts one served tunnel for as long as it lives.
struct OpenTunnel(Arc<std::sync::atomic::AtomicUsize>);

impl OpenTunnel {
    fn count(counter: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        OpenTunnel(counter)
    }
}

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How a backend misbehaves when a request's path asks it to: `/…/fail-<version>/<fault>/…`
/// or `/…/fail-all/<fault>/…`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `<code>`: answers with that status.
    Status(u16),
    /// `reset`: closes the connection (HTTP/1.1) or resets the stream (HTTP/2) unanswered.
    Reset,
    /// `unavailable`: a trailers-only gRPC answer with status 14 (`UNAVAILABLE`).
    GrpcUnavailable,
    /// `stall`: never answers.
    Stall,
}

impl Fault {
    /// The fault `path` asks of the backend named `name`.
    pub fn asked(name: &str, path: &str) -> Option<Fault> {
        let mut segments = path.split('/');
        segments.find(|s| {
            s.strip_prefix("fail-")
                .is_some_and(|who| who == name || who == "all")
        })?;
        match segments.next()? {
            "reset" => Some(Fault::Reset),
            "unavailable" => Some(Fault::GrpcUnavailable),
            "stall" => Some(Fault::Stall),
            code => code.parse().ok().map(Fault::Status),
        }
    }
}

async fn echo(
    name: Arc<str>,
    req: Request<Incoming>,
) -> Result<Response<http_body_util::combinators::BoxBody<Bytes, hyper::Error>>, Infallible> {
    let empty = || {
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed()
    };
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut response = Response::builder()
        .status(200)
        .header("x-backend", &*name)
        .header("x-backend-protocol", format!("{:?}", req.version()))
        .header(
            "x-seen-path",
            req.uri().path_and_query().map_or("/", |p| p.as_str()),
        );
    for (header, value) in req.headers() {
        response = response.header(format!("x-echo-{header}"), value);
    }
    if req.uri().path().ends_with("/stall") {
        // A backend that has stopped: never answers.
        std::future::pending::<()>().await;
    }
    if req.uri().path().ends_with("/slow") {
        // Answers after 200 ms, so that concurrent requests overlap.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match Fault::asked(&name, req.uri().path()) {
        Some(Fault::Status(code)) => {
            let response = response.status(code).body(empty());
            return Ok(response.expect("valid response"));
        }
        Some(Fault::GrpcUnavailable) => {
            let response = response
                .header(http::header::CONTENT_TYPE, "application/grpc")
                .header("grpc-status", "14")
                .header("grpc-message", "unavailable on purpose")
                .body(empty());
            return Ok(response.expect("valid response"));
        }
        Some(Fault::Stall) => std::future::pending::<()>().await,
        Some(Fault::Reset) | None => {}
    }
    if req.uri().path() == "/big" {
        // 8 MiB, streamed in 64 KiB chunks.
        let chunk = Bytes::from(vec![b'b'; 64 << 10]);
        let frames = futures::stream::iter(
            (0..128).map(move |_| Ok::<_, hyper::Error>(hyper::body::Frame::data(chunk.clone()))),
        );
        let body = http_body_util::StreamBody::new(frames).boxed();
        return Ok(response.body(body).expect("valid response"));
    }
    if req.uri().path().ends_with("/echo") {
        // The request body streams back as it arrives.
        return Ok(response
            .body(req.into_body().boxed())
            .expect("valid response"));
    }
    let body = format!("{name} {} {}", req.method(), req.uri().path());
    if grpc {
        let trailers: http::HeaderMap = [(
            http::HeaderName::from_static("grpc-status"),
            http::HeaderValue::from_static("0"),
        )]
        .into_iter()
        .collect();
        let frames = http_body_util::StreamBody::new(futures::stream::iter([
            Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
            Ok(hyper::body::Frame::trailers(trailers)),
        ]));
        let response = response
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(frames.map_err(|never| match never {}).boxed())
            .expect("valid response");
        return Ok(response);
    }
    Ok(response
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("valid response"))
}

/// `ci` rounds, times `MESH_RELIABILITY_ROUNDS` when `scripts/reliability` sets it.
pub fn rounds(ci: u32) -> u32 {
    let scale = std::env::var("MESH_RELIABILITY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    ci * scale
}
