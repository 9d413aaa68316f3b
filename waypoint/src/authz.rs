//! L7 AuthorizationPolicy evaluation at the waypoint (Istio semantics): any matching DENY denies;
//! with ALLOW policies in force, a request must match one; a CUSTOM policy's match sends the
//! request to its provider's check (`ext_authz`); AUDIT does not decide. A request's JWT (verified by
//! `authn`) gives `requestPrincipals` and the `request.auth.*` conditions their values.
//! Pure: policies and request attributes in, decision out.

use std::net::IpAddr;
use std::sync::Arc;

pub use mesh_config::authz::{Decision, Denial, PolicyMatch};
use mesh_config::authz::{Peer, Value, any_of, audits, custom_match, decide_allow_deny, none_of};
use mesh_config::{AuthorizationPolicy, Condition, ConditionKey, Operation, Rule, StringMatch};

use crate::authn::JwtIdentity;
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
    /// What the request's verified JWT proved, if it had one.
    pub jwt: Option<&'a JwtIdentity>,
}

/// What the policies make of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(Denial),
    /// No DENY policy matched and the ALLOW policies allow, but a CUSTOM policy's rule matched:
    /// its provider (named here) decides.
    Check {
        provider: String,
        matched: PolicyMatch,
    },
}

pub fn evaluate(policies: &[Arc<AuthorizationPolicy>], attrs: &RequestAttributes<'_>) -> Verdict {
    let matches = |_: &AuthorizationPolicy, rule: &Rule| rule_matches(rule, attrs);
    match decide_allow_deny(policies, matches) {
        Decision::Deny(why) => Verdict::Deny(why),
        Decision::Allow => match custom_match(policies, &matches) {
            None => Verdict::Allow,
            Some((policy, matched)) => Verdict::Check {
                provider: policy.provider.clone().unwrap_or_default(),
                matched,
            },
        },
    }
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
    let request_principal = a.jwt.map(|j| j.principal.as_str());
    (rule.from.is_empty()
        || rule
            .from
            .iter()
            .any(|s| s.matches_peer(&peer) && s.matches_request(request_principal, a.source_ip)))
        && (rule.to.is_empty() || rule.to.iter().any(|o| operation_matches(o, a)))
        && (rule.when.iter()).all(|c| condition_holds(c, &peer, a))
}

/// A condition on a single value, or on a JWT's many (its audiences, a list claim): one of them
/// in `values`, none in `notValues`.
fn condition_holds(c: &Condition, peer: &Peer<'_>, a: &RequestAttributes<'_>) -> bool {
    let values: Vec<Value<'_>> = match (&c.key, a.jwt) {
        (ConditionKey::RequestAuthAudiences, Some(jwt)) => (jwt.audiences.iter())
            .map(|s| Value::from(s.as_str()))
            .collect(),
        (ConditionKey::RequestAuthClaim(path), Some(jwt)) => {
            let path = path.split("][");
            (jwt.claim_values(path).into_iter())
                .map(Value::from)
                .collect()
        }
        _ => return c.matches(condition_value(&c.key, peer, a).as_ref()),
    };
    c.matches_any(&values)
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
        ConditionKey::RequestAuthPrincipal => a.jwt.map(|j| Value::from(j.principal.as_str())),
        ConditionKey::RequestAuthPresenter => {
            a.jwt.and_then(|j| j.presenter.as_deref()).map(Value::from)
        }
        // Without a JWT (else see `condition_holds`), or on a waypoint, which terminates no
        // TLS of its callers (so has no SNI): absent, so `values` never match.
        ConditionKey::RequestAuthAudiences
        | ConditionKey::RequestAuthClaim(_)
        | ConditionKey::ConnectionSni => None,
        _ => peer.condition_value(key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use mesh_config::{Action, ConditionValues, PolicyScope, Source};

    fn policy(action: Action, rules: Vec<Rule>) -> Arc<AuthorizationPolicy> {
        Arc::new(AuthorizationPolicy {
            namespace: "default".into(),
            name: format!("{action:?}").to_lowercase(),
            action,
            provider: None,
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
            jwt: None,
        }
    }

    const PRODUCTPAGE: &str = "cluster.local/ns/default/sa/bookinfo-productpage";
    const SLEEP: &str = "cluster.local/ns/default/sa/sleep";

    #[test]
    fn no_policies_allow() {
        let h = HeaderMap::new();
        assert_eq!(evaluate(&[], &attrs(SLEEP, "GET", &h)), Verdict::Allow);
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
            Verdict::Allow
        );
        assert!(matches!(
            evaluate(&ps, &attrs(PRODUCTPAGE, "POST", &h)),
            Verdict::Deny(_)
        ));
        assert!(matches!(
            evaluate(&ps, &attrs(SLEEP, "GET", &h)),
            Verdict::Deny(_)
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
            Verdict::Deny(Denial::DenyPolicy(PolicyMatch {
                policy: "default/deny".into(),
                rule: 0
            }))
        );
        assert_eq!(
            evaluate(&ps, &attrs(PRODUCTPAGE, "GET", &h)),
            Verdict::Allow
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
        assert_eq!(evaluate(&ps, &attrs(SLEEP, "GET", &h)), Verdict::Allow);
        assert!(matches!(
            evaluate(&ps, &attrs(SLEEP, "GET", &HeaderMap::new())),
            Verdict::Deny(_)
        ));
        let ps = [policy(
            Action::Allow,
            vec![rule("source.ip", "127.0.1.0/24")],
        )];
        assert_eq!(evaluate(&ps, &attrs(SLEEP, "GET", &h)), Verdict::Allow);
        let ps = [policy(Action::Allow, vec![rule("source.ip", "10.0.0.0/8")])];
        assert!(matches!(
            evaluate(&ps, &attrs(SLEEP, "GET", &h)),
            Verdict::Deny(_)
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
            Verdict::Deny(_)
        ));
        assert_eq!(
            evaluate(&ps, &attrs(PRODUCTPAGE, "GET", &h)),
            Verdict::Allow
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
            Verdict::Deny(_)
        ));
    }

    #[test]
    fn a_verified_jwt_gives_request_principals_and_auth_conditions_their_values() {
        let h = HeaderMap::new();
        let claims = serde_json::json!({
            "iss": "https://idp", "sub": "alice", "azp": "web",
            "groups": ["dev", "admin"], "org": {"tier": "gold"}, "level": 3
        });
        let jwt = JwtIdentity {
            principal: "https://idp/alice".into(),
            audiences: vec!["reviews".into(), "ratings".into()],
            presenter: Some("web".into()),
            claims: claims.as_object().cloned().expect("object"),
        };
        let condition = |key: &str, values: &[&str], not_values: &[&str]| {
            let strings = |list: &[&str]| {
                ConditionValues::Strings(list.iter().map(|v| StringMatch::parse(v)).collect())
            };
            Rule {
                when: vec![Condition {
                    key: ConditionKey::parse(key).expect("known key"),
                    values: strings(values),
                    not_values: strings(not_values),
                }],
                ..Rule::default()
            }
        };
        let allows = |rule: Rule, jwt: Option<&JwtIdentity>| {
            let ps = [policy(Action::Allow, vec![rule])];
            let attributes = RequestAttributes {
                jwt,
                ..attrs(SLEEP, "GET", &h)
            };
            evaluate(&ps, &attributes) == Verdict::Allow
        };
        let principal = Rule {
            from: vec![Source {
                request_principals: vec![StringMatch::parse("https://idp/*")],
                ..Source::default()
            }],
            ..Rule::default()
        };
        assert!(allows(principal.clone(), Some(&jwt)));
        assert!(!allows(principal, None));
        for (key, values, not_values, want) in [
            (
                "request.auth.principal",
                &["https://idp/alice"][..],
                &[][..],
                true,
            ),
            ("request.auth.presenter", &["web"], &[], true),
            ("request.auth.audiences", &["ratings"], &[], true),
            ("request.auth.audiences", &["details"], &[], false),
            // A list claim: one element among values, none among notValues.
            ("request.auth.claims[groups]", &["admin"], &[], true),
            ("request.auth.claims[groups]", &[], &["dev"], false),
            ("request.auth.claims[groups]", &["ops"], &[], false),
            // Nested, and a claim that is no string.
            ("request.auth.claims[org][tier]", &["gold"], &[], true),
            ("request.auth.claims[level]", &["3"], &[], false),
            ("request.auth.claims[missing]", &[], &["x"], true),
        ] {
            let rule = condition(key, values, not_values);
            assert_eq!(
                allows(rule.clone(), Some(&jwt)),
                want,
                "{key} {values:?} {not_values:?}"
            );
            // Without a token, `values` never match and `notValues` always do.
            assert_eq!(allows(rule, None), values.is_empty(), "{key} without a JWT");
        }
    }
}
