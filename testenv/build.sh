#!/usr/bin/env bash
# Builds the pinned upstream components into testenv/bin/ from the wrapper
# modules, through the Go module proxy only: the control plane (kube-apiserver,
# kubectl, etcd) and what a real cluster adds to it (kube-scheduler,
# kube-controller-manager, and per node kubelet and kube-proxy).
#
# Cached by version: bin/.stamp records what the binaries were built from (the
# versions, the wrapper go.mod/go.sum and the Go toolchain); when it matches and
# every binary is there, this script does nothing.
set -euo pipefail
cd "$(dirname "$0")"
source ./versions.env
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local
export GOCACHE="${GOCACHE:-$HOME/.cache/go-build}"

command -v go >/dev/null || { echo "testenv: Go is required to build the control plane (https://go.dev/doc/install)" >&2; exit 1; }

kube_cmds=(kube-apiserver kubectl kube-scheduler kube-controller-manager kubelet kube-proxy)
all_built() {
  for bin in "${kube_cmds[@]}" etcd helm credprovider-harness; do [ -x "bin/$bin" ] || return 1; done
  for image in pause echo-server; do [ -f "bin/images/$image.tar" ] || return 1; done
}

stamp_now=$( { cat versions.env kube/go.mod kube/go.sum etcd/go.mod etcd/go.sum helm/go.mod helm/go.sum kube/cmd/*/*.go images.sh; go version; } | sha256sum | cut -d' ' -f1)
if [ -f bin/.stamp ] && [ "$(cat bin/.stamp)" = "$stamp_now" ] \
   && all_built; then
  echo "testenv: control plane ${KUBE_VERSION} / etcd ${ETCD_VERSION} is up to date in testenv/bin"
  exit 0
fi
mkdir -p bin
rm -f bin/.stamp

module_time() { # module@version -> its release time, for a reproducible buildDate
  go mod download -json "$1" | sed -n 's/^\t"Info": "\(.*\)",$/\1/p' | xargs cat | sed -n 's/.*"Time":"\([^"]*\)".*/\1/p'
}

minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
build_date=$(module_time "k8s.io/kubernetes@${KUBE_VERSION}")
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  kube_ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
done

echo "testenv: building ${kube_cmds[*]} and the kubelet credential-provider harness ${KUBE_VERSION} (first build takes several minutes)"
(cd kube && go build -trimpath -ldflags "$kube_ldflags" -o ../bin/ \
  "${kube_cmds[@]/#/k8s.io/kubernetes/cmd/}" ./cmd/credprovider-harness)

echo "testenv: building the node images (pause, echo-server)"
(cd kube && go build -trimpath -ldflags "-s -w" -o ../bin/image-bin/ ./cmd/pause ./cmd/echo-server)
./images.sh bin/images/pause.tar pause:1 /pause bin/image-bin/pause
./images.sh bin/images/echo-server.tar echo-server:1 /echo-server bin/image-bin/echo-server

echo "testenv: building etcd ${ETCD_VERSION}"
(cd etcd && go build -trimpath -ldflags "-s -w" -o ../bin/etcd go.etcd.io/etcd/server/v3)

echo "testenv: building helm ${HELM_VERSION}"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
(cd helm && go build -trimpath -ldflags "$helm_ldflags" -o ../bin/helm helm.sh/helm/v3/cmd/helm)

./bin/kube-apiserver --version
./bin/helm version --short
./bin/etcd --version | sed -n 1p  # sed reads it all: no SIGPIPE under pipefail
echo "$stamp_now" > bin/.stamp
