//! How users shape what a waypoint runs as, in Istio's way: ConfigMaps whose keys
//! (`deployment`, `service`, `serviceAccount`, `horizontalPodAutoscaler`,
//! `podDisruptionBudget`) hold YAML patches for the rendered objects — the class-wide defaults
//! first, then the Gateway's `spec.infrastructure.parametersRef`. A patch is merged as a
//! strategic merge patch merges these objects: maps merge, `null` removes a field, lists of
//! keyed items (containers, env, volumes, ports, volume mounts) merge item by item on their
//! key, any other list is replaced. The strategic-merge directives (`$patch`, ...) are refused
//! rather than ignored. Pure: the controller fetches the ConfigMaps.

use serde_json::{Map, Value};

/// The objects a patch can shape; an HPA and a PDB exist only when a patch asks for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    ServiceAccount,
    Deployment,
    Service,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
}

impl Part {
    pub const ALL: [Part; 5] = [
        Part::ServiceAccount,
        Part::Deployment,
        Part::Service,
        Part::HorizontalPodAutoscaler,
        Part::PodDisruptionBudget,
    ];

    /// The ConfigMap key that patches it.
    pub fn key(self) -> &'static str {
        match self {
            Part::ServiceAccount => "serviceAccount",
            Part::Deployment => "deployment",
            Part::Service => "service",
            Part::HorizontalPodAutoscaler => "horizontalPodAutoscaler",
            Part::PodDisruptionBudget => "podDisruptionBudget",
        }
    }

    /// The kind of object it patches.
    pub fn kind(self) -> &'static str {
        match self {
            Part::ServiceAccount => "ServiceAccount",
            Part::Deployment => "Deployment",
            Part::Service => "Service",
            Part::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Part::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }
}

/// A ConfigMap that cannot be used, worded for a Gateway's status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("ConfigMap {config_map}: {message}")]
pub struct OverlayError {
    /// `namespace/name`.
    pub config_map: String,
    pub message: String,
}

/// The patches to merge, in order, each with the ConfigMap it came from.
#[derive(Clone, Debug, Default)]
pub struct Overlays {
    patches: Vec<(Part, String, Value)>,
}

impl Overlays {
    /// Adds the patches of one ConfigMap (after those added before, so they win).
    pub fn add_config_map(&mut self, config_map: &Value) -> Result<(), OverlayError> {
        let meta = &config_map["metadata"];
        let origin = format!(
            "{}/{}",
            meta["namespace"].as_str().unwrap_or(""),
            meta["name"].as_str().unwrap_or("")
        );
        let error = |message: String| OverlayError {
            config_map: origin.clone(),
            message,
        };
        let Some(data) = config_map.get("data") else {
            return Ok(());
        };
        let data = data
            .as_object()
            .ok_or_else(|| error("`data` is not a map".into()))?;
        for (key, text) in data {
            let part = (Part::ALL.into_iter())
                .find(|p| p.key() == key)
                .ok_or_else(|| {
                    let known: Vec<&str> = Part::ALL.iter().map(|p| p.key()).collect();
                    error(format!("unknown key {key:?}; known keys are {known:?}"))
                })?;
            let text = text
                .as_str()
                .ok_or_else(|| error(format!("{key}: not a string")))?;
            let patch: Value =
                serde_norway::from_str(text).map_err(|e| error(format!("{key}: not YAML: {e}")))?;
            if !patch.is_object() {
                return Err(error(format!("{key}: a patch is a map of fields")));
            }
            if let Some(directive) = directive_in(&patch) {
                return Err(error(format!(
                    "{key}: the strategic-merge directive {directive:?} is not supported"
                )));
            }
            self.patches.push((part, origin.clone(), patch));
        }
        Ok(())
    }

    /// The ConfigMaps whose patches shape `part`, for messages.
    pub fn origin(&self, part: Part) -> String {
        let origins: Vec<&str> = (self.patches.iter())
            .filter(|(p, _, _)| *p == part)
            .map(|(_, origin, _)| origin.as_str())
            .collect();
        origins.join(", ")
    }

    /// Whether any patch shapes `part`.
    pub fn shapes(&self, part: Part) -> bool {
        self.patches.iter().any(|(p, _, _)| *p == part)
    }

    /// Merges every patch of `part` into `object`, in order.
    pub fn apply(&self, part: Part, object: &mut Value) {
        for (_, _, patch) in self.patches.iter().filter(|(p, _, _)| *p == part) {
            merge(object, patch, None);
        }
    }
}

/// The first `$`-directive anywhere in `patch`.
fn directive_in(patch: &Value) -> Option<String> {
    match patch {
        Value::Object(fields) => fields.iter().find_map(|(key, value)| match key {
            key if key.starts_with('$') => Some(key.clone()),
            _ => directive_in(value),
        }),
        Value::Array(items) => items.iter().find_map(directive_in),
        _ => None,
    }
}

/// The key the items of list `field` merge on, as the Kubernetes API declares it.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers" | "initContainers" | "volumes" | "env" | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => Some("containerPort"),
        "ports" => Some("port"),
        _ => None,
    }
}

/// Merges `patch` into `target`; `field` names the list being merged, if any.
fn merge(target: &mut Value, patch: &Value, field: Option<&str>) {
    match (target, patch) {
        (Value::Object(into), Value::Object(fields)) => merge_maps(into, fields),
        (Value::Array(into), Value::Array(items)) => {
            let key = field.and_then(|f| merge_key(f, items));
            match key {
                Some(key) if items.iter().all(|i| i.get(key).is_some()) => {
                    merge_lists(into, items, key, field.unwrap_or(""))
                }
                _ => *into = items.clone(),
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn merge_maps(into: &mut Map<String, Value>, fields: &Map<String, Value>) {
    for (key, value) in fields {
        if value.is_null() {
            into.remove(key);
            continue;
        }
        match into.get_mut(key) {
            Some(existing) => merge(existing, value, Some(key)),
            None => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Items with the same `key` merge; new items are appended in the patch's order.
fn merge_lists(into: &mut Vec<Value>, items: &[Value], key: &str, field: &str) {
    for item in items {
        match into.iter_mut().find(|i| i.get(key) == item.get(key)) {
            Some(existing) => merge(existing, item, Some(field)),
            None => into.push(item.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config_map(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"namespace": "shop", "name": "waypoint-params"}, "data": data})
    }

    fn overlays(data: Value) -> Result<Overlays, OverlayError> {
        let mut overlays = Overlays::default();
        overlays.add_config_map(&config_map(data))?;
        Ok(overlays)
    }

    #[test]
    fn containers_merge_by_name_and_other_lists_are_replaced() {
        let mut deployment = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "waypoint", "image": "a",
                            "env": [{"name": "A", "value": "1"}],
                            "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}],
            "tolerations": [{"key": "x"}]}}}});
        let patch = "spec:\n  template:\n    spec:\n      containers:\n      - name: waypoint\n        \
                     env: [{name: B, value: '2'}]\n        resources: {limits: {cpu: null, memory: 2Gi}}\n      \
                     - name: extra\n        image: b\n      tolerations: [{key: y}]\n";
        let overlays = overlays(json!({"deployment": patch})).expect("valid");
        overlays.apply(Part::Deployment, &mut deployment);
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["image"], "a");
        assert_eq!(
            pod["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
        );
        assert_eq!(
            pod["containers"][0]["resources"]["limits"],
            json!({"memory": "2Gi"})
        );
        assert_eq!(pod["containers"][1]["name"], "extra");
        assert_eq!(pod["tolerations"], json!([{"key": "y"}]));
    }

    #[test]
    fn ports_merge_on_their_port() {
        let mut service = json!({"spec": {"ports": [{"name": "mesh", "port": 15008}]}});
        let overlays = overlays(json!({"service": "spec: {ports: [{port: 15008, name: hbone}]}"}))
            .expect("valid");
        overlays.apply(Part::Service, &mut service);
        assert_eq!(
            service["spec"]["ports"],
            json!([{"name": "hbone", "port": 15008}])
        );
    }

    #[test]
    fn later_config_maps_win() {
        let mut overlays =
            overlays(json!({"horizontalPodAutoscaler": "spec: {maxReplicas: 5}"})).expect("valid");
        (overlays.add_config_map(&config_map(
            json!({"horizontalPodAutoscaler": "spec: {maxReplicas: 9}"}),
        )))
        .expect("valid");
        assert!(overlays.shapes(Part::HorizontalPodAutoscaler));
        assert!(!overlays.shapes(Part::PodDisruptionBudget));
        let mut hpa = json!({"spec": {"minReplicas": 1}});
        overlays.apply(Part::HorizontalPodAutoscaler, &mut hpa);
        assert_eq!(hpa["spec"], json!({"minReplicas": 1, "maxReplicas": 9}));
    }

    #[test]
    fn what_cannot_be_used_is_refused_with_its_place() {
        for (data, wanted) in [
            (json!({"deploy": "a: 1"}), "unknown key \"deploy\""),
            (json!({"service": "[1, 2]"}), "service: a patch is a map"),
            (json!({"service": "a: [b"}), "service: not YAML"),
            (
                json!({"deployment": "spec: {template: {spec: {containers: [{name: w, $patch: delete}]}}}"}),
                "directive \"$patch\" is not supported",
            ),
        ] {
            let error = overlays(data).expect_err("refused");
            assert_eq!(error.config_map, "shop/waypoint-params");
            assert!(error.message.contains(wanted), "{error}");
        }
    }
}
