//! What a waypoint `Gateway` runs as in a cluster, in Istio's conventions (pure; `mesh waypoint
//! render` prints it, the controller applies it): a ServiceAccount, a Deployment without
//! `replicas` (an HPA owns scaling), a Service (HBONE 15008, status 15021, metrics 15020), an
//! HPA and a PodDisruptionBudget when an overlay asks for them, and the binding that lets the
//! waypoint read its config from the API.

use serde_json::{Map, Value, json};

use crate::KINDS;
use crate::overlay::{OverlayError, Overlays, Part};

/// The project's own waypoint class (Istio's is `istio-waypoint`; both are served).
pub const WAYPOINT_CLASS: &str = "mesh-waypoint";
/// The field manager and `gateway.istio.io/managed` value of what is rendered here.
pub const MANAGER: &str = "mesh.dev-waypoint-controller";
/// The label that marks an object as rendered here (one without it is never adopted).
pub const MANAGED_LABEL: &str = "gateway.istio.io/managed";
/// The label naming the Gateway an object was rendered for.
pub const GATEWAY_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// The ClusterRole every waypoint is bound to: read the kinds the config is made of.
pub const CONFIG_READER: &str = "mesh-config-reader";
/// The `controllerName` of [`WAYPOINT_CLASS`]: the project's waypoint controller.
pub const CONTROLLER_NAME: &str = "mesh.dev/waypoint-controller";

/// The waypoint class, served by the project's controller.
pub fn gateway_class() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": WAYPOINT_CLASS, "labels": {MANAGED_LABEL: MANAGER}},
        "spec": {"controllerName": CONTROLLER_NAME,
                 "description": "Waypoints of the Pingora-based mesh (HBONE on 15008)"}
    })
}

/// The waypoint Gateway: `istioctl waypoint generate`'s output, of the project's class.
pub fn gateway(namespace: &str, name: &str, waypoint_for: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"istio.io/waypoint-for": waypoint_for}},
        "spec": {"gatewayClassName": WAYPOINT_CLASS,
                 "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}
    })
}

/// Which Gateway the objects are for; `uid` (when known) makes it their owner.
#[derive(Clone, Debug)]
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
    pub class: String,
    pub uid: Option<String>,
    /// The Gateway's `spec.infrastructure.labels` and `annotations`: put on every object
    /// rendered for it and on its pods (the Gateway API's rule).
    pub labels: Map<String, Value>,
    pub annotations: Map<String, Value>,
}

impl GatewayRef {
    /// The Gateway `namespace/name` of `class`, owned by `uid` when known, with nothing to
    /// propagate.
    pub fn new(namespace: &str, name: &str, class: &str, uid: Option<String>) -> Self {
        GatewayRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
            class: class.to_string(),
            uid,
            labels: Map::new(),
            annotations: Map::new(),
        }
    }
}

/// How the waypoint pods run.
#[derive(Clone, Debug)]
pub struct PodSettings {
    pub image: String,
    /// Istio's CA (`istiod.istio-system.svc:15012`).
    pub ca_address: String,
    pub trust_domain: String,
}

/// The ClusterRole the waypoints are bound to (the same for all; rendered with each).
pub fn config_reader() -> Value {
    let mut by_group: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for kind in KINDS.iter().filter(|k| k.only.is_none()) {
        by_group.entry(kind.group).or_default().push(kind.plural);
    }
    let read = json!(["get", "list", "watch"]);
    let mut rules: Vec<Value> = (by_group.into_iter())
        .map(|(group, plurals)| json!({"apiGroups": [group], "resources": plurals, "verbs": read}))
        .collect();
    // A kind read for one object is granted for that name only.
    for kind in KINDS {
        if let Some((_, name)) = kind.only {
            rules.push(
                json!({"apiGroups": [kind.group], "resources": [kind.plural],
                              "resourceNames": [name], "verbs": read}),
            );
        }
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": CONFIG_READER, "labels": {"gateway.istio.io/managed": MANAGER}},
        "rules": rules
    })
}

/// Everything `gateway` runs as: ServiceAccount, Deployment, Service, an HPA and a PDB if
/// `overlays` ask for them, each shaped by `overlays`, and the binding of its service account
/// to [`CONFIG_READER`] (a ClusterRole: [`config_reader`]). Overlays cannot rename an object
/// or take it from its Gateway.
pub fn render(
    gateway: &GatewayRef,
    pod: &PodSettings,
    overlays: &Overlays,
) -> Result<Vec<Value>, OverlayError> {
    let name = &gateway.name;
    let ns = &gateway.namespace;
    let mut labels = Value::Object(gateway.labels.clone());
    labels[GATEWAY_LABEL] = json!(name);
    labels["gateway.networking.k8s.io/gateway-class-name"] = json!(gateway.class);
    labels[MANAGED_LABEL] = json!(MANAGER);
    let annotations = Value::Object(gateway.annotations.clone());
    let meta = |kind_name: &str| {
        let mut meta = json!({"name": kind_name, "namespace": ns, "labels": labels});
        if !gateway.annotations.is_empty() {
            meta["annotations"] = annotations.clone();
        }
        if let Some(uid) = &gateway.uid {
            meta["ownerReferences"] = json!([{
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "name": name, "uid": uid, "controller": true}]);
        }
        meta
    };
    let selector = json!({GATEWAY_LABEL: name});
    let field = |path: &str| json!({"valueFrom": {"fieldRef": {"fieldPath": path}}});
    // Only what the `waypoint` program reads (its identity is its pod's, from the config).
    let mut env = vec![
        json!({"name": "GATEWAY_NAME", "value": name}),
        json!({"name": "CA_ADDRESS", "value": pod.ca_address}),
        json!({"name": "TRUST_DOMAIN", "value": pod.trust_domain}),
    ];
    for (var, path) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("INSTANCE_IP", "status.podIP"),
    ] {
        let mut var_ref = field(path);
        var_ref["name"] = json!(var);
        env.push(var_ref);
    }
    let ready = json!({"httpGet": {"path": "/healthz/ready", "port": 15021}});
    let mut startup = ready.clone();
    startup["periodSeconds"] = json!(1);
    startup["failureThreshold"] = json!(30);
    let mut readiness = ready;
    readiness["periodSeconds"] = json!(15);
    readiness["failureThreshold"] = json!(4);
    let container = json!({
        "name": "waypoint",
        "image": pod.image,
        "command": ["waypoint"],
        "ports": [
            {"name": "mesh", "containerPort": 15008, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 15020, "protocol": "TCP"},
            {"name": "status-port", "containerPort": 15021, "protocol": "TCP"}
        ],
        "env": env,
        "startupProbe": startup,
        "readinessProbe": readiness,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "2", "memory": "1Gi"}},
        "securityContext": {"runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
                            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true},
            {"name": "istio-ca-root-cert", "mountPath": "/var/run/secrets/istio", "readOnly": true}
        ]
    });
    let mut pod_labels = Value::Object(gateway.labels.clone());
    pod_labels[GATEWAY_LABEL] = json!(name);
    pod_labels["istio.io/dataplane-mode"] = json!("none");
    pod_labels["sidecar.istio.io/inject"] = json!("false");
    let mut pod_annotations = annotations.clone();
    pod_annotations["prometheus.io/scrape"] = json!("true");
    pod_annotations["prometheus.io/port"] = json!("15020");
    pod_annotations["prometheus.io/path"] = json!("/metrics");
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name),
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": {
                    "serviceAccountName": name,
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [
                        {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
                            "audience": "istio-ca", "expirationSeconds": 43200,
                            "path": "istio-token"}}]}},
                        {"name": "istio-ca-root-cert",
                         "configMap": {"name": "istio-ca-root-cert"}}
                    ]
                }
            }
        }
    });
    let mut service_meta = meta(name);
    service_meta["annotations"] = annotations.clone();
    service_meta["annotations"]["networking.istio.io/traffic-distribution"] = json!("PreferClose");
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": service_meta,
        "spec": {
            "type": "ClusterIP",
            "ipFamilyPolicy": "PreferDualStack",
            "selector": selector,
            "ports": [
                {"name": "status-port", "port": 15021, "protocol": "TCP"},
                {"name": "mesh", "port": 15008, "protocol": "TCP", "appProtocol": "hbone"},
                {"name": "http-monitoring", "port": 15020, "protocol": "TCP"}
            ]
        }
    });
    let mut binding_meta = meta(&format!("{CONFIG_READER}-{ns}-{name}"));
    if let Some(map) = binding_meta.as_object_mut() {
        // Cluster-scoped: no namespace, and no owner in a namespace.
        map.remove("namespace");
        map.remove("ownerReferences");
    }
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": binding_meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": CONFIG_READER},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    });
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name)});
    let hpa = json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(name),
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}}
    });
    let pdb = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(name),
        "spec": {"selector": {"matchLabels": selector}}
    });
    let mut objects = Vec::new();
    for (part, object) in [
        (Part::ServiceAccount, account),
        (Part::Deployment, deployment),
        (Part::Service, service),
        (Part::HorizontalPodAutoscaler, hpa),
        (Part::PodDisruptionBudget, pdb),
    ] {
        let optional = matches!(
            part,
            Part::HorizontalPodAutoscaler | Part::PodDisruptionBudget
        );
        if optional && !overlays.shapes(part) {
            continue;
        }
        let mut shaped = object.clone();
        overlays.apply(part, &mut shaped);
        keep_identity(&mut shaped, &object);
        objects.push(shaped);
    }
    if let Some(hpa) = objects
        .iter()
        .find(|o| o["kind"] == "HorizontalPodAutoscaler")
        && hpa["spec"]["maxReplicas"]
            .as_u64()
            .is_none_or(|max| max == 0)
    {
        return Err(OverlayError {
            config_map: overlays.origin(Part::HorizontalPodAutoscaler),
            message: "horizontalPodAutoscaler: spec.maxReplicas (a positive number) is required"
                .into(),
        });
    }
    objects.push(binding);
    Ok(objects)
}

/// Puts back what makes `rendered` the Gateway's object: its kind, name, namespace, owner and
/// the labels it is found by.
fn keep_identity(shaped: &mut Value, rendered: &Value) {
    for field in ["apiVersion", "kind"] {
        shaped[field] = rendered[field].clone();
    }
    for field in ["name", "namespace", "ownerReferences"] {
        match rendered["metadata"].get(field) {
            Some(value) => shaped["metadata"][field] = value.clone(),
            None => {
                if let Some(meta) = shaped["metadata"].as_object_mut() {
                    meta.remove(field);
                }
            }
        }
    }
    let identity = [
        GATEWAY_LABEL,
        "gateway.networking.k8s.io/gateway-class-name",
        MANAGED_LABEL,
    ];
    for key in identity {
        if let Some(value) = rendered["metadata"]["labels"].get(key) {
            shaped["metadata"]["labels"][key] = value.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(uid: Option<&str>) -> Vec<Value> {
        let gateway = GatewayRef::new("shop", "waypoint", WAYPOINT_CLASS, uid.map(str::to_string));
        let pod = PodSettings {
            image: "registry.example/waypoint:1".into(),
            ca_address: "istiod.istio-system.svc:15012".into(),
            trust_domain: "cluster.local".into(),
        };
        render(&gateway, &pod, &Overlays::default()).expect("renders")
    }

    fn kind<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
        objects.iter().find(|o| o["kind"] == kind).expect(kind)
    }

    #[test]
    fn a_waypoint_runs_as_istio_runs_one() {
        let objects = rendered(Some("gw-uid"));
        let deployment = kind(&objects, "Deployment");
        assert!(
            deployment["spec"].get("replicas").is_none(),
            "an HPA owns scaling"
        );
        let pod = &deployment["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
        let container = &pod["spec"]["containers"][0];
        let env: Vec<&str> = (container["env"].as_array().expect("env").iter())
            .map(|e| e["name"].as_str().expect("name"))
            .collect();
        for wanted in [
            "POD_NAME",
            "POD_NAMESPACE",
            "INSTANCE_IP",
            "GATEWAY_NAME",
            "CA_ADDRESS",
        ] {
            assert!(env.contains(&wanted), "{wanted} in {env:?}");
        }
        assert_eq!(container["readinessProbe"]["httpGet"]["port"], 15021);
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        let token = &pod["spec"]["volumes"][0]["projected"]["sources"][0];
        assert_eq!(token["serviceAccountToken"]["audience"], "istio-ca");
        let service = kind(&objects, "Service");
        let mesh = &service["spec"]["ports"][1];
        assert_eq!(
            (mesh["port"].as_u64(), mesh["appProtocol"].as_str()),
            (Some(15008), Some("hbone"))
        );
        for namespaced in ["ServiceAccount", "Deployment", "Service"] {
            let meta = &kind(&objects, namespaced)["metadata"];
            assert_eq!(meta["namespace"], "shop");
            assert_eq!(
                meta["labels"]["gateway.networking.k8s.io/gateway-name"],
                "waypoint"
            );
            assert_eq!(meta["ownerReferences"][0]["uid"], "gw-uid", "{namespaced}");
        }
        let binding = kind(&objects, "ClusterRoleBinding");
        assert_eq!(binding["subjects"][0]["namespace"], "shop");
        assert!(binding["metadata"].get("ownerReferences").is_none());
        assert!(
            (objects.iter())
                .all(|o| o["kind"] != "HorizontalPodAutoscaler"
                    && o["kind"] != "PodDisruptionBudget"),
            "an HPA and a PDB only when an overlay asks"
        );
    }

    fn with_overlay(data: Value) -> Result<Vec<Value>, OverlayError> {
        let mut overlays = Overlays::default();
        let config_map = json!({"metadata": {"namespace": "shop", "name": "params"}, "data": data});
        overlays.add_config_map(&config_map)?;
        let mut gateway =
            GatewayRef::new("shop", "waypoint", WAYPOINT_CLASS, Some("gw-uid".into()));
        gateway.labels.insert("team".into(), json!("payments"));
        gateway
            .annotations
            .insert("owner".into(), json!("ops@example.com"));
        let pod = PodSettings {
            image: "registry.example/waypoint:1".into(),
            ca_address: "istiod.istio-system.svc:15012".into(),
            trust_domain: "cluster.local".into(),
        };
        render(&gateway, &pod, &overlays)
    }

    #[test]
    fn overlays_add_an_hpa_and_a_pdb_and_shape_the_rest_but_not_who_it_is() {
        let objects = with_overlay(json!({
            "horizontalPodAutoscaler": "spec: {minReplicas: 2, maxReplicas: 6}",
            "podDisruptionBudget": "spec: {minAvailable: 1}",
            "deployment": "metadata: {name: renamed, labels: {team: a, gateway.istio.io/managed: mine}}\n\
                           spec: {template: {spec: {containers: [{name: waypoint, resources: {limits: {cpu: '4'}}}]}}}",
        }))
        .expect("valid overlays");
        let hpa = kind(&objects, "HorizontalPodAutoscaler");
        assert_eq!(hpa["spec"]["maxReplicas"], 6);
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "waypoint");
        assert_eq!(hpa["metadata"]["ownerReferences"][0]["uid"], "gw-uid");
        let pdb = kind(&objects, "PodDisruptionBudget");
        assert_eq!(pdb["spec"]["minAvailable"], 1);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"][GATEWAY_LABEL],
            "waypoint"
        );
        let deployment = kind(&objects, "Deployment");
        let pod = &deployment["spec"]["template"]["metadata"];
        assert_eq!(pod["labels"]["team"], "payments", "infrastructure labels");
        assert_eq!(pod["annotations"]["owner"], "ops@example.com");
        assert_eq!(pod["annotations"]["prometheus.io/port"], "15020");
        let service = kind(&objects, "Service");
        assert_eq!(service["metadata"]["labels"]["team"], "payments");
        assert_eq!(
            service["metadata"]["annotations"]["owner"],
            "ops@example.com"
        );
        assert_eq!(
            service["metadata"]["annotations"]["networking.istio.io/traffic-distribution"],
            "PreferClose"
        );
        assert_eq!(deployment["metadata"]["name"], "waypoint");
        assert_eq!(deployment["metadata"]["labels"]["team"], "a");
        assert_eq!(deployment["metadata"]["labels"][MANAGED_LABEL], MANAGER);
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["resources"]["limits"]["cpu"], "4");
        assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
        assert_eq!(container["image"], "registry.example/waypoint:1");
    }

    #[test]
    fn an_hpa_without_a_maximum_is_refused() {
        let error = with_overlay(json!({"horizontalPodAutoscaler": "spec: {minReplicas: 2}"}))
            .expect_err("refused");
        assert_eq!(error.config_map, "shop/params");
        assert!(error.message.contains("maxReplicas"), "{error}");
    }

    #[test]
    fn the_class_is_one_the_config_serves() {
        assert!(mesh_config::WAYPOINT_CLASSES.contains(&WAYPOINT_CLASS));
        let gateway = gateway("shop", "waypoint", "service");
        let mut resources = mesh_config::Resources::default();
        resources.add_object(mesh_config::Location::file("generated"), gateway);
        let snapshot = resources.compile().expect("a valid Gateway");
        let waypoint = mesh_config::ObjectRef::new("shop", "waypoint");
        assert!(
            snapshot.waypoint(&waypoint).is_some(),
            "served as a waypoint"
        );
    }

    #[test]
    fn without_a_uid_nothing_is_owned() {
        let objects = rendered(None);
        assert!(
            objects
                .iter()
                .all(|o| o["metadata"].get("ownerReferences").is_none())
        );
    }

    /// The ClusterRole lets a waypoint read every kind its config is made of, and no more.
    #[test]
    fn the_config_reader_reads_every_kind_and_writes_nothing() {
        let role = config_reader();
        let rules = role["rules"].as_array().expect("rules");
        for kind in KINDS {
            let granted = rules.iter().any(|r| {
                r["apiGroups"][0] == kind.group
                    && r["resources"]
                        .as_array()
                        .is_some_and(|p| p.contains(&json!(kind.plural)))
            });
            assert!(granted, "{kind:?}");
        }
        assert!(
            rules
                .iter()
                .all(|r| r["verbs"] == json!(["get", "list", "watch"]))
        );
    }
}
