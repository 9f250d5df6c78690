#!/usr/bin/env bash
# Builds the pinned upstream components into testenv/bin/ from the wrapper
# modules, through the Go module proxy only: the control plane (kube-apiserver,
# kubectl, etcd) and what a real cluster adds to it (kube-scheduler,
# kube-controller-manager, and per node kubelet and kube-proxy).
#
# Cached by version, per part: bin/.stamp-PART records what its binaries were
# built from (the versions, the wrapper go.mod/go.sum and the Go toolchain);
# when it matches and every binary is there, the part is not built again.
set -euo pipefail
cd "$(dirname "$0")"
source ./versions.env
source ./kcm-intree/version.env
source ./aws-ccm/version.env
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
export GOCACHE="${GOCACHE:-$HOME/.cache/go-build}"

command -v go >/dev/null || { echo "testenv: Go is required to build the control plane (https://go.dev/doc/install)" >&2; exit 1; }

kube_cmds=(kube-apiserver kubectl kube-scheduler kube-controller-manager kubelet kube-proxy)

# What each part builds, and the inputs its stamp is computed from. A part is
# rebuilt only when its stamp (bin/.stamp-PART) differs or a binary is missing.
part_outputs() {
  case $1 in
    kube) echo "${kube_cmds[*]/#/bin/} bin/credprovider-harness bin/images/pause.tar bin/images/echo-server.tar" ;;
    etcd) echo bin/etcd ;;
    helm) echo bin/helm ;;
    kcm-intree) echo bin/kcm-intree/kube-controller-manager ;;
    aws-ccm) echo bin/aws-ccm/aws-cloud-controller-manager ;;
    csi) echo bin/csi-sanity bin/csi-provisioner bin/csi-resizer bin/csi-snapshotter bin/snapshot-controller bin/snapshot-crds ;;
  esac
}
part_inputs() {
  case $1 in
    kube) echo kube/go.mod kube/go.sum kube/cmd/*/*.go images.sh ;;
    etcd) echo etcd/go.mod etcd/go.sum ;;
    helm) echo helm/go.mod helm/go.sum ;;
    kcm-intree) echo kcm-intree/version.env kcm-intree/go.mod kcm-intree/go.sum kcm-intree/cmd/*/*.go ;;
    aws-ccm) echo aws-ccm/version.env ;;
    csi) echo csi/go.mod csi/go.sum csi-provisioner/go.mod csi-provisioner/go.sum csi-resizer/go.mod csi-resizer/go.sum csi-snapshotter/go.mod csi-snapshotter/go.sum ;;
  esac
}
part_stamp() { { cat versions.env $(part_inputs "$1"); go version; } | sha256sum | cut -d' ' -f1; }
part_current() {
  [ -f "bin/.stamp-$1" ] && [ "$(cat "bin/.stamp-$1")" = "$(part_stamp "$1")" ] || return 1
  for out in $(part_outputs "$1"); do [ -e "$out" ] || return 1; done
}

module_time() { # module@version -> its release time, for a reproducible buildDate
  go mod download -json "$1" | sed -n 's/^\t"Info": "\(.*\)",$/\1/p' | xargs cat | sed -n 's/.*"Time":"\([^"]*\)".*/\1/p'
}

build_kube() {
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local build_date kube_ldflags="-s -w"
  build_date=$(module_time "k8s.io/kubernetes@${KUBE_VERSION}")
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    kube_ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
  done
  echo "testenv: building ${kube_cmds[*]} and the kubelet credential-provider harness ${KUBE_VERSION} (a first build takes about 10 minutes on 2 cores)"
  (cd kube && go build -trimpath -ldflags "$kube_ldflags" -o ../bin/ \
    "${kube_cmds[@]/#/k8s.io/kubernetes/cmd/}" ./cmd/credprovider-harness)
  echo "testenv: building the node images (pause, echo-server)"
  (cd kube && go build -trimpath -ldflags "-s -w" -o ../bin/image-bin/ ./cmd/pause ./cmd/echo-server)
  ./images.sh bin/images/pause.tar pause:1 /pause bin/image-bin/pause
  ./images.sh bin/images/echo-server.tar echo-server:1 /echo-server bin/image-bin/echo-server
  ./bin/kube-apiserver --version
}

build_kcm_intree() {
  local minor=${KCM_INTREE_VERSION#v1.}; minor=${minor%%.*}
  local build_date ldflags="-s -w"
  build_date=$(module_time "k8s.io/kubernetes@${KCM_INTREE_VERSION}")
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${KCM_INTREE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
  done
  echo "testenv: building kube-controller-manager ${KCM_INTREE_VERSION} with an in-tree cloud (a first build takes about 8 minutes on 2 cores)"
  # providerless: without the legacy in-tree clouds, whose SDKs the test does not use.
  (cd kcm-intree && go build -trimpath -tags providerless -ldflags "$ldflags" -o ../bin/kcm-intree/ ./cmd/kube-controller-manager)
  ./bin/kcm-intree/kube-controller-manager --version
}

build_aws_ccm() {
  # Built from its own module (its go.mod has replace directives, so `go
  # install pkg@version` refuses it), copied out of the module cache.
  local src dir build_date
  dir=$(go mod download -json "k8s.io/cloud-provider-aws@${AWS_CCM_VERSION}" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  build_date=$(module_time "k8s.io/cloud-provider-aws@${AWS_CCM_VERSION}")
  src=$(mktemp -d)
  trap 'rm -rf "$src"' RETURN
  cp -r "$dir"/. "$src" && chmod -R u+w "$src"
  # Its replace of google/cel-go by github.com/cel-expr/cel-go v0.31.0 (the
  # same code under the project's new name) is not served by the module
  # proxy; google/cel-go v0.31.0, the version its go.mod requires, is.
  sed -i '/^replace github.com\/google\/cel-go /d' "$src/go.mod"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${AWS_CCM_VERSION} -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
  done
  echo "testenv: building cloud-provider-aws ${AWS_CCM_VERSION} (a first build takes about 3 minutes on 2 cores)"
  mkdir -p bin/aws-ccm
  (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$OLDPWD/bin/aws-ccm/" ./cmd/aws-cloud-controller-manager)
  ./bin/aws-ccm/aws-cloud-controller-manager --version
}

build_etcd() {
  echo "testenv: building etcd ${ETCD_VERSION}"
  (cd etcd && go build -trimpath -ldflags "-s -w" -o ../bin/etcd go.etcd.io/etcd/server/v3)
  ./bin/etcd --version | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail
}

build_helm() {
  echo "testenv: building helm ${HELM_VERSION}"
  local helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  (cd helm && go build -trimpath -ldflags "$helm_ldflags" -o ../bin/helm helm.sh/helm/v3/cmd/helm)
  ./bin/helm version --short
}

build_csi() {
  echo "testenv: building csi-sanity (csi-test ${CSI_TEST_VERSION})"
  (cd csi && go build -trimpath -ldflags "-s -w" -o ../bin/ github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity)
  # The sidecars' version flag is set as their release Makefiles set it.
  local sidecar module
  for sidecar in "provisioner external-provisioner/v6 ${CSI_PROVISIONER_VERSION} csi-provisioner" \
      "resizer external-resizer/v2 ${CSI_RESIZER_VERSION} csi-resizer" \
      "snapshotter external-snapshotter/v8 ${CSI_SNAPSHOTTER_VERSION} csi-snapshotter snapshot-controller"; do
    set -- $sidecar
    local dir=csi-$1 module=github.com/kubernetes-csi/$2 version=$3
    shift 3
    echo "testenv: building $* (${module} ${version}; a first build takes a few minutes)"
    (cd "$dir" && go build -trimpath -ldflags "-s -w -X main.version=${version}" -o ../bin/ "${@/#/${module}/cmd/}")
  done
  # The snapshot and group snapshot CRDs (snapshot-controller waits for both)
  # ship in the client module of the same release.
  local client
  client=$(cd csi-snapshotter && go list -m -f '{{.Dir}}' github.com/kubernetes-csi/external-snapshotter/client/v8)
  rm -rf bin/snapshot-crds && mkdir -p bin/snapshot-crds
  cp "$client"/config/crd/*snapshot.storage.k8s.io_*.yaml bin/snapshot-crds/
  chmod u+w bin/snapshot-crds/*
}

# usage: build.sh [PART...]: kube, etcd, helm, csi, kcm-intree, aws-ccm; all of them
# when none is named (`make demo` needs only kube and etcd).
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(kube etcd helm csi kcm-intree aws-ccm)
mkdir -p bin/images
for part in "${parts[@]}"; do
  case $part in kube|etcd|helm|csi|kcm-intree|aws-ccm) ;; *) echo "testenv/build.sh: unknown part '$part' (kube, etcd, helm, csi, kcm-intree, aws-ccm)" >&2; exit 2 ;; esac
  if part_current "$part"; then
    echo "testenv: $part (testenv/versions.env: ${KUBE_VERSION}, etcd ${ETCD_VERSION}, helm ${HELM_VERSION}, csi-test ${CSI_TEST_VERSION}) is up to date in testenv/bin"
    continue
  fi
  rm -f "bin/.stamp-$part"
  "build_${part//-/_}"
  part_stamp "$part" > "bin/.stamp-$part"
done
