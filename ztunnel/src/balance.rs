//! Connection-level balancing on the node: a Service endpoint for each outbound connection by
//! the Service's DestinationRule (`mesh_config::balance`), over live state — connections open
//! to each endpoint (least request is least connections here) and outlier detection's
//! ejections, fed by whether connections to an endpoint could be made. Of the consistent-hash
//! keys only the source IP exists at L4; a policy hashing on HTTP fields picks at random here.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use mesh_config::balance::{Candidate, Draw, HashSource, address, choose, hash_key};
use mesh_config::health::{self, Active, Health, Outcome};
use mesh_config::{Endpoint, LoadBalancer, ObjectRef, Service, Snapshot, TrafficPolicy, pick};

use crate::outbound::Choose;

/// The node's balancing state, shared by every pod's outbound connections.
#[derive(Debug, Default)]
pub(crate) struct NodeBalancer {
    health: Health,
    round_robin: Mutex<HashMap<ObjectRef, u64>>,
}

impl NodeBalancer {
    /// The choices of one connection from `source_ip`, under `snapshot`.
    pub(crate) fn for_connection<'a>(
        &'a self,
        snapshot: &'a Snapshot,
        source_ip: IpAddr,
    ) -> ConnectionChoice<'a> {
        ConnectionChoice {
            balancer: self,
            snapshot,
            source_ip,
        }
    }

    /// Counts a connection to `endpoint` open until dropped.
    pub(crate) fn open(&self, endpoint: SocketAddr) -> Active {
        self.health.start(endpoint)
    }

    /// Tells `service`'s outlier detection, if it has one, whether a connection to `endpoint`
    /// could be made. Returns whether that ejected the endpoint.
    pub(crate) fn record(
        &self,
        snapshot: &Snapshot,
        service: &Service,
        endpoint: SocketAddr,
        connected: bool,
    ) -> bool {
        let Some(policy) = policy(snapshot, service).and_then(|p| p.outlier_detection.as_ref())
        else {
            return false;
        };
        let port_endpoints = (service.ports.iter())
            .flat_map(|p| snapshot.endpoints(service, p.port))
            .map(address)
            .filter(|a| a.port() == endpoint.port());
        let service_endpoints: Vec<SocketAddr> = port_endpoints.collect();
        let outcome = match connected {
            true => Outcome::Connected,
            false => Outcome::LocalFailure,
        };
        self.health
            .record(policy, endpoint, &service_endpoints, outcome)
    }

    /// Forgets endpoints with nothing open and nothing to remember.
    pub(crate) fn forget_idle(&self) {
        self.health.forget_idle();
        let mut positions = self.lock();
        if positions.len() > 4096 {
            positions.clear();
        }
    }

    fn next_round_robin(&self, service: &Service) -> u64 {
        let key = ObjectRef::new(&service.namespace, &service.name);
        let mut positions = self.lock();
        let position = positions.entry(key).or_default();
        *position = position.wrapping_add(1);
        *position
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef, u64>> {
        self.round_robin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn policy<'s>(snapshot: &'s Snapshot, service: &Service) -> Option<&'s TrafficPolicy> {
    snapshot.traffic_policy(service).map(|p| p.as_ref())
}

/// One connection's choices.
pub(crate) struct ConnectionChoice<'a> {
    balancer: &'a NodeBalancer,
    snapshot: &'a Snapshot,
    source_ip: IpAddr,
}

impl Choose for ConnectionChoice<'_> {
    fn endpoint<'e>(&self, service: &Service, endpoints: &'e [Endpoint]) -> Option<&'e Endpoint> {
        let Some(policy) = policy(self.snapshot, service) else {
            return pick(endpoints, rand::random());
        };
        let now = Instant::now();
        let health = &self.balancer.health;
        let states: Vec<_> = endpoints.iter().map(|e| health.of(address(e))).collect();
        let outlier = policy.outlier_detection.as_ref();
        let candidates: Vec<Candidate<'e>> = (endpoints.iter().zip(&states))
            .map(|(endpoint, state)| Candidate {
                endpoint,
                addr: address(endpoint),
                active: state.active(),
                ejected: outlier.is_some() && state.ejected(now),
            })
            .collect();
        let healthy = candidates.iter().filter(|c| !c.ejected).count();
        let hold = health::ejections_hold(outlier, healthy, candidates.len());
        let lb = &policy.load_balancer;
        let key = match lb {
            LoadBalancer::ConsistentHash(key) => {
                let no_headers = http::HeaderMap::new();
                let source = HashSource {
                    headers: &no_headers,
                    query: None,
                    source_ip: self.source_ip,
                };
                hash_key(key, &source)
            }
            _ => None,
        };
        let round_robin = match lb {
            LoadBalancer::RoundRobin => self.balancer.next_round_robin(service),
            _ => 0,
        };
        let draw = Draw {
            key,
            round_robin,
            rolls: [rand::random(), rand::random()],
        };
        choose(lb, &candidates, &[], hold, draw)
    }

    fn roll(&self) -> u64 {
        rand::random()
    }
}
