//! The kinds the mesh reads, as the API names them.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};

/// One kind of object, where the API serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// The one object of the kind the mesh reads, `(namespace, name)`, when it reads only one
    /// (the mesh config's ConfigMap): watched alone, and only it granted.
    pub only: Option<(&'static str, &'static str)>,
}

impl Kind {
    const fn new(
        group: &'static str,
        version: &'static str,
        kind: &'static str,
        plural: &'static str,
        namespaced: bool,
    ) -> Self {
        Kind {
            group,
            version,
            kind,
            plural,
            namespaced,
            only: None,
        }
    }

    /// The kind, of which only `namespace/name` is read.
    const fn only(mut self, namespace: &'static str, name: &'static str) -> Self {
        self.only = Some((namespace, name));
        self
    }

    /// `v1`, or `<group>/<version>`.
    pub fn api_version(&self) -> String {
        match self.group {
            "" => self.version.to_string(),
            group => format!("{group}/{}", self.version),
        }
    }

    pub fn api_resource(&self) -> ApiResource {
        let gvk = GroupVersionKind::gvk(self.group, self.version, self.kind);
        ApiResource::from_gvk_with_plural(&gvk, self.plural)
    }

    /// The API of this kind: in `namespace` when the kind is namespaced and one is given,
    /// else cluster-wide.
    pub fn api(&self, client: &kube::Client, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = self.api_resource();
        match (namespace, self.namespaced) {
            (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        }
    }
}

/// Every kind the mesh's config is made of.
pub const KINDS: &[Kind] = &[
    Kind::new("", "v1", "Namespace", "namespaces", false),
    Kind::new("", "v1", "Node", "nodes", false),
    Kind::new("", "v1", "Pod", "pods", true),
    Kind::new("", "v1", "Service", "services", true),
    Kind::new(
        "gateway.networking.k8s.io",
        "v1",
        "Gateway",
        "gateways",
        true,
    ),
    Kind::new(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
        true,
    ),
    Kind::new(
        "gateway.networking.k8s.io",
        "v1",
        "GRPCRoute",
        "grpcroutes",
        true,
    ),
    Kind::new(
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
        true,
    ),
    Kind::new(
        "security.istio.io",
        "v1",
        "RequestAuthentication",
        "requestauthentications",
        true,
    ),
    Kind::new(
        "security.istio.io",
        "v1",
        "PeerAuthentication",
        "peerauthentications",
        true,
    ),
    Kind::new(
        "networking.istio.io",
        "v1",
        "DestinationRule",
        "destinationrules",
        true,
    ),
    Kind::new("telemetry.istio.io", "v1", "Telemetry", "telemetries", true),
    // The mesh config (its ext_authz providers), as Istio keeps it.
    Kind::new("", "v1", "ConfigMap", "configmaps", true)
        .only(mesh_config::ROOT_NAMESPACE, mesh_config::MESH_CONFIG_MAP),
];

/// The kinds the waypoint controller reads or writes besides [`KINDS`].
pub const CONTROLLED: &[Kind] = &[
    Kind::new("", "v1", "ConfigMap", "configmaps", true),
    Kind::new("", "v1", "ServiceAccount", "serviceaccounts", true),
    Kind::new("apps", "v1", "Deployment", "deployments", true),
    Kind::new(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    ),
    Kind::new(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    Kind::new(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
    Kind::new(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    Kind::new(
        "gateway.networking.k8s.io",
        "v1",
        "GatewayClass",
        "gatewayclasses",
        false,
    ),
];

/// The kind named `kind`, among those the mesh reads or its controller writes.
pub fn kind(kind: &str) -> Option<&'static Kind> {
    KINDS.iter().chain(CONTROLLED).find(|k| k.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind watched is one the config compiles (it would be refused as unknown).
    #[test]
    fn every_kind_is_one_the_config_reads() {
        for kind in KINDS {
            let object = serde_json::json!({
                "apiVersion": kind.api_version(),
                "kind": kind.kind,
                "metadata": {"name": "x", "namespace": "default"},
            });
            let mut resources = mesh_config::Resources::default();
            resources.add_object(mesh_config::Location::file("test"), object);
            let text = match resources.compile() {
                Ok(_) => String::new(),
                Err(errors) => errors.to_string(),
            };
            assert!(
                !text.contains("unknown apiVersion/kind"),
                "{kind:?}: {text}"
            );
        }
    }
}
