//! Hand-written serde types for the parts of Istio's `MeshConfig` (the `mesh` key of ConfigMap
//! `istio-system/istio`) this mesh reads: `trustDomain`, `extensionProviders`, `defaultProviders`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// `MeshConfig`: the providers, and every other field (istiod's and the sidecars' settings),
/// kept to say they have no effect here.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MeshConfigSpec {
    /// The SPIFFE trust domain of workload identities.
    #[serde(default)]
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProviderSpec>,
    #[serde(default)]
    pub default_providers: Option<DefaultProvidersSpec>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `defaultProviders`: the providers used where no Telemetry names one.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DefaultProvidersSpec {
    #[serde(default)]
    pub tracing: Vec<String>,
    #[serde(default)]
    pub metrics: Vec<String>,
    #[serde(default)]
    pub access_logging: Vec<String>,
}

/// One `extensionProviders` entry: a name and one kind of provider.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ExtensionProviderSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub envoy_ext_authz_http: Option<HttpProviderSpec>,
    #[serde(default)]
    pub envoy_ext_authz_grpc: Option<GrpcProviderSpec>,
    #[serde(default)]
    pub opentelemetry: Option<OpenTelemetryProviderSpec>,
    /// Other kinds (other tracers, access logs, metrics).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A port written as a number or, as protobuf's JSON allows, a string.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum PortSpec {
    Number(i64),
    Text(String),
}

/// `envoyExtAuthzHttp`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct HttpProviderSpec {
    pub service: String,
    pub port: PortSpec,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub path_prefix: String,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub clear_route_cache: bool,
    #[serde(default)]
    pub status_on_error: Option<String>,
    #[serde(default)]
    pub include_headers_in_check: Vec<String>,
    #[serde(default)]
    pub include_request_headers_in_check: Vec<String>,
    #[serde(default)]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    #[serde(default)]
    pub include_request_body_in_check: Option<BodyBufferSpec>,
    #[serde(default)]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default)]
    pub headers_to_downstream_on_deny: Vec<String>,
    #[serde(default)]
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// `envoyExtAuthzGrpc`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct GrpcProviderSpec {
    pub service: String,
    pub port: PortSpec,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub clear_route_cache: bool,
    #[serde(default)]
    pub status_on_error: Option<String>,
    #[serde(default)]
    pub include_request_body_in_check: Option<BodyBufferSpec>,
}

/// `opentelemetry`: an OTLP trace collector.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct OpenTelemetryProviderSpec {
    pub service: String,
    pub port: PortSpec,
    #[serde(default)]
    pub max_tag_length: Option<u32>,
    #[serde(default)]
    pub http: Option<OtlpHttpSpec>,
    #[serde(default)]
    pub grpc: Option<OtlpGrpcSpec>,
    #[serde(default)]
    pub resource_detectors: Option<Value>,
    #[serde(default)]
    pub dynatrace_sampler: Option<Value>,
}

/// `opentelemetry.http`: OTLP/HTTP.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct OtlpHttpSpec {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub headers: Vec<HeaderSpec>,
}

/// `opentelemetry.grpc`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct OtlpGrpcSpec {
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub initial_metadata: Vec<HeaderSpec>,
}

/// A header (or gRPC metadata) sent with every export.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct HeaderSpec {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// `includeRequestBodyInCheck`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BodyBufferSpec {
    #[serde(default)]
    pub max_request_bytes: Option<i64>,
    #[serde(default)]
    pub allow_partial_message: bool,
    #[serde(default)]
    pub pack_as_bytes: bool,
}
