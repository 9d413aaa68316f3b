//! Label syntax and the waypoint-binding labels (pure functions).

use std::collections::BTreeMap;

use crate::model::ObjectRef;

pub(crate) const USE_WAYPOINT: &str = "istio.io/use-waypoint";
pub(crate) const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
pub(crate) const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
pub(crate) const GATEWAY_NAME: &str = "gateway.networking.k8s.io/gateway-name";

pub(crate) type Labels = BTreeMap<String, String>;

/// Kubernetes label value syntax: empty, or at most 63 characters of `[A-Za-z0-9._-]`
/// beginning and ending with an alphanumeric.
pub(crate) fn valid_label_value(value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    let bytes = value.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_alphanumeric();
    value.len() <= 63
        && edge_ok(bytes[0])
        && edge_ok(bytes[bytes.len() - 1])
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A DNS-1123 label (object names used as waypoint/namespace names): lower-case alphanumerics and
/// `-`, at most 63 characters, alphanumeric at both ends.
pub(crate) fn valid_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !value.is_empty()
        && value.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The field path naming one label.
pub(crate) fn label_field(key: &str) -> String {
    format!("metadata.labels[{key}]")
}

/// Checks every value in a label map used as a selector; returns `(key, message)` per problem.
pub(crate) fn check_selector(selector: &Labels) -> Vec<(String, String)> {
    selector
        .iter()
        .filter(|(_, v)| !valid_label_value(v))
        .map(|(k, v)| (k.clone(), format!("invalid label value {v:?}")))
        .collect()
}

/// Checks the waypoint labels an object carries; returns `(field, message)` per problem.
pub(crate) fn check_waypoint_labels(labels: &Labels) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for key in [USE_WAYPOINT, USE_WAYPOINT_NAMESPACE] {
        if let Some(v) = labels.get(key).filter(|v| !valid_dns_label(v)) {
            let msg = format!("invalid value {v:?}: must be a DNS-1123 label (or `none`)");
            problems.push((label_field(key), msg));
        }
    }
    if let Some(v) = labels.get(WAYPOINT_FOR)
        && crate::model::WaypointFor::parse(v).is_none()
    {
        let msg = format!("invalid value {v:?}: expected service, workload, all or none");
        problems.push((label_field(WAYPOINT_FOR), msg));
    }
    problems
}

/// What one object's own labels ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Binding {
    /// No `istio.io/use-waypoint` label: defer to the namespace.
    Unset,
    /// `istio.io/use-waypoint: none`.
    OptOut,
    Waypoint(ObjectRef),
}

/// Reads `istio.io/use-waypoint` (+ `-namespace`) from one object's labels; `own_namespace` is
/// the namespace of the object being bound.
pub(crate) fn own_binding(labels: &Labels, own_namespace: &str) -> Binding {
    match labels.get(USE_WAYPOINT).map(String::as_str) {
        None | Some("") => Binding::Unset,
        Some("none") => Binding::OptOut,
        Some(name) => {
            let ns = labels
                .get(USE_WAYPOINT_NAMESPACE)
                .filter(|ns| !ns.is_empty())
                .map_or(own_namespace, String::as_str);
            Binding::Waypoint(ObjectRef::new(ns, name))
        }
    }
}

/// The waypoint an object asks for: its own label beats its namespace's label.
pub(crate) fn requested_waypoint(
    labels: &Labels,
    namespace: &str,
    namespace_labels: Option<&Labels>,
) -> Option<ObjectRef> {
    let binding = match own_binding(labels, namespace) {
        Binding::Unset => namespace_labels.map_or(Binding::Unset, |l| own_binding(l, namespace)),
        other => other,
    };
    match binding {
        Binding::Waypoint(r) => Some(r),
        Binding::Unset | Binding::OptOut => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_value_syntax() {
        assert!(valid_label_value(""));
        assert!(valid_label_value("v1.2_x-y"));
        assert!(!valid_label_value("-v1"));
        assert!(!valid_label_value("v1/"));
        assert!(!valid_label_value(&"a".repeat(64)));
        assert!(valid_dns_label("waypoint-1"));
        assert!(!valid_dns_label("Waypoint"));
        assert!(!valid_dns_label("way_point"));
    }

    #[test]
    fn own_label_beats_namespace_label() {
        let ns = labels(&[(USE_WAYPOINT, "ns-wp")]);
        let own = labels(&[(USE_WAYPOINT, "svc-wp")]);
        let got = requested_waypoint(&own, "default", Some(&ns));
        assert_eq!(got, Some(ObjectRef::new("default", "svc-wp")));
        let got = requested_waypoint(&Labels::new(), "default", Some(&ns));
        assert_eq!(got, Some(ObjectRef::new("default", "ns-wp")));
    }

    #[test]
    fn none_opts_out_of_namespace_waypoint() {
        let ns = labels(&[(USE_WAYPOINT, "ns-wp")]);
        let own = labels(&[(USE_WAYPOINT, "none")]);
        assert_eq!(requested_waypoint(&own, "default", Some(&ns)), None);
    }

    #[test]
    fn waypoint_namespace_label_comes_from_the_same_object() {
        let own = labels(&[(USE_WAYPOINT, "wp"), (USE_WAYPOINT_NAMESPACE, "infra")]);
        let got = requested_waypoint(&own, "default", None);
        assert_eq!(got, Some(ObjectRef::new("infra", "wp")));
    }

    #[test]
    fn bad_waypoint_labels_are_reported() {
        let bad = labels(&[(USE_WAYPOINT, "Bad_Name"), (WAYPOINT_FOR, "everything")]);
        let problems = check_waypoint_labels(&bad);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].0.contains(USE_WAYPOINT));
        assert!(problems[1].1.contains("everything"));
    }
}
