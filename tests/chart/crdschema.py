"""Validation of custom resources against the CRDs in crds/, as an apiserver with
strict field validation (kubectl's default) would do it:

- the version's openAPIV3Schema, with unknown fields refused except under
  `x-kubernetes-preserve-unknown-fields: true` (the apiserver would prune them;
  `kubectl apply` reports them as errors);
- `x-kubernetes-int-or-string`, `nullable`, `format: byte` (base64), int32/int64 ranges;
- the `x-kubernetes-validations` CEL rules that do not involve `oldSelf` (transition
  rules apply to updates only);
- metadata.name and metadata.namespace (the CRDs are namespaced).
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from pathlib import Path
from typing import Any, Iterator

import celpy
import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

_format_checker = jsonschema.FormatChecker()


@_format_checker.checks("byte", raises=(binascii.Error, ValueError))
def _is_base64(value: object) -> bool:
    if not isinstance(value, str):
        return True
    base64.b64decode(value, validate=True)
    return True


@_format_checker.checks("int32")
def _is_int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_format_checker.checks("int64")
def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def load_crds() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version."""
    result = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                result[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return result


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI v3 structural schema as a JSON Schema (draft 2020-12)."""
    node = copy.deepcopy(node)
    out: dict[str, Any] = {}
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
    int_or_string = node.pop("x-kubernetes-int-or-string", False)
    nullable = node.pop("nullable", False)
    for key in list(node):
        if key.startswith("x-kubernetes-") or key in ("description", "title", "default", "example"):
            node.pop(key)
    for key, value in node.items():
        if key == "properties":
            out["properties"] = {k: to_json_schema(v) for k, v in value.items()}
        elif key == "items":
            out["items"] = to_json_schema(value)
        elif key == "additionalProperties" and isinstance(value, dict):
            out["additionalProperties"] = to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(v) for v in value]
        elif key == "not":
            out["not"] = to_json_schema(value)
        else:
            out[key] = value
    if int_or_string:
        out.pop("type", None)
        out = {"anyOf": [{"type": "integer"}, {"type": "string"}], **out}
    if out.get("type") == "object" and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if nullable and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _cel_rules(schema: dict[str, Any], value: Any, path: str) -> Iterator[tuple[str, str, str, Any]]:
    """(path, rule, message, value) for each CEL rule that applies to a present value."""
    for rule in schema.get("x-kubernetes-validations") or []:
        yield path, rule["rule"], rule.get("message", rule["rule"]), value
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                yield from _cel_rules(sub, value[key], f"{path}.{key}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in set(value) - set(schema.get("properties") or {}):
                yield from _cel_rules(extra, value[key], f"{path}[{key}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            yield from _cel_rules(schema["items"], item, f"{path}[{i}]")


_cel_env = celpy.Environment()


def cel_errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    errors = []
    for path, rule, message, value in _cel_rules(schema, obj, ""):
        if "oldSelf" in rule:
            continue
        program = _cel_env.program(_cel_env.compile(rule))
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if isinstance(result, celpy.celtypes.BoolType) or isinstance(result, bool):
            if not bool(result):
                errors.append(f"{path.lstrip('.') or '<root>'}: {message}")
        else:
            errors.append(f"{path.lstrip('.') or '<root>'}: rule {rule!r} did not evaluate to a bool: {result!r}")
    return errors


def validate(obj: dict[str, Any], crds: dict[tuple[str, str], dict[str, Any]] | None = None) -> list[str]:
    """Every reason the apiserver would refuse `obj` on create; empty when it is valid."""
    crds = crds if crds is not None else load_crds()
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in crds:
        return [f"no served CRD version for apiVersion={key[0]} kind={key[1]}"]
    schema = crds[key]
    errors = []
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if not (DNS_SUBDOMAIN.match(name) and len(name) <= 253):
        errors.append(f"metadata.name {name!r}: must be a DNS subdomain")
    namespace = meta.get("namespace")
    if namespace is not None and not (DNS_LABEL.match(namespace) and len(namespace) <= 63):
        errors.append(f"metadata.namespace {namespace!r}: must be a DNS label")
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    json_schema = to_json_schema(schema)
    json_schema.setdefault("properties", {})
    validator = jsonschema.Draft202012Validator(json_schema, format_checker=_format_checker)
    for error in sorted(validator.iter_errors(body), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in error.path) or "<root>"
        errors.append(f"{where}: {error.message}")
    if not errors:
        errors.extend(cel_errors(schema, body))
    return errors
