//! Compiled AuthorizationPolicies and Istio's string patterns.

use std::collections::BTreeMap;

/// Istio string pattern: `*` (present), `*suffix`, `prefix*`, or exact; for paths also a
/// template with `{*}`/`{**}` ([`PathTemplate`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Presence,
    Template(PathTemplate),
}

impl StringMatch {
    /// Parses a path pattern: a template when it holds `{*}` or `{**}` (as Istio reads
    /// `paths`), else as [`StringMatch::parse`].
    pub fn parse_path(s: &str) -> Result<Self, String> {
        match s.contains("{*}") || s.contains("{**}") {
            true => PathTemplate::parse(s).map(Self::Template),
            false => Ok(Self::parse(s)),
        }
    }

    /// Parses a pattern as written in a policy.
    pub fn parse(s: &str) -> Self {
        if s == "*" {
            Self::Presence
        } else if let Some(rest) = s.strip_prefix('*') {
            Self::Suffix(rest.to_string())
        } else if let Some(rest) = s.strip_suffix('*') {
            Self::Prefix(rest.to_string())
        } else {
            Self::Exact(s.to_string())
        }
    }

    /// Whether `value` matches; `Presence` matches any non-empty value.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(e) => value == e,
            Self::Prefix(p) => value.starts_with(p.as_str()),
            Self::Suffix(s) => value.ends_with(s.as_str()),
            Self::Presence => !value.is_empty(),
            Self::Template(t) => t.matches(value),
        }
    }

    /// As [`StringMatch::matches`], ignoring ASCII case (for host names).
    pub fn matches_ignore_ascii_case(&self, value: &str) -> bool {
        let (v, n) = (value.as_bytes(), |s: &str| s.len());
        match self {
            Self::Exact(e) => value.eq_ignore_ascii_case(e),
            Self::Prefix(p) => v.len() >= n(p) && v[..n(p)].eq_ignore_ascii_case(p.as_bytes()),
            Self::Suffix(s) => {
                v.len() >= n(s) && v[v.len() - n(s)..].eq_ignore_ascii_case(s.as_bytes())
            }
            Self::Presence => !value.is_empty(),
            Self::Template(t) => t.matches(value),
        }
    }
}

/// A path template of Istio's `paths` (Envoy's URI template): `{*}` is exactly one path
/// segment, not empty; `{**}`, the last operator, is whatever follows its slash (nothing
/// included, further slashes too). Operators are whole segments; the rest is literal.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathTemplate {
    segments: Vec<TemplateSegment>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum TemplateSegment {
    Literal(String),
    One,
    Rest,
}

impl PathTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        let Some(rest) = template.strip_prefix('/') else {
            return Err(format!("path template {template:?} must start with /"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let segment = match *part {
                "{*}" => TemplateSegment::One,
                "{**}" if i + 1 == parts.len() => TemplateSegment::Rest,
                "{**}" => {
                    return Err(format!(
                        "path template {template:?}: {{**}} must be the last operator"
                    ));
                }
                literal
                    if literal.contains('*') || literal.contains('{') || literal.contains('}') =>
                {
                    return Err(format!(
                        "path template {template:?}: {literal:?} mixes an operator with text; {{*}} and {{**}} must be whole segments"
                    ));
                }
                literal => TemplateSegment::Literal(literal.to_string()),
            };
            segments.push(segment);
        }
        Ok(PathTemplate { segments })
    }

    /// Whether `path` (without its query) fits the template.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for segment in &self.segments {
            match (segment, parts.next()) {
                (TemplateSegment::Rest, next) => return next.is_some(),
                (TemplateSegment::One, Some(part)) if !part.is_empty() => {}
                (TemplateSegment::Literal(literal), Some(part)) if part == literal => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

/// The Gateway API's group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The API group a reference (a `targetRef`, a `parentRef`) to `kind` means by `group`:
/// written or not (the core group for a Service, the Gateway API's for anything else), with
/// `core` read as the core group, `""`.
pub fn reference_group<'a>(kind: &str, group: Option<&'a str>) -> &'a str {
    let default = if kind == "Service" { "" } else { GATEWAY_GROUP };
    match group.unwrap_or(default) {
        "core" => "",
        group => group,
    }
}

/// Policy action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
    Audit,
    Custom,
}

impl Action {
    /// Parses `ALLOW|DENY|AUDIT|CUSTOM`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ALLOW" => Some(Self::Allow),
            "DENY" => Some(Self::Deny),
            "AUDIT" => Some(Self::Audit),
            "CUSTOM" => Some(Self::Custom),
            _ => None,
        }
    }
}

/// What a policy applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyScope {
    /// Root namespace, no selector or targetRefs: every workload.
    Global,
    /// Its namespace's workloads.
    Namespace,
    /// Workloads whose labels match (in its namespace; from the root namespace: in any).
    Selector(BTreeMap<String, String>),
    /// Waypoints (Gateway, Service or GatewayClass targets).
    TargetRefs(Vec<PolicyTargetRef>),
}

/// A `targetRef`; `group` is normalized (`""` for Service, `gateway.networking.k8s.io` for
/// Gateway/GatewayClass) and `namespace` defaults to the policy's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyTargetRef {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// One AuthorizationPolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationPolicy {
    pub namespace: String,
    pub name: String,
    pub action: Action,
    /// The extension provider a CUSTOM policy's matches are checked by.
    pub provider: Option<String>,
    pub scope: PolicyScope,
    /// Empty: the policy matches nothing (an ALLOW with no rules allows nothing).
    pub rules: Vec<Rule>,
}

/// A rule matches when any `from`, any `to` and every `when` match (empty lists match all).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub from: Vec<Source>,
    pub to: Vec<Operation>,
    pub when: Vec<Condition>,
}

/// `from[].source`. Principals are kept as written (compare without `spiffe://`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub request_principals: Vec<StringMatch>,
    pub not_request_principals: Vec<StringMatch>,
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    pub service_accounts: Vec<String>,
    pub not_service_accounts: Vec<String>,
    pub ip_blocks: Vec<ipnet::IpNet>,
    pub not_ip_blocks: Vec<ipnet::IpNet>,
    pub remote_ip_blocks: Vec<ipnet::IpNet>,
    pub not_remote_ip_blocks: Vec<ipnet::IpNet>,
}

/// `to[].operation`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Operation {
    pub hosts: Vec<StringMatch>,
    pub not_hosts: Vec<StringMatch>,
    pub methods: Vec<StringMatch>,
    pub not_methods: Vec<StringMatch>,
    pub paths: Vec<StringMatch>,
    pub not_paths: Vec<StringMatch>,
    pub ports: Vec<u16>,
    pub not_ports: Vec<u16>,
}

/// `when[]`, with its key and values parsed once, when compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub key: ConditionKey,
    pub values: ConditionValues,
    pub not_values: ConditionValues,
}

/// A `when` key Istio documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConditionKey {
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    SourceServiceAccount,
    DestinationIp,
    DestinationPort,
    ConnectionSni,
    /// `request.headers[<name>]`.
    RequestHeader(http::HeaderName),
    RequestAuthPrincipal,
    RequestAuthAudiences,
    RequestAuthPresenter,
    /// `request.auth.claims[<claim>]` (nested claims as `[a][b]`, kept as written inside).
    RequestAuthClaim(String),
}

impl ConditionKey {
    /// Whether the key reads a request's validated JWT (`request.auth.*`).
    pub fn reads_jwt(&self) -> bool {
        matches!(
            self,
            Self::RequestAuthPrincipal
                | Self::RequestAuthAudiences
                | Self::RequestAuthPresenter
                | Self::RequestAuthClaim(_)
        )
    }

    /// Parses a key as written in a policy; `None` for a key Istio does not document.
    pub fn parse(key: &str) -> Option<Self> {
        let bracketed = |prefix: &str| key.strip_prefix(prefix)?.strip_suffix(']');
        if let Some(name) = bracketed("request.headers[") {
            return http::HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(Self::RequestHeader);
        }
        if let Some(claim) = bracketed("request.auth.claims[").filter(|c| !c.is_empty()) {
            return Some(Self::RequestAuthClaim(claim.to_string()));
        }
        Some(match key {
            "source.ip" => Self::SourceIp,
            "remote.ip" => Self::RemoteIp,
            "source.namespace" => Self::SourceNamespace,
            "source.principal" => Self::SourcePrincipal,
            "source.serviceAccount" => Self::SourceServiceAccount,
            "destination.ip" => Self::DestinationIp,
            "destination.port" => Self::DestinationPort,
            "connection.sni" => Self::ConnectionSni,
            "request.auth.principal" => Self::RequestAuthPrincipal,
            "request.auth.audiences" => Self::RequestAuthAudiences,
            "request.auth.presenter" => Self::RequestAuthPresenter,
            _ => return None,
        })
    }

    /// Whether an L4 proxy (no HTTP, no SNI) can evaluate the key.
    pub fn is_l4(&self) -> bool {
        matches!(
            self,
            Self::SourceIp
                | Self::SourceNamespace
                | Self::SourcePrincipal
                | Self::SourceServiceAccount
                | Self::DestinationIp
                | Self::DestinationPort
        )
    }

    /// What the key's values are: addresses, ports or strings.
    pub fn value_kind(&self) -> ValueKind {
        match self {
            Self::SourceIp | Self::RemoteIp | Self::DestinationIp => ValueKind::Ip,
            Self::DestinationPort => ValueKind::Port,
            _ => ValueKind::String,
        }
    }
}

/// The kind of value a condition key has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Ip,
    Port,
    String,
}

/// `values` or `notValues` of a condition, typed by its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConditionValues {
    /// Addresses or CIDRs (a bare address is a single-host network).
    Ips(Vec<ipnet::IpNet>),
    Ports(Vec<u16>),
    Strings(Vec<StringMatch>),
}

impl ConditionValues {
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Ips(v) => v.is_empty(),
            Self::Ports(v) => v.is_empty(),
            Self::Strings(v) => v.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_templates_match_whole_segments() {
        let template = |t: &str| match StringMatch::parse_path(t) {
            Ok(StringMatch::Template(t)) => t,
            other => panic!("{t}: {other:?}"),
        };
        let one = template("/accounts/{*}/balance");
        assert!(one.matches("/accounts/42/balance"));
        for path in [
            "/accounts/42/7/balance",
            "/accounts//balance",
            "/accounts/42/balance/x",
            "/accounts/42",
        ] {
            assert!(!one.matches(path), "{path}");
        }
        let rest = template("/files/{**}");
        for path in ["/files/", "/files/a", "/files/a/b/c"] {
            assert!(rest.matches(path), "{path}");
        }
        assert!(!rest.matches("/files"));
        assert!(!rest.matches("/filesx/a"));
        let both = template("/{*}/v1/{**}");
        assert!(both.matches("/shop/v1/items/3"));
        assert!(!both.matches("/shop/v2/items/3"));
        // Without an operator a path is one of the usual forms, `*` included.
        assert_eq!(
            StringMatch::parse_path("/a*"),
            Ok(StringMatch::Prefix("/a".into()))
        );
        assert_eq!(
            StringMatch::parse_path("/{id}"),
            Ok(StringMatch::Exact("/{id}".into()))
        );
    }

    #[test]
    fn path_templates_that_envoy_would_refuse_are_refused() {
        for (bad, why) in [
            ("/a/{**}/b", "must be the last operator"),
            ("/a{*}", "whole segments"),
            ("/a/{*}x", "whole segments"),
            ("/a/{*}/b*", "whole segments"),
            ("a/{*}", "must start with /"),
        ] {
            let error = StringMatch::parse_path(bad).expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn string_match_forms() {
        assert_eq!(StringMatch::parse("*"), StringMatch::Presence);
        assert_eq!(
            StringMatch::parse("*.local"),
            StringMatch::Suffix(".local".into())
        );
        assert_eq!(
            StringMatch::parse("ns/*"),
            StringMatch::Prefix("ns/".into())
        );
        assert_eq!(StringMatch::parse("a"), StringMatch::Exact("a".into()));
        assert!(StringMatch::parse("*").matches("x"));
        assert!(!StringMatch::parse("*").matches(""));
        assert!(StringMatch::parse("*/sa/sleep").matches("cluster.local/ns/a/sa/sleep"));
        assert!(!StringMatch::parse("*/sa/sleep").matches("cluster.local/ns/a/sa/other"));
        assert!(StringMatch::parse("cluster.local/ns/a/*").matches("cluster.local/ns/a/sa/x"));
        assert!(!StringMatch::parse("cluster.local/ns/a/*").matches("cluster.local/ns/b/sa/x"));
        assert!(StringMatch::parse("GET").matches("GET"));
        assert!(!StringMatch::parse("GET").matches("GETX"));
        assert!(StringMatch::parse("*.Example.com").matches_ignore_ascii_case("a.EXAMPLE.com"));
        assert!(StringMatch::parse("API.*").matches_ignore_ascii_case("api.x"));
        assert!(StringMatch::parse("Host").matches_ignore_ascii_case("hOST"));
        assert!(!StringMatch::parse("*.example.com").matches_ignore_ascii_case("com"));
    }

    #[test]
    fn actions() {
        assert_eq!(Action::parse("DENY"), Some(Action::Deny));
        assert_eq!(Action::parse("deny"), None);
    }
}
