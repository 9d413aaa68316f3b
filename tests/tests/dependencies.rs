//! The crate dependency rules of ARCHITECTURE.md, checked against `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};

fn workspace_graph() -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .exec()
        .expect("cargo metadata runs");
    let members: BTreeSet<_> = metadata.workspace_members.iter().collect();
    let mut internal = BTreeMap::new();
    let mut external = BTreeMap::new();
    let names: BTreeSet<String> = metadata
        .packages
        .iter()
        .filter(|p| members.contains(&p.id))
        .map(|p| p.name.to_string())
        .collect();
    for package in metadata.packages.iter().filter(|p| members.contains(&p.id)) {
        let normal = package
            .dependencies
            .iter()
            .filter(|d| d.kind == cargo_metadata::DependencyKind::Normal)
            .map(|d| d.name.clone());
        let (inside, outside): (BTreeSet<_>, BTreeSet<_>) = normal.partition(|d| names.contains(d));
        internal.insert(package.name.to_string(), inside);
        external.insert(package.name.to_string(), outside);
    }
    (internal, external)
}

/// Which workspace crates each crate may depend on (normal dependencies).
fn allowed(crate_name: &str) -> Option<&'static [&'static str]> {
    Some(match crate_name {
        "mesh-core" | "mesh-runtime" => &[],
        "mesh-config" => &["mesh-core"],
        "mesh-kubernetes" => &["mesh-config"],
        "mesh-bench" => &["mesh-hbone"],
        "mesh-hbone" => &["mesh-core", "mesh-runtime"],
        "ztunnel" => &["mesh-core", "mesh-config", "mesh-hbone", "mesh-runtime"],
        "waypoint" => &["mesh-core", "mesh-config", "mesh-hbone", "mesh-runtime"],
        "loadtest" => &["mesh-runtime", "mesh-bench"],
        "mesh" | "mesh-tests" => return None,
        other => panic!("crate {other} has no dependency rule: add it to ARCHITECTURE.md and here"),
    })
}

#[test]
fn workspace_crates_depend_only_on_what_they_may() {
    let (internal, _) = workspace_graph();
    let mut violations = Vec::new();
    for (krate, deps) in &internal {
        let Some(allowed) = allowed(krate) else {
            continue;
        };
        for dep in deps {
            if !allowed.contains(&dep.as_str()) {
                violations.push(format!("{krate} depends on {dep}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "forbidden dependencies: {violations:?}"
    );
}

#[test]
fn only_the_waypoint_depends_on_pingora() {
    let (_, external) = workspace_graph();
    let users: Vec<_> = external
        .iter()
        .filter(|(_, deps)| deps.iter().any(|d| d.starts_with("pingora")))
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        users,
        vec!["waypoint"],
        "crates depending on pingora directly"
    );
}

#[test]
fn the_rules_know_every_crate() {
    let (internal, _) = workspace_graph();
    assert!(
        internal.len() >= 9,
        "expected the 9 workspace crates, found {:?}",
        internal.keys()
    );
    for krate in internal.keys() {
        let _ = allowed(krate);
    }
}
