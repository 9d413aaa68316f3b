//! One request's balancing at the waypoint: the endpoint for each try, chosen by
//! `mesh_config::balance` over live state (requests in flight, ejections), and what each try
//! teaches outlier detection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mesh_config::balance::{Candidate, Draw, address, choose};
use mesh_config::health::{self, EndpointHealth, Health, Outcome};
use mesh_config::{Endpoint, LoadBalancer, OutlierDetection};

use super::limits::InFlight;
use super::retry::TryEnd;

/// One request's balancing: the choice for each try, over live state, and what each try
/// teaches outlier detection.
pub struct Balancing<'a> {
    pub lb: &'a LoadBalancer,
    /// The Service port's endpoints (or the one pod addressed).
    pub endpoints: &'a [Endpoint],
    pub health: &'a Health,
    pub outlier: Option<&'a OutlierDetection>,
    /// The request's consistent-hash key, hashed.
    pub key: Option<u64>,
    pub in_flight: &'a InFlight,
}

impl Balancing<'_> {
    /// The endpoint for the next try, avoiding `tried` while another is left.
    pub fn choose(&self, tried: &[SocketAddr]) -> Option<Endpoint> {
        let now = Instant::now();
        let states: Vec<(SocketAddr, Arc<EndpointHealth>)> = (self.endpoints.iter())
            .map(|e| {
                let addr = address(e);
                (addr, self.health.of(addr))
            })
            .collect();
        let candidates: Vec<Candidate<'_>> = (self.endpoints.iter().zip(&states))
            .map(|(endpoint, (addr, state))| Candidate {
                endpoint,
                addr: *addr,
                active: state.active(),
                ejected: self.outlier.is_some() && state.ejected(now),
            })
            .collect();
        let healthy = candidates.iter().filter(|c| !c.ejected).count();
        let hold = health::ejections_hold(self.outlier, healthy, candidates.len());
        let round_robin = match self.lb {
            LoadBalancer::RoundRobin => self.in_flight.next_round_robin(),
            _ => 0,
        };
        let draw = Draw {
            key: self.key,
            round_robin,
            rolls: [rand::random(), rand::random()],
        };
        choose(self.lb, &candidates, tried, hold, draw).cloned()
    }

    /// Tells outlier detection how a try to `addr` ended. Returns whether that ejected it.
    pub fn record(&self, addr: SocketAddr, end: TryEnd) -> bool {
        let Some(policy) = self.outlier else {
            return false;
        };
        let outcome = match end {
            TryEnd::Answered { status, .. } => Outcome::Answered(status),
            TryEnd::ConnectFailure | TryEnd::Failed | TryEnd::TimedOut => Outcome::LocalFailure,
            // Not the endpoint's failing: a stream refused under load, or a kept-alive
            // connection it closed as it may.
            TryEnd::RefusedStream | TryEnd::NotSent | TryEnd::ReusedConnectionClosed => {
                return false;
            }
        };
        let service: Vec<SocketAddr> = self.endpoints.iter().map(address).collect();
        self.health.record(policy, addr, &service, outcome)
    }
}
