//! One request's plan: destination, policy, route, backend and endpoint, decided from the
//! current snapshot. Pure, so every branch is unit-testable; the Pingora hooks only carry it out.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_config::{Endpoint, ObjectRef, RouteRule, Service, Snapshot};
use mesh_hbone::Identity;

use crate::authz::{self, Decision, RequestAttributes};
use crate::dispatch::{Destination, dispatch};
use crate::egress::EgressTarget;
use crate::route::{BackendChoice, RequestView, choose_backend, select_rule};
use crate::tunnel_io::TunnelInfo;

/// The port every ztunnel accepts HBONE on.
pub const HBONE_PORT: u16 = 15008;

/// Where a request goes.
#[derive(Clone, Debug)]
pub struct Plan {
    pub destination: Destination,
    pub rule: Option<Arc<RouteRule>>,
    /// The Service that served the request (the route's backend), if any.
    pub backend_service: Option<Arc<Service>>,
    pub endpoint: Endpoint,
    pub target: EgressTarget,
}

/// Why a request is answered by the waypoint itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// Envoy-style response flag for metrics and access logs.
    pub flag: &'static str,
    pub message: String,
}

impl Rejection {
    fn new(status: u16, flag: &'static str, message: impl Into<String>) -> Self {
        Rejection {
            status,
            flag,
            message: message.into(),
        }
    }
}

/// Randomness the plan consumes, supplied by the caller so tests are deterministic.
#[derive(Clone, Copy, Debug)]
pub struct Rolls {
    pub backend: u64,
    pub endpoint: u64,
}

pub fn plan(
    snapshot: &Snapshot,
    waypoint: &ObjectRef,
    tunnel: &TunnelInfo,
    request: &RequestView<'_>,
    host: &str,
    rolls: Rolls,
) -> Result<Plan, Rejection> {
    let me = snapshot.waypoint(waypoint).ok_or_else(|| {
        Rejection::new(
            503,
            "NR",
            format!(
                "waypoint {}/{} is not configured",
                waypoint.namespace, waypoint.name
            ),
        )
    })?;
    let destination = dispatch(snapshot, me, &tunnel.authority)
        .map_err(|e| Rejection::new(503, "NR", e.to_string()))?;

    let principal = tunnel.peer_identity.without_scheme();
    let attributes = RequestAttributes {
        principal: Some(&principal),
        namespace: Some(&tunnel.peer_identity.namespace),
        source_ip: tunnel.client_addr().ip(),
        destination_ip: destination.ip(),
        destination_port: destination.port(),
        host,
        method: request.method,
        path: request.path,
        headers: request.headers,
        request_principal: None,
    };
    let policies = snapshot.waypoint_policies(me, destination.service().map(|s| s.as_ref()));
    if let Decision::Deny(why) = authz::evaluate(&policies, &attributes) {
        return Err(Rejection::new(
            403,
            "DENY",
            format!("RBAC: access denied ({why})"),
        ));
    }

    let (rule, backend_service, endpoints) = match &destination {
        Destination::Workload { workload, port } => {
            let endpoint = Endpoint {
                workload: workload.clone(),
                port: *port,
            };
            (None, None, vec![endpoint])
        }
        Destination::Service { service, port } => {
            let rules = snapshot.routes(service, *port);
            if rules.is_empty() {
                let endpoints = snapshot.endpoints(service, *port).to_vec();
                (None, Some(service.clone()), endpoints)
            } else {
                let rule = select_rule(rules, request)
                    .ok_or_else(|| Rejection::new(404, "NR", "no route matched"))?;
                let backend = match choose_backend(&rule.backends, rolls.backend) {
                    BackendChoice::Chosen(b) => b,
                    BackendChoice::NoWeight => {
                        return Err(Rejection::new(
                            500,
                            "NR",
                            "route has no backend with weight",
                        ));
                    }
                };
                let service = backend.service.clone().ok_or_else(|| {
                    Rejection::new(
                        500,
                        "NR",
                        format!(
                            "backend service {}/{} not found",
                            backend.namespace, backend.name
                        ),
                    )
                })?;
                let endpoints = snapshot.endpoints(&service, backend.port).to_vec();
                (Some(rule.clone()), Some(service), endpoints)
            }
        }
    };
    if endpoints.is_empty() {
        return Err(Rejection::new(503, "UH", "no healthy upstream"));
    }
    let endpoint = endpoints[(rolls.endpoint % endpoints.len() as u64) as usize].clone();
    let target = egress_target(&endpoint)?;
    Ok(Plan {
        destination,
        rule,
        backend_service,
        endpoint,
        target,
    })
}

fn egress_target(endpoint: &Endpoint) -> Result<EgressTarget, Rejection> {
    let identity: Identity = endpoint.workload.identity.parse().map_err(|_| {
        Rejection::new(
            500,
            "UF",
            format!(
                "endpoint identity {:?} is not SPIFFE",
                endpoint.workload.identity
            ),
        )
    })?;
    Ok(EgressTarget {
        authority: SocketAddr::new(endpoint.workload.ip, endpoint.port),
        hbone_addr: SocketAddr::new(endpoint.workload.ip, HBONE_PORT),
        identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(extra: &str) -> Snapshot {
        let yaml = format!("{}{extra}", include_str!("../../examples/demo.yaml"));
        mesh_config::compile(vec![("demo.yaml".into(), yaml)]).expect("demo compiles")
    }

    fn tunnel(sa: &str, authority: &str) -> TunnelInfo {
        TunnelInfo {
            peer_identity: Identity::new("cluster.local", "default", sa),
            peer_addr: "127.0.1.10:40000".parse().expect("addr"),
            local_addr: "127.0.2.20:15008".parse().expect("addr"),
            authority: authority.into(),
            forwarded_for: None,
        }
    }

    fn waypoint() -> ObjectRef {
        ObjectRef {
            namespace: "default".into(),
            name: "waypoint".into(),
        }
    }

    fn run(
        s: &Snapshot,
        sa: &str,
        authority: &str,
        method: &str,
        roll: u64,
    ) -> Result<Plan, Rejection> {
        let headers = http::HeaderMap::new();
        let view = RequestView::new(method, "/reviews/1", &headers);
        let rolls = Rolls {
            backend: roll,
            endpoint: 0,
        };
        plan(
            s,
            &waypoint(),
            &tunnel(sa, authority),
            &view,
            "reviews:9080",
            rolls,
        )
    }

    #[test]
    fn routes_by_weight_to_an_endpoint_of_the_chosen_backend() {
        let s = snapshot("");
        let v1 = run(&s, "bookinfo-productpage", "127.0.100.12:9080", "GET", 0).expect("planned");
        assert_eq!(v1.endpoint.workload.name, "reviews-v1");
        assert_eq!(
            v1.target.authority,
            "127.0.2.10:9080".parse().expect("addr")
        );
        assert_eq!(
            v1.target.hbone_addr,
            "127.0.2.10:15008".parse().expect("addr")
        );
        assert_eq!(v1.target.identity.service_account, "bookinfo-reviews");
        assert!(v1.rule.is_some());
        let v2 = run(&s, "bookinfo-productpage", "127.0.100.12:9080", "GET", 95).expect("planned");
        assert_eq!(v2.endpoint.workload.name, "reviews-v2");
        // Hostname authority works as well as the VIP.
        let by_host = run(
            &s,
            "bookinfo-productpage",
            "reviews.default.svc.cluster.local:9080",
            "GET",
            0,
        );
        assert!(by_host.is_ok());
    }

    #[test]
    fn policy_denies_with_403() {
        let s = snapshot("");
        let denied = run(&s, "sleep", "127.0.100.12:9080", "GET", 0).expect_err("denied");
        assert_eq!((denied.status, denied.flag), (403, "DENY"));
        assert!(denied.message.starts_with("RBAC: access denied"));
        let post =
            run(&s, "bookinfo-productpage", "127.0.100.12:9080", "POST", 0).expect_err("denied");
        assert_eq!(post.status, 403);
    }

    #[test]
    fn services_this_waypoint_does_not_serve_are_refused() {
        let s = snapshot("");
        // ratings has no waypoint.
        let refused =
            run(&s, "bookinfo-productpage", "127.0.100.11:9080", "GET", 0).expect_err("refused");
        assert_eq!((refused.status, refused.flag), (503, "NR"));
        let unknown =
            run(&s, "bookinfo-productpage", "127.9.9.9:80", "GET", 0).expect_err("refused");
        assert_eq!(unknown.status, 503);
    }

    #[test]
    fn missing_backend_service_is_a_500_for_its_share() {
        let yaml = include_str!("../../examples/demo.yaml").replace(
            "- name: reviews-v2\n          port: 9080",
            "- name: reviews-v9\n          port: 9080",
        );
        let s2 = mesh_config::compile(vec![("demo.yaml".into(), yaml)])
            .expect("compiles with a warning");
        assert!(!s2.warnings().is_empty(), "a missing backend is a warning");
        let missing =
            run(&s2, "bookinfo-productpage", "127.0.100.12:9080", "GET", 95).expect_err("500");
        assert_eq!(missing.status, 500);
        assert!(run(&s2, "bookinfo-productpage", "127.0.100.12:9080", "GET", 0).is_ok());
    }
}
