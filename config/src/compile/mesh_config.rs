//! The mesh config (ConfigMap `istio-system/istio`, key `mesh`, as Istio keeps it) → the
//! trust domain of the workloads' identities, the ext_authz extension providers CUSTOM policies name, the OpenTelemetry providers tracing
//! sends spans to, and the default tracing provider. Other ConfigMaps, and the mesh config's
//! other fields (istiod's and the sidecars' settings), have no effect here and say so.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use k8s_openapi::api::core::v1 as core;

use crate::error::{Diagnostics, Origin, Reason};
use crate::ext_authz::{
    BodyInCheck, DEFAULT_TIMEOUT, ExtAuthzApi, ExtAuthzProvider, HttpCheck, MAX_BODY_IN_CHECK,
};
use crate::manifest::Doc;
use crate::manifest::mesh::{
    BodyBufferSpec, DefaultProvidersSpec, ExtensionProviderSpec, HeaderSpec, MeshConfigSpec,
    OpenTelemetryProviderSpec, PortSpec,
};
use crate::model::Service;
use crate::policy::StringMatch;
use crate::traces::{DEFAULT_EXPORT_TIMEOUT, DEFAULT_MAX_TAG_LENGTH, OtlpExport, TracingProvider};
use crate::{DEFAULT_TRUST_DOMAIN, ROOT_NAMESPACE};

/// The ConfigMap Istio keeps the mesh config in.
pub const MESH_CONFIG_MAP: &str = "istio";

/// OTLP/HTTP's path for traces, when the provider gives none.
const OTLP_HTTP_PATH: &str = "/v1/traces";

/// What the mesh config gives this mesh.
#[derive(Debug, Default)]
pub(crate) struct MeshExtensions {
    /// ext_authz providers, by name.
    pub ext_authz: HashMap<String, Arc<ExtAuthzProvider>>,
    /// OpenTelemetry providers, by name.
    pub tracing: BTreeMap<String, Arc<TracingProvider>>,
    /// `defaultProviders.tracing`: used where no Telemetry names a tracing provider.
    pub default_tracing: Vec<String>,
}

/// The mesh config, parsed.
pub(crate) struct MeshConfig<'d> {
    origin: &'d Origin,
    spec: MeshConfigSpec,
}

/// Reads the mesh config from its ConfigMap; any other ConfigMap has no effect (a warning).
pub(crate) fn read<'d>(
    docs: &'d [Doc<core::ConfigMap>],
    diag: &mut Diagnostics,
) -> Vec<MeshConfig<'d>> {
    let mut out = Vec::new();
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
        let spec: MeshConfigSpec = match serde_path_to_error::deserialize(value) {
            Ok(spec) => spec,
            Err(e) => {
                let field = format!("data.mesh.{}", e.path());
                diag.error(&doc.origin, field, e.inner().to_string());
                continue;
            }
        };
        if !spec.other.is_empty() {
            let keys: Vec<&str> = spec.other.keys().map(String::as_str).collect();
            let msg = format!(
                "{} configure istiod or sidecars; this mesh reads only trustDomain, \
                 extensionProviders and defaultProviders",
                keys.join(", ")
            );
            diag.warn_because(Reason::NoEffect, &doc.origin, "data.mesh", msg);
        }
        out.push(MeshConfig {
            origin: &doc.origin,
            spec,
        });
    }
    out
}

/// The trust domain of the workloads' identities: the mesh config's `trustDomain`, else
/// Istio's default. Checked as SPIFFE has it: lowercase letters, digits, `.`, `-` and `_`.
pub(crate) fn trust_domain(mesh: &[MeshConfig<'_>], diag: &mut Diagnostics) -> String {
    for config in mesh {
        let Some(domain) = &config.spec.trust_domain else {
            continue;
        };
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
        if domain.is_empty() || domain.len() > 255 || !domain.chars().all(valid) {
            let msg = format!(
                "{domain:?} is not a SPIFFE trust domain (1 to 255 of a-z, 0-9, '.', '-', '_')"
            );
            diag.error(config.origin, "data.mesh.trustDomain", msg);
            continue;
        }
        return domain.clone();
    }
    DEFAULT_TRUST_DOMAIN.to_string()
}

/// The extension providers of the mesh config.
pub(crate) fn extension_providers(
    mesh: &[MeshConfig<'_>],
    services: &[Arc<Service>],
    diag: &mut Diagnostics,
) -> MeshExtensions {
    let mut out = MeshExtensions::default();
    for config in mesh {
        let (origin, mesh) = (config.origin, &config.spec);
        let mut cx = Cx {
            origin,
            diag: &mut *diag,
            services,
        };
        let mut names = HashSet::new();
        for (i, spec) in mesh.extension_providers.iter().enumerate() {
            let field = format!("data.mesh.extensionProviders[{i}]");
            if !names.insert(spec.name.as_str()) {
                let msg = format!("a second provider named {:?}", spec.name);
                cx.diag.error(cx.origin, format!("{field}.name"), msg);
                continue;
            }
            if let Some(otel) = &spec.opentelemetry {
                if let Some(tracer) = cx.tracer(&field, spec, otel) {
                    out.tracing.insert(spec.name.clone(), Arc::new(tracer));
                }
            } else if let Some(provider) = cx.provider(&field, spec) {
                out.ext_authz.insert(spec.name.clone(), Arc::new(provider));
            }
        }
        if let Some(defaults) = &mesh.default_providers {
            out.default_tracing = cx.defaults(defaults, &out.tracing);
        }
    }
    out
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
    include_request_body: Option<&'s BodyBufferSpec>,
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
                    include_request_body: http.include_request_body_in_check.as_ref(),
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
                    include_request_body: grpc.include_request_body_in_check.as_ref(),
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
                    "provider {:?} ({}): only envoyExtAuthzHttp, envoyExtAuthzGrpc and \
                     opentelemetry providers are supported; nothing uses this one",
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
        let grpc = matches!(api, ExtAuthzApi::Grpc);
        let request_body = (common.include_request_body).and_then(|spec| {
            self.body_in_check(&format!("{kind}.includeRequestBodyInCheck"), spec, grpc)
        });
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
            request_body,
            api,
        })
    }

    fn body_in_check(
        &mut self,
        field: &str,
        spec: &BodyBufferSpec,
        grpc: bool,
    ) -> Option<BodyInCheck> {
        let max_bytes = match spec.max_request_bytes {
            Some(n) if n > 0 && n <= i64::from(MAX_BODY_IN_CHECK) => n as u32,
            _ => {
                let msg = format!("required: 1 to {MAX_BODY_IN_CHECK} bytes held for the check");
                self.error(format!("{field}.maxRequestBytes"), msg);
                return None;
            }
        };
        if spec.pack_as_bytes && !grpc {
            let msg = "only a gRPC check has a bytes field: an HTTP check sends the body as it is";
            self.error(format!("{field}.packAsBytes"), msg);
            return None;
        }
        Some(BodyInCheck {
            max_bytes,
            allow_partial: spec.allow_partial_message,
            pack_as_bytes: spec.pack_as_bytes,
        })
    }

    /// An `opentelemetry` provider: its collector, a Service of the mesh, and how spans go.
    fn tracer(
        &mut self,
        field: &str,
        spec: &ExtensionProviderSpec,
        otel: &OpenTelemetryProviderSpec,
    ) -> Option<TracingProvider> {
        let at = format!("{field}.opentelemetry");
        let failed = self.diag.errors.len();
        if spec.name.is_empty() {
            self.error(format!("{field}.name"), "required");
        }
        let other_kinds = spec.envoy_ext_authz_http.is_some()
            || spec.envoy_ext_authz_grpc.is_some()
            || !spec.other.is_empty();
        if other_kinds {
            self.error(
                field.to_string(),
                "a provider is of one kind: opentelemetry, or another",
            );
        }
        if otel.resource_detectors.is_some() {
            let msg = "not supported: spans carry the waypoint's own resource (service.name)";
            self.error(format!("{at}.resourceDetectors"), msg);
        }
        if otel.dynatrace_sampler.is_some() {
            let msg = "not supported: sampling follows Telemetry's randomSamplingPercentage";
            self.error(format!("{at}.dynatraceSampler"), msg);
        }
        let service = self.service(&format!("{at}.service"), &otel.service);
        let port = self.port(&format!("{at}.port"), &otel.port);
        let max_tag_length = match otel.max_tag_length {
            None => DEFAULT_MAX_TAG_LENGTH,
            Some(0) => {
                self.error(format!("{at}.maxTagLength"), "must be at least 1");
                DEFAULT_MAX_TAG_LENGTH
            }
            Some(n) => n as usize,
        };
        let export = match (&otel.http, &otel.grpc) {
            (Some(_), Some(_)) => {
                self.error(at.clone(), "http or grpc, not both");
                return None;
            }
            (Some(http), None) => {
                let path = http.path.clone().unwrap_or_else(|| OTLP_HTTP_PATH.into());
                if !path.starts_with('/') {
                    self.error(format!("{at}.http.path"), "must start with /");
                }
                OtlpExport::Http {
                    path,
                    timeout: self.export_timeout(&format!("{at}.http.timeout"), &http.timeout),
                    headers: self.headers(&format!("{at}.http.headers"), &http.headers),
                }
            }
            (None, grpc) => {
                let grpc = grpc.clone().unwrap_or_default();
                OtlpExport::Grpc {
                    timeout: self.export_timeout(&format!("{at}.grpc.timeout"), &grpc.timeout),
                    metadata: self.headers(
                        &format!("{at}.grpc.initialMetadata"),
                        &grpc.initial_metadata,
                    ),
                }
            }
        };
        if self.diag.errors.len() > failed {
            return None;
        }
        Some(TracingProvider {
            name: spec.name.clone(),
            service: service?,
            port: port?,
            max_tag_length,
            export,
        })
    }

    fn export_timeout(&mut self, field: &str, text: &Option<String>) -> std::time::Duration {
        match text.as_deref() {
            None => DEFAULT_EXPORT_TIMEOUT,
            Some(text) => super::istio_duration(text).unwrap_or_else(|e| {
                self.error(field.to_string(), e);
                DEFAULT_EXPORT_TIMEOUT
            }),
        }
    }

    fn headers(&mut self, field: &str, list: &[HeaderSpec]) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        for (i, header) in list.iter().enumerate() {
            match (
                HeaderName::from_bytes(header.name.to_ascii_lowercase().as_bytes()),
                HeaderValue::from_str(&header.value),
            ) {
                (Ok(name), Ok(value)) => out.push((name, value)),
                _ => self.error(format!("{field}[{i}]"), "not a valid header name and value"),
            }
        }
        out
    }

    /// `defaultProviders`: the tracing providers kept; metrics and access logs have one sink
    /// each here (`prometheus`, and the access log), so naming another has no effect.
    fn defaults(
        &mut self,
        spec: &DefaultProvidersSpec,
        tracers: &BTreeMap<String, Arc<TracingProvider>>,
    ) -> Vec<String> {
        for (i, name) in spec.tracing.iter().enumerate() {
            if !tracers.contains_key(name) {
                let msg = format!(
                    "{name:?} is not an opentelemetry provider of this mesh config: \
                     it traces nothing"
                );
                let field = format!("data.mesh.defaultProviders.tracing[{i}]");
                (self.diag).warn_because(Reason::NoEffect, self.origin, field, msg);
            }
        }
        let sinks = [
            ("metrics", &spec.metrics, "prometheus"),
            ("accessLogging", &spec.access_logging, "envoy"),
        ];
        for (kind, names, sink) in sinks {
            for (i, name) in names.iter().enumerate().filter(|(_, n)| *n != sink) {
                let msg = format!("provider {name:?}: only {sink:?} is, it has no effect");
                let field = format!("data.mesh.defaultProviders.{kind}[{i}]");
                (self.diag).warn_because(Reason::NoEffect, self.origin, field, msg);
            }
        }
        spec.tracing.clone()
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
