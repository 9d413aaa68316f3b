//! L4 AuthorizationPolicy, as Istio's ztunnel enforces it. An ALLOW rule that needs HTTP
//! attributes matches nothing; a DENY rule keeps only its L4 part (both stricter). Pure.

use std::net::IpAddr;
use std::sync::Arc;

pub use mesh_config::authz::Decision;
use mesh_config::authz::{Peer, Value, decide};
use mesh_config::{AuthorizationPolicy, ConditionKey};

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

impl<'a> ConnectionAttributes<'a> {
    fn condition_value(&self, peer: &Peer<'a>, key: &ConditionKey) -> Option<Value<'a>> {
        match key {
            ConditionKey::DestinationIp => Some(Value::Ip(self.destination_ip)),
            ConditionKey::DestinationPort => Some(Value::Port(self.destination_port)),
            _ => peer.condition_value(key),
        }
    }
}

pub fn evaluate(policies: &[Arc<AuthorizationPolicy>], a: &ConnectionAttributes<'_>) -> Decision {
    let peer = Peer {
        principal: a.principal,
        namespace: a.namespace,
        ip: a.source_ip,
    };
    decide(policies, |policy, rule| {
        // An ALLOW rule this proxy cannot fully evaluate matches nothing; a DENY rule is
        // evaluated on its L4 part alone. Both err on the side of denying.
        if policy.action == mesh_config::Action::Allow && rule.uses_http_attributes() {
            return false;
        }
        (rule.from.is_empty() || rule.from.iter().any(|s| s.matches_peer(&peer)))
            && (rule.to.is_empty() || rule.to.iter().any(|o| o.matches_port(a.destination_port)))
            && rule
                .when
                .iter()
                .filter(|c| c.is_l4())
                .all(|c| c.matches(a.condition_value(&peer, &c.key).as_ref()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_config::{Action, Operation, PolicyScope, Rule, Source, StringMatch};

    fn policy(action: Action, rule: Rule) -> Arc<AuthorizationPolicy> {
        Arc::new(AuthorizationPolicy {
            namespace: "default".into(),
            name: "p".into(),
            action,
            provider: None,
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
