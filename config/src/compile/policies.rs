//! AuthorizationPolicy manifests → `AuthorizationPolicy`, with validation.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::labels;
use super::mesh_config::MESH_CONFIG_MAP;
use crate::error::{Diagnostics, Origin, Reason};
use crate::ext_authz::ExtAuthzProvider;
use crate::manifest::authz::{
    ConditionSpec, OperationSpec, PolicySpec, PortValue, RuleSpec, SourceSpec, TargetRefSpec,
    WorkloadSelector,
};
use crate::manifest::{AuthzObject, Doc};
use crate::policy::{
    Action, AuthorizationPolicy, Condition, ConditionKey, ConditionValues, GATEWAY_GROUP,
    Operation, PolicyScope, PolicyTargetRef, Rule, Source, StringMatch, ValueKind, reference_group,
};
use crate::{DEFAULT_TRUST_DOMAIN, ROOT_NAMESPACE};

/// Compiles every policy, sorted by namespace/name.
/// `authenticated_namespaces`: where RequestAuthentications are (a policy elsewhere that reads
/// a JWT is warned of: no request it sees has one).
/// `providers`: the mesh config's ext_authz providers, which CUSTOM policies name.
pub(crate) fn policies(
    docs: &[Doc<AuthzObject>],
    trust_domain: &str,
    authenticated_namespaces: &HashSet<&str>,
    providers: &HashMap<String, Arc<ExtAuthzProvider>>,
    diag: &mut Diagnostics,
) -> Vec<Arc<AuthorizationPolicy>> {
    let mut out = Vec::new();
    for doc in docs {
        let mut cx = Cx::new(&doc.origin, diag);
        cx.trust_domain = trust_domain;
        cx.jwt_in_scope = [doc.namespace.as_str(), ROOT_NAMESPACE]
            .iter()
            .any(|ns| authenticated_namespaces.contains(ns));
        let policy = cx.policy(&doc.namespace, &doc.name, &doc.obj.spec, providers);
        if !cx.failed {
            out.push(Arc::new(policy));
        }
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// Where a policy (an AuthorizationPolicy, a RequestAuthentication) attaches: its
/// `selector`, `targetRef` and `targetRefs`.
pub(super) struct Attachment<'s> {
    pub selector: Option<&'s WorkloadSelector>,
    pub target_ref: Option<&'s TargetRefSpec>,
    pub target_refs: Option<&'s [TargetRefSpec]>,
}

impl<'s> Attachment<'s> {
    /// A spec's `selector`, `targetRef` and `targetRefs`.
    pub fn of(
        selector: &'s Option<WorkloadSelector>,
        target_ref: &'s Option<TargetRefSpec>,
        target_refs: &'s Option<Vec<TargetRefSpec>>,
    ) -> Self {
        Attachment {
            selector: selector.as_ref(),
            target_ref: target_ref.as_ref(),
            target_refs: target_refs.as_deref(),
        }
    }
}

/// Compiles one policy object, collecting its errors.
pub(super) struct Cx<'a> {
    pub origin: &'a Origin,
    pub diag: &'a mut Diagnostics,
    /// Whether any error was reported (the object is then left out).
    pub failed: bool,
    /// Whether a RequestAuthentication could apply where the policy does (its namespace's,
    /// or the root namespace's).
    pub jwt_in_scope: bool,
    /// The mesh's trust domain, which principals are read in.
    pub trust_domain: &'a str,
}

impl<'a> Cx<'a> {
    pub fn new(origin: &'a Origin, diag: &'a mut Diagnostics) -> Self {
        Cx {
            origin,
            diag,
            failed: false,
            jwt_in_scope: true,
            trust_domain: DEFAULT_TRUST_DOMAIN,
        }
    }
}

impl Cx<'_> {
    pub fn error(&mut self, field: String, message: impl Into<String>) {
        self.failed = true;
        self.diag.error(self.origin, field, message);
    }

    fn policy(
        &mut self,
        namespace: &str,
        name: &str,
        spec: &PolicySpec,
        providers: &HashMap<String, Arc<ExtAuthzProvider>>,
    ) -> AuthorizationPolicy {
        let action = match spec.action.as_deref() {
            None | Some("") => Action::Allow,
            Some(text) => Action::parse(text).unwrap_or_else(|| {
                let msg = format!(
                    "unknown policy action {text:?}: expected ALLOW, DENY, AUDIT or CUSTOM"
                );
                self.error("spec.action".into(), msg);
                Action::Allow
            }),
        };
        let provider = spec.provider.as_ref().map(|p| {
            let name = p.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            name.to_string()
        });
        match (&provider, action) {
            (None, Action::Custom) => {
                self.error("spec.provider".into(), "required for action CUSTOM");
            }
            (Some(_), Action::Custom) => {}
            (Some(_), _) => {
                self.error(
                    "spec.provider".into(),
                    "only a CUSTOM policy names a provider",
                );
            }
            (None, _) => {}
        }
        if let Some(name) = provider.as_deref().filter(|n| !providers.contains_key(*n)) {
            let msg = format!(
                "no ext_authz extension provider {name:?} in the mesh config \
                 (ConfigMap {ROOT_NAMESPACE}/{MESH_CONFIG_MAP}): requests the policy's rules \
                 match are denied (fail closed)"
            );
            let reason = Reason::UnsupportedValue;
            (self.diag).warn_because(reason, self.origin, "spec.provider.name", msg);
        }
        let attachment = Attachment::of(&spec.selector, &spec.target_ref, &spec.target_refs);
        let scope = self.scope(namespace, &attachment);
        let rules = (spec.rules.iter().flatten().enumerate())
            .map(|(i, r)| self.rule(&format!("spec.rules[{i}]"), r))
            .collect();
        AuthorizationPolicy {
            namespace: namespace.to_string(),
            name: name.to_string(),
            action,
            provider,
            scope,
            rules,
        }
    }

    pub fn scope(&mut self, namespace: &str, spec: &Attachment<'_>) -> PolicyScope {
        let selector = spec.selector.and_then(|s| s.match_labels.clone());
        let selector = selector.filter(|l| !l.is_empty());
        let single = spec
            .target_ref
            .iter()
            .map(|t| ("spec.targetRef".to_string(), *t));
        let many = (spec.target_refs.iter().copied().flatten().enumerate())
            .map(|(i, t)| (format!("spec.targetRefs[{i}]"), t));
        let refs: Vec<PolicyTargetRef> = single
            .chain(many)
            .filter_map(|(field, t)| self.target_ref(namespace, &field, t))
            .collect();
        let has_refs = spec.target_ref.is_some() || spec.target_refs.is_some_and(|t| !t.is_empty());
        if let Some(sel) = &selector {
            for (key, msg) in labels::check_selector(sel) {
                self.error(format!("spec.selector.matchLabels[{key}]"), msg);
            }
            if has_refs {
                self.error(
                    "spec.selector".into(),
                    "selector and targetRefs are mutually exclusive",
                );
            }
        }
        match (selector, has_refs) {
            (_, true) => PolicyScope::TargetRefs(refs),
            (Some(sel), false) => PolicyScope::Selector(sel),
            (None, false) if namespace == ROOT_NAMESPACE => PolicyScope::Global,
            (None, false) => PolicyScope::Namespace,
        }
    }

    fn target_ref(
        &mut self,
        namespace: &str,
        field: &str,
        t: &TargetRefSpec,
    ) -> Option<PolicyTargetRef> {
        let group = reference_group(&t.kind, t.group.as_deref());
        let supported = matches!(
            (group, t.kind.as_str()),
            ("", "Service") | (GATEWAY_GROUP, "Gateway") | (GATEWAY_GROUP, "GatewayClass")
        );
        if !supported {
            let msg = format!("unsupported targetRef kind {group:?}/{:?}", t.kind);
            self.error(format!("{field}.kind"), msg);
            return None;
        }
        if t.kind == "GatewayClass" && namespace != ROOT_NAMESPACE {
            let msg = format!(
                "a GatewayClass target is only allowed in the root namespace {ROOT_NAMESPACE}"
            );
            self.error(format!("{field}.kind"), msg);
            return None;
        }
        let target_ns = t
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(namespace);
        if target_ns != namespace {
            self.error(
                format!("{field}.namespace"),
                "must equal the policy's namespace",
            );
            return None;
        }
        Some(PolicyTargetRef {
            group: group.to_string(),
            kind: t.kind.clone(),
            name: t.name.clone(),
            namespace: target_ns.to_string(),
        })
    }

    fn rule(&mut self, field: &str, r: &RuleSpec) -> Rule {
        let from = (r.from.iter().flatten().enumerate())
            .map(|(i, f)| self.source(&format!("{field}.from[{i}].source"), &f.source))
            .collect();
        let to = (r.to.iter().flatten().enumerate())
            .map(|(i, t)| self.operation(&format!("{field}.to[{i}].operation"), &t.operation))
            .collect();
        let when = (r.when.iter().flatten().enumerate())
            .filter_map(|(i, c)| self.condition(&format!("{field}.when[{i}]"), c))
            .collect();
        Rule { from, to, when }
    }

    /// Warns of a field that reads a request's JWT where no RequestAuthentication could
    /// apply: no request has a validated JWT there, so what it asks of it is always the same.
    fn no_jwt(&mut self, field: String, outcome: &str) {
        if self.jwt_in_scope {
            return;
        }
        let msg = format!(
            "reads a request's JWT, but no RequestAuthentication is in this namespace or the \
             root namespace {ROOT_NAMESPACE}, so no request has one: this {outcome}"
        );
        (self.diag).warn_because(Reason::NoEffect, self.origin, field, msg);
    }

    fn source(&mut self, field: &str, s: &SourceSpec) -> Source {
        if !s.request_principals.is_empty() {
            self.no_jwt(format!("{field}.requestPrincipals"), "never matches");
        }
        if !s.not_request_principals.is_empty() {
            let outcome = "matches every request";
            self.no_jwt(format!("{field}.notRequestPrincipals"), outcome);
        }
        Source {
            principals: self.principals(&format!("{field}.principals"), &s.principals),
            not_principals: self.principals(&format!("{field}.notPrincipals"), &s.not_principals),
            request_principals: patterns(&s.request_principals),
            not_request_principals: patterns(&s.not_request_principals),
            namespaces: patterns(&s.namespaces),
            not_namespaces: patterns(&s.not_namespaces),
            service_accounts: s.service_accounts.clone(),
            not_service_accounts: s.not_service_accounts.clone(),
            ip_blocks: self.cidrs(&format!("{field}.ipBlocks"), &s.ip_blocks),
            not_ip_blocks: self.cidrs(&format!("{field}.notIpBlocks"), &s.not_ip_blocks),
            remote_ip_blocks: self.cidrs(&format!("{field}.remoteIpBlocks"), &s.remote_ip_blocks),
            not_remote_ip_blocks: self.cidrs(
                &format!("{field}.notRemoteIpBlocks"),
                &s.not_remote_ip_blocks,
            ),
        }
    }

    fn operation(&mut self, field: &str, o: &OperationSpec) -> Operation {
        Operation {
            hosts: patterns(&o.hosts),
            not_hosts: patterns(&o.not_hosts),
            methods: patterns(&o.methods),
            not_methods: patterns(&o.not_methods),
            paths: self.path_patterns(&format!("{field}.paths"), &o.paths),
            not_paths: self.path_patterns(&format!("{field}.notPaths"), &o.not_paths),
            ports: self.ports(&format!("{field}.ports"), &o.ports),
            not_ports: self.ports(&format!("{field}.notPorts"), &o.not_ports),
        }
    }

    /// `paths`/`notPaths`: Istio's string patterns, or templates with `{*}`/`{**}`.
    fn path_patterns(&mut self, field: &str, list: &[String]) -> Vec<StringMatch> {
        let mut out = Vec::with_capacity(list.len());
        for (i, path) in list.iter().enumerate() {
            match StringMatch::parse_path(path) {
                Ok(pattern) => out.push(pattern),
                Err(e) => self.error(format!("{field}[{i}]"), e),
            }
        }
        out
    }

    fn condition(&mut self, field: &str, c: &ConditionSpec) -> Option<Condition> {
        let key = ConditionKey::parse(&c.key);
        if key.is_none() {
            let msg = match c.key.starts_with("experimental.envoy.filters.") {
                true => format!(
                    "{:?} reads Envoy's filter metadata, which a waypoint without Envoy does \
                     not have: not supported",
                    c.key
                ),
                false => format!("unknown condition key {:?}", c.key),
            };
            self.error(format!("{field}.key"), msg);
        }
        if c.values.is_empty() && c.not_values.is_empty() {
            self.error(format!("{field}.values"), "values or notValues is required");
        }
        let key = key?;
        if key.reads_jwt() {
            self.no_jwt(
                format!("{field}.key"),
                "condition never matches with `values`",
            );
        }
        let mut typed = |list: &[String], name: &str| -> ConditionValues {
            let field = format!("{field}.{name}");
            match key.value_kind() {
                ValueKind::Ip => ConditionValues::Ips(self.cidrs(&field, list)),
                ValueKind::Port => {
                    let ports: Vec<PortValue> = list.iter().cloned().map(PortValue::Text).collect();
                    ConditionValues::Ports(self.ports(&field, &ports))
                }
                ValueKind::String if key == ConditionKey::SourcePrincipal => {
                    ConditionValues::Strings(self.principals(&field, list))
                }
                ValueKind::String => ConditionValues::Strings(patterns(list)),
            }
        };
        let values = typed(&c.values, "values");
        let not_values = typed(&c.not_values, "notValues");
        Some(Condition {
            key,
            values,
            not_values,
        })
    }

    fn cidrs(&mut self, field: &str, list: &[String]) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match parse_cidr(text) {
                Some(net) => out.push(net),
                None => self.error(format!("{field}[{i}]"), format!("invalid CIDR {text:?}")),
            }
        }
        out
    }

    fn ports(&mut self, field: &str, list: &[PortValue]) -> Vec<u16> {
        let mut out = Vec::new();
        for (i, p) in list.iter().enumerate() {
            let parsed = match p {
                PortValue::Number(n) => u16::try_from(*n).ok(),
                PortValue::Text(t) => t.trim().parse::<u16>().ok(),
            };
            match parsed.filter(|p| *p > 0) {
                Some(port) => out.push(port),
                None => self.error(
                    format!("{field}[{i}]"),
                    format!("invalid port {p}: must be 1-65535"),
                ),
            }
        }
        out
    }
}

impl Cx<'_> {
    /// Principals as Istio reads them: `cluster.local/...` names the mesh's own trust domain,
    /// whatever it is; one in another trust domain matches no workload here (a warning).
    fn principals(&mut self, field: &str, list: &[String]) -> Vec<StringMatch> {
        let mut out = Vec::with_capacity(list.len());
        for (i, principal) in list.iter().enumerate() {
            let read = in_trust_domain(principal, self.trust_domain);
            if read.is_none() {
                let msg = format!(
                    "{principal:?} is outside the mesh's trust domain {:?}: it matches no \
                     workload",
                    self.trust_domain
                );
                (self.diag).warn_because(
                    Reason::NoEffect,
                    self.origin,
                    format!("{field}[{i}]"),
                    msg,
                );
            }
            out.push(StringMatch::parse(read.as_deref().unwrap_or(principal)));
        }
        out
    }
}

/// `principal` (`<trust domain>/ns/<ns>/sa/<sa>`, Istio's patterns allowed) as it reads in
/// `trust_domain`: `cluster.local` stands for the mesh's own trust domain (as in Istio), a
/// trust domain part that is `*` or matches the mesh's stays, and another is `None` (no
/// workload of this mesh has it). Not five parts: as written, for matching as it is.
fn in_trust_domain(principal: &str, trust_domain: &str) -> Option<String> {
    let spiffe_shaped = principal.split('/').count() == 5;
    let Some((domain, rest)) = principal.split_once('/').filter(|_| spiffe_shaped) else {
        return Some(principal.to_string());
    };
    if domain == "*" || StringMatch::parse(domain).matches(trust_domain) {
        return Some(principal.to_string());
    }
    (domain == DEFAULT_TRUST_DOMAIN).then(|| format!("{trust_domain}/{rest}"))
}

fn patterns(list: &[String]) -> Vec<StringMatch> {
    list.iter().map(|s| StringMatch::parse(s)).collect()
}

/// A CIDR, or a bare address as a single-host network.
pub(crate) fn parse_cidr(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::in_trust_domain;

    #[test]
    fn principals_read_in_the_meshs_trust_domain() {
        let read = |p: &str| in_trust_domain(p, "example.org");
        // `cluster.local` stands for the mesh's own trust domain.
        assert_eq!(
            read("cluster.local/ns/default/sa/web").as_deref(),
            Some("example.org/ns/default/sa/web")
        );
        assert_eq!(
            read("cluster.local/ns/default/sa/*").as_deref(),
            Some("example.org/ns/default/sa/*")
        );
        // Its own, any, or a pattern that matches it: as written.
        for kept in [
            "example.org/ns/default/sa/web",
            "*/ns/default/sa/web",
            "*.org/ns/default/sa/web",
            "*",
            "*/sa/web",
        ] {
            assert_eq!(read(kept).as_deref(), Some(kept));
        }
        // Another trust domain: no workload of this mesh.
        assert_eq!(read("other.org/ns/default/sa/web"), None);
        // In the default trust domain, nothing changes.
        let principal = "cluster.local/ns/default/sa/web";
        assert_eq!(
            in_trust_domain(principal, "cluster.local").as_deref(),
            Some(principal)
        );
    }
}
