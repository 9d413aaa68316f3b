//! L7 AuthorizationPolicy evaluation at the waypoint (Istio semantics): any matching DENY denies;
//! with ALLOW policies in force, a request must match one; a CUSTOM policy's match denies
//! until ext_authz is done (fail closed); AUDIT does not decide.
//! Pure: policies and request attributes in, decision out.

use std::net::IpAddr;
use std::sync::Arc;

pub use mesh_config::authz::{Decision, Denial, PolicyMatch};
use mesh_config::authz::{Peer, Value, any_of, audits, decide, none_of};
use mesh_config::{AuthorizationPolicy, ConditionKey, Operation, Rule, StringMatch};

use crate::request::attrs::RequestAttrs;

/// What a policy can look at for one request.
#[derive(Clone, Copy, Debug)]
pub struct RequestAttributes<'a> {
    /// Caller identity without `spiffe://`, e.g. `cluster.local/ns/default/sa/sleep`.
    pub principal: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub source_ip: IpAddr,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: u16,
    pub request: RequestAttrs<'a>,
    /// `<iss>/<sub>` of a validated JWT (none until RequestAuthentication lands).
    pub request_principal: Option<&'a str>,
}

pub fn evaluate(policies: &[Arc<AuthorizationPolicy>], attrs: &RequestAttributes<'_>) -> Decision {
    decide(policies, |_, rule| rule_matches(rule, attrs))
}

/// The AUDIT policies' rules the request matches (logged; they decide nothing).
pub fn audited(
    policies: &[Arc<AuthorizationPolicy>],
    attrs: &RequestAttributes<'_>,
) -> Vec<PolicyMatch> {
    audits(policies, |_, rule| rule_matches(rule, attrs))
}

fn rule_matches(rule: &Rule, a: &RequestAttributes<'_>) -> bool {
    let peer = Peer {
        principal: a.principal,
        namespace: a.namespace,
        ip: a.source_ip,
    };
    (rule.from.is_empty()
        || rule
            .from
            .iter()
            .any(|s| s.matches_peer(&peer) && s.matches_request(a.request_principal, a.source_ip)))
        && (rule.to.is_empty() || rule.to.iter().any(|o| operation_matches(o, a)))
        && (rule.when.iter()).all(|c| c.matches(condition_value(&c.key, &peer, a).as_ref()))
}

/// Hosts compare case-insensitively, with or without the port.
fn host_matches(list: &[StringMatch], host: &str) -> bool {
    let bare = host.split(':').next().unwrap_or_default();
    list.iter()
        .any(|m| m.matches_ignore_ascii_case(host) || m.matches_ignore_ascii_case(bare))
}

fn operation_matches(o: &Operation, a: &RequestAttributes<'_>) -> bool {
    let r = &a.request;
    (o.hosts.is_empty() || host_matches(&o.hosts, r.host))
        && !host_matches(&o.not_hosts, r.host)
        && any_of(&o.methods, Some(r.method))
        && none_of(&o.not_methods, Some(r.method))
        && any_of(&o.paths, Some(r.path))
        && none_of(&o.not_paths, Some(r.path))
        && o.matches_port(a.destination_port)
}

fn condition_value<'a>(
    key: &ConditionKey,
    peer: &Peer<'a>,
    a: &RequestAttributes<'a>,
) -> Option<Value<'a>> {
    match key {
        ConditionKey::RequestHeader(name) => (a.request.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(Value::from),
        ConditionKey::RemoteIp => Some(Value::Ip(a.source_ip)),
        ConditionKey::DestinationIp => a.destination_ip.map(Value::Ip),
        ConditionKey::DestinationPort => Some(Value::Port(a.destination_port)),
        ConditionKey::RequestAuthPrincipal => a.request_principal.map(Value::from),
        // Present only with a validated JWT (none until RequestAuthentication lands) or a
        // TLS-terminating listener (a waypoint has none): absent, so `values` never match.
        ConditionKey::RequestAuthAudiences
        | ConditionKey::RequestAuthPresenter
        | ConditionKey::RequestAuthClaim(_)
        | ConditionKey::ConnectionSni => None,
        _ => peer.condition_value(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use mesh_config::{Action, Condition, ConditionValues, PolicyScope, Source};

    fn policy(action: Action, rules: Vec<Rule>) -> Arc<AuthorizationPolicy> {
        Arc::new(AuthorizationPolicy {
            namespace: "default".into(),
            name: format!("{action:?}").to_lowercase(),
            action,
            scope: PolicyScope::Namespace,
            rules,
        })
    }

    fn from_principal(p: &str) -> Source {
        Source {
            principals: vec![StringMatch::parse(p)],
            ..Source::default()
        }
    }

    fn methods(m: &[&str]) -> Operation {
        Operation {
            methods: m.iter().map(|m| StringMatch::parse(m)).collect(),
            ..Operation::default()
        }
    }

    fn attrs<'a>(
        principal: &'a str,
        method: &'a str,
        headers: &'a HeaderMap,
    ) -> RequestAttributes<'a> {
        RequestAttributes {
            principal: Some(principal),
            namespace: Some("default"),
            source_ip: "127.0.1.10".parse().expect("ip"),
            destination_ip: Some("127.0.100.12".parse().expect("ip")),
            destination_port: 9080,
            request: RequestAttrs::new(method, "/reviews/1", "reviews:9080", headers),
            request_principal: None,
        }
    }

    const PRODUCTPAGE: &str = "cluster.local/ns/default/sa/bookinfo-productpage";
    const SLEEP: &str = "cluster.local/ns/default/sa/sleep";

    #[test]
    fn no_policies_allow() {
        let h = HeaderMap::new();
        assert_eq!(evaluate(&[], &attrs(SLEEP, "GET", &h)), Decision::Allow);
    }

    #[test]
    fn allow_policy_admits_only_its_matches() {
        let h = HeaderMap::new();
        let allow = policy(
            Action::Allow,
            vec![Rule {
                from: vec![from_principal(PRODUCTPAGE)],
                to: vec![methods(&["GET"])],
                when: Vec::new(),
            }],
        );
        let ps = [allow];
        assert_eq!(
            evaluate(&ps, &attrs(PRODUCTPAGE, "GET", &h)),
            Decision::Allow
        );
        assert!(matches!(
            evaluate(&ps, &attrs(PRODUCTPAGE, "POST", &h)),
            Decision::Deny(_)
        ));
        assert!(matches!(
            evaluate(&ps, &attrs(SLEEP, "GET", &h)),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn deny_beats_allow() {
        let h = HeaderMap::new();
        let allow_all = policy(Action::Allow, vec![Rule::default()]);
        let deny_sleep = policy(
            Action::Deny,
            vec![Rule {
                from: vec![from_principal("*/sa/sleep")],
                ..Rule::default()
            }],
        );
        let ps = [allow_all, deny_sleep];
        assert_eq!(
            evaluate(&ps, &attrs(SLEEP, "GET", &h)),
            Decision::Deny(Denial::DenyPolicy(PolicyMatch {
                policy: "default/deny".into(),
                rule: 0
            }))
        );
        assert_eq!(
            evaluate(&ps, &attrs(PRODUCTPAGE, "GET", &h)),
            Decision::Allow
        );
    }

    #[test]
    fn when_conditions_read_headers_and_ips() {
        let mut h = HeaderMap::new();
        h.insert("x-token", http::HeaderValue::from_static("admin"));
        let rule = |key: &str, value: &str| {
            let key = ConditionKey::parse(key).expect("known key");
            let values = match key {
                ConditionKey::SourceIp => ConditionValues::Ips(vec![value.parse().expect("cidr")]),
                _ => ConditionValues::Strings(vec![StringMatch::parse(value)]),
            };
            Rule {
                when: vec![Condition {
                    key,
                    values,
                    not_values: ConditionValues::Strings(Vec::new()),
                }],
                ..Rule::default()
            }
        };
        let ps = [policy(
            Action::Allow,
            vec![rule("request.headers[x-token]", "admin")],
        )];
        assert_eq!(evaluate(&ps, &attrs(SLEEP, "GET", &h)), Decision::Allow);
        assert!(matches!(
            evaluate(&ps, &attrs(SLEEP, "GET", &HeaderMap::new())),
            Decision::Deny(_)
        ));
        let ps = [policy(
            Action::Allow,
            vec![rule("source.ip", "127.0.1.0/24")],
        )];
        assert_eq!(evaluate(&ps, &attrs(SLEEP, "GET", &h)), Decision::Allow);
        let ps = [policy(Action::Allow, vec![rule("source.ip", "10.0.0.0/8")])];
        assert!(matches!(
            evaluate(&ps, &attrs(SLEEP, "GET", &h)),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn negative_fields_and_request_principals() {
        let h = HeaderMap::new();
        let not_sleep = Source {
            not_principals: vec![StringMatch::parse(SLEEP)],
            ..Source::default()
        };
        let ps = [policy(
            Action::Allow,
            vec![Rule {
                from: vec![not_sleep],
                ..Rule::default()
            }],
        )];
        assert!(matches!(
            evaluate(&ps, &attrs(SLEEP, "GET", &h)),
            Decision::Deny(_)
        ));
        assert_eq!(
            evaluate(&ps, &attrs(PRODUCTPAGE, "GET", &h)),
            Decision::Allow
        );
        // A rule that needs a JWT principal never matches a request without one.
        let jwt = Source {
            request_principals: vec![StringMatch::Presence],
            ..Source::default()
        };
        let ps = [policy(
            Action::Allow,
            vec![Rule {
                from: vec![jwt],
                ..Rule::default()
            }],
        )];
        assert!(matches!(
            evaluate(&ps, &attrs(PRODUCTPAGE, "GET", &h)),
            Decision::Deny(_)
        ));
    }
}
