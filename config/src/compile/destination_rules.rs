//! DestinationRule manifests → each Service's `TrafficPolicy`, with validation. Every field
//! is either acted on or refused by name with the reason; none is dropped in silence.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::routes::ServiceMap;
use crate::error::{Diagnostics, Origin, Reason};
use crate::manifest::destination_rule::{
    ConnectionPoolSpec, ConsistentHashSpec, HttpSpec, LoadBalancerSpec, OutlierDetectionSpec,
    TcpSpec, TlsSpec, TrafficPolicySpec,
};
use crate::manifest::{DestinationRuleObject, Doc};
use crate::model::ObjectRef;
use crate::traffic::{ConnectionPool, HashKey, LoadBalancer, OutlierDetection, TrafficPolicy};

/// The traffic policy of every Service some DestinationRule names. Two rules for one Service:
/// the first by namespace/name applies, and the other is reported.
pub(crate) fn traffic_policies(
    docs: &[Doc<DestinationRuleObject>],
    services: &ServiceMap,
    diag: &mut Diagnostics,
) -> HashMap<ObjectRef, Arc<TrafficPolicy>> {
    let mut sorted: Vec<&Doc<DestinationRuleObject>> = docs.iter().collect();
    sorted.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut out: BTreeMap<ObjectRef, (ObjectRef, Arc<TrafficPolicy>)> = BTreeMap::new();
    for doc in sorted {
        let mut cx = Cx {
            origin: &doc.origin,
            diag: &mut *diag,
            failed: false,
        };
        let spec = &doc.obj.spec;
        let this = ObjectRef::new(&doc.namespace, &doc.name);
        let policy = cx.rule(spec);
        if cx.failed {
            continue;
        }
        let Some(service) = host_service(&spec.host, &doc.namespace, services) else {
            let msg = format!("host {:?} is no Service of the mesh", spec.host);
            diag.warn_because(Reason::BackendNotFound, &doc.origin, "spec.host", msg);
            continue;
        };
        if let Some((first, _)) = out.get(&service) {
            let msg = format!(
                "Service {service} already has DestinationRule {first}, which applies instead"
            );
            diag.warn(&doc.origin, "spec.host", msg);
            continue;
        }
        out.insert(service, (this, Arc::new(policy)));
    }
    out.into_iter().map(|(svc, (_, p))| (svc, p)).collect()
}

/// The Service `host` names, read as Istio reads it from a rule in `namespace`: `name`,
/// `name.ns`, `name.ns.svc`, or `name.ns.svc.<cluster domain>`.
fn host_service(host: &str, namespace: &str, services: &ServiceMap) -> Option<ObjectRef> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let parts: Vec<&str> = host.split('.').collect();
    let key = match parts.as_slice() {
        [name] => ObjectRef::new(namespace, *name),
        [name, ns] | [name, ns, "svc", ..] => ObjectRef::new(*ns, *name),
        _ => return None,
    };
    let service = services.get(&key)?;
    let full = parts.len() > 3;
    (!full || service.hostname.eq_ignore_ascii_case(&host)).then_some(key)
}

struct Cx<'a> {
    origin: &'a Origin,
    diag: &'a mut Diagnostics,
    failed: bool,
}

impl Cx<'_> {
    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.failed = true;
        self.diag.error(self.origin, field, message);
    }

    fn unsupported(&mut self, field: &str, why: &str) {
        self.failed = true;
        let field = field.to_string();
        (self.diag).error_because(Reason::UnsupportedValue, self.origin, field, why);
    }

    fn refuse_if<T>(&mut self, value: &Option<T>, field: &str, why: &str) {
        if value.is_some() {
            self.unsupported(field, why);
        }
    }

    fn rule(
        &mut self,
        spec: &crate::manifest::destination_rule::DestinationRuleSpec,
    ) -> TrafficPolicy {
        if spec.host.is_empty() {
            self.error("spec.host", "required");
        }
        self.refuse_if(
            &spec.subsets,
            "spec.subsets",
            "subsets are chosen only by VirtualService routes, which the mesh does not read; \
             route to a Service per version with HTTPRoute instead",
        );
        self.refuse_if(
            &spec.workload_selector,
            "spec.workloadSelector",
            "workloadSelector applies to sidecars; a waypoint applies a rule to every caller",
        );
        if let Some(export) = &spec.export_to
            && export.iter().any(|e| e != "*")
        {
            self.unsupported(
                "spec.exportTo",
                "only \"*\" (visible to every namespace) is supported",
            );
        }
        let Some(traffic) = &spec.traffic_policy else {
            return TrafficPolicy::default();
        };
        self.traffic(traffic)
    }

    fn traffic(&mut self, spec: &TrafficPolicySpec) -> TrafficPolicy {
        const AT: &str = "spec.trafficPolicy";
        self.refuse_if(
            &spec.port_level_settings,
            &format!("{AT}.portLevelSettings"),
            "per-port policies are not supported yet; a policy applies to every port",
        );
        let tunnel = "tunnelling TCP through another proxy is not supported";
        self.refuse_if(&spec.tunnel, &format!("{AT}.tunnel"), tunnel);
        let proxy = "the PROXY protocol is not supported";
        self.refuse_if(&spec.proxy_protocol, &format!("{AT}.proxyProtocol"), proxy);
        if let Some(tls) = &spec.tls {
            self.tls(&format!("{AT}.tls"), tls);
        }
        let load_balancer = match &spec.load_balancer {
            Some(lb) => self.load_balancer(&format!("{AT}.loadBalancer"), lb),
            None => LoadBalancer::default(),
        };
        let outlier_detection = (spec.outlier_detection.as_ref())
            .map(|o| self.outlier_detection(&format!("{AT}.outlierDetection"), o));
        let connection_pool = match &spec.connection_pool {
            Some(pool) => self.connection_pool(&format!("{AT}.connectionPool"), pool),
            None => ConnectionPool::default(),
        };
        TrafficPolicy {
            load_balancer,
            outlier_detection,
            connection_pool,
        }
    }

    /// Mesh traffic is always mutual TLS (HBONE): `ISTIO_MUTUAL` says so; nothing else fits.
    fn tls(&mut self, at: &str, tls: &TlsSpec) {
        let only_mode = tls.client_certificate.is_none()
            && tls.private_key.is_none()
            && tls.ca_certificates.is_none()
            && tls.credential_name.is_none()
            && tls.subject_alt_names.is_none()
            && tls.sni.is_none()
            && tls.insecure_skip_verify.is_none()
            && tls.ca_crl.is_none();
        if tls.mode.as_deref() != Some("ISTIO_MUTUAL") || !only_mode {
            self.unsupported(
                at,
                "traffic inside the mesh is always mutual TLS over HBONE; only `mode: \
                 ISTIO_MUTUAL` with no other field fits (TLS to servers outside the mesh is \
                 not supported)",
            );
        }
    }

    fn load_balancer(&mut self, at: &str, lb: &LoadBalancerSpec) -> LoadBalancer {
        let locality = "locality load balancing is not supported yet";
        self.refuse_if(
            &lb.locality_lb_setting,
            &format!("{at}.localityLbSetting"),
            locality,
        );
        let warmup = "slow start (warmup) is not supported yet";
        self.refuse_if(&lb.warmup, &format!("{at}.warmup"), warmup);
        let field = format!("{at}.warmupDurationSecs");
        self.refuse_if(&lb.warmup_duration_secs, &field, warmup);
        match (&lb.simple, &lb.consistent_hash) {
            (Some(_), Some(_)) => {
                self.error(at, "set one of simple and consistentHash, not both");
                LoadBalancer::default()
            }
            (Some(simple), None) => match simple.as_str() {
                "UNSPECIFIED" | "LEAST_REQUEST" | "LEAST_CONN" => LoadBalancer::LeastRequest,
                "ROUND_ROBIN" => LoadBalancer::RoundRobin,
                "RANDOM" => LoadBalancer::Random,
                "PASSTHROUGH" => {
                    let why = "PASSTHROUGH (the caller's original address) does not apply: a \
                               waypoint always balances over the Service's endpoints";
                    self.unsupported(&format!("{at}.simple"), why);
                    LoadBalancer::default()
                }
                other => {
                    let msg = format!(
                        "unknown load balancer {other:?}: expected LEAST_REQUEST, ROUND_ROBIN \
                         or RANDOM"
                    );
                    self.error(&format!("{at}.simple"), msg);
                    LoadBalancer::default()
                }
            },
            (None, Some(hash)) => self.consistent_hash(&format!("{at}.consistentHash"), hash),
            (None, None) => LoadBalancer::default(),
        }
    }

    fn consistent_hash(&mut self, at: &str, hash: &ConsistentHashSpec) -> LoadBalancer {
        let sizing = "the consistent hash here is rendezvous hashing, with no ring or table to \
                      size; remove the field";
        self.refuse_if(&hash.ring_hash, &format!("{at}.ringHash"), sizing);
        self.refuse_if(&hash.maglev, &format!("{at}.maglev"), sizing);
        let field = format!("{at}.minimumRingSize");
        self.refuse_if(&hash.minimum_ring_size, &field, sizing);
        let mut keys = Vec::new();
        if let Some(name) = &hash.http_header_name {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(header) => keys.push(HashKey::Header(header)),
                Err(_) => self.error(
                    &format!("{at}.httpHeaderName"),
                    format!("invalid header name {name:?}"),
                ),
            }
        }
        if let Some(cookie) = &hash.http_cookie {
            if cookie.name.is_empty() {
                self.error(&format!("{at}.httpCookie.name"), "required");
            }
            let generate = "generating an affinity cookie (ttl) is not supported yet; without \
                            ttl the cookie the caller sends is hashed";
            self.refuse_if(&cookie.ttl, &format!("{at}.httpCookie.ttl"), generate);
            let path = "path applies only to a generated cookie (ttl), which is not supported";
            self.refuse_if(&cookie.path, &format!("{at}.httpCookie.path"), path);
            keys.push(HashKey::Cookie(cookie.name.clone()));
        }
        if hash.use_source_ip == Some(true) {
            keys.push(HashKey::SourceIp);
        }
        if let Some(name) = &hash.http_query_parameter_name {
            keys.push(HashKey::QueryParameter(name.clone()));
        }
        if keys.len() != 1 {
            self.error(
                at,
                "set exactly one of httpHeaderName, httpCookie, useSourceIp and \
                 httpQueryParameterName",
            );
            return LoadBalancer::default();
        }
        LoadBalancer::ConsistentHash(keys.remove(0))
    }

    fn outlier_detection(&mut self, at: &str, spec: &OutlierDetectionSpec) -> OutlierDetection {
        let deprecated = "deprecated by Istio; use consecutive5xxErrors or \
                          consecutiveGatewayErrors";
        let field = format!("{at}.consecutiveErrors");
        self.refuse_if(&spec.consecutive_errors, &field, deprecated);
        let mut policy = OutlierDetection {
            split_local_origin: spec.split_external_local_origin_errors.unwrap_or(false),
            ..OutlierDetection::default()
        };
        let (counts, percents) = (i64::from(u32::MAX), 100);
        let numbers = [
            (
                "consecutive5xxErrors",
                spec.consecutive_5xx_errors,
                &mut policy.consecutive_5xx,
                counts,
            ),
            (
                "consecutiveGatewayErrors",
                spec.consecutive_gateway_errors,
                &mut policy.consecutive_gateway,
                counts,
            ),
            (
                "consecutiveLocalOriginFailures",
                spec.consecutive_local_origin_failures,
                &mut policy.consecutive_local_origin,
                counts,
            ),
            (
                "maxEjectionPercent",
                spec.max_ejection_percent,
                &mut policy.max_ejection_percent,
                percents,
            ),
            (
                "minHealthPercent",
                spec.min_health_percent,
                &mut policy.min_health_percent,
                percents,
            ),
        ];
        for (name, value, field, max) in numbers {
            if let Some(n) = self.number(&format!("{at}.{name}"), value, 0, max) {
                *field = n;
            }
        }
        if let Some(d) = self.duration(&format!("{at}.interval"), &spec.interval) {
            policy.interval = d;
        }
        let field = format!("{at}.baseEjectionTime");
        if let Some(d) = self.duration(&field, &spec.base_ejection_time) {
            policy.base_ejection_time = d;
        }
        policy
    }

    fn connection_pool(&mut self, at: &str, spec: &ConnectionPoolSpec) -> ConnectionPool {
        let mut pool = ConnectionPool::default();
        if let Some(tcp) = &spec.tcp {
            self.tcp(&format!("{at}.tcp"), tcp, &mut pool);
        }
        if let Some(http) = &spec.http {
            self.http(&format!("{at}.http"), http, &mut pool);
        }
        pool
    }

    fn tcp(&mut self, at: &str, tcp: &TcpSpec, pool: &mut ConnectionPool) {
        let not_yet = "not supported yet";
        self.refuse_if(&tcp.tcp_keepalive, &format!("{at}.tcpKeepalive"), not_yet);
        let field = format!("{at}.maxConnectionDuration");
        self.refuse_if(&tcp.max_connection_duration, &field, not_yet);
        let idle = "the waypoint's upstream connections are HTTP; use http.idleTimeout";
        self.refuse_if(&tcp.idle_timeout, &format!("{at}.idleTimeout"), idle);
        let field = format!("{at}.connectTimeout");
        pool.connect_timeout = self.duration(&field, &tcp.connect_timeout);
        let max = i64::from(i32::MAX);
        // 0 means unset (Istio's default, 2³² − 1).
        pool.max_connections = self
            .number(&format!("{at}.maxConnections"), tcp.max_connections, 0, max)
            .filter(|n| *n > 0);
    }

    fn http(&mut self, at: &str, http: &HttpSpec, pool: &mut ConnectionPool) {
        let not_yet = "not supported yet";
        let field = format!("{at}.maxConcurrentStreams");
        self.refuse_if(&http.max_concurrent_streams, &field, not_yet);
        if http.use_client_protocol == Some(true) {
            let why = "the upstream protocol follows the Service port's appProtocol or name, \
                       else the caller's; useClientProtocol is not supported";
            self.unsupported(&format!("{at}.useClientProtocol"), why);
        }
        match http.h2_upgrade_policy.as_deref() {
            None | Some("DEFAULT" | "DO_NOT_UPGRADE") => {}
            Some(_) => {
                let why = "HTTP/1.1 is never upgraded to HTTP/2 upstream: declare the port's \
                           protocol (appProtocol or name http2/grpc) instead";
                self.unsupported(&format!("{at}.h2UpgradePolicy"), why);
            }
        }
        let max = i64::from(i32::MAX);
        pool.max_requests = self.number(
            &format!("{at}.http2MaxRequests"),
            http.http2_max_requests,
            1,
            max,
        );
        let field = format!("{at}.maxRequestsPerConnection");
        // 0 means unlimited, as in Istio.
        pool.max_requests_per_connection = self
            .number(&field, http.max_requests_per_connection, 0, max)
            .filter(|n| *n > 0);
        pool.max_retries = self.number(&format!("{at}.maxRetries"), http.max_retries, 0, max);
        let field = format!("{at}.http1MaxPendingRequests");
        pool.max_pending_requests = self
            .number(&field, http.http1_max_pending_requests, 0, max)
            .filter(|n| *n > 0);
        pool.idle_timeout = self.duration(&format!("{at}.idleTimeout"), &http.idle_timeout);
    }

    fn number(&mut self, field: &str, value: Option<i64>, min: i64, max: i64) -> Option<u32> {
        let value = value?;
        if !(min..=max).contains(&value) {
            self.error(field, format!("{value} is not within {min}..={max}"));
            return None;
        }
        u32::try_from(value).ok()
    }

    /// An Istio duration ([`super::istio_duration`]).
    fn duration(&mut self, field: &str, text: &Option<String>) -> Option<Duration> {
        super::istio_duration(text.as_deref()?)
            .map_err(|e| self.error(field, e))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_resolve_as_istio_reads_them() {
        let services: ServiceMap = [("default", "reviews"), ("shop", "cart")]
            .into_iter()
            .map(|(ns, name)| {
                let service = crate::fixtures::compiled_service(ns, name);
                (ObjectRef::new(ns, name), service)
            })
            .collect();
        let at = |host: &str, ns: &str| host_service(host, ns, &services);
        let reviews = Some(ObjectRef::new("default", "reviews"));
        assert_eq!(at("reviews", "default"), reviews);
        assert_eq!(
            at("reviews", "shop"),
            None,
            "short names are the rule's namespace"
        );
        assert_eq!(at("reviews.default", "shop"), reviews);
        assert_eq!(at("reviews.default.svc", "shop"), reviews);
        assert_eq!(at("Reviews.default.svc.cluster.local.", "x"), reviews);
        assert_eq!(at("reviews.default.svc.other.domain", "x"), None);
        assert_eq!(at("*.example.com", "default"), None);
        assert_eq!(
            at("cart.shop", "default"),
            Some(ObjectRef::new("shop", "cart"))
        );
    }
}
