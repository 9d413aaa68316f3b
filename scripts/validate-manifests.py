#!/usr/bin/env python3
"""Validates Kubernetes manifests as an API server with strict field validation would.

Built-in kinds are checked with kubernetes-validate (the Kubernetes OpenAPI schemas, strict:
unknown fields are errors). Custom resources are checked with jsonschema against the
openAPIV3Schema of their CRD (charts/schemas/), made strict the way the API server is: an
object schema that lists its properties and does not preserve unknown fields rejects others.
CEL rules (x-kubernetes-validations) need an API server and are not checked.

usage: validate-manifests.py [--crds DIR] [--kubernetes VERSION] FILE|- ...
Prints one line per problem, naming the file, the document and the field; exits 1 if any.
"""

import argparse
import copy
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml


class KubernetesLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: a timestamp is a string, not a datetime."""


KubernetesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def strict(schema):
    """The schema with unknown properties refused wherever the API server would prune them."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # The type fields and metadata are the API server's (some CRDs leave them out).
    properties = schema.setdefault("properties", {})
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    properties["metadata"] = {"type": "object"}
    return schema


def load_crds(directory):
    """(apiVersion, kind) -> strict JSON schema, for every served version of every CRD."""
    schemas = {}
    for path in sorted(pathlib.Path(directory).glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if not version.get("served"):
                    continue
                schema = version["schema"]["openAPIV3Schema"]
                schemas[(f"{group}/{version['name']}", kind)] = strict(schema)
    return schemas


def where(error):
    path = "/".join(str(p) for p in error.absolute_path)
    return path or "(top level)"


def validate(doc, crds, version):
    """The problems of one object, as strings."""
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    if not api_version or not kind:
        return ["no apiVersion/kind"]
    if not doc.get("metadata", {}).get("name"):
        return ["metadata.name is required"]
    schema = crds.get((api_version, kind))
    if schema is not None:
        validator = jsonschema.Draft7Validator(schema)
        return [f"{where(e)}: {e.message}" for e in validator.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        inner = getattr(e, "caused_by", None) or e
        path = "/".join(str(p) for p in getattr(inner, "absolute_path", []))
        message = getattr(inner, "message", str(e).splitlines()[0])
        return [f"{path or '(top level)'}: {message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{api_version} {kind}: neither a built-in kind nor a CRD in the schema directory"]
    return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = pathlib.Path(__file__).resolve().parent
    parser.add_argument("--crds", default=here.parent / "charts" / "schemas")
    parser.add_argument("--kubernetes", default="1.35")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    crds = load_crds(args.crds)
    problems = 0
    objects = 0
    for name in args.files:
        text = sys.stdin.read() if name == "-" else pathlib.Path(name).read_text()
        for index, doc in enumerate(yaml.load_all(text, Loader=KubernetesLoader)):
            if not doc:
                continue
            objects += 1
            label = f"{name} #{index} {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            for problem in validate(doc, crds, args.kubernetes):
                print(f"{label}: {problem}")
                problems += 1
    if objects == 0:
        print(f"{' '.join(args.files)}: no objects to validate")
        return 1
    print(f"{objects} objects, {problems} problems ({' '.join(args.files)})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
