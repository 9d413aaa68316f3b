//! PeerAuthentication manifests → `PeerAuthentication`, with validation: a known mode, port
//! keys that are port numbers, `portLevelMtls` only with a selector (as Istio requires), and a
//! warning where DISABLE cannot do what it says in ambient mode.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::labels;
use super::policies::Cx;
use crate::ROOT_NAMESPACE;
use crate::error::{Diagnostics, Reason};
use crate::manifest::{Doc, PeerAuthnObject};
use crate::peer_authn::{MtlsMode, PeerAuthentication, PeerAuthnScope};

/// Compiles every PeerAuthentication, sorted by namespace/name.
pub(crate) fn peer_authentications(
    docs: &[Doc<PeerAuthnObject>],
    diag: &mut Diagnostics,
) -> Vec<Arc<PeerAuthentication>> {
    let mut out = Vec::new();
    for doc in docs {
        let mut cx = Cx::new(&doc.origin, diag);
        let spec = &doc.obj.spec;
        let selector = (spec.selector.as_ref())
            .and_then(|s| s.match_labels.clone())
            .filter(|l| !l.is_empty());
        if let Some(selector) = &selector {
            for (key, msg) in labels::check_selector(selector) {
                cx.error(format!("spec.selector.matchLabels[{key}]"), msg);
            }
        }
        let mode = match spec.mtls.as_ref().and_then(|m| m.mode.as_deref()) {
            None => MtlsMode::Unset,
            Some(text) => parse_mode(&mut cx, "spec.mtls.mode".into(), text),
        };
        let mut port_modes = BTreeMap::new();
        let ports = spec.port_level_mtls.iter().flatten();
        for (key, mtls) in ports {
            let field = format!("spec.portLevelMtls[{key}]");
            let Some(port) = key.parse::<u16>().ok().filter(|p| *p > 0) else {
                cx.error(field, format!("{key:?} is not a port number (1-65535)"));
                continue;
            };
            let mode = match mtls.mode.as_deref() {
                None => MtlsMode::Unset,
                Some(text) => parse_mode(&mut cx, format!("{field}.mode"), text),
            };
            port_modes.insert(port, mode);
        }
        if !port_modes.is_empty() && selector.is_none() {
            let msg = "portLevelMtls needs a selector (ports are a workload's)";
            cx.error("spec.portLevelMtls".into(), msg);
        }
        let scope = match selector {
            Some(labels) => PeerAuthnScope::Selector(labels),
            None if doc.namespace == ROOT_NAMESPACE => PeerAuthnScope::Mesh,
            None => PeerAuthnScope::Namespace,
        };
        if !cx.failed {
            out.push(Arc::new(PeerAuthentication {
                namespace: doc.namespace.clone(),
                name: doc.name.clone(),
                scope,
                mode,
                port_modes,
            }));
        }
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

fn parse_mode(cx: &mut Cx<'_>, field: String, text: &str) -> MtlsMode {
    match text {
        "UNSET" => MtlsMode::Unset,
        "PERMISSIVE" => MtlsMode::Permissive,
        "STRICT" => MtlsMode::Strict,
        "DISABLE" => {
            let msg = "DISABLE accepts plaintext as PERMISSIVE does; in ambient mode HBONE \
                       between ztunnels stays mutual TLS";
            (cx.diag).warn_because(Reason::NoEffect, cx.origin, field, msg);
            MtlsMode::Disable
        }
        other => {
            let msg = format!("unknown mode {other:?}: UNSET, PERMISSIVE, STRICT or DISABLE");
            cx.error(field, msg);
            MtlsMode::Unset
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::fixtures::{self, yaml};
    use crate::peer_authn::MtlsMode;

    fn peer_authn(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": {"name": name, "namespace": ns}, "spec": spec})
    }

    fn compile(objs: &[serde_json::Value]) -> Result<crate::Snapshot, String> {
        let mut all = vec![
            fixtures::node("node-a", "127.0.1.1"),
            fixtures::pod("default", "a", "127.0.1.10", json!({"app": "a"})),
        ];
        all.extend_from_slice(objs);
        crate::compile(vec![("pa.yaml".into(), yaml(&all))]).map_err(|e| e.to_string())
    }

    #[test]
    fn modes_and_ports_compile_and_decide() {
        let s = compile(&[
            peer_authn("istio-system", "mesh", json!({"mtls": {"mode": "STRICT"}})),
            peer_authn(
                "default",
                "a",
                json!({"selector": {"matchLabels": {"app": "a"}},
                "portLevelMtls": {"9080": {"mode": "PERMISSIVE"}}}),
            ),
        ])
        .expect("compiles");
        let pod = s
            .workload_by_ip("127.0.1.10".parse().expect("ip"))
            .expect("pod");
        assert_eq!(s.mtls_mode(pod, 9080).0, MtlsMode::Permissive);
        let (mode, by) = s.mtls_mode(pod, 8080);
        assert_eq!(
            (mode, by.map(|p| p.name.as_str())),
            (MtlsMode::Strict, Some("mesh"))
        );
    }

    #[test]
    fn bad_input_names_its_field() {
        let cases = [
            (json!({"mtls": {"mode": "strict"}}), "spec.mtls.mode"),
            (
                json!({"selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": {"http": {"mode": "STRICT"}}}),
                "spec.portLevelMtls[http]",
            ),
            (
                json!({"portLevelMtls": {"80": {"mode": "STRICT"}}}),
                "spec.portLevelMtls",
            ),
            (json!({"mtls": {"mode": "STRICT", "extra": 1}}), "extra"),
            (
                json!({"targetRefs": [{"kind": "Service", "name": "a"}]}),
                "targetRefs",
            ),
        ];
        for (spec, field) in cases {
            let err = compile(&[peer_authn("default", "bad", spec.clone())]).expect_err("rejected");
            assert!(err.contains(field), "{spec}: {err}");
        }
    }
}
