//! Hand-written serde types for Istio's `security.istio.io` `PeerAuthentication`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::authz::WorkloadSelector;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PeerAuthnSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub mtls: Option<MtlsSpec>,
    /// Keyed by port number (a YAML number key arrives as its text).
    #[serde(default)]
    pub port_level_mtls: Option<BTreeMap<String, MtlsSpec>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MtlsSpec {
    #[serde(default)]
    pub mode: Option<String>,
}
