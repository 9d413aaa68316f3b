//! DestinationRule compilation: every field acted on or refused by name, Istio's defaults,
//! host resolution, and rules naming no Service.

mod common;

use std::time::Duration;

use common::*;
use mesh_config::{HashKey, LoadBalancer, OutlierDetection, TrafficPolicy};
use serde_json::{Value, json};

fn rule(name: &str, host: &str, traffic: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"host": host, "trafficPolicy": traffic}
    })
}

fn policy_of(objs: Vec<Value>) -> TrafficPolicy {
    let snap = must_compile(&objs);
    let svc = snap.service("default", "svc").expect("svc");
    snap.traffic_policy(svc).expect("a policy").as_ref().clone()
}

#[test]
fn every_supported_field_compiles_with_istios_defaults_for_the_rest() {
    let p = policy_of(with_svc([rule(
        "dr",
        "svc.default.svc.cluster.local",
        json!({
            "loadBalancer": {"simple": "ROUND_ROBIN"},
            "outlierDetection": {"consecutive5xxErrors": 3, "interval": "1s", "baseEjectionTime": "1.5s"},
            "connectionPool": {
                "tcp": {"connectTimeout": "250ms", "maxConnections": 8},
                "http": {"http2MaxRequests": 100, "maxRequestsPerConnection": 10, "http1MaxPendingRequests": 2,
                         "maxRetries": 4, "idleTimeout": "1m", "h2UpgradePolicy": "DEFAULT"}
            },
            "tls": {"mode": "ISTIO_MUTUAL"}
        }),
    )]));
    assert_eq!(p.load_balancer, LoadBalancer::RoundRobin);
    let outlier = p.outlier_detection.expect("outlier detection");
    assert_eq!(
        outlier,
        OutlierDetection {
            consecutive_5xx: 3,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_millis(1500),
            ..OutlierDetection::default()
        }
    );
    assert_eq!(outlier.max_ejection_percent, 10, "Istio's default");
    let pool = p.connection_pool;
    assert_eq!(pool.max_requests, Some(100));
    assert_eq!(pool.max_requests_per_connection, Some(10));
    assert_eq!(pool.max_retries, Some(4));
    assert_eq!(pool.idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(pool.connect_timeout, Some(Duration::from_millis(250)));
    assert_eq!(pool.max_connections, Some(8));
    assert_eq!(pool.max_pending_requests, Some(2));
}

#[test]
fn load_balancers_and_hash_keys() {
    let lb = |value: Value| {
        policy_of(with_svc([rule(
            "dr",
            "svc",
            json!({"loadBalancer": value}),
        )]))
    };
    assert_eq!(
        lb(json!({"simple": "RANDOM"})).load_balancer,
        LoadBalancer::Random
    );
    assert_eq!(
        lb(json!({"simple": "LEAST_CONN"})).load_balancer,
        LoadBalancer::LeastRequest
    );
    let hashed = |key: Value| lb(json!({"consistentHash": key})).load_balancer;
    assert_eq!(
        hashed(json!({"httpHeaderName": "X-User"})),
        LoadBalancer::ConsistentHash(HashKey::Header(http::HeaderName::from_static("x-user")))
    );
    assert_eq!(
        hashed(json!({"httpCookie": {"name": "session"}})),
        LoadBalancer::ConsistentHash(HashKey::Cookie("session".into()))
    );
    assert_eq!(
        hashed(json!({"useSourceIp": true})),
        LoadBalancer::ConsistentHash(HashKey::SourceIp)
    );
    assert_eq!(
        hashed(json!({"httpQueryParameterName": "user"})),
        LoadBalancer::ConsistentHash(HashKey::QueryParameter("user".into()))
    );
    // A rule with no trafficPolicy is Istio's defaults.
    let bare = json!({"apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
                      "metadata": {"name": "dr", "namespace": "default"}, "spec": {"host": "svc"}});
    let p = policy_of(with_svc([bare]));
    assert_eq!(p.load_balancer, LoadBalancer::LeastRequest);
    assert!(p.outlier_detection.is_none());
}

#[test]
fn bad_values_and_fields_not_acted_on_are_refused_by_name() {
    let tp = "spec.trafficPolicy";
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"loadBalancer": {"simple": "FASTEST"}}),
            vec!["loadBalancer.simple", "FASTEST"],
        ),
        (
            json!({"loadBalancer": {"simple": "PASSTHROUGH"}}),
            vec!["loadBalancer.simple", "PASSTHROUGH"],
        ),
        (
            json!({"loadBalancer": {"consistentHash": {}}}),
            vec!["loadBalancer.consistentHash", "exactly one"],
        ),
        (
            json!({"loadBalancer": {"consistentHash": {"useSourceIp": true, "maglev": {}}}}),
            vec!["consistentHash.maglev", "rendezvous"],
        ),
        (
            json!({"loadBalancer": {"consistentHash": {"httpCookie": {"name": "s", "ttl": "0s"}}}}),
            vec!["httpCookie.ttl", "not supported"],
        ),
        (
            json!({"loadBalancer": {"localityLbSetting": {}}}),
            vec!["localityLbSetting", "not supported"],
        ),
        (
            json!({"outlierDetection": {"consecutive5xxErrors": -1}}),
            vec!["outlierDetection.consecutive5xxErrors", "-1 is not within"],
        ),
        (
            json!({"outlierDetection": {"maxEjectionPercent": 101}}),
            vec!["outlierDetection.maxEjectionPercent", "101"],
        ),
        (
            json!({"outlierDetection": {"interval": "soon"}}),
            vec!["outlierDetection.interval", "invalid duration"],
        ),
        (
            json!({"outlierDetection": {"baseEjectionTime": "-1s"}}),
            vec!["outlierDetection.baseEjectionTime", "less than 1ms"],
        ),
        (
            json!({"connectionPool": {"http": {"http2MaxRequests": 0}}}),
            vec!["http.http2MaxRequests", "0 is not within 1"],
        ),
        (
            json!({"connectionPool": {"tcp": {"maxConnections": -1}}}),
            vec!["tcp.maxConnections", "-1 is not within"],
        ),
        (
            json!({"connectionPool": {"tcp": {"tcpKeepalive": {}}}}),
            vec!["tcp.tcpKeepalive", "not supported yet"],
        ),
        (
            json!({"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}}),
            vec!["h2UpgradePolicy", "never upgraded"],
        ),
        (
            json!({"tls": {"mode": "SIMPLE"}}),
            vec!["tls", "always mutual TLS"],
        ),
        (
            json!({"portLevelSettings": []}),
            vec!["portLevelSettings", "not supported yet"],
        ),
        (
            json!({"loadBalancr": {}}),
            vec!["unknown field `loadBalancr`"],
        ),
    ];
    for (traffic, needles) in cases {
        let errors = must_fail(&with_svc([rule("dr", "svc", traffic.clone())]));
        let mut all = vec!["DestinationRule default/dr"];
        if !needles[0].starts_with("unknown") {
            all.push(tp);
        }
        all.extend(needles);
        assert_error(&errors, &all);
    }
    let subsets = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "dr", "namespace": "default"},
        "spec": {"host": "svc", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}});
    assert_error(
        &must_fail(&with_svc([subsets])),
        &["spec.subsets", "VirtualService"],
    );
}

#[test]
fn rules_naming_no_service_or_a_service_already_ruled_are_reported_not_applied() {
    let snap = must_compile(&with_svc([
        rule("a", "svc", json!({"loadBalancer": {"simple": "RANDOM"}})),
        rule(
            "b",
            "svc.default",
            json!({"loadBalancer": {"simple": "ROUND_ROBIN"}}),
        ),
        rule("c", "nothing.default.svc.cluster.local", json!({})),
    ]));
    let svc = snap.service("default", "svc").expect("svc");
    let policy = snap.traffic_policy(svc).expect("policy");
    assert_eq!(
        policy.load_balancer,
        LoadBalancer::Random,
        "the first by name"
    );
    let warnings: Vec<String> = snap.warnings().iter().map(|w| w.to_string()).collect();
    let warned = |needles: &[&str]| {
        warnings
            .iter()
            .any(|w| needles.iter().all(|n| w.contains(n)))
    };
    assert!(
        warned(&["DestinationRule default/b", "spec.host", "default/a"]),
        "{warnings:?}"
    );
    assert!(
        warned(&["DestinationRule default/c", "spec.host", "no Service"]),
        "{warnings:?}"
    );
}
