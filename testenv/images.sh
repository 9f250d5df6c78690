#!/usr/bin/env bash
# Writes a single-layer OCI image archive that `ctr images import` loads: the
# test cluster's images are built here, since nothing can be pulled.
#
# Usage: images.sh OUT.tar NAME:TAG ENTRYPOINT BINARY...
# Each BINARY goes to the image's root under its own name (with the shared
# libraries it links, so a dynamically linked one runs too), and Debian's
# busybox-static to /bin with sh, so a test can exec into a Pod.
# The image is named 127.0.0.1:1/overcast/NAME:TAG: a pull that should never
# happen goes to a closed loopback port, never to a resolver or a registry.
set -euo pipefail
out=$1 ref=127.0.0.1:1/overcast/$2 entrypoint=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/bin" "$work/rootfs/etc" "$work/rootfs/tmp" "$work/oci/blobs/sha256"
for bin in "$@"; do
  cp "$bin" "$work/rootfs/"
  # A dynamically linked binary brings its shared libraries, at their paths.
  for lib in $(ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true); do
    mkdir -p "$work/rootfs$(dirname "$lib")"
    cp -L "$lib" "$work/rootfs$lib"
  done
done
linkage=$(ldd /bin/busybox 2>&1 || true)
if [[ "$linkage" != *"not a dynamic executable"* ]]; then
  echo "images.sh: a static /bin/busybox is needed (apt-get install busybox-static; make test installs it)" >&2
  exit 1
fi
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in sh cat ls sleep nc; do ln -s busybox "$work/rootfs/bin/$applet"; done
echo "root:x:0:0:root:/:/bin/sh" > "$work/rootfs/etc/passwd"
echo "root:x:0:" > "$work/rootfs/etc/group"
chmod 1777 "$work/rootfs/tmp"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/rootfs" -cf "$work/layer.tar" .
blob() { # file -> its digest; the file moves into blobs/
  local digest
  digest=$(sha256sum "$1" | cut -d' ' -f1)
  mv "$1" "$work/oci/blobs/sha256/$digest"
  echo "$digest"
}
size() { stat -c %s "$work/oci/blobs/sha256/$1"; }
layer=$(blob "$work/layer.tar")
printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["%s"],"Env":["PATH=/bin:/"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$entrypoint" "$layer" > "$work/config.json"
config=$(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$config" "$(size "$config")" "$layer" "$(size "$layer")" > "$work/manifest.json"
manifest=$(blob "$work/manifest.json")
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest" "$(size "$manifest")" "$ref" "${ref##*:}" > "$work/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/oci/oci-layout"
mkdir -p "$(dirname "$out")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/oci" -cf "$out" .
echo "testenv: image $ref -> $out"
