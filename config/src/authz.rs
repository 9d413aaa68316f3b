//! The parts of AuthorizationPolicy evaluation that ztunnel (L4) and the waypoint (L7) share:
//! Istio's decision order, peer matching, port matching and `when` values. Pure functions; each
//! proxy decides which attributes it can see and how a whole rule matches.

use std::net::IpAddr;
use std::sync::Arc;

use crate::policy::{Action, AuthorizationPolicy, Condition, Operation, Rule, Source, StringMatch};

/// `when` keys that an L4 proxy can evaluate.
pub const L4_CONDITION_KEYS: &[&str] = &[
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

/// The outcome of evaluating policies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied: the deciding DENY policy (`ns/name`) or that no ALLOW policy matched.
    Deny(String),
}

/// The peer of a connection as policy sees it.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    /// Identity without `spiffe://`, e.g. `cluster.local/ns/default/sa/sleep`; None = plaintext.
    pub principal: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub ip: IpAddr,
}

impl Peer<'_> {
    /// `<namespace>/<service account>` as `serviceAccounts` entries name it.
    fn service_account(&self) -> Option<String> {
        let (_, sa) = self.principal?.rsplit_once("/sa/")?;
        Some(format!("{}/{sa}", self.namespace?))
    }
}

/// Istio's order: any matching DENY denies; with no ALLOW policy, allow; else a matching ALLOW
/// allows and anything else is denied. AUDIT and CUSTOM do not decide here.
pub fn decide(
    policies: &[Arc<AuthorizationPolicy>],
    rule_matches: impl Fn(&AuthorizationPolicy, &Rule) -> bool,
) -> Decision {
    let matching = |p: &&Arc<AuthorizationPolicy>| p.rules.iter().any(|r| rule_matches(p, r));
    if let Some(deny) = policies
        .iter()
        .filter(|p| p.action == Action::Deny)
        .find(matching)
    {
        return Decision::Deny(format!("{}/{}", deny.namespace, deny.name));
    }
    let mut allows = policies
        .iter()
        .filter(|p| p.action == Action::Allow)
        .peekable();
    if allows.peek().is_none() {
        return Decision::Allow;
    }
    if allows.any(|p| matching(&p)) {
        Decision::Allow
    } else {
        Decision::Deny("no ALLOW policy matched".into())
    }
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

impl Condition {
    /// Whether `value` (None = absent) satisfies `values`/`notValues`. For IP-valued keys an
    /// entry may be a CIDR.
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        let ip: Option<IpAddr> = value.and_then(|v| v.parse().ok());
        let hit = |list: &[StringMatch]| {
            value.is_some_and(|v| list.iter().any(|m| m.matches(v)))
                || list.iter().any(|m| match (m, ip) {
                    (StringMatch::Exact(cidr), Some(ip)) => {
                        cidr.parse::<ipnet::IpNet>().is_ok_and(|n| n.contains(&ip))
                    }
                    _ => false,
                })
        };
        (self.values.is_empty() || hit(&self.values)) && !hit(&self.not_values)
    }

    pub fn is_l4(&self) -> bool {
        L4_CONDITION_KEYS.contains(&self.key.as_str())
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
            key: "source.ip".into(),
            values: vec![StringMatch::parse("127.0.0.0/8")],
            not_values: vec![StringMatch::parse("127.0.0.9")],
        };
        assert!(c.matches_value(Some("127.0.1.1")));
        assert!(!c.matches_value(Some("127.0.0.9")));
        assert!(!c.matches_value(Some("10.0.0.1")));
        assert!(!c.matches_value(None));
        assert!(c.is_l4());
    }

    #[test]
    fn decision_order() {
        let policy = |action, name: &str| {
            Arc::new(AuthorizationPolicy {
                namespace: "default".into(),
                name: name.into(),
                action,
                scope: PolicyScope::Namespace,
                rules: vec![Rule::default()],
            })
        };
        let all = |_: &AuthorizationPolicy, _: &Rule| true;
        let none = |_: &AuthorizationPolicy, _: &Rule| false;
        assert_eq!(decide(&[], all), Decision::Allow);
        let both = [policy(Action::Allow, "a"), policy(Action::Deny, "d")];
        assert_eq!(decide(&both, all), Decision::Deny("default/d".into()));
        assert!(matches!(decide(&both[..1], none), Decision::Deny(_)));
        assert_eq!(decide(&[policy(Action::Audit, "x")], none), Decision::Allow);
    }
}
