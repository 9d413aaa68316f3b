#!/usr/bin/env python3
"""Keeps the charts in step with what the code renders (scripts/check-charts runs it).

- The waypoint chart runs a waypoint pod as the controller renders it (`mesh waypoint
  render`): the same container ports, environment, probes, security context and volumes.
- Every ClusterRole the charts give a proxy or the controller grants at least what the code's
  mesh-config-reader grants (the kinds the config is made of), and the controller's may patch
  the statuses it writes.

usage: check-chart-consistency.py DIR  (with waypoint.yaml, ztunnel.yaml,
waypoint-controller.yaml and mesh-render.yaml, as scripts/check-charts renders them)
"""

import pathlib
import sys

import yaml


def objects(path):
    return [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d]


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    if len(found) != 1:
        raise SystemExit(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def grants(role):
    """(group, resource, verb, names): names is the rule's resourceNames, or None for all."""
    return {
        (group, resource, verb, tuple(sorted(rule["resourceNames"])) if "resourceNames" in rule else None)
        for rule in role.get("rules", [])
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def covered(grant, held):
    """Whether `held` grants `grant`: the same verb on the resource, for every name or for
    at least the names `grant` needs."""
    group, resource, verb, names = grant
    return any(
        (g, r, v) == (group, resource, verb) and (n is None or (names is not None and set(names) <= set(n)))
        for g, r, v, n in held
    )


def pod_shape(deployment):
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    return {
        "command": container.get("command"),
        "ports": container.get("ports"),
        "env": sorted(e["name"] for e in container.get("env", [])),
        "startupProbe": container.get("startupProbe"),
        "readinessProbe": container.get("readinessProbe"),
        "securityContext": container.get("securityContext"),
        "volumeMounts": container.get("volumeMounts"),
        "volumes": pod.get("volumes"),
        "labels": sorted(deployment["spec"]["template"]["metadata"]["labels"]),
    }


def main():
    directory = pathlib.Path(sys.argv[1])
    problems = []
    code = objects(directory / "mesh-render.yaml")
    chart = objects(directory / "waypoint.yaml")
    rendered, charted = pod_shape(one(code, "Deployment")), pod_shape(one(chart, "Deployment"))
    for field, value in rendered.items():
        if charted[field] != value:
            problems.append(f"waypoint chart Deployment {field}: {charted[field]!r}, the code renders {value!r}")
    code_ports = one(code, "Service")["spec"]["ports"]
    if one(chart, "Service")["spec"]["ports"] != code_ports:
        problems.append(f"waypoint chart Service ports differ from the code's {code_ports!r}")
    reader = grants(one(code, "ClusterRole"))
    for name in ["waypoint", "ztunnel", "waypoint-controller"]:
        role = one(objects(directory / f"{name}.yaml"), "ClusterRole")
        held = grants(role)
        missing = sorted((g for g in reader if not covered(g, held)), key=str)
        if missing:
            problems.append(f"{name} chart ClusterRole lacks what the config reader grants: {missing}")
    # The statuses the controller writes (controller.rs and statuses/: Gateways, the class,
    # routes, policies).
    controller = grants(one(objects(directory / "waypoint-controller.yaml"), "ClusterRole"))
    written = [("gateway.networking.k8s.io", resource) for resource in
               ["gateways/status", "gatewayclasses/status", "httproutes/status", "grpcroutes/status"]]
    written.append(("security.istio.io", "authorizationpolicies/status"))
    for group, resource in written:
        if not covered((group, resource, "patch", None), controller):
            problems.append(f"waypoint-controller chart ClusterRole cannot patch {group}/{resource}")
    for problem in problems:
        print(problem)
    print(f"chart consistency: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
