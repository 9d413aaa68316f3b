//! L4 AuthorizationPolicy, as Istio's ztunnel enforces it. An ALLOW rule that needs HTTP
//! attributes matches nothing; a DENY rule keeps only its L4 part (both stricter). Pure.

use std::net::IpAddr;
use std::sync::Arc;

use mesh_config::{Action, AuthorizationPolicy, Condition, Operation, Rule, Source, StringMatch};

/// What L4 policy can see of a connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionAttributes<'a> {
    /// Peer identity without `spiffe://` (None for plaintext).
    pub principal: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

const L4_WHEN_KEYS: &[&str] = &[
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

fn has_http_attributes(rule: &Rule) -> bool {
    rule.from.iter().any(|s| {
        !s.request_principals.is_empty()
            || !s.not_request_principals.is_empty()
            || !s.remote_ip_blocks.is_empty()
            || !s.not_remote_ip_blocks.is_empty()
    }) || rule.to.iter().any(|o| {
        !o.hosts.is_empty()
            || !o.not_hosts.is_empty()
            || !o.methods.is_empty()
            || !o.not_methods.is_empty()
            || !o.paths.is_empty()
            || !o.not_paths.is_empty()
    }) || rule
        .when
        .iter()
        .any(|c| !L4_WHEN_KEYS.contains(&c.key.as_str()))
}

pub fn evaluate(policies: &[Arc<AuthorizationPolicy>], a: &ConnectionAttributes<'_>) -> Decision {
    let deny = policies
        .iter()
        .filter(|p| p.action == Action::Deny)
        .find(|p| p.rules.iter().any(|r| rule_matches(r, a)));
    if let Some(p) = deny {
        return Decision::Deny(format!("{}/{}", p.namespace, p.name));
    }
    let allows: Vec<_> = policies
        .iter()
        .filter(|p| p.action == Action::Allow)
        .collect();
    if allows.is_empty() {
        return Decision::Allow;
    }
    let allowed = allows.iter().any(|p| {
        p.rules
            .iter()
            .any(|r| !has_http_attributes(r) && rule_matches(r, a))
    });
    if allowed {
        Decision::Allow
    } else {
        Decision::Deny("no ALLOW policy matched".into())
    }
}

fn rule_matches(rule: &Rule, a: &ConnectionAttributes<'_>) -> bool {
    (rule.from.is_empty() || rule.from.iter().any(|s| source_matches(s, a)))
        && (rule.to.is_empty() || rule.to.iter().any(|o| ports_match(o, a)))
        && rule
            .when
            .iter()
            .filter(|c| L4_WHEN_KEYS.contains(&c.key.as_str()))
            .all(|c| condition_matches(c, a))
}

fn any_of(list: &[StringMatch], value: Option<&str>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|m| m.matches(v)))
}

fn none_of(list: &[StringMatch], value: Option<&str>) -> bool {
    !value.is_some_and(|v| list.iter().any(|m| m.matches(v)))
}

fn source_matches(s: &Source, a: &ConnectionAttributes<'_>) -> bool {
    let sa = a
        .principal
        .and_then(|p| p.rsplit_once("/sa/"))
        .zip(a.namespace)
        .map(|((_, sa), ns)| format!("{ns}/{sa}"));
    let in_blocks = |blocks: &[ipnet::IpNet]| blocks.iter().any(|b| b.contains(&a.source_ip));
    any_of(&s.principals, a.principal)
        && none_of(&s.not_principals, a.principal)
        && any_of(&s.namespaces, a.namespace)
        && none_of(&s.not_namespaces, a.namespace)
        && (s.service_accounts.is_empty()
            || sa
                .as_ref()
                .is_some_and(|sa| s.service_accounts.contains(sa)))
        && !sa
            .as_ref()
            .is_some_and(|sa| s.not_service_accounts.contains(sa))
        && (s.ip_blocks.is_empty() || in_blocks(&s.ip_blocks))
        && !in_blocks(&s.not_ip_blocks)
}

fn ports_match(o: &Operation, a: &ConnectionAttributes<'_>) -> bool {
    (o.ports.is_empty() || o.ports.contains(&a.destination_port))
        && !o.not_ports.contains(&a.destination_port)
}

fn condition_matches(c: &Condition, a: &ConnectionAttributes<'_>) -> bool {
    let value = match c.key.as_str() {
        "source.ip" => Some(a.source_ip.to_string()),
        "source.namespace" => a.namespace.map(str::to_owned),
        "source.principal" => a.principal.map(str::to_owned),
        "destination.ip" => Some(a.destination_ip.to_string()),
        "destination.port" => Some(a.destination_port.to_string()),
        _ => None,
    };
    let ip = value.as_deref().and_then(|v| v.parse::<IpAddr>().ok());
    let hit = |list: &[StringMatch]| {
        value
            .as_deref()
            .is_some_and(|v| list.iter().any(|m| m.matches(v)))
            || list.iter().any(|m| match (m, ip) {
                (StringMatch::Exact(s), Some(ip)) => {
                    s.parse::<ipnet::IpNet>().is_ok_and(|n| n.contains(&ip))
                }
                _ => false,
            })
    };
    (c.values.is_empty() || hit(&c.values)) && !hit(&c.not_values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_config::PolicyScope;

    fn policy(action: Action, rule: Rule) -> Arc<AuthorizationPolicy> {
        Arc::new(AuthorizationPolicy {
            namespace: "default".into(),
            name: "p".into(),
            action,
            scope: PolicyScope::Namespace,
            rules: vec![rule],
        })
    }

    fn attrs(principal: &str, port: u16) -> ConnectionAttributes<'_> {
        ConnectionAttributes {
            principal: Some(principal),
            namespace: Some("default"),
            source_ip: "127.0.1.10".parse().expect("ip"),
            destination_ip: "127.0.2.10".parse().expect("ip"),
            destination_port: port,
        }
    }

    const WAYPOINT: &str = "cluster.local/ns/default/sa/waypoint";
    const SLEEP: &str = "cluster.local/ns/default/sa/sleep";

    fn from(principal: &str) -> Source {
        Source {
            principals: vec![StringMatch::parse(principal)],
            ..Source::default()
        }
    }

    #[test]
    fn allow_principal_and_port() {
        let rule = Rule {
            from: vec![from(WAYPOINT)],
            to: vec![Operation {
                ports: vec![9080],
                ..Operation::default()
            }],
            when: Vec::new(),
        };
        let ps = [policy(Action::Allow, rule)];
        assert_eq!(evaluate(&ps, &attrs(WAYPOINT, 9080)), Decision::Allow);
        assert!(matches!(
            evaluate(&ps, &attrs(WAYPOINT, 9081)),
            Decision::Deny(_)
        ));
        assert!(matches!(
            evaluate(&ps, &attrs(SLEEP, 9080)),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn allow_rule_with_http_fields_matches_nothing() {
        let rule = Rule {
            from: vec![from(WAYPOINT)],
            to: vec![Operation {
                methods: vec![StringMatch::parse("GET")],
                ..Operation::default()
            }],
            when: Vec::new(),
        };
        let ps = [policy(Action::Allow, rule)];
        assert!(matches!(
            evaluate(&ps, &attrs(WAYPOINT, 9080)),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn deny_rule_keeps_its_l4_part() {
        let rule = Rule {
            from: vec![from("*/sa/sleep")],
            to: vec![Operation {
                paths: vec![StringMatch::parse("/admin")],
                ..Operation::default()
            }],
            when: Vec::new(),
        };
        let ps = [policy(Action::Deny, rule)];
        assert!(matches!(
            evaluate(&ps, &attrs(SLEEP, 9080)),
            Decision::Deny(_)
        ));
        assert_eq!(evaluate(&ps, &attrs(WAYPOINT, 9080)), Decision::Allow);
    }

    #[test]
    fn namespaces_and_ip_blocks() {
        let rule = Rule {
            from: vec![Source {
                namespaces: vec![StringMatch::parse("default")],
                not_ip_blocks: vec!["127.0.1.0/24".parse().expect("cidr")],
                ..Source::default()
            }],
            ..Rule::default()
        };
        let ps = [policy(Action::Allow, rule)];
        assert!(matches!(
            evaluate(&ps, &attrs(SLEEP, 9080)),
            Decision::Deny(_)
        ));
        let mut other = attrs(SLEEP, 9080);
        other.source_ip = "127.0.3.1".parse().expect("ip");
        assert_eq!(evaluate(&ps, &other), Decision::Allow);
    }
}
