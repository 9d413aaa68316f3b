//! The mesh config (ConfigMap `istio-system/istio`, key `mesh`, as Istio keeps it) → the
//! ext_authz extension providers CUSTOM policies name. Other ConfigMaps, and the mesh config's
//! other fields (istiod's and the sidecars' settings), have no effect here and say so.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use k8s_openapi::api::core::v1 as core;

use crate::ROOT_NAMESPACE;
use crate::error::{Diagnostics, Origin, Reason};
use crate::ext_authz::{DEFAULT_TIMEOUT, ExtAuthzApi, ExtAuthzProvider, HttpCheck};
use crate::manifest::Doc;
use crate::manifest::mesh::{ExtensionProviderSpec, MeshConfigSpec, PortSpec};
use crate::model::Service;
use crate::policy::StringMatch;

/// The ConfigMap Istio keeps the mesh config in.
pub const MESH_CONFIG_MAP: &str = "istio";

/// The ext_authz providers of the mesh config, by name.
pub(crate) fn extension_providers(
    docs: &[Doc<core::ConfigMap>],
    services: &[Arc<Service>],
    diag: &mut Diagnostics,
) -> HashMap<String, Arc<ExtAuthzProvider>> {
    let mut providers = HashMap::new();
    for doc in docs {
        if (doc.namespace.as_str(), doc.name.as_str()) != (ROOT_NAMESPACE, MESH_CONFIG_MAP) {
            let msg = format!(
                "the only ConfigMap this mesh reads is its mesh config, \
                 {ROOT_NAMESPACE}/{MESH_CONFIG_MAP}: this one has no effect"
            );
            diag.warn_because(Reason::NoEffect, &doc.origin, "metadata.name", msg);
            continue;
        }
        let Some(text) = doc.obj.data.as_ref().and_then(|d| d.get("mesh")) else {
            diag.error(
                &doc.origin,
                "data.mesh",
                "required: the mesh config, as YAML",
            );
            continue;
        };
        let value: serde_json::Value = match serde_norway::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                diag.error(&doc.origin, "data.mesh", format!("not YAML: {e}"));
                continue;
            }
        };
        let mesh: MeshConfigSpec = match serde_path_to_error::deserialize(value) {
            Ok(mesh) => mesh,
            Err(e) => {
                let field = format!("data.mesh.{}", e.path());
                diag.error(&doc.origin, field, e.inner().to_string());
                continue;
            }
        };
        if !mesh.other.is_empty() {
            let keys: Vec<&str> = mesh.other.keys().map(String::as_str).collect();
            let msg = format!(
                "{} configure istiod or sidecars; this mesh reads only extensionProviders",
                keys.join(", ")
            );
            diag.warn_because(Reason::NoEffect, &doc.origin, "data.mesh", msg);
        }
        let mut cx = Cx {
            origin: &doc.origin,
            diag: &mut *diag,
            services,
        };
        for (i, spec) in mesh.extension_providers.iter().enumerate() {
            let field = format!("data.mesh.extensionProviders[{i}]");
            if providers.contains_key(&spec.name) {
                let msg = format!("a second provider named {:?}", spec.name);
                cx.diag.error(cx.origin, format!("{field}.name"), msg);
                continue;
            }
            if let Some(provider) = cx.provider(&field, spec) {
                providers.insert(spec.name.clone(), Arc::new(provider));
            }
        }
    }
    providers
}

struct Cx<'a> {
    origin: &'a Origin,
    diag: &'a mut Diagnostics,
    services: &'a [Arc<Service>],
}

/// What the two kinds of provider share.
struct Common<'s> {
    service: &'s str,
    port: &'s PortSpec,
    timeout: Option<&'s str>,
    fail_open: bool,
    clear_route_cache: bool,
    status_on_error: Option<&'s str>,
    include_request_body: bool,
}

impl Cx<'_> {
    fn error(&mut self, field: String, message: impl Into<String>) {
        self.diag.error(self.origin, field, message);
    }

    fn provider(&mut self, field: &str, spec: &ExtensionProviderSpec) -> Option<ExtAuthzProvider> {
        if spec.name.is_empty() {
            self.error(format!("{field}.name"), "required");
            return None;
        }
        let (common, api, kind) = match (&spec.envoy_ext_authz_http, &spec.envoy_ext_authz_grpc) {
            (Some(_), Some(_)) => {
                let msg = "envoyExtAuthzHttp or envoyExtAuthzGrpc, not both";
                self.error(field.to_string(), msg);
                return None;
            }
            (Some(http), None) => {
                let at = format!("{field}.envoyExtAuthzHttp");
                let check = self.http_check(&at, http)?;
                let common = Common {
                    service: &http.service,
                    port: &http.port,
                    timeout: http.timeout.as_deref(),
                    fail_open: http.fail_open,
                    clear_route_cache: http.clear_route_cache,
                    status_on_error: http.status_on_error.as_deref(),
                    include_request_body: http.include_request_body_in_check.is_some(),
                };
                (common, ExtAuthzApi::Http(check), at)
            }
            (None, Some(grpc)) => {
                let common = Common {
                    service: &grpc.service,
                    port: &grpc.port,
                    timeout: grpc.timeout.as_deref(),
                    fail_open: grpc.fail_open,
                    clear_route_cache: grpc.clear_route_cache,
                    status_on_error: grpc.status_on_error.as_deref(),
                    include_request_body: grpc.include_request_body_in_check.is_some(),
                };
                (
                    common,
                    ExtAuthzApi::Grpc,
                    format!("{field}.envoyExtAuthzGrpc"),
                )
            }
            (None, None) => {
                let kinds: Vec<&str> = spec.other.keys().map(String::as_str).collect();
                let msg = format!(
                    "provider {:?} ({}): only envoyExtAuthzHttp and envoyExtAuthzGrpc \
                     providers are supported; nothing uses this one",
                    spec.name,
                    kinds.join(", ")
                );
                (self.diag).warn_because(Reason::UnsupportedValue, self.origin, field, msg);
                return None;
            }
        };
        let failed = self.diag.errors.len();
        if common.clear_route_cache {
            let msg = "not supported: a check's headers never change the route";
            self.error(format!("{kind}.clearRouteCache"), msg);
        }
        if common.include_request_body {
            let msg = "not supported yet: checks carry the request's head only";
            self.error(format!("{kind}.includeRequestBodyInCheck"), msg);
        }
        let service = self.service(&format!("{kind}.service"), common.service);
        let port = self.port(&format!("{kind}.port"), common.port);
        let timeout = match common.timeout {
            None => DEFAULT_TIMEOUT,
            Some(text) => super::istio_duration(text).unwrap_or_else(|e| {
                self.error(format!("{kind}.timeout"), e);
                DEFAULT_TIMEOUT
            }),
        };
        let status_on_error = match common.status_on_error {
            None | Some("") => 403,
            Some(text) => match text.trim().parse::<u16>() {
                Ok(status) if (200..=599).contains(&status) => status,
                _ => {
                    let msg = format!("{text:?} is not an HTTP status");
                    self.error(format!("{kind}.statusOnError"), msg);
                    403
                }
            },
        };
        if self.diag.errors.len() > failed {
            return None;
        }
        Some(ExtAuthzProvider {
            name: spec.name.clone(),
            service: service?,
            port: port?,
            timeout,
            fail_open: common.fail_open,
            status_on_error,
            api,
        })
    }

    fn http_check(
        &mut self,
        field: &str,
        spec: &crate::manifest::mesh::HttpProviderSpec,
    ) -> Option<HttpCheck> {
        let failed = self.diag.errors.len();
        if !spec.path_prefix.is_empty() && !spec.path_prefix.starts_with('/') {
            self.error(format!("{field}.pathPrefix"), "must start with /");
        }
        let mut include = spec.include_headers_in_check.clone();
        include.extend(spec.include_request_headers_in_check.iter().cloned());
        let include_request_headers =
            self.patterns(&format!("{field}.includeRequestHeadersInCheck"), &include);
        let mut additional_headers = Vec::new();
        for (name, value) in &spec.include_additional_headers_in_check {
            let at = format!("{field}.includeAdditionalHeadersInCheck[{name}]");
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(value)) => additional_headers.push((name, value)),
                _ => self.error(at, "not a valid header name and value"),
            }
        }
        let check = HttpCheck {
            path_prefix: spec.path_prefix.trim_end_matches('/').to_string(),
            include_request_headers,
            additional_headers,
            headers_to_upstream_on_allow: self.patterns(
                &format!("{field}.headersToUpstreamOnAllow"),
                &spec.headers_to_upstream_on_allow,
            ),
            headers_to_downstream_on_deny: self.patterns(
                &format!("{field}.headersToDownstreamOnDeny"),
                &spec.headers_to_downstream_on_deny,
            ),
            headers_to_downstream_on_allow: self.patterns(
                &format!("{field}.headersToDownstreamOnAllow"),
                &spec.headers_to_downstream_on_allow,
            ),
        };
        (self.diag.errors.len() == failed).then_some(check)
    }

    /// Header name patterns: exact, `prefix*` or `*suffix` (Istio takes no bare `*` here).
    fn patterns(&mut self, field: &str, list: &[String]) -> Vec<StringMatch> {
        let mut out = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match StringMatch::parse(&text.to_ascii_lowercase()) {
                StringMatch::Presence => {
                    let msg = "`*` is not a header pattern: give a name, `prefix*` or `*suffix`";
                    self.error(format!("{field}[{i}]"), msg);
                }
                pattern => out.push(pattern),
            }
        }
        out
    }

    /// `[<namespace>/]<hostname>`: a Service of the mesh, by its hostname (or `name.namespace`).
    fn service(&mut self, field: &str, text: &str) -> Option<Arc<Service>> {
        let (namespace, host) = match text.split_once('/') {
            Some((ns, host)) => (Some(ns), host),
            None => (None, text),
        };
        let found = self.services.iter().find(|s| {
            let short = format!("{}.{}", s.name, s.namespace);
            namespace.is_none_or(|ns| ns == s.namespace)
                && [s.hostname.as_str(), &short, &format!("{short}.svc")].contains(&host)
        });
        if found.is_none() {
            let msg = format!("no Service {text:?} in the mesh");
            self.error(field.to_string(), msg);
        }
        found.cloned()
    }

    fn port(&mut self, field: &str, port: &PortSpec) -> Option<u16> {
        let parsed = match port {
            PortSpec::Number(n) => u16::try_from(*n).ok(),
            PortSpec::Text(t) => t.trim().parse::<u16>().ok(),
        };
        let port = parsed.filter(|p| *p > 0);
        if port.is_none() {
            self.error(field.to_string(), "must be a port, 1-65535");
        }
        port
    }
}
