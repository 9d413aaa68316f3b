//! Manifests → validated, indexed `Snapshot`. Collects every error before failing.

mod attach;
mod authentications;
mod destination_rules;
mod filters;
mod grpc_routes;
pub(crate) mod labels;
pub(crate) mod mesh_config;
mod peer_authentications;
mod pod_index;
mod policies;
mod routes;
pub(crate) mod services;
mod telemetry;
pub(crate) mod waypoints;
pub(crate) mod workloads;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ConfigError, ConfigErrors, Diagnostics, Location, Origin};
use crate::manifest::{Manifests, Resources};
use crate::model::ObjectRef;
use crate::snapshot::{Parts, Snapshot};
use attach::RouteKind;
use pod_index::PodIndex;

/// Parses, validates and compiles `(file name, contents)` pairs into a snapshot.
pub fn compile(docs: Vec<(PathBuf, String)>) -> Result<Snapshot, ConfigErrors> {
    let mut resources = Resources::default();
    for (path, text) in &docs {
        resources.add_file(path, text);
    }
    resources.compile()
}

/// A snapshot compiled from objects of the Kubernetes API, and the objects left out of it.
#[derive(Debug)]
pub struct Compiled {
    pub snapshot: Snapshot,
    /// The errors of the objects left out (each names its object and field).
    pub left_out: Vec<ConfigError>,
}

/// Compiles objects of the Kubernetes API, where one bad object must not hold back every
/// other: an object with an error is left out, its errors reported, and the rest compiled
/// again (leaving one out can make another wrong, so this repeats, at most once per object).
/// Fails only when an error names no object it could leave out.
pub fn compile_objects(
    objects: &[(Location, serde_json::Value)],
) -> Result<Compiled, ConfigErrors> {
    let mut excluded: HashSet<&Location> = HashSet::new();
    let mut left_out = Vec::new();
    loop {
        let mut resources = Resources::default();
        for (location, value) in objects.iter().filter(|(l, _)| !excluded.contains(l)) {
            resources.add_object(location.clone(), value.clone());
        }
        let errors = match resources.compile() {
            Ok(snapshot) => return Ok(Compiled { snapshot, left_out }),
            Err(errors) => errors,
        };
        let before = excluded.len();
        for error in errors.iter() {
            if let Some((location, _)) = objects.iter().find(|(l, _)| *l == error.location) {
                excluded.insert(location);
            }
        }
        if excluded.len() == before {
            return Err(errors);
        }
        left_out.extend(errors.0);
    }
}

impl Resources {
    /// Validates and compiles everything added into a snapshot, or reports every problem.
    pub fn compile(self) -> Result<Snapshot, ConfigErrors> {
        build(self.manifests, self.diag)
    }
}

fn build(m: Manifests, mut diag: Diagnostics) -> Result<Snapshot, ConfigErrors> {
    let mesh = mesh_config::read(&m.config_maps, &mut diag);
    let trust_domain = mesh_config::trust_domain(&mesh, &mut diag);
    let namespaces = workloads::namespaces(&m.namespaces, &mut diag);
    let nodes = workloads::nodes(&m.nodes, &mut diag);
    let gateways = waypoints::classify(&m.gateways, &mut diag);
    let wl_cx = workloads::Context {
        trust_domain: &trust_domain,
        namespaces: &namespaces,
        nodes: &nodes,
        gateways: &gateways,
    };
    let workloads = workloads::workloads(&m.pods, &wl_cx, &mut diag);
    let pods = PodIndex::new(&workloads);
    let waypoints = waypoints::build(&m.gateways, &gateways, &pods, &mut diag);
    let svc_cx = services::Context {
        namespaces: &namespaces,
        gateways: &gateways,
        workloads: &workloads,
    };
    let services = services::services(&m.services, &svc_cx, &mut diag);
    let service_map: routes::ServiceMap = services
        .iter()
        .map(|s| (ObjectRef::new(&s.namespace, &s.name), Arc::clone(s)))
        .collect();
    let endpoints: HashMap<_, _> = service_map
        .iter()
        .map(|(key, svc)| (key.clone(), services::endpoints(svc, &pods)))
        .collect();
    // A GRPCRoute is compiled as the HTTPRoute it means (gRPC is HTTP/2 POSTs to
    // `/<service>/<method>`); both kinds then share compilation, attachment and precedence.
    let grpc_routes: Vec<_> = (m.grpc_routes.iter())
        .filter_map(|doc| grpc_routes::as_http_route(doc, &mut diag))
        .collect();
    let kinds: Vec<RouteKind> = (m.routes.iter().map(|_| RouteKind::Http))
        .chain(grpc_routes.iter().map(|_| RouteKind::Grpc))
        .collect();
    let all_routes: Vec<_> = m.routes.iter().cloned().chain(grpc_routes).collect();
    let compiled: Vec<_> = (all_routes.iter())
        .map(|doc| routes::compile_route(doc, &service_map, &mut diag))
        .collect();
    let routes = attach::attach(
        &all_routes,
        &kinds,
        &compiled,
        &service_map,
        &gateways,
        &mut diag,
    );
    let route_parents = all_routes.iter().map(attach::parents).collect();
    let authentications = authentications::authentications(&m.authentications, &mut diag);
    let authenticated_namespaces: HashSet<&str> = (authentications.iter())
        .map(|a| a.namespace.as_str())
        .collect();
    let extensions = mesh_config::extension_providers(&mesh, &services, &mut diag);
    let telemetries = telemetry::telemetries(&m.telemetries, &extensions.tracing, &mut diag);
    let peer_authentications =
        peer_authentications::peer_authentications(&m.peer_authentications, &mut diag);
    let policies = policies::policies(
        &m.policies,
        &trust_domain,
        &authenticated_namespaces,
        &extensions.ext_authz,
        &mut diag,
    );
    let traffic =
        destination_rules::traffic_policies(&m.destination_rules, &service_map, &mut diag);
    if !diag.errors.is_empty() {
        return Err(ConfigErrors(diag.errors));
    }
    let waypoint_classes: BTreeMap<ObjectRef, String> = (gateways.iter())
        .filter(|(_, g)| g.is_waypoint)
        .map(|(k, g)| (k.clone(), g.class.clone()))
        .collect();
    Ok(Snapshot::build(Parts {
        trust_domain,
        warnings: diag.warnings,
        nodes,
        workloads,
        services,
        endpoints,
        routes,
        route_parents,
        traffic,
        waypoints,
        waypoint_classes,
        policies,
        authentications,
        providers: extensions.ext_authz,
        tracing_providers: extensions.tracing,
        default_tracing: extensions.default_tracing,
        telemetries,
        peer_authentications,
    }))
}

/// An Istio (protobuf) duration, Go-style (`10s`, `1.5s`, `1m30s`, `300ms`), of at least 1 ms,
/// as Istio's fields take it.
pub(crate) fn istio_duration(text: &str) -> Result<std::time::Duration, String> {
    match text.parse::<kube_core::Duration>() {
        Ok(d) if !d.is_negative() && std::time::Duration::from(d).as_millis() >= 1 => Ok(d.into()),
        Ok(_) => Err(format!("{text:?} is less than 1ms")),
        Err(e) => Err(format!("invalid duration {text:?}: {e}")),
    }
}

/// Reads a manifest file, or every `*.yaml`/`*.yml` file of a directory (sorted by name, not
/// recursive), and compiles them.
pub fn load_path(path: &Path) -> Result<Snapshot, ConfigErrors> {
    compile(read_path(path)?)
}

/// Reads the manifest files `load_path` would compile.
pub fn read_path(path: &Path) -> Result<Vec<(PathBuf, String)>, ConfigErrors> {
    let read_err = |file: &Path, e: std::io::Error| {
        Origin::new(Location::file(file), "-").err("-", format!("cannot read: {e}"))
    };
    let files = if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| ConfigErrors(vec![read_err(path, e)]))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && is_manifest(p))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => docs.push((file, text)),
            Err(e) => errors.push(read_err(&file, e)),
        }
    }
    match errors.is_empty() {
        true => Ok(docs),
        false => Err(ConfigErrors(errors)),
    }
}

/// `*.yaml` or `*.yml`.
pub(crate) fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}
