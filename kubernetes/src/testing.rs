//! A scripted Kubernetes API server for tests (feature `testing`): it holds objects per
//! resource and speaks the real HTTP protocol to an unmodified kube-rs client: lists with
//! resourceVersions and label selectors, newline-delimited watch events replayed from a
//! resourceVersion, `410 Gone` once its history is compacted; and the writes a controller
//! makes: get, server-side apply (the applied object replaces what its one manager wrote; the
//! server's own fields stay; a Service gets a cluster IP), merge patches of an object or its
//! `status`, and delete. Every write is recorded. A real API server cannot run here.

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
    writes: Arc<Mutex<Vec<Write>>>,
}

/// A write the server was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// `apply` (server-side apply), `patch`, `patch status` or `delete`.
    pub verb: &'static str,
    pub plural: String,
    pub namespace: String,
    pub name: String,
    /// The field manager of an apply, and whether it was forced.
    pub manager: Option<String>,
    pub force: bool,
}

/// Which objects a request is about.
struct Target {
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

const GONE: &str = r#"{"type":"ERROR","object":{"apiVersion":"v1","kind":"Status","status":"Failure","reason":"Expired","code":410,"message":"too old resource version"}}"#;

impl FakeApi {
    /// Stores `obj` (a new uid if it has none, the next resourceVersion) and tells watchers,
    /// unless `quietly` (the event is lost on the way, as on a broken connection; a watch
    /// that resumes from an earlier version still gets it).
    pub fn put_with(&self, obj: Value, quietly: bool) {
        self.store(plural_of(&obj), obj, quietly);
    }

    /// Stores `obj` under `plural`; returns it as stored.
    fn store(&self, plural: String, obj: Value, quietly: bool) -> Value {
        let mut state = self.state.lock().expect("lock");
        let mut obj = obj;
        let meta = &obj["metadata"];
        let key = (
            meta["namespace"].as_str().unwrap_or("").to_string(),
            meta["name"].as_str().expect("name").to_string(),
        );
        let existing = state
            .1
            .get(&plural)
            .and_then(|c| c.items.get(&key))
            .cloned();
        // The server's own fields: uid, resourceVersion, and a generation that counts changes
        // of the spec.
        let generation = match &existing {
            Some(old) if old["spec"] == obj["spec"] => old["metadata"]["generation"].clone(),
            Some(old) => json!(old["metadata"]["generation"].as_i64().unwrap_or(0) + 1),
            None => json!(1),
        };
        obj["metadata"]["generation"] = generation;
        if let Some(old) = &existing {
            if obj["metadata"].get("uid").is_none() {
                obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
            }
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            if *old == obj {
                // A write that changes nothing is no change: no new version, no event.
                return obj;
            }
        }
        state.0 += 1;
        let version = state.0;
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        if meta.get("uid").is_none_or(Value::is_null) {
            meta.insert("uid".into(), json!(format!("uid-{version}")));
        }
        meta.insert("resourceVersion".into(), json!(version.to_string()));
        let collection = state.1.entry(plural).or_default();
        let kind = match existing {
            Some(_) => "MODIFIED",
            None => "ADDED",
        };
        collection.items.insert(key, obj.clone());
        let event = json!({"type": kind, "object": obj});
        collection.history.push((version, event.clone()));
        if !quietly {
            send(collection, &event);
        }
        obj
    }

    /// The object stored under `plural`, `namespace` (empty for cluster-scoped) and `name`.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let state = self.state.lock().expect("lock");
        let collection = state.1.get(plural)?;
        let key = (namespace.to_string(), name.to_string());
        collection.items.get(&key).cloned()
    }

    /// Every object stored under `plural`.
    pub fn all(&self, plural: &str) -> Vec<Value> {
        let state = self.state.lock().expect("lock");
        (state.1.get(plural))
            .map(|c| c.items.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The writes made so far, in order.
    pub fn writes(&self) -> Vec<Write> {
        self.writes.lock().expect("lock").clone()
    }

    pub fn put(&self, obj: Value) {
        self.put_with(obj, false);
    }

    /// Deletes the object; returns it, if there was one.
    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let mut state = self.state.lock().expect("lock");
        state.0 += 1;
        let version = state.0;
        let collection = state.1.entry(plural.to_string()).or_default();
        let key = (namespace.to_string(), name.to_string());
        let obj = collection.items.remove(&key)?;
        let event = json!({"type": "DELETED", "object": obj});
        collection.history.push((version, event.clone()));
        send(collection, &event);
        Some(obj)
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

    fn respond(&self, parts: &http::request::Parts, body: &[u8]) -> Response<Body> {
        let Some(target) = target(parts.uri.path()) else {
            return status(StatusCode::NOT_FOUND);
        };
        if self.unserved.lock().expect("lock").contains(&target.plural) {
            return not_found(&target.plural);
        }
        let query = parts.uri.query().unwrap_or("");
        let param = |name: &str| {
            (query.split('&')).find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        };
        match (&parts.method, &target.name) {
            (&http::Method::GET, None) => {
                let watch = matches!(param("watch"), Some("true" | "1"));
                let from = param("resourceVersion").and_then(|v| v.parse().ok());
                let selector = param("labelSelector").map(decode);
                // The one field selector a client here sends: `metadata.name=<name>`.
                let fields = param("fieldSelector").map(decode);
                let name = fields
                    .as_deref()
                    .and_then(|f| f.strip_prefix("metadata.name="));
                let name = name.map(str::to_string);
                match watch {
                    true => self.watch(&target, from.unwrap_or(0), name),
                    false => self.list(&target, selector.as_deref(), name.as_deref()),
                }
            }
            (&http::Method::GET, Some(name)) => {
                let namespace = target.namespace.as_deref().unwrap_or("");
                match self.get(&target.plural, namespace, name) {
                    Some(obj) => json_response(StatusCode::OK, &obj),
                    None => not_found(&target.plural),
                }
            }
            (&http::Method::PATCH, Some(name)) => {
                let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                    return status(StatusCode::BAD_REQUEST);
                };
                let apply = (parts.headers.get("content-type"))
                    .is_some_and(|t| t.as_bytes().starts_with(b"application/apply-patch"));
                let verb = match (apply, target.status) {
                    (true, _) => "apply",
                    (false, true) => "patch status",
                    (false, false) => "patch",
                };
                self.record(Write {
                    verb,
                    plural: target.plural.clone(),
                    namespace: target.namespace.clone().unwrap_or_default(),
                    name: name.clone(),
                    manager: param("fieldManager").map(decode),
                    force: param("force") == Some("true"),
                });
                self.patch(&target, name, patch, apply)
            }
            (&http::Method::DELETE, Some(name)) => {
                let namespace = target.namespace.clone().unwrap_or_default();
                self.record(Write {
                    verb: "delete",
                    plural: target.plural.clone(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                    manager: None,
                    force: false,
                });
                match self.delete(&target.plural, &namespace, name) {
                    Some(obj) => json_response(StatusCode::OK, &obj),
                    None => not_found(&target.plural),
                }
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED),
        }
    }

    fn record(&self, write: Write) {
        self.writes.lock().expect("lock").push(write);
    }

    /// A watch of `target`'s kind, of the object called `name` only when given.
    fn watch(&self, target: &Target, from: u64, name: Option<String>) -> Response<Body> {
        let mut state = self.state.lock().expect("lock");
        let collection = state.1.entry(target.plural.clone()).or_default();
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
        // Events of other objects are not this watch's (a line that is no event passes).
        let wanted = move |line: &Bytes| {
            let event: Option<Value> = serde_json::from_slice(line).ok();
            let named = event
                .as_ref()
                .and_then(|e| e["object"]["metadata"]["name"].as_str());
            match (&name, named) {
                (Some(want), Some(named)) => want == named,
                _ => true,
            }
        };
        let stream = futures::stream::unfold(rx, move |mut rx| {
            let wanted = wanted.clone();
            async move {
                loop {
                    let line = rx.recv().await?;
                    if wanted(&line) {
                        return Some((Ok::<_, Infallible>(Frame::data(line)), rx));
                    }
                }
            }
        });
        Response::new(BodyExt::boxed(StreamBody::new(stream)))
    }

    fn list(&self, target: &Target, selector: Option<&str>, name: Option<&str>) -> Response<Body> {
        let mut state = self.state.lock().expect("lock");
        let version = state.0;
        let collection = state.1.entry(target.plural.clone()).or_default();
        let items: Vec<&Value> = (collection.items.iter())
            .filter(|((ns, _), _)| target.namespace.as_deref().is_none_or(|want| want == ns))
            .filter(|(_, obj)| selector.is_none_or(|s| selects(s, obj)))
            .filter(|((_, named), _)| name.is_none_or(|want| want == named))
            .map(|(_, obj)| obj)
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List",
                          "metadata": {"resourceVersion": version.to_string()}, "items": items});
        json_response(StatusCode::OK, &list)
    }

    /// A server-side apply (`apply`), or a JSON merge patch of the object or its status.
    fn patch(&self, target: &Target, name: &str, patch: Value, apply: bool) -> Response<Body> {
        let namespace = target.namespace.as_deref().unwrap_or("");
        let existing = self.get(&target.plural, namespace, name);
        let updated = match (existing, apply) {
            (None, false) => return not_found(&target.plural),
            (None, true) => {
                let mut created = patch;
                if target.plural == "services" && created["spec"].get("clusterIP").is_none() {
                    let ip = format!("10.96.100.{}", self.all("services").len() + 1);
                    created["spec"]["clusterIP"] = json!(ip);
                }
                created
            }
            (Some(existing), true) => {
                // The one manager's applied object replaces what it wrote before; the fields
                // the server owns stay.
                let mut applied = patch;
                for field in ["uid", "creationTimestamp"] {
                    if let Some(value) = existing["metadata"].get(field) {
                        applied["metadata"][field] = value.clone();
                    }
                }
                if let Some(status) = existing.get("status") {
                    applied["status"] = status.clone();
                }
                if let Some(ip) = existing["spec"].get("clusterIP") {
                    applied["spec"]["clusterIP"] = ip.clone();
                }
                applied
            }
            (Some(mut existing), false) => {
                // A patch naming a resourceVersion applies to that version only, as the
                // API server's optimistic concurrency has it.
                let expected = &patch["metadata"]["resourceVersion"];
                if !expected.is_null() && *expected != existing["metadata"]["resourceVersion"] {
                    let body = json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                        "reason": "Conflict", "code": 409,
                        "message": format!("the object has been modified ({name})")});
                    return json_response(StatusCode::CONFLICT, &body);
                }
                let part = if target.status {
                    json!({"status": patch["status"].clone()})
                } else {
                    patch
                };
                merge_patch(&mut existing, &part);
                existing
            }
        };
        let stored = self.store(target.plural.clone(), updated, false);
        json_response(StatusCode::OK, &stored)
    }
}

/// RFC 7386: objects merge, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(into) = target else { return };
    for (key, value) in fields {
        if value.is_null() {
            into.remove(key);
        } else {
            merge_patch(into.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Whether `obj`'s labels satisfy a selector of `key=value` and `key` terms.
fn selects(selector: &str, obj: &Value) -> bool {
    let labels = &obj["metadata"]["labels"];
    selector.split(',').all(|term| match term.split_once('=') {
        Some((key, value)) => labels[key.trim_end_matches('=')] == value,
        None => labels.get(term).is_some(),
    })
}

/// Percent-decoding of a query value.
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("value"));
    response
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
    json_response(StatusCode::NOT_FOUND, &body)
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::new())));
    *response.status_mut() = code;
    response
}

/// `/api/v1/...` or `/apis/<g>/<v>/...`, then `[namespaces/<ns>/]<plural>[/<name>[/status]]`.
fn target(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    let target = |plural: &str, namespace: Option<&str>, name: Option<&str>, status| Target {
        plural: plural.to_string(),
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        status,
    };
    Some(match rest {
        [plural] => target(plural, None, None, false),
        [plural, name] => target(plural, None, Some(name), false),
        ["namespaces", name, "status"] => target("namespaces", None, Some(name), true),
        ["namespaces", ns, plural] => target(plural, Some(ns), None, false),
        ["namespaces", ns, plural, name] => target(plural, Some(ns), Some(name), false),
        ["namespaces", ns, plural, name, "status"] => target(plural, Some(ns), Some(name), true),
        [plural, name, "status"] => target(plural, None, Some(name), true),
        _ => return None,
    })
}

/// The resource a kind is stored under: the mesh's own table, else the API's rule.
fn plural_of(obj: &Value) -> String {
    let kind = obj["kind"].as_str().expect("kind");
    match crate::kinds::kind(kind) {
        Some(found) => found.plural.to_string(),
        None if kind.ends_with('s') => format!("{}es", kind.to_lowercase()),
        None => format!("{}s", kind.to_lowercase()),
    }
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
                    let api = api.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = match body.collect().await {
                            Ok(collected) => collected.to_bytes(),
                            Err(_) => return Ok::<_, Infallible>(status(StatusCode::BAD_REQUEST)),
                        };
                        Ok(api.respond(&parts, &body))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}
