//! Which endpoint of a Service a request (waypoint) or a connection (ztunnel) goes to: the
//! DestinationRule's load balancer over the endpoints outlier detection has not ejected,
//! preferring (for a retry) ones not tried yet. Pure: the state it reads (requests in flight,
//! ejections, the round-robin position, the randomness) is handed in.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{IpAddr, SocketAddr};

use crate::model::Endpoint;
use crate::traffic::{HashKey, LoadBalancer};

/// One endpoint as the balancer sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'e> {
    pub endpoint: &'e Endpoint,
    pub addr: SocketAddr,
    /// Tries in flight to it.
    pub active: u32,
    pub ejected: bool,
}

/// Inputs that vary per choice.
#[derive(Clone, Copy, Debug, Default)]
pub struct Draw {
    /// The request's consistent-hash key, hashed (`None`: it has none).
    pub key: Option<u64>,
    /// The destination's round-robin position.
    pub round_robin: u64,
    pub rolls: [u64; 2],
}

/// The endpoint to try. Ejected endpoints are skipped unless `ejections_hold` is false or
/// every endpoint is ejected (then all are used: a maybe-failing endpoint beats a certain
/// 503). Endpoints in `tried` are used only when no other is left.
pub fn choose<'e>(
    lb: &LoadBalancer,
    candidates: &[Candidate<'e>],
    tried: &[SocketAddr],
    ejections_hold: bool,
    draw: Draw,
) -> Option<&'e Endpoint> {
    let healthy: Vec<&Candidate<'e>> = candidates
        .iter()
        .filter(|c| !ejections_hold || !c.ejected)
        .collect();
    let pool: Vec<&Candidate<'e>> = if healthy.is_empty() {
        candidates.iter().collect()
    } else {
        healthy
    };
    let untried: Vec<&Candidate<'e>> = pool
        .iter()
        .copied()
        .filter(|c| !tried.contains(&c.addr))
        .collect();
    let pool = if untried.is_empty() { pool } else { untried };
    let at = |i: u64| pool.get((i % pool.len().max(1) as u64) as usize).copied();
    let chosen = match lb {
        LoadBalancer::RoundRobin => at(draw.round_robin),
        LoadBalancer::Random => at(draw.rolls[0]),
        LoadBalancer::LeastRequest => {
            // The better of two picked at random (Envoy's default choice count).
            let (a, b) = (at(draw.rolls[0])?, at(draw.rolls[1])?);
            Some(if b.active < a.active { b } else { a })
        }
        LoadBalancer::ConsistentHash(_) => match draw.key {
            // Rendezvous hashing: the endpoint scoring highest for the key.
            Some(key) => pool
                .iter()
                .copied()
                .max_by_key(|c| (score(key, c.addr), c.addr)),
            None => at(draw.rolls[0]),
        },
    };
    chosen.map(|c| c.endpoint)
}

/// The address a try to `endpoint` goes to (its `podIP:targetPort`).
pub fn address(endpoint: &Endpoint) -> SocketAddr {
    SocketAddr::new(endpoint.workload.ip, endpoint.port)
}

fn score(key: u64, addr: SocketAddr) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    addr.hash(&mut hasher);
    hasher.finish()
}

/// What a request offers a consistent hash.
#[derive(Clone, Copy, Debug)]
pub struct HashSource<'r> {
    pub headers: &'r http::HeaderMap,
    /// The request target's query string.
    pub query: Option<&'r str>,
    pub source_ip: IpAddr,
}

/// The request's key under `key`, hashed; `None` when the request lacks it. The hash is the
/// same in every waypoint replica (fixed keys), so each sends a key to the same endpoint.
pub fn hash_key(key: &HashKey, request: &HashSource<'_>) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    match key {
        HashKey::Header(name) => {
            let values: Vec<&[u8]> = request
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            if values.is_empty() {
                return None;
            }
            values.hash(&mut hasher);
        }
        HashKey::Cookie(name) => cookie(request.headers, name)?.hash(&mut hasher),
        HashKey::SourceIp => request.source_ip.hash(&mut hasher),
        HashKey::QueryParameter(name) => query_parameter(request.query?, name)?.hash(&mut hasher),
    }
    Some(hasher.finish())
}

fn cookie<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

fn query_parameter<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u8) -> Vec<Endpoint> {
        use crate::fixtures::{node, pod, yaml};
        let mut objs = vec![node("node-a", "127.0.0.100")];
        for i in 1..=n {
            objs.push(pod(
                "default",
                &format!("p{i}"),
                &format!("127.0.0.{i}"),
                serde_json::json!({"app": "a"}),
            ));
        }
        let snapshot = crate::compile(vec![("t.yaml".into(), yaml(&objs))]).expect("compiles");
        let mut out: Vec<Endpoint> = snapshot
            .workloads()
            .map(|w| Endpoint {
                workload: w.clone(),
                port: 80,
            })
            .collect();
        out.sort_by_key(|e| e.workload.ip);
        out
    }

    fn candidates<'e>(
        endpoints: &'e [Endpoint],
        active: &[u32],
        ejected: &[bool],
    ) -> Vec<Candidate<'e>> {
        endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| Candidate {
                endpoint: e,
                addr: SocketAddr::new(e.workload.ip, e.port),
                active: active[i],
                ejected: ejected[i],
            })
            .collect()
    }

    fn name(e: Option<&Endpoint>) -> &str {
        e.map_or("none", |e| e.workload.name.as_str())
    }

    #[test]
    fn round_robin_and_random_take_turns_over_healthy_endpoints() {
        let eps = endpoints(3);
        let c = candidates(&eps, &[0, 0, 0], &[false, true, false]);
        let rr = |n| {
            let draw = Draw {
                round_robin: n,
                ..Draw::default()
            };
            name(choose(&LoadBalancer::RoundRobin, &c, &[], true, draw)).to_owned()
        };
        assert_eq!([rr(0), rr(1), rr(2)], ["p1", "p3", "p1"], "p2 is ejected");
        let random = |roll| {
            let draw = Draw {
                rolls: [roll, 0],
                ..Draw::default()
            };
            name(choose(&LoadBalancer::Random, &c, &[], true, draw)).to_owned()
        };
        assert_eq!(random(1), "p3");
    }

    #[test]
    fn least_request_takes_the_less_loaded_of_two() {
        let eps = endpoints(3);
        let c = candidates(&eps, &[5, 1, 9], &[false; 3]);
        let draw = |a, b| Draw {
            rolls: [a, b],
            ..Draw::default()
        };
        let lr = LoadBalancer::LeastRequest;
        assert_eq!(name(choose(&lr, &c, &[], true, draw(0, 1))), "p2");
        assert_eq!(name(choose(&lr, &c, &[], true, draw(2, 0))), "p1");
        assert_eq!(name(choose(&lr, &c, &[], true, draw(2, 2))), "p3");
    }

    #[test]
    fn retries_avoid_tried_endpoints_and_ejections_give_way_when_all_are_ejected() {
        let eps = endpoints(2);
        let c = candidates(&eps, &[0, 0], &[false, false]);
        let tried = [c[0].addr];
        for roll in 0..4 {
            let draw = Draw {
                rolls: [roll, roll + 1],
                round_robin: roll,
                key: None,
            };
            for lb in [
                LoadBalancer::RoundRobin,
                LoadBalancer::Random,
                LoadBalancer::LeastRequest,
            ] {
                assert_eq!(name(choose(&lb, &c, &tried, true, draw)), "p2");
            }
        }
        let all_ejected = candidates(&eps, &[0, 0], &[true, true]);
        let lb = LoadBalancer::RoundRobin;
        assert!(choose(&lb, &all_ejected, &[], true, Draw::default()).is_some());
        let one_ejected = candidates(&eps, &[0, 0], &[true, false]);
        assert_eq!(
            name(choose(&lb, &one_ejected, &[], false, Draw::default())),
            "p1"
        );
        assert!(choose(&lb, &[], &[], true, Draw::default()).is_none());
    }

    #[test]
    fn consistent_hashing_keeps_a_key_on_its_endpoint_and_moves_few_keys() {
        let eps = endpoints(5);
        let all = candidates(&eps, &[0; 5], &[false; 5]);
        let lb = LoadBalancer::ConsistentHash(HashKey::SourceIp);
        let pick = |c: &[Candidate<'_>], key: u64| {
            let draw = Draw {
                key: Some(key),
                ..Draw::default()
            };
            name(choose(&lb, c, &[], true, draw)).to_owned()
        };
        let before: Vec<String> = (0..200).map(|k| pick(&all, k)).collect();
        assert_eq!(before, (0..200).map(|k| pick(&all, k)).collect::<Vec<_>>());
        let used: std::collections::BTreeSet<&String> = before.iter().collect();
        assert_eq!(used.len(), 5, "keys spread over every endpoint");
        // p3 ejected: only its keys move.
        let without = candidates(&eps, &[0; 5], &[false, false, true, false, false]);
        for (k, was) in before.iter().enumerate() {
            let now = pick(&without, k as u64);
            if was != "p3" {
                assert_eq!(&now, was, "key {k} moved though its endpoint stayed");
            }
        }
    }

    #[test]
    fn hash_keys_come_from_headers_cookies_query_and_source() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", "alice".parse().expect("value"));
        headers.insert("cookie", "a=1; session=s42; b=2".parse().expect("value"));
        let source = HashSource {
            headers: &headers,
            query: Some("x=1&user=bob"),
            source_ip: "127.0.0.9".parse().expect("ip"),
        };
        let hash = |key: HashKey| hash_key(&key, &source);
        let header = |name: &'static str| HashKey::Header(http::HeaderName::from_static(name));
        assert!(hash(header("x-user")).is_some());
        assert_ne!(
            hash(header("x-user")),
            hash(HashKey::Cookie("session".into()))
        );
        assert_eq!(hash(header("x-none")), None);
        assert!(hash(HashKey::Cookie("session".into())).is_some());
        assert_eq!(hash(HashKey::Cookie("sess".into())), None);
        assert!(hash(HashKey::QueryParameter("user".into())).is_some());
        assert_eq!(hash(HashKey::QueryParameter("use".into())), None);
        assert!(hash(HashKey::SourceIp).is_some());
        let mut bob = headers.clone();
        bob.insert("x-user", "bob".parse().expect("value"));
        let other = HashSource {
            headers: &bob,
            ..source
        };
        assert_ne!(hash_key(&header("x-user"), &other), hash(header("x-user")));
    }
}
