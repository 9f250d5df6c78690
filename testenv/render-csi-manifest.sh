#!/usr/bin/env bash
# Prints deploy/csi/overcast-csi.yaml: the overcast-csi chart rendered with
# its defaults as release "overcast-csi" in kube-system, with testenv's helm.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
helm=${HELM:-$root/testenv/bin/helm}
[[ -x "$helm" ]] || { echo "render-csi-manifest: $helm missing (run \`make testenv\`)" >&2; exit 1; }
cat <<'HEADER'
# overcast-csi for kube-system, generated from deploy/helm/overcast-csi with
# its default values by `make csi-manifest`: edit the chart, not this file.
# Install the snapshot CRDs of external-snapshotter v8.7.0 (client/config/crd)
# first, and the image deploy/csi/Dockerfile builds (docs/csi.md, "Install").
HEADER
"$helm" template overcast-csi "$root/deploy/helm/overcast-csi" --namespace kube-system
