//! A scripted Kubernetes API server for tests (feature `testing`): it holds objects per
//! resource and speaks the real list/watch HTTP protocol (JSON lists with resourceVersions,
//! newline-delimited watch events replayed from a resourceVersion, `410 Gone` once its history
//! is compacted) to an unmodified kube-rs client. A real API server cannot run here.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::KINDS;

type Body = BoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Collection {
    items: BTreeMap<(String, String), Value>,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    /// Every event, by resourceVersion, for watches that resume from a version.
    history: Vec<(u64, Value)>,
    /// Watches resuming from before this version get `410 Gone` (history compacted).
    compacted: u64,
}

/// An API server holding objects per resource (plural), serving lists and watches.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<(u64, HashMap<String, Collection>)>>,
    /// Resources answered `404 Not Found`, as for a CRD that is not installed.
    unserved: Arc<Mutex<Vec<String>>>,
}

const GONE: &str = r#"{"type":"ERROR","object":{"apiVersion":"v1","kind":"Status","status":"Failure","reason":"Expired","code":410,"message":"too old resource version"}}"#;

impl FakeApi {
    /// Stores `obj` (a new uid if it has none, the next resourceVersion) and tells watchers,
    /// unless `quietly` (the event is lost on the way, as on a broken connection; a watch
    /// that resumes from an earlier version still gets it).
    pub fn put_with(&self, obj: Value, quietly: bool) {
        let plural = plural_of(&obj);
        let mut state = self.state.lock().expect("lock");
        state.0 += 1;
        let version = state.0;
        let mut obj = obj;
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        meta.entry("uid")
            .or_insert_with(|| json!(format!("uid-{version}")));
        meta.insert("resourceVersion".into(), json!(version.to_string()));
        let key = (
            meta.get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            meta["name"].as_str().expect("name").to_string(),
        );
        let collection = state.1.entry(plural).or_default();
        let kind = if collection.items.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        collection.items.insert(key, obj.clone());
        let event = json!({"type": kind, "object": obj});
        collection.history.push((version, event.clone()));
        if !quietly {
            send(collection, &event);
        }
    }

    pub fn put(&self, obj: Value) {
        self.put_with(obj, false);
    }

    pub fn delete(&self, plural: &str, namespace: &str, name: &str) {
        let mut state = self.state.lock().expect("lock");
        state.0 += 1;
        let version = state.0;
        let collection = state.1.entry(plural.to_string()).or_default();
        let key = (namespace.to_string(), name.to_string());
        if let Some(obj) = collection.items.remove(&key) {
            let event = json!({"type": "DELETED", "object": obj});
            collection.history.push((version, event.clone()));
            send(collection, &event);
        }
    }

    /// Compacts `plural`'s history and ends its watches with `410 Gone`: a watcher must list
    /// again to learn what it missed.
    pub fn expire_watches(&self, plural: &str) {
        let mut state = self.state.lock().expect("lock");
        let version = state.0;
        let collection = state.1.entry(plural.to_string()).or_default();
        collection.compacted = version + 1;
        collection.history.clear();
        let gone: Value = serde_json::from_str(GONE).expect("json");
        send(collection, &gone);
        collection.watchers.clear();
    }

    /// Sends a line that is not JSON on every watch of `plural`.
    pub fn garble_watches(&self, plural: &str) {
        let mut state = self.state.lock().expect("lock");
        let collection = state.1.entry(plural.to_string()).or_default();
        for watcher in &collection.watchers {
            let _ = watcher.send(Bytes::from_static(b"{this is not json\n"));
        }
        collection.watchers.clear();
    }

    /// Answers `404 Not Found` for `plural` from now on (`serve_again` undoes it).
    pub fn stop_serving(&self, plural: &str) {
        self.unserved.lock().expect("lock").push(plural.to_string());
    }

    /// Serves `plural` again (its CRD installed).
    pub fn serve_again(&self, plural: &str) {
        self.unserved.lock().expect("lock").retain(|p| p != plural);
    }

    fn respond(&self, request: &Request<Incoming>) -> Response<Body> {
        let Some((plural, namespace)) = resource(request.uri().path()) else {
            return status(StatusCode::NOT_FOUND);
        };
        if self.unserved.lock().expect("lock").contains(&plural) {
            return not_found(&plural);
        }
        let query = request.uri().query().unwrap_or("");
        let param = |name: &str| {
            (query.split('&')).find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        };
        let watch = matches!(param("watch"), Some("true" | "1"));
        let from: u64 = param("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut state = self.state.lock().expect("lock");
        let version = state.0;
        let collection = state.1.entry(plural.clone()).or_default();
        if watch {
            let (tx, rx) = mpsc::unbounded_channel();
            if from < collection.compacted {
                let _ = tx.send(Bytes::from(format!("{GONE}\n")));
            } else {
                // What happened since the version the watch resumes from, then live events.
                for (_, event) in collection.history.iter().filter(|(v, _)| *v > from) {
                    let _ = tx.send(Bytes::from(format!("{event}\n")));
                }
                collection.watchers.push(tx);
            }
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                let line = rx.recv().await?;
                Some((Ok::<_, Infallible>(Frame::data(line)), rx))
            });
            return Response::new(BodyExt::boxed(StreamBody::new(stream)));
        }
        let items: Vec<&Value> = (collection.items.iter())
            .filter(|((ns, _), _)| namespace.as_deref().is_none_or(|want| want == ns))
            .map(|(_, obj)| obj)
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List",
                          "metadata": {"resourceVersion": version.to_string()}, "items": items});
        let body = Full::new(Bytes::from(list.to_string()));
        let mut response = Response::new(BodyExt::boxed(body));
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().expect("value"));
        response
    }
}

fn send(collection: &mut Collection, event: &Value) {
    let line = Bytes::from(format!("{event}\n"));
    collection.watchers.retain(|w| w.send(line.clone()).is_ok());
}

/// A `404` as the API server words it (kube-rs reads the Status body).
fn not_found(plural: &str) -> Response<Body> {
    let body = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
        "reason": "NotFound", "code": 404,
        "message": format!("the server could not find the requested resource ({plural})")});
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("value"));
    response
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::new())));
    *response.status_mut() = code;
    response
}

/// `/api/v1[/namespaces/<ns>]/<plural>` or `/apis/<g>/<v>[/namespaces/<ns>]/<plural>`.
fn resource(path: &str) -> Option<(String, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    match rest {
        [plural] => Some((plural.to_string(), None)),
        ["namespaces", ns, plural] => Some((plural.to_string(), Some(ns.to_string()))),
        _ => None,
    }
}

fn plural_of(obj: &Value) -> String {
    let kind = obj["kind"].as_str().expect("kind");
    let found = KINDS
        .iter()
        .find(|k| k.kind == kind)
        .expect("a kind the mesh reads");
    found.plural.to_string()
}

/// Serves `api` on an ephemeral loopback port until `stop`; returns the address.
pub async fn serve(api: FakeApi, stop: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted.expect("accept"),
                () = stop.cancelled() => return,
            };
            let api = api.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = api.respond(&request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}
