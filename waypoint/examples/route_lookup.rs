//! What routing costs per request as a snapshot grows: the request pipeline (`plan`: checks,
//! destination, authentication, authorization, route selection, backend choice) timed for one
//! request against snapshots with 5 and 5,000 routes, spread over as many Services or all on
//! one Service; then with a RequestAuthentication and a request carrying a JWT to verify.
//!
//! `cargo run --release -p waypoint --example route_lookup` (BENCHMARKS.md has the figures).

use std::hint::black_box;
use std::time::{Duration, Instant};

use mesh_config::fixtures::{self, yaml};
use mesh_config::{ObjectRef, Snapshot};
use mesh_core::Identity;
use serde_json::{Value, json};
use waypoint::authn::{FetchedKeys, VerifiedTokens};
use waypoint::request::{HeaderLimits, Inputs, RequestAttrs, Rolls, plan};
use waypoint::tunnel_io::TunnelInfo;

/// The VIP of Service `i`.
fn vip(i: usize) -> String {
    format!("127.100.{}.{}", i / 250, i % 250 + 1)
}

/// `services` Services on the waypoint (all served by one pod), and `routes` HTTPRoutes with
/// one exact-path rule each, on Service `i % services`.
fn snapshot(services: usize, routes: usize) -> Snapshot {
    snapshot_with(services, routes, Vec::new())
}

/// As [`snapshot`], with `extra` objects.
fn snapshot_with(services: usize, routes: usize, extra: Vec<Value>) -> Snapshot {
    let mut objs: Vec<Value> = fixtures::nodes();
    objs.extend(extra);
    objs.push(fixtures::waypoint_gateway(
        "default",
        "waypoint",
        Some("service"),
    ));
    objs.push(fixtures::waypoint_pod("default", "waypoint", "127.0.2.20"));
    objs.push(fixtures::pod(
        "default",
        "app",
        "127.0.2.10",
        json!({"app": "shared"}),
    ));
    objs.push(fixtures::pod(
        "default",
        "caller",
        "127.0.1.10",
        json!({"app": "caller"}),
    ));
    for i in 0..services {
        let mut svc = fixtures::service(
            "default",
            &format!("svc-{i}"),
            &vip(i),
            json!({"app": "shared"}),
        );
        svc["metadata"]["labels"] = json!({"istio.io/use-waypoint": "waypoint"});
        svc["spec"]["ports"] = json!([{"name": "http", "port": 80, "targetPort": 8080}]);
        objs.push(svc);
    }
    for r in 0..routes {
        let service = format!("svc-{}", r % services);
        let parent = json!([{"group": "", "kind": "Service", "name": service, "port": 80}]);
        let rules = json!([{
            "matches": [{"path": {"type": "Exact", "value": format!("/r{r}")}}],
            "backendRefs": [{"name": service, "port": 80}]
        }]);
        objs.push(fixtures::http_route(
            "default",
            &format!("route-{r}"),
            parent,
            rules,
        ));
    }
    mesh_config::compile(vec![("bench.yaml".into(), yaml(&objs))])
        .expect("the bench manifest compiles")
}

/// Nanoseconds per `plan` of `GET path` to Service 0, over at least half a second.
fn per_request(snapshot: &Snapshot, path: &str) -> f64 {
    per_request_with(snapshot, path, http::HeaderMap::new(), true)
}

/// As [`per_request`], the request carrying `headers`; `cached`: tokens verified once are
/// taken from the waypoint's cache (as a caller sending its token again gets), else every
/// request verifies its token.
fn per_request_with(
    snapshot: &Snapshot,
    path: &str,
    headers: http::HeaderMap,
    cached: bool,
) -> f64 {
    let tunnel = TunnelInfo::new(
        Identity::new("cluster.local", "default", "caller"),
        "127.0.1.10:40000".parse().expect("addr"),
        "127.0.2.20:15008".parse().expect("addr"),
        format!("{}:80", vip(0)),
        None,
    );
    let waypoint = ObjectRef::new("default", "waypoint");
    let request = RequestAttrs::new("GET", path, "svc-0.default:80", &headers);
    let limits = HeaderLimits::default();
    let rolls = Rolls {
        backend: 7,
        mirror: 7,
    };
    let keys = FetchedKeys::new();
    let verified = VerifiedTokens::default();
    let inputs = Inputs {
        waypoint: &waypoint,
        tunnel: &tunnel,
        limits: &limits,
        keys: &keys,
        verified: &verified,
        rolls,
    };
    let outcome = plan(snapshot, &inputs, &request);
    let status = outcome.as_ref().err().map_or(200, |r| r.status);
    assert!(matches!(status, 200 | 404), "{path}: {status}");
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_millis(500) {
        for _ in 0..100 {
            match cached {
                true => black_box(plan(snapshot, &inputs, black_box(&request)).is_ok()),
                false => {
                    let fresh = VerifiedTokens::default();
                    let inputs = Inputs {
                        verified: &fresh,
                        ..inputs
                    };
                    black_box(plan(snapshot, &inputs, black_box(&request)).is_ok())
                }
            };
        }
        n += 100;
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    println!(
        "{:<44} {:>14} {:>14}",
        "snapshot", "matching", "no match (404)"
    );
    let cases = [
        ("5 routes, 5 Services", 5, 5),
        ("5,000 routes, 5,000 Services", 5_000, 5_000),
        ("5 routes, all on one Service", 1, 5),
        ("5,000 routes, all on one Service", 1, 5_000),
    ];
    for (name, services, routes) in cases {
        let snap = snapshot(services, routes);
        // Route 0 is on Service 0 whatever the spread.
        let hit = per_request(&snap, "/r0");
        let miss = per_request(&snap, "/nothing");
        println!("{name:<44} {hit:>11.0} ns {miss:>11.0} ns");
    }
    println!();
    println!(
        "{:<44} {:>14}",
        "5 routes, a JWT verified (RequestAuthentication)", "matching"
    );
    for (name, alg, token, jwk) in jwt_keys() {
        let jwks = json!({"keys": [jwk]}).to_string();
        let authn = fixtures::request_authentication(
            "default",
            "jwt",
            json!({"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"}],
                   "jwtRules": [{"issuer": ISSUER, "jwks": jwks}]}),
        );
        let snap = snapshot_with(5, 5, vec![authn]);
        let mut headers = http::HeaderMap::new();
        let bearer = format!("Bearer {token}");
        headers.insert("authorization", bearer.parse().expect("header"));
        let verifying = per_request_with(&snap, "/r0", headers.clone(), false);
        let kept = per_request_with(&snap, "/r0", headers, true);
        let without = per_request(&snap, "/r0");
        println!(
            "{name:<44} {verifying:>11.0} ns  ({alg}; {kept:.0} ns for a token verified before, \
             {without:.0} ns without a token)"
        );
    }
}

const ISSUER: &str = "https://bench.example";

/// `(case, algorithm, a token, the public JWK)` for ES256 (generated) and RS256 (the tests'
/// 2048-bit key).
fn jwt_keys() -> Vec<(&'static str, &'static str, String, Value)> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let claims = json!({"iss": ISSUER, "sub": "bench", "exp": 4_000_000_000u64});
    let sign = |alg: Algorithm, kid: &str, key: &EncodingKey| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_string());
        encode(&header, &claims, key).expect("signs")
    };
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let public = ec.public_key_raw();
    let (x, y) = public[1..].split_at(32);
    let ec_jwk = json!({"kty": "EC", "crv": "P-256", "kid": "ec",
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
    let es256 = sign(
        Algorithm::ES256,
        "ec",
        &EncodingKey::from_ec_der(&ec.serialize_der()),
    );
    let rsa = EncodingKey::from_rsa_der(include_bytes!("../tests/data/jwt-rsa.der"));
    let rsa_jwk: Value =
        serde_json::from_str(include_str!("../tests/data/jwt-rsa.jwk.json")).expect("jwk");
    let rs256 = sign(Algorithm::RS256, "rsa-1", &rsa);
    vec![
        ("  ES256", "P-256 ECDSA", es256, ec_jwk),
        ("  RS256", "RSA 2048", rs256, rsa_jwk),
    ]
}
