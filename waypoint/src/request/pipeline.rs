//! The request pipeline: the stages that decide where a request goes, each a pure function
//! of the snapshot the request started with, each either continuing or answering locally.
//!
//! ```text
//! check ──▶ resolve ──▶ select ──▶ authenticate ──▶ authorize ──▶ route ──▶ Plan (the upstream carries it out)
//!  │ DPE 400  │ NR 503    │ CORS      │ bad JWT 401    │ DENY 403     │ NR 404 / NC 500 / UH 503
//!  │          │           │ preflight │                │              │ redirect 3xx
//!  └──────────┴───────────┴───────────┴────────────────┴──────────────┴──▶ LocalReply
//! ```
//! New stages slot in here; the Pingora hooks only run the pipeline and carry out its plan
//! (the rewrite, the filters, the header edits and response headers it decided on).

use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use mesh_config::{Destination, Endpoint, Filters, ObjectRef, RouteRule, Service, Snapshot};
use mesh_core::ResponseFlag;

use crate::authn::{self, Authenticated, FetchedKeys, JwtIdentity, VerifiedTokens};
use crate::authz::{self, Denial, PolicyMatch, RequestAttributes, Verdict};
use crate::dispatch::dispatch;
use crate::ext_authz::Check;
use crate::filters::{cors, rewrite};
use crate::reply::LocalReply;
use crate::request::attrs::RequestAttrs;
use crate::route::{BackendChoice, Selected, choose_backend, select_rule};
use crate::tunnel_io::TunnelInfo;
use crate::upstream::UpstreamProtocol;

use super::plan::{Backend, MirrorTarget, Plan, Rolls, UrlRewrite, chosen_filters};

/// What a stage returns: go on with `T`, or answer the caller with a local reply.
pub type Flow<T> = Result<T, LocalReply>;

/// What the pipeline reads besides the snapshot and the request: the waypoint it runs in, the
/// tunnel the request came through, and what the waypoint has fetched or drawn for it.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub waypoint: &'a ObjectRef,
    pub tunnel: &'a TunnelInfo,
    pub limits: &'a HeaderLimits,
    /// The key sets of `jwksUri`s fetched so far.
    pub keys: &'a FetchedKeys,
    /// Tokens verified lately (not verified again).
    pub verified: &'a VerifiedTokens,
    pub rolls: Rolls,
}

/// Runs every stage for one request.
pub fn plan(snapshot: &Snapshot, inputs: &Inputs<'_>, request: &RequestAttrs<'_>) -> Flow<Plan> {
    let Inputs {
        waypoint,
        tunnel,
        limits,
        keys,
        verified,
        rolls,
    } = *inputs;
    check(request, limits)?;
    let destination = resolve(snapshot, waypoint, tunnel)?;
    let caller_namespace = &tunnel.peer_identity.namespace;
    let selection = select(snapshot, &destination, caller_namespace, request);
    preflight(&selection, request)?;
    let authenticated = authenticate(snapshot, waypoint, &destination, request, keys, verified)?;
    let jwt = authenticated.identity.as_deref();
    let (audited, ext_authz) = authorize(snapshot, waypoint, tunnel, &destination, request, jwt)?;
    let routed = route(&destination, selection, request, rolls.backend)?;
    if let Backend::Service { service, port } = &routed.backend
        && snapshot.endpoints(service, *port).is_empty()
    {
        let reply = LocalReply::new(503, ResponseFlag::NoHealthyUpstream, "no healthy upstream");
        return Err(reply);
    }
    let mirrors = mirrors(&routed, rolls);
    Ok(Plan {
        ext_authz,
        jwt: authenticated.identity,
        request_edits: authenticated.edits,
        audited,
        mirrors,
        destination,
        rule: routed.rule,
        backend_ref: routed.backend_ref,
        backend: routed.backend,
        declared_protocol: routed.declared_protocol,
        rewrite: routed.rewrite,
        response_headers: routed.response_headers,
    })
}

/// Bounds on a request's headers, Envoy's defaults (`max_request_headers_kb: 60`,
/// `max_headers_count: 100`); a request over either is answered 431.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderLimits {
    /// Sum of every header's name and value length.
    pub max_bytes: usize,
    pub max_count: usize,
}

impl HeaderLimits {
    /// The most bytes a whole HTTP/1.1 request head may take on the wire under these limits:
    /// the headers, 4 bytes of `: ` and line end for each, and 16 KiB for the request line.
    /// Past it a caller is answered 431 before the rest is read (`TunnelIo`); below it, the
    /// headers are measured exactly once parsed.
    pub fn max_head_bytes(&self) -> usize {
        const REQUEST_LINE: usize = 16 << 10;
        self.max_bytes + 4 * self.max_count + REQUEST_LINE
    }
}

impl Default for HeaderLimits {
    fn default() -> Self {
        HeaderLimits {
            max_bytes: 60 << 10,
            max_count: 100,
        }
    }
}

/// A request well-formed enough to route: headers within `limits` (else 431), and HTTP/1.1
/// names its `Host` (RFC 9112 §3.2). (Control characters in the target never reach a route or
/// a backend raw: Pingora percent-encodes them when it parses the request.)
fn check(request: &RequestAttrs<'_>, limits: &HeaderLimits) -> Flow<()> {
    let headers = request.headers;
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > limits.max_count || bytes > limits.max_bytes {
        let message = format!(
            "request headers too large: {} headers, {bytes} bytes (limits {}, {})",
            headers.len(),
            limits.max_count,
            limits.max_bytes
        );
        return Err(LocalReply::new(
            431,
            ResponseFlag::DownstreamProtocolError,
            message,
        ));
    }
    if request.version == http::Version::HTTP_11 && request.host.is_empty() {
        let message = "HTTP/1.1 request without Host";
        return Err(LocalReply::new(
            400,
            ResponseFlag::DownstreamProtocolError,
            message,
        ));
    }
    Ok(())
}

/// The destination the tunnel addressed, if this waypoint serves it.
fn resolve(snapshot: &Snapshot, waypoint: &ObjectRef, tunnel: &TunnelInfo) -> Flow<Destination> {
    dispatch(snapshot, waypoint, &tunnel.authority)
        .map_err(|e| LocalReply::new(503, ResponseFlag::NoRouteFound, e.to_string()))
}

/// RequestAuthentication for the destination: the request's tokens verified (none passes), a
/// token that fails answered 401 with Envoy's reason and `www-authenticate`.
fn authenticate(
    snapshot: &Snapshot,
    waypoint: &ObjectRef,
    destination: &Destination,
    request: &RequestAttrs<'_>,
    keys: &FetchedKeys,
    verified: &VerifiedTokens,
) -> Flow<Authenticated> {
    let service = destination.service().map(|s| s.as_ref());
    let authentications = snapshot.waypoint_authentications(waypoint, service);
    if authentications.is_empty() {
        return Ok(Authenticated::default());
    }
    authn::authenticate(authentications, request, keys, verified).map_err(|why| {
        // Envoy's challenge: the realm is the URL asked for.
        let challenge = format!(
            "Bearer realm=\"http://{}{}\", error=\"invalid_token\"",
            request.host, request.path
        );
        let challenge = HeaderValue::from_str(&challenge)
            .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\""));
        let reply = LocalReply::new(401, ResponseFlag::None, why.to_string());
        reply
            .with_headers(vec![(header::WWW_AUTHENTICATE, challenge)])
            .with_detail(format!("JWT refused: {why}"))
    })
}

/// L7 AuthorizationPolicy for the destination; the AUDIT rules that matched, when allowed.
/// A denied caller is told only "access denied" (as Envoy answers); the log says which
/// policy and rule decided, and what was audited.
fn authorize(
    snapshot: &Snapshot,
    waypoint: &ObjectRef,
    tunnel: &TunnelInfo,
    destination: &Destination,
    request: &RequestAttrs<'_>,
    jwt: Option<&JwtIdentity>,
) -> Flow<(Vec<PolicyMatch>, Option<Check>)> {
    let attributes = RequestAttributes {
        principal: Some(&tunnel.principal),
        namespace: Some(&tunnel.peer_identity.namespace),
        source_ip: tunnel.client_addr().ip(),
        destination_ip: destination.ip(),
        destination_port: destination.port(),
        request: *request,
        jwt,
    };
    let policies = snapshot.waypoint_policies(waypoint, destination.service().map(|s| s.as_ref()));
    let audited = authz::audited(policies, &attributes);
    let denied = |why: Denial| {
        let reply = LocalReply::new(403, ResponseFlag::Deny, "RBAC: access denied");
        Err(reply.with_detail(authz_detail(Some(&why), &audited)))
    };
    match authz::evaluate(policies, &attributes) {
        Verdict::Allow => Ok((audited, None)),
        Verdict::Deny(why) => denied(why),
        Verdict::Check { provider, matched } => match snapshot.ext_authz_provider(&provider) {
            Some(provider) => {
                let provider = provider.clone();
                Ok((audited, Some(Check { provider, matched })))
            }
            // Not in the mesh config: no check can be made (warned of when compiled).
            None => denied(Denial::Unchecked(matched)),
        },
    }
}

/// What the access log says of a request's policies: the denial, the AUDIT rules matched.
pub fn authz_detail(denial: Option<&Denial>, audited: &[PolicyMatch]) -> String {
    let audits = audited.iter().map(|m| format!("audited by {m}"));
    let all: Vec<String> = denial
        .map(ToString::to_string)
        .into_iter()
        .chain(audits)
        .collect();
    all.join("; ")
}

/// The outcome of routing: the rule that matched, what serves the request, and what the
/// rule's filters do to it on the way.
struct Routed {
    rule: Option<Arc<RouteRule>>,
    backend_ref: Option<usize>,
    backend: Backend,
    declared_protocol: Option<UpstreamProtocol>,
    rewrite: UrlRewrite,
    response_headers: Vec<(HeaderName, HeaderValue)>,
}

impl Routed {
    /// Served by `backend` with no rule (so no filter).
    fn without_rule(backend: Backend, declared_protocol: Option<UpstreamProtocol>) -> Self {
        Routed {
            rule: None,
            backend_ref: None,
            backend,
            declared_protocol,
            rewrite: UrlRewrite::default(),
            response_headers: Vec::new(),
        }
    }
}

/// Which of the addressed Service port's rules a request matches. Looked up before
/// authorization, so that a CORS preflight can be answered first.
enum Selection<'s> {
    /// A pod addressed directly, or a Service port without routes: the default route.
    NoRoutes,
    Rule(Selected<'s>),
    /// The port has routes and none matches: 404, once authorized.
    NoMatch,
}

/// The rules a caller from `caller_namespace` gets are its namespace's consumer routes for the
/// Service port, if it has any, else the producer routes (GEP-1294).
fn select<'s>(
    snapshot: &'s Snapshot,
    destination: &Destination,
    caller_namespace: &str,
    request: &RequestAttrs<'_>,
) -> Selection<'s> {
    let Destination::Service { service, port } = destination else {
        return Selection::NoRoutes;
    };
    let Some(rules) = snapshot.rule_set_for(service, *port, caller_namespace) else {
        return Selection::NoRoutes;
    };
    if rules.is_empty() {
        return Selection::NoRoutes;
    }
    let candidates = rules.candidates(request.path);
    select_rule(candidates, request).map_or(Selection::NoMatch, Selection::Rule)
}

/// A CORS preflight from an origin the matched rule allows is answered before authorization,
/// as Envoy's CORS filter (ahead of RBAC) does: browsers send preflights without credentials.
/// Any other preflight is authorized and routed like a request.
fn preflight(selection: &Selection<'_>, request: &RequestAttrs<'_>) -> Flow<()> {
    if let Selection::Rule(Selected { rule, .. }) = selection
        && let Some(cors) = &rule.filters.cors
        && cors::is_preflight(request)
    {
        let headers = cors::preflight_headers(cors, request.headers);
        if !headers.is_empty() {
            return Err(LocalReply::answer(200, "CORS preflight", headers));
        }
    }
    Ok(())
}

/// The rule's filters that answer (a preflight from an origin not allowed, a redirect) and the
/// weighted backend choice; the default route (all the Service's endpoints) where no rule
/// applies, and a pod addressed directly gets itself.
fn route(
    destination: &Destination,
    selection: Selection<'_>,
    request: &RequestAttrs<'_>,
    roll: u64,
) -> Flow<Routed> {
    let (service, port) = match destination {
        Destination::Workload { workload, port } => {
            let endpoint = Endpoint {
                workload: workload.clone(),
                port: *port,
            };
            return Ok(Routed::without_rule(Backend::Pod(endpoint), None));
        }
        Destination::Service { service, port } => (service, *port),
    };
    let Selected { rule, matched } = match selection {
        Selection::Rule(selected) => selected,
        Selection::NoMatch => {
            return Err(LocalReply::new(
                404,
                ResponseFlag::NoRouteFound,
                "no route matched",
            ));
        }
        Selection::NoRoutes => {
            let backend = Backend::Service {
                service: service.clone(),
                port,
            };
            return Ok(Routed::without_rule(backend, declared(service, port)));
        }
    };
    if rule.filters.cors.is_some() && cors::is_preflight(request) {
        // From an origin the rule does not allow: answered without CORS headers, so the
        // browser refuses the actual request.
        return Err(LocalReply::answer(200, "CORS preflight", Vec::new()));
    }
    let redirect = |filters: &Filters| -> Flow<()> {
        match &filters.redirect {
            None => Ok(()),
            Some(r) => {
                let location = rewrite::redirect_location(r, &matched.path, request, port);
                let reply = HeaderValue::from_str(&location).map(|value| {
                    LocalReply::answer(r.status, "redirect", vec![(header::LOCATION, value)])
                });
                Err(reply.unwrap_or_else(|_| {
                    LocalReply::new(
                        500,
                        ResponseFlag::None,
                        "redirect location is not a header value",
                    )
                }))
            }
        }
    };
    redirect(&rule.filters)?;
    let index = match choose_backend(&rule.backends, roll) {
        BackendChoice::Chosen(index) => index,
        BackendChoice::NoWeight => {
            let message = "route has no backend with weight";
            return Err(LocalReply::new(500, ResponseFlag::NoClusterFound, message));
        }
    };
    let backend = &rule.backends[index];
    redirect(&backend.filters)?;
    let served_by = backend.service.as_ref().ok_or_else(|| {
        let message = format!(
            "backend service {}/{} not found",
            backend.namespace, backend.name
        );
        LocalReply::new(500, ResponseFlag::NoClusterFound, message)
    })?;
    let filters = [&rule.filters, &backend.filters];
    let response_headers = (rule.filters.cors.as_ref())
        .map(|cors| cors::response_headers(cors, request.headers))
        .unwrap_or_default();
    Ok(Routed {
        rule: Some(rule.clone()),
        backend_ref: Some(index),
        backend: Backend::Service {
            service: served_by.clone(),
            port: backend.port,
        },
        declared_protocol: declared(served_by, backend.port),
        rewrite: UrlRewrite::of(filters, &matched.path, request),
        response_headers,
    })
}

/// The mirrors (the rule's, then the backend's) that get a copy of this request, each drawn
/// at its `numerator / denominator` share.
fn mirrors(routed: &Routed, rolls: Rolls) -> Vec<MirrorTarget> {
    let all = chosen_filters(routed.rule.as_deref(), routed.backend_ref);
    (all.flat_map(|f| f.mirrors.iter()).enumerate())
        .filter(|(n, m)| rolls.mirror_roll(*n) % u64::from(m.denominator) < u64::from(m.numerator))
        .map(|(_, m)| MirrorTarget {
            service: m.service.clone(),
            port: m.port,
        })
        .collect()
}

fn declared(service: &Service, port: u16) -> Option<UpstreamProtocol> {
    service.port(port).and_then(UpstreamProtocol::declared_by)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::Identity;

    fn snapshot(extra: &str) -> Snapshot {
        let yaml = format!("{}{extra}", include_str!("../../../examples/demo.yaml"));
        mesh_config::compile(vec![("demo.yaml".into(), yaml)]).expect("demo compiles")
    }

    fn tunnel(sa: &str, authority: &str) -> TunnelInfo {
        TunnelInfo::new(
            Identity::new("cluster.local", "default", sa),
            "127.0.1.10:40000".parse().expect("addr"),
            "127.0.2.20:15008".parse().expect("addr"),
            authority.into(),
            None,
        )
    }

    fn waypoint() -> ObjectRef {
        ObjectRef {
            namespace: "default".into(),
            name: "waypoint".into(),
        }
    }

    /// The pipeline's inputs, with no JWKS fetched.
    fn inputs<'a>(
        waypoint: &'a ObjectRef,
        tunnel: &'a TunnelInfo,
        limits: &'a HeaderLimits,
        rolls: Rolls,
    ) -> Inputs<'a> {
        static NO_KEYS: std::sync::LazyLock<FetchedKeys> =
            std::sync::LazyLock::new(FetchedKeys::new);
        static NO_TOKENS: std::sync::LazyLock<VerifiedTokens> =
            std::sync::LazyLock::new(VerifiedTokens::default);
        Inputs {
            waypoint,
            tunnel,
            limits,
            keys: &NO_KEYS,
            verified: &NO_TOKENS,
            rolls,
        }
    }

    fn run(s: &Snapshot, sa: &str, authority: &str, method: &str, roll: u64) -> Flow<Plan> {
        let headers = http::HeaderMap::new();
        let request = RequestAttrs::new(method, "/reviews/1", "reviews:9080", &headers);
        let rolls = Rolls {
            backend: roll,
            mirror: 0,
        };
        plan(
            s,
            &inputs(
                &waypoint(),
                &tunnel(sa, authority),
                &HeaderLimits::default(),
                rolls,
            ),
            &request,
        )
    }

    #[test]
    fn routes_by_weight_to_the_chosen_backend() {
        let s = snapshot("");
        let service_of = |plan: &Plan| match &plan.backend {
            Backend::Service { service, port } => format!("{}:{port}", service.name),
            Backend::Pod(endpoint) => format!("pod {}", endpoint.workload.name),
        };
        let v1 = run(&s, "bookinfo-productpage", "127.0.100.12:9080", "GET", 0).expect("planned");
        assert_eq!(service_of(&v1), "reviews-v1:9080");
        assert!(v1.rule.is_some());
        let v2 = run(&s, "bookinfo-productpage", "127.0.100.12:9080", "GET", 95).expect("planned");
        assert_eq!(service_of(&v2), "reviews-v2:9080");
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
    fn http11_needs_a_host() {
        let s = snapshot("");
        let headers = http::HeaderMap::new();
        let mut request = RequestAttrs::new("GET", "/reviews/1", "", &headers);
        let tunnel = tunnel("bookinfo-productpage", "127.0.100.12:9080");
        let rolls = Rolls {
            backend: 0,
            mirror: 0,
        };
        let refused = plan(
            &s,
            &inputs(&waypoint(), &tunnel, &HeaderLimits::default(), rolls),
            &request,
        )
        .expect_err("no Host");
        let flag = ResponseFlag::DownstreamProtocolError;
        assert_eq!((refused.status, refused.flag), (400, flag));
        request.version = http::Version::HTTP_10;
        assert!(
            plan(
                &s,
                &inputs(&waypoint(), &tunnel, &HeaderLimits::default(), rolls),
                &request,
            )
            .is_ok()
        );
    }

    #[test]
    fn policy_denies_with_403() {
        let s = snapshot("");
        let denied = run(&s, "sleep", "127.0.100.12:9080", "GET", 0).expect_err("denied");
        assert_eq!((denied.status, denied.flag), (403, ResponseFlag::Deny));
        assert_eq!(
            denied.message, "RBAC: access denied",
            "no policy named to the caller"
        );
        let why = "no ALLOW policy matched (of default/reviews-viewer)";
        assert_eq!(denied.detail.as_deref(), Some(why));
        let post =
            run(&s, "bookinfo-productpage", "127.0.100.12:9080", "POST", 0).expect_err("denied");
        assert_eq!(post.status, 403);
    }

    /// The access log says which policy and rule denied, and which AUDIT rules matched.
    #[test]
    fn the_log_names_the_deciding_rule_and_the_audits() {
        let policies = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-delete, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}]
  action: DENY
  rules:
    - to: [{operation: {methods: ["PUT"]}}]
    - to: [{operation: {methods: ["DELETE"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: watch-writes, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}]
  action: AUDIT
  rules:
    - to: [{operation: {methods: ["DELETE", "GET"]}}]
"#;
        let s = snapshot(policies);
        let denied =
            run(&s, "bookinfo-productpage", "127.0.100.12:9080", "DELETE", 0).expect_err("denied");
        let why = "denied by DENY policy default/no-delete rules[1]; \
                   audited by default/watch-writes rules[0]";
        assert_eq!(denied.detail.as_deref(), Some(why));
        let allowed =
            run(&s, "bookinfo-productpage", "127.0.100.12:9080", "GET", 0).expect("allowed");
        let audited: Vec<String> = allowed.audited.iter().map(ToString::to_string).collect();
        assert_eq!(audited, ["default/watch-writes rules[0]"]);
    }

    /// A preflight from an allowed origin is answered before authorization (browsers send
    /// none of the caller's credentials with it); any other is authorized like a request.
    #[test]
    fn allowed_preflights_are_answered_before_authorization() {
        let yaml = include_str!("../../../examples/demo.yaml").replacen(
            "    - filters:\n        - type: RequestHeaderModifier",
            "    - filters:\n        - type: CORS\n          cors:\n            allowOrigins: [\"https://ok.example\"]\n        - type: RequestHeaderModifier",
            1,
        );
        let s = mesh_config::compile(vec![("demo.yaml".into(), yaml)]).expect("compiles");
        let preflight = |origin: &'static str| {
            let headers: http::HeaderMap = [
                (header::ORIGIN, HeaderValue::from_static(origin)),
                (
                    header::ACCESS_CONTROL_REQUEST_METHOD,
                    HeaderValue::from_static("GET"),
                ),
            ]
            .into_iter()
            .collect();
            headers
        };
        // `sleep` may not call reviews at all.
        let tunnel = tunnel("sleep", "127.0.100.12:9080");
        let rolls = Rolls {
            backend: 0,
            mirror: 0,
        };
        let limits = HeaderLimits::default();
        let allowed = preflight("https://ok.example");
        let request = RequestAttrs::new("OPTIONS", "/reviews/1", "reviews:9080", &allowed);
        let answer = plan(&s, &inputs(&waypoint(), &tunnel, &limits, rolls), &request)
            .expect_err("answered");
        assert_eq!((answer.status, answer.flag), (200, ResponseFlag::None));
        assert!(
            answer.headers.iter().any(
                |(n, v)| *n == header::ACCESS_CONTROL_ALLOW_ORIGIN && v == "https://ok.example"
            )
        );
        let other = preflight("https://elsewhere.example");
        let request = RequestAttrs::new("OPTIONS", "/reviews/1", "reviews:9080", &other);
        let denied =
            plan(&s, &inputs(&waypoint(), &tunnel, &limits, rolls), &request).expect_err("denied");
        assert_eq!(denied.status, 403);
    }

    #[test]
    fn services_this_waypoint_does_not_serve_are_refused() {
        let s = snapshot("");
        // ratings has no waypoint.
        let refused =
            run(&s, "bookinfo-productpage", "127.0.100.11:9080", "GET", 0).expect_err("refused");
        assert_eq!(
            (refused.status, refused.flag),
            (503, ResponseFlag::NoRouteFound)
        );
        let unknown =
            run(&s, "bookinfo-productpage", "127.9.9.9:80", "GET", 0).expect_err("refused");
        assert_eq!(unknown.status, 503);
    }

    #[test]
    fn missing_backend_service_is_a_500_for_its_share() {
        let yaml = include_str!("../../../examples/demo.yaml").replace(
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
