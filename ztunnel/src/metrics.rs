//! Istio-compatible TCP metrics and access logs. Each connection records opened/closed/bytes
//! exactly once, and writes one access-log line (Istio ztunnel's field names) when it closes,
//! through a guard, even when it ends early.

use std::net::SocketAddr;
use std::time::Instant;

use mesh_core::ResponseFlag;
use prometheus::{IntCounterVec, Opts, Registry};

const LABELS: &[&str] = &[
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "destination_service",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
];

#[derive(Clone)]
pub struct Metrics {
    opened: IntCounterVec,
    closed: IntCounterVec,
    sent: IntCounterVec,
    received: IntCounterVec,
}

/// Label values of one connection; `unknown` where not known.
#[derive(Clone, Debug)]
pub struct ConnectionLabels {
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub destination_service: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub response_flags: ResponseFlag,
    pub mutual_tls: bool,
}

impl ConnectionLabels {
    pub fn new(reporter: &'static str) -> Self {
        let unknown = || "unknown".to_string();
        ConnectionLabels {
            reporter,
            source_workload: unknown(),
            source_workload_namespace: unknown(),
            source_principal: unknown(),
            destination_service: unknown(),
            destination_workload: unknown(),
            destination_workload_namespace: unknown(),
            destination_principal: unknown(),
            response_flags: ResponseFlag::None,
            mutual_tls: true,
        }
    }

    fn values(&self) -> [&str; 11] {
        [
            self.reporter,
            &self.source_workload,
            &self.source_workload_namespace,
            &self.source_principal,
            &self.destination_service,
            &self.destination_workload,
            &self.destination_workload_namespace,
            &self.destination_principal,
            "tcp",
            self.response_flags.as_str(),
            if self.mutual_tls {
                "mutual_tls"
            } else {
                "none"
            },
        ]
    }
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        // The process's connection caps, refusals and open connections.
        mesh_runtime::ConnectionLimit::process().register(registry)?;
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), LABELS)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(Metrics {
            opened: counter(
                "istio_tcp_connections_opened_total",
                "TCP connections opened",
            )?,
            closed: counter(
                "istio_tcp_connections_closed_total",
                "TCP connections closed",
            )?,
            sent: counter(
                "istio_tcp_sent_bytes_total",
                "Bytes sent to the destination",
            )?,
            received: counter(
                "istio_tcp_received_bytes_total",
                "Bytes received from the destination",
            )?,
        })
    }

    /// Counts an opened connection; the guard counts its close and bytes, and logs it, when
    /// dropped.
    pub fn open(&self, labels: ConnectionLabels, ends: ConnectionEnds) -> ConnectionGuard {
        self.opened.with_label_values(&labels.values()).inc();
        ConnectionGuard(Box::new(Guarded {
            metrics: self.clone(),
            labels,
            ends,
            started: Instant::now(),
            sent: 0,
            received: 0,
        }))
    }
}

/// Which way a connection goes, from the local pod's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Where a connection came from and went, for its access-log line.
#[derive(Clone, Debug)]
pub struct ConnectionEnds {
    pub direction: Direction,
    /// The client: the local app (outbound), the peer (inbound).
    pub src_addr: SocketAddr,
    /// The next hop: the HBONE peer (`podIP:15008`), or the app or server reached directly.
    pub dst_addr: Option<SocketAddr>,
    /// The destination inside the tunnel (`podIP:port`), when the connection is HBONE.
    pub dst_hbone_addr: Option<SocketAddr>,
}

impl ConnectionEnds {
    pub fn new(direction: Direction, src_addr: SocketAddr) -> Self {
        ConnectionEnds {
            direction,
            src_addr,
            dst_addr: None,
            dst_hbone_addr: None,
        }
    }
}

/// One pointer: a connection's futures hold the guard (some twice, as an argument and in
/// place), and an idle connection costs what they hold, rounded up to the allocator's size
/// classes (BENCHMARKS.md, "What an idle connection costs").
pub struct ConnectionGuard(Box<Guarded>);

struct Guarded {
    metrics: Metrics,
    labels: ConnectionLabels,
    ends: ConnectionEnds,
    started: Instant,
    sent: u64,
    received: u64,
}

impl ConnectionGuard {
    pub fn set_flag(&mut self, flag: ResponseFlag) {
        self.0.labels.response_flags = flag;
    }

    /// How the connection's bytes moved: counts when it ended normally, `SI` when idle.
    pub fn record(&mut self, spliced: mesh_runtime::Spliced) {
        match spliced {
            mesh_runtime::Spliced::Done(sent, received) => {
                self.0.sent = sent;
                self.0.received = received;
            }
            mesh_runtime::Spliced::Idle => self.set_flag(ResponseFlag::StreamIdleTimeout),
            mesh_runtime::Spliced::Failed(_) => {}
        }
    }

    /// Marks the connection as plaintext (passthrough outside the mesh).
    pub fn set_plaintext(&mut self) {
        self.0.labels.mutual_tls = false;
    }

    /// The connection's access-log line (target `access`): what Istio's ztunnel writes, with
    /// fields it does not know left out.
    fn log(&self) {
        let known = |value: &str| Some(value).filter(|v| *v != "unknown").map(str::to_owned);
        let l = &self.0.labels;
        let ends = &self.0.ends;
        let flags = Some(l.response_flags).filter(|f| *f != ResponseFlag::None);
        tracing::info!(
            target: "access",
            direction = match ends.direction {
                Direction::Inbound => "inbound",
                Direction::Outbound => "outbound",
            },
            src.addr = %ends.src_addr,
            src.workload = known(&l.source_workload),
            src.namespace = known(&l.source_workload_namespace),
            src.identity = known(&l.source_principal),
            dst.addr = ends.dst_addr.map(display),
            dst.hbone_addr = ends.dst_hbone_addr.map(display),
            dst.service = known(&l.destination_service),
            dst.workload = known(&l.destination_workload),
            dst.namespace = known(&l.destination_workload_namespace),
            dst.identity = known(&l.destination_principal),
            bytes_sent = self.0.sent,
            bytes_recv = self.0.received,
            duration = %format_args!("{}ms", self.0.started.elapsed().as_millis()),
            response_flags = flags.map(|f| f.as_str()),
            "connection complete",
        );
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.log();
        let values = self.0.labels.values();
        self.0.metrics.closed.with_label_values(&values).inc();
        self.0
            .metrics
            .sent
            .with_label_values(&values)
            .inc_by(self.0.sent);
        self.0
            .metrics
            .received
            .with_label_values(&values)
            .inc_by(self.0.received);
    }
}
