//! Pods by namespace and by each of their labels, so that a selector is matched against the
//! pods carrying one of its labels rather than against every pod: a cluster has tens of
//! thousands, and every Service and waypoint selects among them.

use std::collections::HashMap;
use std::sync::Arc;

use super::labels::Labels;
use super::services::selects;
use crate::model::Workload;

pub(crate) struct PodIndex<'a> {
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<&'a Arc<Workload>>>,
}

impl<'a> PodIndex<'a> {
    pub fn new(workloads: &'a [Arc<Workload>]) -> Self {
        let mut by_label: HashMap<_, Vec<_>> = HashMap::new();
        for w in workloads {
            for (key, value) in &w.labels {
                let at = (w.namespace.as_str(), key.as_str(), value.as_str());
                by_label.entry(at).or_default().push(w);
            }
        }
        Self { by_label }
    }

    /// The pods of `namespace` labelled `key: value`, in the order given to [`PodIndex::new`].
    pub fn labelled<'s>(
        &'s self,
        namespace: &'s str,
        key: &'s str,
        value: &'s str,
    ) -> &'s [&'s Arc<Workload>] {
        let by_label: &'s HashMap<(&'s str, &'s str, &'s str), Vec<&'s Arc<Workload>>> =
            &self.by_label;
        by_label
            .get(&(namespace, key, value))
            .map_or(&[], Vec::as_slice)
    }

    /// The pods of `namespace` that `selector` selects (none for an empty selector), in the
    /// order given to [`PodIndex::new`].
    pub fn selected<'s>(
        &'s self,
        namespace: &'s str,
        selector: &'s Labels,
    ) -> Vec<&'s Arc<Workload>> {
        // Every selected pod carries each selector label: start from the rarest.
        let candidates = (selector.iter())
            .map(|(key, value)| self.labelled(namespace, key, value))
            .min_by_key(|pods| pods.len())
            .unwrap_or_default();
        (candidates.iter())
            .filter(|w| selects(selector, &w.labels))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::workloads::identity;

    fn pod(namespace: &str, name: &str, labels: &[(&str, &str)]) -> Arc<Workload> {
        let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Arc::new(Workload {
            name: name.into(),
            namespace: namespace.into(),
            ip: "127.0.0.1".parse().expect("ip"),
            node: "node-a".into(),
            service_account: "default".into(),
            identity: identity(crate::DEFAULT_TRUST_DOMAIN, namespace, "default"),
            labels: labels.collect(),
            annotations: Default::default(),
            container_ports: Vec::new(),
            canonical_service: name.into(),
            canonical_revision: "latest".into(),
            waypoint: None,
            ready: true,
        })
    }

    fn names(pods: &[&Arc<Workload>]) -> Vec<String> {
        pods.iter()
            .map(|w| format!("{}/{}", w.namespace, w.name))
            .collect()
    }

    #[test]
    fn selectors_pick_pods_of_their_namespace_with_every_label() {
        let pods = [
            pod("a", "web-1", &[("app", "web"), ("version", "v1")]),
            pod("a", "web-2", &[("app", "web"), ("version", "v2")]),
            pod("a", "db", &[("app", "db"), ("version", "v1")]),
            pod("b", "web-1", &[("app", "web"), ("version", "v1")]),
        ];
        let index = PodIndex::new(&pods);
        let selector = |pairs: &[(&str, &str)]| -> Labels {
            (pairs.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let web = selector(&[("app", "web")]);
        assert_eq!(names(&index.selected("a", &web)), ["a/web-1", "a/web-2"]);
        let web_v1 = selector(&[("app", "web"), ("version", "v1")]);
        assert_eq!(names(&index.selected("a", &web_v1)), ["a/web-1"]);
        assert_eq!(names(&index.selected("b", &web)), ["b/web-1"]);
        let nothing = [selector(&[]), selector(&[("app", "nope")]), web_v1.clone()];
        assert!(
            index.selected("a", &nothing[0]).is_empty(),
            "empty selects none"
        );
        assert!(index.selected("a", &nothing[1]).is_empty());
        assert!(index.selected("c", &nothing[2]).is_empty());
        assert_eq!(
            names(index.labelled("a", "version", "v1")),
            ["a/web-1", "a/db"]
        );
    }
}
