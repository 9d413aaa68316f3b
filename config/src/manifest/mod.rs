//! Reading manifests: YAML documents → typed Kubernetes-shaped objects, with file/object context.

pub(crate) mod authz;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gateway_api::gateways::Gateway;
use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::core::v1 as core;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ConfigError, Diagnostics, Origin};

/// An AuthorizationPolicy object (hand-written spec; name/namespace come from the header).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct AuthzObject {
    #[serde(default)]
    pub spec: authz::PolicySpec,
}

/// One parsed object with where it came from.
#[derive(Clone, Debug)]
pub(crate) struct Doc<T> {
    pub origin: Origin,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
    pub obj: T,
}

/// Every object of every supported kind, in file order.
#[derive(Default, Debug)]
pub(crate) struct Manifests {
    pub namespaces: Vec<Doc<core::Namespace>>,
    pub nodes: Vec<Doc<core::Node>>,
    pub services: Vec<Doc<core::Service>>,
    pub pods: Vec<Doc<core::Pod>>,
    pub gateways: Vec<Doc<Gateway>>,
    pub routes: Vec<Doc<HttpRoute>>,
    pub policies: Vec<Doc<AuthzObject>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Namespace,
    Node,
    Service,
    Pod,
    Gateway,
    HttpRoute,
    AuthorizationPolicy,
}

impl Kind {
    fn lookup(api_version: &str, kind: &str) -> Option<Self> {
        let gateway = matches!(
            api_version,
            "gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1"
        );
        let security = matches!(
            api_version,
            "security.istio.io/v1" | "security.istio.io/v1beta1"
        );
        match (kind, api_version) {
            ("Namespace", "v1") => Some(Self::Namespace),
            ("Node", "v1") => Some(Self::Node),
            ("Service", "v1") => Some(Self::Service),
            ("Pod", "v1") => Some(Self::Pod),
            ("Gateway", _) if gateway => Some(Self::Gateway),
            ("HTTPRoute", _) if gateway => Some(Self::HttpRoute),
            ("AuthorizationPolicy", _) if security => Some(Self::AuthorizationPolicy),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Namespace => "Namespace",
            Self::Node => "Node",
            Self::Service => "Service",
            Self::Pod => "Pod",
            Self::Gateway => "Gateway",
            Self::HttpRoute => "HTTPRoute",
            Self::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }

    fn namespaced(self) -> bool {
        !matches!(self, Self::Namespace | Self::Node)
    }
}

/// Parses every document of every file; problems go to `diag`.
pub(crate) fn parse(docs: &[(PathBuf, String)], diag: &mut Diagnostics) -> Manifests {
    let mut parser = Parser::default();
    for (file, text) in docs {
        parser.parse_file(file, text, diag);
    }
    parser.out
}

#[derive(Default)]
struct Parser {
    out: Manifests,
    seen: HashMap<(Kind, String, String), PathBuf>,
}

impl Parser {
    fn parse_file(&mut self, file: &Path, text: &str, diag: &mut Diagnostics) {
        for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
            match Value::deserialize(document) {
                Ok(Value::Null) => {}
                Ok(value) => self.add(file, index + 1, value, diag),
                Err(e) => {
                    diag.errors.push(yaml_error(file, index + 1, &e));
                    // The YAML parser cannot resume after a syntax error.
                    return;
                }
            }
        }
    }

    fn add(&mut self, file: &Path, index: usize, value: Value, diag: &mut Diagnostics) {
        let Some(header) = Header::read(file, index, &value, diag) else {
            return;
        };
        let key = (header.kind, header.namespace.clone(), header.name.clone());
        if let Some(first) = self.seen.get(&key) {
            let msg = format!(
                "duplicate {} (first defined in {})",
                header.object,
                first.display()
            );
            diag.error(&header.origin(file), "metadata.name", msg);
            return;
        }
        self.seen.insert(key, file.to_path_buf());
        let origin = header.origin(file);
        let (ns, name) = (header.namespace, header.name);
        let out = &mut self.out;
        match header.kind {
            Kind::Namespace => push(&mut out.namespaces, origin, ns, name, value, diag),
            Kind::Node => push(&mut out.nodes, origin, ns, name, value, diag),
            Kind::Service => push(&mut out.services, origin, ns, name, value, diag),
            Kind::Pod => push(&mut out.pods, origin, ns, name, value, diag),
            Kind::Gateway => push(&mut out.gateways, origin, ns, name, value, diag),
            Kind::HttpRoute => push(&mut out.routes, origin, ns, name, value, diag),
            Kind::AuthorizationPolicy => push(&mut out.policies, origin, ns, name, value, diag),
        }
    }
}

fn yaml_error(file: &Path, index: usize, e: &serde_norway::Error) -> ConfigError {
    let field = match e.location() {
        Some(loc) => format!("line {} column {}", loc.line(), loc.column()),
        None => "-".to_string(),
    };
    Origin::new(file, format!("document {index}")).err(field, format!("YAML syntax error: {e}"))
}

/// The identifying part of an object: kind, namespace, name.
struct Header {
    kind: Kind,
    namespace: String,
    name: String,
    object: String,
}

impl Header {
    fn read(file: &Path, index: usize, value: &Value, diag: &mut Diagnostics) -> Option<Self> {
        let doc = Origin::new(file, format!("document {index}"));
        let Some(map) = value.as_object() else {
            diag.error(&doc, "-", "expected a Kubernetes object (a mapping)");
            return None;
        };
        let text = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or_default();
        let (api_version, kind_name) = (text("apiVersion"), text("kind"));
        let Some(kind) = Kind::lookup(api_version, kind_name) else {
            let msg = format!("unknown apiVersion/kind {api_version:?}/{kind_name:?}");
            diag.error(&doc, "kind", msg);
            return None;
        };
        let meta = map.get("metadata").and_then(Value::as_object);
        let meta_text = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
        let Some(name) = meta_text("name").filter(|n| !n.is_empty()) else {
            let origin = Origin::new(file, format!("{} (document {index})", kind.name()));
            diag.error(&origin, "metadata.name", "required");
            return None;
        };
        let namespace = match kind.namespaced() {
            true => meta_text("namespace").unwrap_or("default").to_string(),
            false => String::new(),
        };
        let object = match kind.namespaced() {
            true => format!("{} {namespace}/{name}", kind.name()),
            false => format!("{} {name}", kind.name()),
        };
        Some(Self {
            kind,
            namespace,
            name: name.to_string(),
            object,
        })
    }

    fn origin(&self, file: &Path) -> Origin {
        Origin::new(file, self.object.clone())
    }
}

fn push<T: DeserializeOwned>(
    list: &mut Vec<Doc<T>>,
    origin: Origin,
    namespace: String,
    name: String,
    value: Value,
    diag: &mut Diagnostics,
) {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(obj) => list.push(Doc {
            origin,
            namespace,
            name,
            obj,
        }),
        Err(e) => diag.error(&origin, e.path().to_string(), e.inner().to_string()),
    }
}
