#!/usr/bin/env python3
"""Checks of rendered Kubernetes manifests that no off-the-shelf tool does, for scripts/test.d/k8s.sh.

Subcommands (each takes rendered multi-document YAML files and exits 1 on any problem):

  schema FILE...     strict validation against the Kubernetes JSON schemas of 1.30 and the newest
                     bundled version (kubernetes-validate); an unknown kind fails unless it is a
                     CRD kind with a vendored schema.
  crd FILE...        ServiceMonitor, PrometheusRule and ScaledObject against the CRD schemas in
                     tests/k8s/crd-schemas (unknown fields rejected, as the API server's strict
                     field validation does).
  structure FILE...  cross-object wiring: Services select pods, ServiceMonitors select Services
                     and name a port they have, HPAs/ScaledObjects/PDBs target what exists and
                     agree with replicas, grace period > SHUTDOWN_GRACE, pod hardening, RBAC.
  settings FILE...   the ConfigMap, the Secret template and container env against SETTINGS in
                     shared/src/settings.rs (read at test time).
  metrics FILE...    every alert and dashboard query parses as PromQL (promql-parser), and every
                     botburrow_* metric it names is registered by the Rust sources (read at test
                     time; prometheus-client suffixes applied).
  same A B           two renderings (chart vs. kustomize overlay) hold the same objects, and the
                     same settings, rules, selectors and pod specs.
  docker FILE...     every ghcr.io/botburrow image the manifests run is a Dockerfile target, the
                     binaries it copies exist, and .dockerignore keeps the workspace in the context.
  selftest           feeds each check a deliberately broken input and fails unless it complains.
"""

from __future__ import annotations

import copy
import json
import pathlib
import re
import sys
from typing import Any, Callable, Iterable

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRD_SCHEMAS = ROOT / "tests/k8s/crd-schemas"
SECRET_TEMPLATE = ROOT / "k8s/base/secret.template.yaml"
SETTINGS_RS = ROOT / "shared/src/settings.rs"
KUBE_VERSIONS = ["1.30.0", None]  # None: the newest schema kubernetes-validate bundles
CRD_FILES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com-servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com-prometheusrule_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh-scaledobject_v1alpha1.json",
}
HELM_LABELS = {"app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"}
FLEET_CONTAINERS = {"coordinator": "Coordinator", "runner": "Runner"}

Doc = dict[str, Any]


def load(paths: Iterable[str]) -> list[tuple[str, Doc]]:
    out = []
    for p in paths:
        with open(p, encoding="utf-8") as fh:
            for doc in yaml.safe_load_all(fh):
                if doc:
                    out.append((p, doc))
    return out


def ident(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def pod_spec(doc: Doc) -> Doc | None:
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def pod_labels(doc: Doc) -> dict[str, str]:
    return doc["spec"]["template"].get("metadata", {}).get("labels", {}) or {}


def matches(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------------------------------- schema


def check_schema(docs: list[tuple[str, Doc]]) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, latest_version

    problems = []
    for version in KUBE_VERSIONS:
        v = version or latest_version()
        for path, doc in docs:
            key = (doc.get("apiVersion"), doc.get("kind"))
            try:
                kubernetes_validate.validate(doc, v, strict=True)
            except SchemaNotFoundError:
                if key not in CRD_FILES:
                    problems.append(f"{path}: {ident(doc)} ({key[0]}) has no schema in Kubernetes {v}")
            except ValidationError as e:
                where = "/".join(str(x) for x in e.path)
                problems.append(f"{path}: {ident(doc)} is invalid for Kubernetes {v} at {where}: {e.message}")
    return problems


# ------------------------------------------------------------------------------------------- crd


def strict_schema(node: Any) -> Any:
    """Closes every object schema that lists properties, as strict field validation does."""
    if isinstance(node, dict):
        node = {k: strict_schema(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strict_schema(x) for x in node]
    return node


def check_crd(docs: list[tuple[str, Doc]]) -> list[str]:
    import jsonschema

    problems = []
    validators: dict[tuple[str, str], Any] = {}
    for path, doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in CRD_FILES:
            continue
        if key not in validators:
            schema = json.loads((CRD_SCHEMAS / CRD_FILES[key]).read_text(encoding="utf-8"))
            schema = strict_schema(schema)
            # metadata is validated by the API server itself, not by the CRD schema.
            schema.setdefault("properties", {})["metadata"] = {"type": "object"}
            validators[key] = jsonschema.Draft7Validator(schema)
        for err in validators[key].iter_errors(doc):
            where = "/".join(str(x) for x in err.absolute_path)
            problems.append(f"{path}: {ident(doc)} at {where}: {err.message}")
    return problems


# ------------------------------------------------------------------------------------- structure


def shutdown_grace(docs: list[tuple[str, Doc]]) -> int:
    for _, d in docs:
        if d.get("kind") == "ConfigMap" and d["metadata"]["name"].startswith("botburrow-agents-config"):
            return int(d.get("data", {}).get("SHUTDOWN_GRACE", "100"))
    return 100


def check_structure(docs: list[tuple[str, Doc]]) -> list[str]:
    problems: list[str] = []
    by_kind: dict[str, list[Doc]] = {}
    for _, d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    workloads = [d for d in by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])]
    services = by_kind.get("Service", [])
    grace = shutdown_grace(docs)

    for w in workloads:
        spec = pod_spec(w)
        sel = w["spec"]["selector"].get("matchLabels", {})
        if not matches(sel, pod_labels(w)):
            problems.append(f"{ident(w)}: selector {sel} does not match its pod template labels")
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            problems.append(f"{ident(w)}: pod securityContext.runAsNonRoot must be true")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{ident(w)}: pod seccompProfile must be RuntimeDefault")
        uses_grace = any(c["name"] in FLEET_CONTAINERS for c in spec["containers"])
        if uses_grace and int(spec.get("terminationGracePeriodSeconds", 30)) <= grace:
            problems.append(f"{ident(w)}: terminationGracePeriodSeconds must exceed SHUTDOWN_GRACE ({grace})")
        for c in spec.get("initContainers", []) + spec["containers"]:
            where = f"{ident(w)} container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation must be false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: readOnlyRootFilesystem must be true")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: capabilities.drop must be [ALL]")
            if sc.get("runAsUser", psc.get("runAsUser", 0)) == 0:
                problems.append(f"{where}: runs as uid 0")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(part, {}):
                        problems.append(f"{where}: resources.{part}.{r} missing")
            if c in spec["containers"] and ("livenessProbe" not in c or "readinessProbe" not in c):
                problems.append(f"{where}: needs liveness and readiness probes")
            port_names = {p.get("name") for p in c.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in port_names:
                    problems.append(f"{where}: {probe} names port {port!r} the container does not declare")
        if w["kind"] == "Deployment" and w["metadata"]["name"] == "coordinator":
            env = {e["name"]: e for e in spec["containers"][0].get("env", [])}
            for name, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
                got = env.get(name, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if got != path:
                    problems.append(f"{ident(w)}: {name} must come from the downward API ({path})")

    for s in services:
        sel = s["spec"].get("selector")
        targets = [w for w in workloads if matches(sel, pod_labels(w))]
        if not targets:
            problems.append(f"{ident(s)}: selector {sel} matches no pod template")
        for port in s["spec"].get("ports", []):
            tp = port.get("targetPort", port.get("port"))
            if isinstance(tp, str):
                for w in targets:
                    names = {p.get("name") for c in pod_spec(w)["containers"] for p in c.get("ports", [])}
                    if tp not in names:
                        problems.append(f"{ident(s)}: targetPort {tp!r} is not a port of {ident(w)}")

    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"].get("matchLabels", {})
        hits = [s for s in services if matches(sel, s["metadata"].get("labels", {}))]
        if not hits:
            problems.append(f"{ident(sm)}: selector {sel} matches no Service")
        for ep in sm["spec"].get("endpoints", []):
            for s in hits:
                if ep.get("port") not in {p.get("name") for p in s["spec"].get("ports", [])}:
                    problems.append(f"{ident(sm)}: endpoint port {ep.get('port')!r} is not a port of {ident(s)}")

    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    scaled: dict[str, str] = {}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]["name"]
        d = deployments.get(target)
        if d is None:
            problems.append(f"{ident(hpa)}: targets missing Deployment {target}")
            continue
        lo, hi, reps = hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"], d["spec"].get("replicas", 1)
        if not lo <= reps <= hi:
            problems.append(f"{ident(hpa)}: minReplicas {lo} <= replicas {reps} <= maxReplicas {hi} does not hold")
        scaled[target] = ident(hpa)
    for so in by_kind.get("ScaledObject", []):
        target = so["spec"]["scaleTargetRef"]["name"]
        d = deployments.get(target)
        if d is None:
            problems.append(f"{ident(so)}: targets missing Deployment {target}")
            continue
        if target in scaled:
            problems.append(f"{ident(so)}: {target} is also scaled by {scaled[target]} (KEDA owns its own HPA)")
        lo, hi, reps = so["spec"].get("minReplicaCount", 0), so["spec"].get("maxReplicaCount", 100), d["spec"].get("replicas", 1)
        if not lo <= reps <= hi:
            problems.append(f"{ident(so)}: minReplicaCount {lo} <= replicas {reps} <= maxReplicaCount {hi} does not hold")
        mode = (pod_labels(d).get("botburrow.dev/runner-mode") or "")
        allowed = {"notification": {"high", "low"}, "exploration": {"normal", "low"}}.get(mode, {"high", "normal", "low"})
        for t in so["spec"].get("triggers", []):
            md = t.get("metadata", {})
            m = re.fullmatch(r"work:queue:(high|normal|low)", md.get("listName", ""))
            if t.get("type") != "redis" or not m:
                problems.append(f"{ident(so)}: trigger must be redis on work:queue:<priority>, got {t}")
            elif m.group(1) not in allowed:
                problems.append(f"{ident(so)}: a {mode} runner never claims from {md['listName']}")
            if not md.get("address", "").startswith("valkey."):
                problems.append(f"{ident(so)}: trigger address must be the valkey Service, got {md.get('address')}")

    for pdb in by_kind.get("PodDisruptionBudget", []):
        sel = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(matches(sel, pod_labels(w)) for w in workloads):
            problems.append(f"{ident(pdb)}: selector {sel} matches no pod template")

    for np in by_kind.get("NetworkPolicy", []):
        sel = np["spec"]["podSelector"].get("matchLabels", {})
        if not any(matches(sel, pod_labels(w)) for w in workloads):
            problems.append(f"{ident(np)}: podSelector {sel} matches no pod template")
    runner_np = [np for np in by_kind.get("NetworkPolicy", [])
                 if np["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") == "runner"]
    if workloads and not runner_np:
        problems.append("no NetworkPolicy selects the runner pods")
    for np in runner_np:
        for rule in np["spec"].get("ingress", []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if ports != {9091}:
                problems.append(f"{ident(np)}: runners admit ingress only to metrics (9091), got {ports}")

    for role in by_kind.get("Role", []) + by_kind.get("ClusterRole", []):
        for rule in role.get("rules", []):
            if rule.get("apiGroups") != ["coordination.k8s.io"] or rule.get("resources") != ["leases"]:
                problems.append(f"{ident(role)}: grants more than Leases: {rule}")
            if set(rule.get("verbs", [])) - {"get", "create", "update"}:
                problems.append(f"{ident(role)}: verbs beyond get/create/update: {rule.get('verbs')}")
    if by_kind.get("ClusterRole") or by_kind.get("ClusterRoleBinding"):
        problems.append("cluster-wide RBAC is not allowed")
    return problems


# -------------------------------------------------------------------------------------- settings


def parse_settings(text: str) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """SETTINGS rows (name -> aliases, reader, secret) and the by-name credential variables."""
    block = re.search(r"pub const SETTINGS: &\[SettingSpec\] = &\[(.*?)\n\];", text, re.S)
    if not block:
        raise SystemExit(f"{SETTINGS_RS}: SETTINGS table not found")
    rows = {}
    for m in re.finditer(r'spec!\(\s*"([A-Z0-9_]+)"\s*,\s*\[([^\]]*)\]\s*,\s*"[^"]*"\s*,\s*(\w+)\s*,\s*(true|false)', block.group(1)):
        rows[m.group(1)] = {
            "aliases": re.findall(r'"([A-Z0-9_]+)"', m.group(2)),
            "reader": m.group(3),
            "secret": m.group(4) == "true",
        }
    if not rows:
        raise SystemExit(f"{SETTINGS_RS}: no spec!(...) rows parsed")
    creds: set[str] = set()
    for const in ("PROVIDER_KEY_VARS", "TOOL_CREDENTIAL_VARS"):
        m = re.search(rf"pub const {const}: &\[&str\] = &\[([^\]]*)\]", text)
        if m:
            creds |= set(re.findall(r'"([A-Z0-9_]+)"', m.group(1)))
    return rows, creds


def check_settings(docs: list[tuple[str, Doc]], settings_text: str | None = None,
                   secret_doc: Doc | None = None) -> list[str]:
    rows, creds = parse_settings(settings_text if settings_text is not None else SETTINGS_RS.read_text(encoding="utf-8"))
    problems: list[str] = []
    if secret_doc is None:
        secret_doc = next(yaml.safe_load_all(SECRET_TEMPLATE.read_text(encoding="utf-8")))
    secret_keys = set((secret_doc.get("stringData") or {}) | (secret_doc.get("data") or {}))
    for key in sorted(secret_keys):
        if key in rows and not rows[key]["secret"]:
            problems.append(f"Secret template: {key} is not a secret setting; it belongs in the ConfigMap")
        elif key not in rows and key not in creds:
            problems.append(f"Secret template: {key} is read by no binary (not in SETTINGS or the credential lists)")
    for name, row in rows.items():
        if row["secret"] and name not in secret_keys:
            problems.append(f"Secret template: secret setting {name} is missing")

    configmaps = {d["metadata"]["name"]: d for _, d in docs if d.get("kind") == "ConfigMap"}
    cm = next((d for n, d in configmaps.items() if n.startswith("botburrow-agents-config")), None)
    if cm is None:
        return problems + ["no ConfigMap botburrow-agents-config rendered"]
    cm_keys = set(cm.get("data", {}))
    for key in sorted(cm_keys):
        if key not in rows:
            problems.append(f"ConfigMap: key {key} is read by no binary (not a SETTINGS name)")
        elif rows[key]["secret"]:
            problems.append(f"ConfigMap: {key} is a secret; it belongs in the Secret")

    fleet = [(d, c) for _, d in docs if pod_spec(d) for c in pod_spec(d)["containers"] if c["name"] in FLEET_CONTAINERS]
    if not fleet:
        problems.append("no coordinator or runner container rendered")
    for d, c in fleet:
        where = f"{ident(d)} container {c['name']}"
        provided: set[str] = set()
        for src in c.get("envFrom", []):
            if "configMapRef" in src:
                ref = configmaps.get(src["configMapRef"]["name"])
                if ref is None:
                    problems.append(f"{where}: envFrom names missing ConfigMap {src['configMapRef']['name']}")
                else:
                    provided |= set(ref.get("data", {}))
            if "secretRef" in src:
                provided |= secret_keys
        for e in c.get("env", []):
            name = e["name"]
            provided.add(name)
            if name not in rows:
                problems.append(f"{where}: env {name} is read by no binary")
            elif rows[name]["secret"] and "value" in e:
                problems.append(f"{where}: secret {name} is set as a plain value")
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["key"] not in secret_keys:
                problems.append(f"{where}: env {name} reads Secret key {ref['key']} the template lacks")
        reader = FLEET_CONTAINERS[c["name"]]
        for name, row in rows.items():
            if row["reader"] in ("Both", reader) and not ({name} | set(row["aliases"])) & provided:
                problems.append(f"{where}: setting {name} ({row['reader']}) is not provided")
    return problems


# --------------------------------------------------------------------------------------- metrics


UNIT_SUFFIX = {"Seconds": "seconds", "Bytes": "bytes", "Joules": "joules", "Grams": "grams",
               "Meters": "meters", "Ratio": "ratio", "Volts": "volts", "Amperes": "amperes",
               "Celsius": "celsius"}


def _call_args(text: str, start: int) -> str:
    """The text of a call's argument list from `start` (just after the opening parenthesis)."""
    depth, i = 1, start
    while i < len(text) and depth:
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        i += 1
    return text[start:i - 1]


def _metric_type(args: str, file_text: str) -> str | None:
    """Counter, Gauge or Histogram for the metric argument of a register call, if it can be told."""
    def kind(s: str) -> str | None:
        hits = [(m.start(), m.group(0)) for m in re.finditer(r"\b(Histogram|Counter|Gauge)\b", s)]
        return min(hits)[1] if hits else None

    args = args.strip().rstrip(",")
    metric_arg = args.rsplit(",", 1)[-1] if args.count(",") >= 2 else args
    if kind(metric_arg):
        return kind(metric_arg)
    idents = [i for i in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", metric_arg)
              if i not in ("clone", "Box", "new", "Arc", "default", "into")]
    if not idents:
        return None
    # `m.enqueued.clone()` -> the field or variable `enqueued`: its declared type or initialiser.
    name = idents[-1]
    for pattern in (rf"\b{name}\s*:\s*([^;=\n]+)", rf"let\s+(?:mut\s+)?{name}\b[^=;]*=\s*([^;\n]+)"):
        for m in re.finditer(pattern, file_text):
            if kind(m.group(1)):
                return kind(m.group(1))
    return None


def registered_metrics(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    """Registered name -> the series names Prometheus sees for it."""
    out: dict[str, set[str]] = {}
    for path in root.rglob("*.rs"):
        rel = path.relative_to(root).parts
        if rel[0] in ("target", ".venv", ".git") or "tests" in rel:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"\.register(_with_unit)?\s*\(\s*\"(botburrow_[a-z0-9_]+)\"", text):
            args = _call_args(text, m.end(0) - len(m.group(2)) - 2)
            name = m.group(2)
            if m.group(1):
                unit = re.search(r"Unit::(\w+)", args)
                if unit:
                    name = f"{name}_{UNIT_SUFFIX.get(unit.group(1), unit.group(1).lower())}"
            kind = _metric_type(args, text)
            if kind == "Counter":
                series = {f"{name}_total"}
            elif kind == "Histogram":
                series = {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "Gauge":
                series = {name}
            else:
                series = {name, f"{name}_total", f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            out.setdefault(name, set()).update(series)
    return out


def expressions(docs: list[tuple[str, Doc]]) -> list[tuple[str, str]]:
    """(PromQL expression, where) for every alert rule and dashboard query rendered."""
    out: list[tuple[str, str]] = []
    for path, d in docs:
        if d.get("kind") == "PrometheusRule":
            for g in d["spec"].get("groups", []):
                for r in g.get("rules", []):
                    out.append((str(r.get("expr", "")), f"{path}: alert {r.get('alert') or r.get('record')}"))
        if d.get("kind") == "ConfigMap":
            for key, value in (d.get("data") or {}).items():
                if key.endswith(".json"):
                    dash = json.loads(value)
                    for p in dash.get("panels", []):
                        for t in p.get("targets", []):
                            out.append((t.get("expr", ""), f"{path}: panel {p.get('title')}"))
    return out


def used_metrics(docs: list[tuple[str, Doc]]) -> dict[str, set[str]]:
    """botburrow_* series named in PrometheusRule expressions and dashboard queries -> where."""
    used: dict[str, set[str]] = {}
    for expr, where in expressions(docs):
        for name in re.findall(r"\bbotburrow_[a-z0-9_]+\b", expr):
            used.setdefault(name, set()).add(where)
    for path, d in docs:
        if d.get("kind") == "ConfigMap":
            for key, value in (d.get("data") or {}).items():
                if key.endswith(".json"):
                    for v in json.loads(value).get("templating", {}).get("list", []):
                        for name in re.findall(r"\bbotburrow_[a-z0-9_]+\b", str(v.get("query", ""))):
                            used.setdefault(name, set()).add(f"{path}: variable {v.get('name')}")
    return used


def check_metrics(docs: list[tuple[str, Doc]], registered: dict[str, set[str]] | None = None) -> list[str]:
    registered = registered_metrics() if registered is None else registered
    exposed = set().union(*registered.values()) if registered else set()
    used = used_metrics(docs)
    problems = []
    # A prefixed sub-registry would change every exported name under it; this reader cannot see that.
    for path in ROOT.rglob("*.rs"):
        if path.relative_to(ROOT).parts[0] not in ("target", ".venv", ".git") and \
                "sub_registry_with_prefix" in path.read_text(encoding="utf-8", errors="replace"):
            problems.append(f"{path.relative_to(ROOT)} uses sub_registry_with_prefix: teach tools/k8s_check.py the prefix")
    if not used:
        problems.append("no PrometheusRule or dashboard rendered: nothing to check")
    import promql_parser

    for expr, where in expressions(docs):
        try:
            promql_parser.parse(expr)
        except ValueError as e:
            problems.append(f"{where}: PromQL does not parse ({e}): {expr}")
    for name in sorted(used):
        if name not in exposed:
            problems.append(f"metric {name} is not exported by any binary (used in {'; '.join(sorted(used[name]))})")
    return problems


# ------------------------------------------------------------------------------------------ same


def check_same(a: str, b: str) -> list[str]:
    """The chart and the kustomize overlay render the same objects and the same settings."""
    def index(path: str) -> dict[tuple[str, str], Doc]:
        return {(d["kind"], d["metadata"]["name"]): d for _, d in load([path]) if d["kind"] != "Namespace"}

    ia, ib = index(a), index(b)
    problems = [f"{k[0]}/{k[1]} only in {a}" for k in sorted(ia.keys() - ib.keys())]
    problems += [f"{k[0]}/{k[1]} only in {b}" for k in sorted(ib.keys() - ia.keys())]
    for key in sorted(ia.keys() & ib.keys()):
        da, db = ia[key], ib[key]
        if key[0] in ("ConfigMap", "Role", "NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                      "ScaledObject", "ServiceMonitor", "PrometheusRule"):
            body_a = {k: v for k, v in da.items() if k not in ("metadata", "apiVersion")}
            body_b = {k: v for k, v in db.items() if k not in ("metadata", "apiVersion")}
            if body_a != body_b:
                problems.append(f"{key[0]}/{key[1]} differs between {a} and {b}")
        if key[0] in ("Deployment", "StatefulSet"):
            sa, sb = copy.deepcopy(da["spec"]), copy.deepcopy(db["spec"])
            for spec in (sa, sb):
                # Helm's release labels and the config checksum are not part of the comparison.
                labels = spec["template"].get("metadata", {}).get("labels", {})
                spec["template"]["metadata"] = {"labels": {k: v for k, v in labels.items() if k not in HELM_LABELS}}
                for vct in spec.get("volumeClaimTemplates", []):
                    vct["metadata"].pop("labels", None)
            if sa != sb:
                problems.append(f"{key[0]}/{key[1]}: spec differs between {a} and {b}")
    return problems


# ---------------------------------------------------------------------------------------- docker


def check_docker(docs: list[tuple[str, Doc]], root: pathlib.Path = ROOT) -> list[str]:
    """The Dockerfile builds what the manifests run, from a context that holds the whole workspace."""
    import fnmatch
    import tomllib

    problems = []
    dockerfile = (root / "Dockerfile").read_text(encoding="utf-8")
    targets = set(re.findall(r"(?im)^FROM\s+\S+\s+AS\s+([a-z0-9-]+)\s*$", dockerfile))
    for want in ("coordinator", "runner", "runner-cli", "devhub"):
        if want not in targets:
            problems.append(f"Dockerfile: no build target {want}")
    for _, d in docs:
        spec = pod_spec(d)
        for c in (spec or {}).get("containers", []):
            m = re.fullmatch(r"ghcr\.io/botburrow/([a-z0-9-]+)(?::[\w.-]+)?(?:@sha256:[0-9a-f]+)?", c["image"])
            if c["image"].startswith("ghcr.io/botburrow/") and (not m or m.group(1) not in targets):
                problems.append(f"{ident(d)}: image {c['image']} is not built by any Dockerfile target")
    workspace = tomllib.loads((root / "Cargo.toml").read_text(encoding="utf-8"))["workspace"]["members"]
    ignore = [ln.strip() for ln in (root / ".dockerignore").read_text(encoding="utf-8").splitlines()
              if ln.strip() and not ln.startswith("#")]
    bins = set()
    for member in workspace:
        if any(fnmatch.fnmatch(member, pat) for pat in ignore):
            problems.append(f".dockerignore excludes workspace member {member}")
        manifest = tomllib.loads((root / member / "Cargo.toml").read_text(encoding="utf-8"))
        if (root / member / "src/main.rs").exists():
            bins.add(manifest["package"]["name"])
        bins |= {b["name"] for b in manifest.get("bin", [])}
        bins |= {p.stem for p in (root / member / "src/bin").glob("*.rs")}
        for rel in re.findall(r'include_(?:str|bytes)!\("([^"]+)"\)', "\n".join(
                f.read_text(encoding="utf-8", errors="replace") for f in (root / member / "src").rglob("*.rs"))):
            top = pathlib.PurePosixPath(rel).parts
            outside = [p for p in top if p not in ("..", ".")]
            if outside and any(fnmatch.fnmatch(outside[0], pat) for pat in ignore):
                problems.append(f".dockerignore excludes {rel}, which {member} includes at compile time")
    for name in re.findall(r"target/release/(botburrow[a-z0-9-]*)", dockerfile):
        # botburrow-hub-mcp is copied only if built (the Dockerfile tests for it).
        if name not in bins and name != "botburrow-hub-mcp":
            problems.append(f"Dockerfile copies target/release/{name}, but no workspace crate builds that binary")
    return problems


# -------------------------------------------------------------------------------------- selftest


def selftest(files: list[str]) -> list[str]:
    """Each mutation of a good rendering must make its check fail; the good one must pass."""
    good = load(files)
    problems = []

    def mutate(fn: Callable[[list[tuple[str, Doc]]], None]) -> list[tuple[str, Doc]]:
        docs = copy.deepcopy(good)
        fn(docs)
        return docs

    def find(docs: list[tuple[str, Doc]], kind: str, name: str | None = None) -> Doc:
        for _, d in docs:
            if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name):
                return d
        raise SystemExit(f"selftest: {kind}/{name} not in {files}")

    def cm(docs: list[tuple[str, Doc]]) -> Doc:
        return next(d for _, d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"].startswith("botburrow-agents-config"))

    def runner(docs: list[tuple[str, Doc]]) -> Doc:
        return find(docs, "Deployment", "runner-hybrid")

    cases: list[tuple[str, Callable[[list[tuple[str, Doc]]], list[str]], Callable[[list[tuple[str, Doc]]], None]]] = [
        ("schema: unknown field", check_schema, lambda ds: runner(ds)["spec"].__setitem__("replica", 2)),
        ("schema: wrong type", check_schema, lambda ds: runner(ds)["spec"].__setitem__("replicas", "two")),
        ("schema: unknown kind", check_schema, lambda ds: ds.append(("x", {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}))),
        ("crd: bad interval", check_crd, lambda ds: find(ds, "ServiceMonitor")["spec"]["endpoints"][0].__setitem__("interval", "15 seconds")),
        ("crd: unknown field", check_crd, lambda ds: find(ds, "ServiceMonitor")["spec"].__setitem__("selectr", {})),
        ("crd: rule without expr", check_crd, lambda ds: find(ds, "PrometheusRule")["spec"]["groups"][0]["rules"][0].pop("expr")),
        ("structure: ServiceMonitor selects nothing", check_structure,
         lambda ds: find(ds, "ServiceMonitor", "runner")["spec"]["selector"]["matchLabels"].__setitem__("app.kubernetes.io/name", "runners")),
        ("structure: HPA min above replicas", check_structure,
         lambda ds: find(ds, "HorizontalPodAutoscaler", "runner-hybrid")["spec"].__setitem__("minReplicas", 3)),
        ("structure: grace not above SHUTDOWN_GRACE", check_structure,
         lambda ds: runner(ds)["spec"]["template"]["spec"].__setitem__("terminationGracePeriodSeconds", 100)),
        ("structure: writable root", check_structure,
         lambda ds: runner(ds)["spec"]["template"]["spec"]["containers"][1]["securityContext"].__setitem__("readOnlyRootFilesystem", False)),
        ("structure: missing limits", check_structure,
         lambda ds: runner(ds)["spec"]["template"]["spec"]["containers"][0]["resources"].pop("limits")),
        ("structure: role grants pods", check_structure,
         lambda ds: find(ds, "Role")["rules"].append({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]})),
        ("structure: runner ingress on another port", check_structure,
         lambda ds: find(ds, "NetworkPolicy", "runner")["spec"]["ingress"][0]["ports"].append({"protocol": "TCP", "port": 8080})),
        ("settings: unknown ConfigMap key", check_settings, lambda ds: cm(ds)["data"].__setitem__("SANDBOX_IMAGE", "x")),
        ("settings: secret in ConfigMap", check_settings, lambda ds: cm(ds)["data"].__setitem__("HUB_API_KEY", "x")),
        ("settings: setting missing", check_settings, lambda ds: cm(ds)["data"].pop("POLL_INTERVAL")),
        ("settings: runner lacks RUNNER_MODE", check_settings,
         lambda ds: runner(ds)["spec"]["template"]["spec"]["containers"][0].__setitem__(
             "env", [e for e in runner(ds)["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] != "RUNNER_MODE"])),
        ("docker: image without a Dockerfile target", check_docker,
         lambda ds: runner(ds)["spec"]["template"]["spec"]["containers"][0].__setitem__("image", "ghcr.io/botburrow/runner-gpu:0.1.0")),
        ("metrics: PromQL syntax error", check_metrics,
         lambda ds: find(ds, "PrometheusRule")["spec"]["groups"][0]["rules"][1].__setitem__("expr", "sum(rate(botburrow_queue_depth[5m]) > 1")),
        ("metrics: unknown metric", check_metrics,
         lambda ds: find(ds, "PrometheusRule")["spec"]["groups"][0]["rules"][0].__setitem__("expr", "botburrow_no_such_metric_total > 0")),
    ]
    baseline = {check: check(good) for check in {c for _, c, _ in cases if c is not check_metrics}}
    for check, found in baseline.items():
        if found:
            problems.append(f"selftest: the good rendering fails {check.__name__}: {found[:3]}")
    fake_registered = {n: {n} for n in used_metrics(good)}
    for label, check, fn in cases:
        docs = mutate(fn)
        found = check_metrics(docs, fake_registered) if check is check_metrics else check(docs)
        if not found:
            problems.append(f"selftest: {label}: the check did not notice")
    # The metrics parser itself: counters gain _total, histograms _bucket/_sum/_count.
    sample = ('fn r(registry: &mut Registry) { let c = Family::<L, Counter>::default(); let h: Histogram = Histogram::new(b);\n'
              'registry.register("botburrow_x_things", "help", c.clone());\n'
              'registry.register("botburrow_x_seconds", "help", h.clone());\n'
              'registry.register("botburrow_x_level", "help", Gauge::<i64>::default()); }\n')
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        (pathlib.Path(tmp) / "lib.rs").write_text(sample, encoding="utf-8")
        reg = registered_metrics(pathlib.Path(tmp))
    want = {"botburrow_x_things": {"botburrow_x_things_total"},
            "botburrow_x_seconds": {"botburrow_x_seconds_bucket", "botburrow_x_seconds_sum", "botburrow_x_seconds_count"},
            "botburrow_x_level": {"botburrow_x_level"}}
    if reg != want:
        problems.append(f"selftest: metric parser returned {reg}, want {want}")
    print(f"selftest: {len(cases) + 1} mutations checked")
    return problems


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    cmd, files = argv[0], argv[1:]
    checks = {"docker": check_docker, "schema": check_schema, "crd": check_crd, "structure": check_structure,
              "settings": check_settings, "metrics": check_metrics}
    if cmd == "selftest":
        problems = selftest(files)
    elif cmd == "same":
        problems = check_same(*files)
    elif cmd in checks:
        # Each file is one rendering (an overlay or a values file): checked on its own.
        problems = [f"{f}: {p}" for f in files for p in checks[cmd](load([f]))]
    else:
        print(f"unknown subcommand {cmd}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"FAIL {cmd}: {p}", file=sys.stderr)
    if not problems:
        print(f"ok {cmd}: {', '.join(pathlib.Path(f).name for f in files)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
