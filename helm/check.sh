#!/usr/bin/env bash
# `make helm-check`: lints the chart and renders it with every value set in ci/, validates
# each rendering against Kubernetes' schemas (kubernetes-validate, offline), and checks
# that every value set in ci-bad/ is refused by values.schema.json.
#   helm/check.sh <helm> <kubernetes-validate>
set -euo pipefail
HELM=$1
VALIDATE=$2
CHART="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/hookstream"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

for values in "$CHART"/ci/*.yaml; do
  name=$(basename "$values" .yaml)
  "$HELM" lint --strict "$CHART" -f "$values" >"$OUT/$name.lint" 2>&1 \
    || { cat "$OUT/$name.lint" >&2; echo "helm lint failed with ci/$name.yaml" >&2; exit 1; }
  "$HELM" template hookstream "$CHART" --namespace hookstream -f "$values" >"$OUT/$name.yaml"
  # Fails on any manifest that breaks its schema (unknown fields included). A kind it has
  # no schema for (the Prometheus Operator's ServiceMonitor) is only a warning.
  if ! "$VALIDATE" --strict --quiet "$OUT/$name.yaml" >"$OUT/$name.validate" 2>&1; then
    cat "$OUT/$name.validate" >&2
    echo "rendered manifests of ci/$name.yaml are not valid Kubernetes" >&2
    exit 1
  fi
  # Every Deployment gets its admin API key from a Secret (the pods listen on 0.0.0.0 and
  # refuse to start without one), and a chart-made key is a random hsk_ key.
  deployments=$(grep -c '^kind: Deployment' "$OUT/$name.yaml")
  keyed=$(grep -A2 'name: HOOKSTREAM_ADMIN_API_KEYS' "$OUT/$name.yaml" | grep -c 'secretKeyRef:' || true)
  if [[ "$deployments" != "$keyed" ]]; then
    echo "ci/$name.yaml: $keyed of $deployments Deployments take HOOKSTREAM_ADMIN_API_KEYS from a Secret" >&2
    exit 1
  fi
  if ! grep -q 'existingSecret' "$values" \
    && ! grep -Eq '^  admin-api-key: "hsk_[A-Za-z0-9]{48}"$' "$OUT/$name.yaml"; then
    echo "ci/$name.yaml: no generated admin key Secret" >&2
    exit 1
  fi
  echo "ok: ci/$name.yaml ($(grep -c '^kind:' "$OUT/$name.yaml") manifests)"
done

# A value set that breaks the schema must stop lint and template; otherwise the schema
# guards nothing.
for values in "$CHART"/ci-bad/*.yaml; do
  name=$(basename "$values" .yaml)
  if "$HELM" template hookstream "$CHART" -f "$values" >"$OUT/bad.yaml" 2>"$OUT/bad.err"; then
    echo "ci-bad/$name.yaml was accepted; values.schema.json should refuse it" >&2
    exit 1
  fi
  if ! grep -q "schema" "$OUT/bad.err"; then
    cat "$OUT/bad.err" >&2
    echo "ci-bad/$name.yaml failed, but not by the schema" >&2
    exit 1
  fi
  echo "ok: ci-bad/$name.yaml refused by the schema"
done
