//! mesh-config: Kubernetes-shaped manifests → validated, immutable, indexed [`Snapshot`];
//! a lock-free [`Store`] to swap snapshots; a [`FileSource`] that watches files and recompiles.
//!
//! No sockets, no TLS: pure parsing, validation and compilation, plus the file watcher.

pub mod authn;
pub mod authz;
pub mod balance;
pub mod cel;
mod compile;
pub mod destination;
mod error;
pub mod ext_authz;
mod filter;
pub mod fixtures;
pub mod health;
mod manifest;
mod model;
pub mod peer_authn;
pub mod policy;
pub mod route;
mod rule_set;
mod snapshot;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod traces;
pub mod traffic;
mod watch;

/// The SPIFFE trust domain of workload identities when the mesh config names none
/// (`trustDomain`), as Istio's.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The DNS domain of Service host names (`<name>.<namespace>.svc.cluster.local`).
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Namespace whose selector-less policies are global.
pub const ROOT_NAMESPACE: &str = "istio-system";

pub use compile::mesh_config::MESH_CONFIG_MAP;
pub use compile::services::resolve_target;
pub use compile::waypoints::WAYPOINT_CLASSES;
pub use compile::workloads::identity;
pub use compile::{Compiled, compile, compile_objects, load_path, read_path};
pub use destination::{Destination, pick, split_authority};
pub use error::{ConfigError, ConfigErrors, Location, Reason};
pub use filter::{
    Cors, Filters, HeaderModifier, Mirror, OriginPattern, PathRewrite, Redirect, Rewrite, Scheme,
};
pub use manifest::Resources;
pub use model::{
    ContainerPort, Endpoint, Node, ObjectRef, Service, ServicePort, TargetPort, Waypoint,
    WaypointFor, Workload,
};
pub use policy::{
    Action, AuthorizationPolicy, Condition, ConditionKey, ConditionValues, Operation, PathTemplate,
    PolicyScope, PolicyTargetRef, Rule, Source, StringMatch, ValueKind,
};
pub use route::{
    HeaderMatch, MatchRank, PathMatch, PortRoutes, QueryMatch, RetryPolicy, RouteBackend,
    RouteMatch, RouteRule, ValueMatch,
};
pub use rule_set::{Candidates, RuleSet};
pub use snapshot::Snapshot;
pub use store::{FileSource, Store};
pub use traffic::{ConnectionPool, HashKey, LoadBalancer, OutlierDetection, TrafficPolicy};
