//! The parts of AuthorizationPolicy evaluation that ztunnel (L4) and the waypoint (L7) share:
//! Istio's decision order, peer matching, port matching and `when` values. Pure functions; each
//! proxy decides which attributes it can see and how a whole rule matches.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::policy::{
    Action, AuthorizationPolicy, Condition, ConditionKey, ConditionValues, Operation, Rule, Source,
    StringMatch,
};

/// The outcome of evaluating policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(Denial),
}

/// A policy's rule that matched: `ns/name` and the rule's index in `rules`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyMatch {
    pub policy: String,
    pub rule: usize,
}

impl PolicyMatch {
    /// The first rule of `policy` that `rule_matches`, if any.
    fn of(
        policy: &AuthorizationPolicy,
        rule_matches: &impl Fn(&AuthorizationPolicy, &Rule) -> bool,
    ) -> Option<Self> {
        let rule = policy.rules.iter().position(|r| rule_matches(policy, r))?;
        Some(PolicyMatch {
            policy: format!("{}/{}", policy.namespace, policy.name),
            rule,
        })
    }
}

impl fmt::Display for PolicyMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rules[{}]", self.policy, self.rule)
    }
}

/// Why a request or connection was denied, as the access log says it (callers are told
/// only "access denied", as Envoy tells them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// A CUSTOM policy's rule matched: the request needs an external authorizer's check,
    /// which could not be made here (an L4 proxy makes none; the provider is not in the mesh
    /// config), so it is denied (fail closed).
    Unchecked(PolicyMatch),
    /// A CUSTOM policy's rule matched and its external authorizer denied the request, or
    /// could not be asked (`why` says which).
    ExternalDeny {
        matched: PolicyMatch,
        provider: String,
        why: String,
    },
    /// A DENY policy's rule matched.
    DenyPolicy(PolicyMatch),
    /// ALLOW policies apply, and none of them (`ns/name` each) matched.
    NoAllowMatch { candidates: Vec<String> },
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::DenyPolicy(matched) => write!(f, "denied by DENY policy {matched}"),
            Denial::Unchecked(matched) => write!(
                f,
                "CUSTOM policy {matched} needs an ext_authz check that cannot be made here: \
                 denied (fail closed)"
            ),
            Denial::ExternalDeny {
                matched,
                provider,
                why,
            } => write!(
                f,
                "CUSTOM policy {matched}: ext_authz provider {provider:?} {why}"
            ),
            Denial::NoAllowMatch { candidates } => {
                write!(f, "no ALLOW policy matched (of {})", candidates.join(", "))
            }
        }
    }
}

/// The peer of a connection as policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    /// Identity without `spiffe://`, e.g. `cluster.local/ns/default/sa/sleep`; None = plaintext.
    pub principal: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub ip: IpAddr,
}

impl<'a> Peer<'a> {
    /// `<namespace>/<service account>` as `serviceAccounts` entries name it.
    fn service_account(&self) -> Option<String> {
        let (_, sa) = self.principal?.rsplit_once("/sa/")?;
        Some(format!("{}/{sa}", self.namespace?))
    }

    /// The value of a `source.*` condition key, `None` for other keys.
    pub fn condition_value(&self, key: &ConditionKey) -> Option<Value<'a>> {
        match key {
            ConditionKey::SourceIp => Some(Value::Ip(self.ip)),
            ConditionKey::SourceNamespace => self.namespace.map(Value::from),
            ConditionKey::SourcePrincipal => self.principal.map(Value::from),
            ConditionKey::SourceServiceAccount => {
                self.service_account().map(|sa| Value::Str(Cow::Owned(sa)))
            }
            _ => None,
        }
    }
}

/// The value an attribute has for one request or connection, typed like condition values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Ip(IpAddr),
    Port(u16),
    Str(Cow<'a, str>),
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(s: &'a str) -> Self {
        Value::Str(Cow::Borrowed(s))
    }
}

/// Istio's order: a matching CUSTOM policy asks its external authorizer (which only a waypoint
/// can: see [`custom_match`]; here it denies, fail closed); any matching DENY denies; with no
/// ALLOW policy, allow; else a matching ALLOW allows and anything else is denied. AUDIT does
/// not decide.
pub fn decide(
    policies: &[Arc<AuthorizationPolicy>],
    rule_matches: impl Fn(&AuthorizationPolicy, &Rule) -> bool,
) -> Decision {
    match custom_match(policies, &rule_matches) {
        Some((_, matched)) => Decision::Deny(Denial::Unchecked(matched)),
        None => decide_allow_deny(policies, rule_matches),
    }
}

/// The first CUSTOM policy with a rule that matches, and which rule.
pub fn custom_match<'p>(
    policies: &'p [Arc<AuthorizationPolicy>],
    rule_matches: &impl Fn(&AuthorizationPolicy, &Rule) -> bool,
) -> Option<(&'p Arc<AuthorizationPolicy>, PolicyMatch)> {
    (policies.iter())
        .filter(|p| p.action == Action::Custom)
        .find_map(|p| Some((p, PolicyMatch::of(p, rule_matches)?)))
}

/// DENY, then ALLOW, as [`decide`] after CUSTOM.
pub fn decide_allow_deny(
    policies: &[Arc<AuthorizationPolicy>],
    rule_matches: impl Fn(&AuthorizationPolicy, &Rule) -> bool,
) -> Decision {
    let of_action = |action| policies.iter().filter(move |p| p.action == action);
    let first_match = |action| of_action(action).find_map(|p| PolicyMatch::of(p, &rule_matches));
    if let Some(matched) = first_match(Action::Deny) {
        return Decision::Deny(Denial::DenyPolicy(matched));
    }
    let mut allows = of_action(Action::Allow).peekable();
    if allows.peek().is_none() {
        return Decision::Allow;
    }
    let matching = |p: &&Arc<AuthorizationPolicy>| p.rules.iter().any(|r| rule_matches(p, r));
    if allows.any(|p| matching(&p)) {
        Decision::Allow
    } else {
        let candidates = of_action(Action::Allow)
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        Decision::Deny(Denial::NoAllowMatch { candidates })
    }
}

/// The AUDIT policies' rules that match: logged, never deciding.
pub fn audits(
    policies: &[Arc<AuthorizationPolicy>],
    rule_matches: impl Fn(&AuthorizationPolicy, &Rule) -> bool,
) -> Vec<PolicyMatch> {
    (policies.iter())
        .filter(|p| p.action == Action::Audit)
        .filter_map(|p| PolicyMatch::of(p, &rule_matches))
        .collect()
}

/// A positive list: empty means no constraint, else the value is present and matches one entry.
pub fn any_of(list: &[StringMatch], value: Option<&str>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|m| m.matches(v)))
}

/// A negative list: the value matches no entry (an absent value matches nothing).
pub fn none_of(list: &[StringMatch], value: Option<&str>) -> bool {
    !value.is_some_and(|v| list.iter().any(|m| m.matches(v)))
}

fn in_blocks(blocks: &[ipnet::IpNet], ip: IpAddr) -> bool {
    blocks.iter().any(|b| b.contains(&ip))
}

impl Source {
    /// The L4 part of a source: principals, namespaces, service accounts and ipBlocks.
    pub fn matches_peer(&self, peer: &Peer<'_>) -> bool {
        let sa = peer.service_account();
        any_of(&self.principals, peer.principal)
            && none_of(&self.not_principals, peer.principal)
            && any_of(&self.namespaces, peer.namespace)
            && none_of(&self.not_namespaces, peer.namespace)
            && (self.service_accounts.is_empty()
                || sa
                    .as_ref()
                    .is_some_and(|sa| self.service_accounts.contains(sa)))
            && !sa
                .as_ref()
                .is_some_and(|sa| self.not_service_accounts.contains(sa))
            && (self.ip_blocks.is_empty() || in_blocks(&self.ip_blocks, peer.ip))
            && !in_blocks(&self.not_ip_blocks, peer.ip)
    }

    /// The HTTP-only part: JWT principals and the original client address.
    pub fn matches_request(&self, request_principal: Option<&str>, remote_ip: IpAddr) -> bool {
        any_of(&self.request_principals, request_principal)
            && none_of(&self.not_request_principals, request_principal)
            && (self.remote_ip_blocks.is_empty() || in_blocks(&self.remote_ip_blocks, remote_ip))
            && !in_blocks(&self.not_remote_ip_blocks, remote_ip)
    }

    pub fn uses_http_attributes(&self) -> bool {
        !(self.request_principals.is_empty()
            && self.not_request_principals.is_empty()
            && self.remote_ip_blocks.is_empty()
            && self.not_remote_ip_blocks.is_empty())
    }
}

impl Operation {
    pub fn matches_port(&self, port: u16) -> bool {
        (self.ports.is_empty() || self.ports.contains(&port)) && !self.not_ports.contains(&port)
    }

    pub fn uses_http_attributes(&self) -> bool {
        !(self.hosts.is_empty()
            && self.not_hosts.is_empty()
            && self.methods.is_empty()
            && self.not_methods.is_empty()
            && self.paths.is_empty()
            && self.not_paths.is_empty())
    }
}

impl ConditionValues {
    /// Whether `value` is one of these (an address within one of the networks).
    fn contain(&self, value: &Value<'_>) -> bool {
        match (self, value) {
            (Self::Ips(nets), Value::Ip(ip)) => in_blocks(nets, *ip),
            (Self::Ports(ports), Value::Port(port)) => ports.contains(port),
            (Self::Strings(list), Value::Str(s)) => list.iter().any(|m| m.matches(s)),
            _ => false,
        }
    }
}

impl Condition {
    /// Whether `value` (None = absent) satisfies `values`/`notValues`.
    pub fn matches(&self, value: Option<&Value<'_>>) -> bool {
        (self.values.is_empty() || value.is_some_and(|v| self.values.contain(v)))
            && !value.is_some_and(|v| self.not_values.contain(v))
    }

    /// Whether an attribute with many values (a JWT's audiences, a list claim) satisfies
    /// `values`/`notValues`: one of them among `values`, none among `notValues` (none at all
    /// is as absent).
    pub fn matches_any(&self, values: &[Value<'_>]) -> bool {
        (self.values.is_empty() || values.iter().any(|v| self.values.contain(v)))
            && !values.iter().any(|v| self.not_values.contain(v))
    }

    pub fn is_l4(&self) -> bool {
        self.key.is_l4()
    }
}

impl Rule {
    /// Whether any part of the rule needs HTTP attributes (an L4 proxy cannot evaluate it).
    pub fn uses_http_attributes(&self) -> bool {
        self.from.iter().any(Source::uses_http_attributes)
            || self.to.iter().any(Operation::uses_http_attributes)
            || self.when.iter().any(|c| !c.is_l4())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyScope;

    fn peer(principal: &str) -> Peer<'_> {
        Peer {
            principal: Some(principal),
            namespace: Some("default"),
            ip: "127.0.1.10".parse().expect("ip"),
        }
    }

    #[test]
    fn peer_fields() {
        let source = Source {
            principals: vec![StringMatch::parse("*/sa/sleep")],
            service_accounts: vec!["default/sleep".into()],
            not_ip_blocks: vec!["10.0.0.0/8".parse().expect("cidr")],
            ..Source::default()
        };
        assert!(source.matches_peer(&peer("cluster.local/ns/default/sa/sleep")));
        assert!(!source.matches_peer(&peer("cluster.local/ns/default/sa/other")));
        let plaintext = Peer {
            principal: None,
            namespace: None,
            ip: "127.0.0.1".parse().expect("ip"),
        };
        assert!(!source.matches_peer(&plaintext));
        assert!(Source::default().matches_peer(&plaintext));
    }

    #[test]
    fn conditions_with_cidrs_and_negation() {
        let c = Condition {
            key: ConditionKey::SourceIp,
            values: ConditionValues::Ips(vec!["127.0.0.0/8".parse().expect("cidr")]),
            not_values: ConditionValues::Ips(vec!["127.0.0.9/32".parse().expect("cidr")]),
        };
        let ip = |s: &str| Value::Ip(s.parse().expect("ip"));
        assert!(c.matches(Some(&ip("127.0.1.1"))));
        assert!(!c.matches(Some(&ip("127.0.0.9"))));
        assert!(!c.matches(Some(&ip("10.0.0.1"))));
        assert!(!c.matches(None));
        assert!(
            !c.matches(Some(&Value::from("127.0.1.1"))),
            "typed, not text"
        );
        assert!(c.is_l4());
    }

    #[test]
    fn ports_strings_and_source_keys() {
        let port = Condition {
            key: ConditionKey::DestinationPort,
            values: ConditionValues::Ports(vec![9080]),
            not_values: ConditionValues::Ports(Vec::new()),
        };
        assert!(port.matches(Some(&Value::Port(9080))));
        assert!(!port.matches(Some(&Value::Port(80))));
        let p = peer("cluster.local/ns/default/sa/sleep");
        let sa = p.condition_value(&ConditionKey::SourceServiceAccount);
        assert_eq!(sa, Some(Value::from("default/sleep")));
        let ns = Condition {
            key: ConditionKey::SourceNamespace,
            values: ConditionValues::Strings(Vec::new()),
            not_values: ConditionValues::Strings(vec![StringMatch::parse("kube-*")]),
        };
        let value = p.condition_value(&ns.key);
        assert!(ns.matches(value.as_ref()));
        assert_eq!(p.condition_value(&ConditionKey::DestinationPort), None);
    }

    #[test]
    fn decision_order() {
        let policy = |action, name: &str| {
            Arc::new(AuthorizationPolicy {
                namespace: "default".into(),
                name: name.into(),
                action,
                provider: None,
                scope: PolicyScope::Namespace,
                rules: vec![Rule::default()],
            })
        };
        let all = |_: &AuthorizationPolicy, _: &Rule| true;
        let none = |_: &AuthorizationPolicy, _: &Rule| false;
        assert_eq!(decide(&[], all), Decision::Allow);
        let both = [policy(Action::Allow, "a"), policy(Action::Deny, "d")];
        let denied = decide(&both, all);
        let by_d = PolicyMatch {
            policy: "default/d".into(),
            rule: 0,
        };
        assert_eq!(denied, Decision::Deny(Denial::DenyPolicy(by_d)));
        let Decision::Deny(why) = denied else {
            unreachable!()
        };
        assert_eq!(why.to_string(), "denied by DENY policy default/d rules[0]");
        let allows = [policy(Action::Allow, "a"), policy(Action::Allow, "b")];
        let unmatched = decide(&allows, none);
        let candidates = vec!["default/a".to_string(), "default/b".to_string()];
        assert_eq!(
            unmatched,
            Decision::Deny(Denial::NoAllowMatch { candidates })
        );
        let Decision::Deny(why) = unmatched else {
            unreachable!()
        };
        assert_eq!(
            why.to_string(),
            "no ALLOW policy matched (of default/a, default/b)"
        );
        assert_eq!(decide(&[policy(Action::Audit, "x")], none), Decision::Allow);
        // CUSTOM comes first, and with no external authorizer to ask it denies what it matches.
        let custom = [policy(Action::Allow, "a"), policy(Action::Custom, "ext")];
        let Decision::Deny(why) = decide(&custom, all) else {
            panic!("a matching CUSTOM policy denies")
        };
        assert!(
            why.to_string()
                .starts_with("CUSTOM policy default/ext rules[0]"),
            "{why}"
        );
        assert_eq!(decide(&custom[1..], none), Decision::Allow);
    }

    #[test]
    fn audits_name_the_rule_that_matched_and_decide_nothing() {
        let audit = Arc::new(AuthorizationPolicy {
            namespace: "default".into(),
            name: "watch".into(),
            action: Action::Audit,
            provider: None,
            scope: PolicyScope::Namespace,
            rules: vec![Rule::default(), Rule::default()],
        });
        let second = |_: &AuthorizationPolicy, r: &Rule| std::ptr::eq(r, &audit.rules[1]);
        let matched = audits(std::slice::from_ref(&audit), second);
        assert_eq!(matched.len(), 1);
        assert_eq!(matched[0].to_string(), "default/watch rules[1]");
        assert_eq!(
            decide(std::slice::from_ref(&audit), second),
            Decision::Allow
        );
    }
}
