//! Hand-written serde types for Istio's `security.istio.io` `RequestAuthentication`.

use serde::Deserialize;

use super::authz::{TargetRefSpec, WorkloadSelector};

/// `spec` of a RequestAuthentication. Unknown fields are errors: a mistyped `audiences`
/// silently ignored would accept tokens meant for someone else.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AuthnSpec {
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub target_ref: Option<TargetRefSpec>,
    #[serde(default)]
    pub target_refs: Option<Vec<TargetRefSpec>>,
    #[serde(default)]
    pub jwt_rules: Vec<JwtRuleSpec>,
}

/// One `jwtRules` entry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct JwtRuleSpec {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub jwks: Option<String>,
    #[serde(default)]
    pub from_headers: Vec<HeaderLocationSpec>,
    #[serde(default)]
    pub from_params: Vec<String>,
    #[serde(default)]
    pub from_cookies: Vec<String>,
    #[serde(default)]
    pub output_payload_to_header: Option<String>,
    #[serde(default)]
    pub forward_original_token: bool,
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeaderSpec>,
    #[serde(default)]
    pub timeout: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct HeaderLocationSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ClaimToHeaderSpec {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub claim: String,
}
