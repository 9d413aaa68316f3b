//! Reading manifests: YAML documents → typed Kubernetes-shaped objects, with file/object context.

pub(crate) mod authn;
pub(crate) mod authz;
pub(crate) mod destination_rule;
pub(crate) mod mesh;
pub(crate) mod peer_authn;
pub(crate) mod telemetry;

use std::collections::HashMap;
use std::path::Path;

use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::gateways::Gateway;
use k8s_openapi::api::core::v1 as core;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ConfigError, Diagnostics, Location, Origin};

/// An AuthorizationPolicy object (hand-written spec; name/namespace come from the header).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct AuthzObject {
    #[serde(default)]
    pub spec: authz::PolicySpec,
}

/// A RequestAuthentication object (hand-written spec; name/namespace come from the header).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct AuthnObject {
    #[serde(default)]
    pub spec: authn::AuthnSpec,
}

/// A PeerAuthentication object (hand-written spec; name/namespace come from the header).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct PeerAuthnObject {
    #[serde(default)]
    pub spec: peer_authn::PeerAuthnSpec,
}

/// A Telemetry object (hand-written spec; name/namespace come from the header).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct TelemetryObject {
    #[serde(default)]
    pub spec: telemetry::TelemetrySpec,
}

/// A DestinationRule object (hand-written spec; name/namespace come from the header).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct DestinationRuleObject {
    #[serde(default)]
    pub spec: destination_rule::DestinationRuleSpec,
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

/// The kinds the mesh reads: one line each. A kind added here gets its `Manifests` field, its
/// apiVersion/kind lookup and its parsing; then it needs a compile step in `compile`.
macro_rules! kinds {
    ($($kind:ident: $ty:ty => $field:ident, $name:literal, [$($api:literal),+], $namespaced:literal;)+) => {
        /// Every object of every supported kind, in the order read.
        #[derive(Default, Debug)]
        pub(crate) struct Manifests {
            $(pub $field: Vec<Doc<$ty>>,)+
        }

        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        enum Kind {
            $($kind,)+
        }

        impl Kind {
            fn lookup(api_version: &str, kind: &str) -> Option<Self> {
                $(if kind == $name && [$($api),+].contains(&api_version) {
                    return Some(Self::$kind);
                })+
                None
            }

            fn name(self) -> &'static str {
                match self {
                    $(Self::$kind => $name,)+
                }
            }

            fn namespaced(self) -> bool {
                match self {
                    $(Self::$kind => $namespaced,)+
                }
            }
        }

        impl Manifests {
            fn push(&mut self, header: Header, origin: Origin, value: Value, diag: &mut Diagnostics) {
                match header.kind {
                    $(Kind::$kind => push(&mut self.$field, header, origin, value, diag),)+
                }
            }
        }
    };
}

kinds! {
    Namespace: core::Namespace => namespaces, "Namespace", ["v1"], false;
    Node: core::Node => nodes, "Node", ["v1"], false;
    Service: core::Service => services, "Service", ["v1"], true;
    Pod: core::Pod => pods, "Pod", ["v1"], true;
    Gateway: Gateway => gateways, "Gateway",
        ["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"], true;
    HttpRoute: HttpRoute => routes, "HTTPRoute",
        ["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"], true;
    GrpcRoute: GrpcRoute => grpc_routes, "GRPCRoute",
        ["gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1alpha2"], true;
    AuthorizationPolicy: AuthzObject => policies, "AuthorizationPolicy",
        ["security.istio.io/v1", "security.istio.io/v1beta1"], true;
    RequestAuthentication: AuthnObject => authentications, "RequestAuthentication",
        ["security.istio.io/v1", "security.istio.io/v1beta1"], true;
    PeerAuthentication: PeerAuthnObject => peer_authentications, "PeerAuthentication",
        ["security.istio.io/v1", "security.istio.io/v1beta1"], true;
    Telemetry: TelemetryObject => telemetries, "Telemetry",
        ["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"], true;
    ConfigMap: core::ConfigMap => config_maps, "ConfigMap", ["v1"], true;
    DestinationRule: DestinationRuleObject => destination_rules, "DestinationRule",
        ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"], true;
}

/// Objects from any source (manifest files, or the Kubernetes API), checked for duplicates
/// and parsed into typed objects that each remember where they came from, ready to compile.
#[derive(Default)]
pub struct Resources {
    pub(crate) manifests: Manifests,
    pub(crate) diag: Diagnostics,
    seen: HashMap<(Kind, String, String), Location>,
}

impl Resources {
    /// Adds every YAML document of a manifest file.
    pub fn add_file(&mut self, path: &Path, text: &str) {
        for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
            let unnamed = Origin::new(Location::file(path), format!("document {}", index + 1));
            match Value::deserialize(document) {
                Ok(Value::Null) => {}
                Ok(value) => self.add(&unnamed, value),
                Err(e) => {
                    self.diag.errors.push(yaml_error(&unnamed, &e));
                    // The YAML parser cannot resume after a syntax error.
                    return;
                }
            }
        }
    }

    /// Adds one object, as the Kubernetes API serves it, read at `location`.
    pub fn add_object(&mut self, location: Location, value: Value) {
        self.add(&Origin::new(location, "object"), value);
    }

    /// `unnamed` names the object in errors until its kind and name are known.
    fn add(&mut self, unnamed: &Origin, value: Value) {
        let Some(header) = Header::read(unnamed, &value, &mut self.diag) else {
            return;
        };
        let origin = Origin::new(unnamed.location.clone(), header.object.clone());
        let key = (header.kind, header.namespace.clone(), header.name.clone());
        if let Some(first) = self.seen.get(&key) {
            let msg = format!("duplicate {} (first defined in {first})", header.object);
            self.diag.error(&origin, "metadata.name", msg);
            return;
        }
        self.seen.insert(key, unnamed.location.clone());
        self.manifests.push(header, origin, value, &mut self.diag);
    }
}

fn yaml_error(origin: &Origin, e: &serde_norway::Error) -> ConfigError {
    let field = match e.location() {
        Some(loc) => format!("line {} column {}", loc.line(), loc.column()),
        None => "-".to_string(),
    };
    origin.err(field, format!("YAML syntax error: {e}"))
}

/// The identifying part of an object: kind, namespace, name.
struct Header {
    kind: Kind,
    namespace: String,
    name: String,
    object: String,
}

impl Header {
    fn read(unnamed: &Origin, value: &Value, diag: &mut Diagnostics) -> Option<Self> {
        let Some(map) = value.as_object() else {
            diag.error(unnamed, "-", "expected a Kubernetes object (a mapping)");
            return None;
        };
        let text = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or_default();
        let (api_version, kind_name) = (text("apiVersion"), text("kind"));
        let Some(kind) = Kind::lookup(api_version, kind_name) else {
            let msg = format!("unknown apiVersion/kind {api_version:?}/{kind_name:?}");
            diag.error(unnamed, "kind", msg);
            return None;
        };
        let meta = map.get("metadata").and_then(Value::as_object);
        let meta_text = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
        let Some(name) = meta_text("name").filter(|n| !n.is_empty()) else {
            let object = format!("{} ({})", kind.name(), unnamed.object);
            diag.error(
                &Origin::new(unnamed.location.clone(), object),
                "metadata.name",
                "required",
            );
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
}

fn push<T: DeserializeOwned>(
    list: &mut Vec<Doc<T>>,
    header: Header,
    origin: Origin,
    value: Value,
    diag: &mut Diagnostics,
) {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(obj) => list.push(Doc {
            origin,
            namespace: header.namespace,
            name: header.name,
            obj,
        }),
        Err(e) => diag.error(&origin, e.path().to_string(), e.inner().to_string()),
    }
}
