//! Compiled PeerAuthentications: whether a pod accepts connections with no peer identity
//! (plaintext, captured on the pod's inbound plaintext port). The most specific policy that
//! says something wins: a port's mode, then the pod's selector policy, its namespace's, the
//! mesh's (root namespace); with none, PERMISSIVE. STRICT refuses plaintext, as Istio turns
//! STRICT into a deny of connections without an identity.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::Workload;

/// `spec.mtls.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtlsMode {
    /// Inherit from the next less specific policy.
    Unset,
    /// mTLS and plaintext both accepted.
    Permissive,
    /// Only mTLS (HBONE) accepted.
    Strict,
    /// Plaintext accepted; in ambient mode HBONE cannot be turned off, so this is PERMISSIVE.
    Disable,
}

/// What one PeerAuthentication applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerAuthnScope {
    /// Root namespace, no selector: every pod.
    Mesh,
    /// Its namespace's pods.
    Namespace,
    /// Its namespace's pods whose labels match.
    Selector(BTreeMap<String, String>),
}

/// One PeerAuthentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAuthentication {
    pub namespace: String,
    pub name: String,
    pub scope: PeerAuthnScope,
    pub mode: MtlsMode,
    /// `portLevelMtls`: by the pod's (target) port.
    pub port_modes: BTreeMap<u16, MtlsMode>,
}

impl PeerAuthentication {
    fn applies_to(&self, pod: &Workload) -> bool {
        match &self.scope {
            PeerAuthnScope::Mesh => true,
            PeerAuthnScope::Namespace => self.namespace == pod.namespace,
            PeerAuthnScope::Selector(labels) => {
                self.namespace == pod.namespace
                    && labels.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
            }
        }
    }

    /// How specific the policy is: a selector, a namespace, the mesh (a port's mode, more
    /// specific still, is looked up within each).
    fn rank(&self) -> u8 {
        match self.scope {
            PeerAuthnScope::Selector(_) => 1,
            PeerAuthnScope::Namespace => 2,
            PeerAuthnScope::Mesh => 3,
        }
    }
}

/// The mode a connection to `pod`'s `port` gets, and the policy that set it (none: the default,
/// PERMISSIVE). `policies` are sorted by namespace/name, so of two equally specific policies
/// the first by name decides (Istio takes the oldest; manifests have no age).
pub fn mtls_mode<'p>(
    policies: &'p [Arc<PeerAuthentication>],
    pod: &Workload,
    port: u16,
) -> (MtlsMode, Option<&'p PeerAuthentication>) {
    let mut applying: Vec<&PeerAuthentication> = (policies.iter())
        .map(Arc::as_ref)
        .filter(|p| p.applies_to(pod))
        .collect();
    applying.sort_by_key(|p| p.rank());
    for policy in &applying {
        let port_mode = policy.port_modes.get(&port).copied();
        if let Some(mode) = port_mode.filter(|m| *m != MtlsMode::Unset) {
            return (mode, Some(policy));
        }
        if policy.mode != MtlsMode::Unset {
            return (policy.mode, Some(policy));
        }
    }
    (MtlsMode::Permissive, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ROOT_NAMESPACE;

    fn pod(namespace: &str, app: &str) -> Workload {
        Workload {
            name: "pod".into(),
            namespace: namespace.into(),
            ip: "10.0.0.1".parse().expect("ip"),
            node: "node-a".into(),
            service_account: "default".into(),
            identity: mesh_core::Identity::new("cluster.local", namespace, "default"),
            labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            annotations: BTreeMap::new(),
            container_ports: Vec::new(),
            canonical_service: app.into(),
            canonical_revision: "latest".into(),
            waypoint: None,
            ready: true,
        }
    }

    fn policy(
        namespace: &str,
        name: &str,
        scope: PeerAuthnScope,
        mode: MtlsMode,
    ) -> Arc<PeerAuthentication> {
        Arc::new(PeerAuthentication {
            namespace: namespace.into(),
            name: name.into(),
            scope,
            mode,
            port_modes: BTreeMap::new(),
        })
    }

    fn mode(
        policies: &[Arc<PeerAuthentication>],
        pod: &Workload,
        port: u16,
    ) -> (MtlsMode, Option<String>) {
        let (mode, by) = mtls_mode(policies, pod, port);
        (mode, by.map(|p| p.name.clone()))
    }

    #[test]
    fn permissive_when_nothing_says_otherwise() {
        assert_eq!(
            mode(&[], &pod("default", "a"), 80),
            (MtlsMode::Permissive, None)
        );
    }

    #[test]
    fn the_most_specific_policy_that_sets_a_mode_wins() {
        let mesh = policy(
            ROOT_NAMESPACE,
            "mesh",
            PeerAuthnScope::Mesh,
            MtlsMode::Strict,
        );
        let ns = policy(
            "default",
            "ns",
            PeerAuthnScope::Namespace,
            MtlsMode::Permissive,
        );
        let labels = BTreeMap::from([("app".to_string(), "a".to_string())]);
        let mut workload = (*policy(
            "default",
            "wl",
            PeerAuthnScope::Selector(labels),
            MtlsMode::Unset,
        ))
        .clone();
        workload.port_modes.insert(9000, MtlsMode::Strict);
        let all = [mesh.clone(), ns.clone(), Arc::new(workload)];
        let a = pod("default", "a");
        // The selector policy's port wins; its mode is UNSET, so other ports inherit.
        assert_eq!(mode(&all, &a, 9000), (MtlsMode::Strict, Some("wl".into())));
        assert_eq!(
            mode(&all, &a, 80),
            (MtlsMode::Permissive, Some("ns".into()))
        );
        // Another pod of the namespace, and one of another namespace.
        assert_eq!(
            mode(&all, &pod("default", "b"), 9000),
            (MtlsMode::Permissive, Some("ns".into()))
        );
        assert_eq!(
            mode(&all, &pod("other", "a"), 80),
            (MtlsMode::Strict, Some("mesh".into()))
        );
        // A namespace policy that leaves the mode unset defers to the mesh's.
        let unset = policy("default", "ns", PeerAuthnScope::Namespace, MtlsMode::Unset);
        assert_eq!(
            mode(&[mesh, unset], &a, 80),
            (MtlsMode::Strict, Some("mesh".into()))
        );
    }

    #[test]
    fn a_selector_applies_in_its_own_namespace_only() {
        let labels = BTreeMap::from([("app".to_string(), "a".to_string())]);
        let wl = policy(
            "default",
            "wl",
            PeerAuthnScope::Selector(labels),
            MtlsMode::Strict,
        );
        assert_eq!(
            mode(std::slice::from_ref(&wl), &pod("other", "a"), 80).0,
            MtlsMode::Permissive
        );
        assert_eq!(mode(&[wl], &pod("default", "a"), 80).0, MtlsMode::Strict);
    }
}
