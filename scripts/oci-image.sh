#!/usr/bin/env bash
# Writes the kubetrail image as an OCI image archive (oci-layout, index.json, blobs),
# with no container engine and no registry: one layer holding the binary, the shared
# libraries it links (found with ldd), CA certificates and a passwd entry for the
# non-root user, and a config that matches the Dockerfile (entrypoint, user, ports).
#
#   scripts/oci-image.sh [BINARY] [OUT.tar] [IMAGE-NAME]
#   defaults: target/release/kubetrail, target/kubetrail-image.tar,
#             ghcr.io/kubetrail/kubetrail:<Cargo.toml version>
#
# Import without a registry:  ctr -n k8s.io images import OUT.tar
# Push to a registry (any OCI tool): skopeo copy oci-archive:OUT.tar docker://REGISTRY/kubetrail:TAG
#
# The test environment also packs its static `pause` with it: OCI_BIN_PATH=/pause
# OCI_CMD= OCI_USER=65535:65535 scripts/oci-image.sh pause pause.tar registry.k8s.io/pause:3.10
set -euo pipefail
bin_path=${OCI_BIN_PATH:-/usr/local/bin/kubetrail}
cmd=${OCI_CMD-operator}
user=${OCI_USER:-65532:65532}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/kubetrail}
out=${2:-$root/target/kubetrail-image.tar}
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)
name=${3:-ghcr.io/kubetrail/kubetrail:$version}
[[ -x $bin ]] || { echo "oci-image: $bin not found (cargo build --release first)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs$(dirname "$bin_path")" "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot" "$work/blobs/sha256"
install -m 0755 "$bin" "$rootfs$bin_path"
# Shared libraries at the paths the dynamic loader looks for them (and the loader itself).
while read -r lib; do
  [[ -n $lib && -e $lib ]] || continue
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done < <(ldd "$bin" 2>/dev/null | awk '/=>/ { print $3 } !/=>/ && $1 ~ /^\// { print $1 }')
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
fi
# The distroless `nonroot` user of the Dockerfile's base image.
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
chmod 1777 "$rootfs/tmp"
chown 65532:65532 "$rootfs/home/nonroot" 2>/dev/null || true

# Reproducible layer: sorted, fixed owner and time.
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .
layer_size=$(stat -c %s "$work/layer.tar")
layer_digest=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
mv "$work/layer.tar" "$work/blobs/sha256/$layer_digest"

blob() { # stores stdin as a blob; sets blob_digest and blob_size
  local tmp=$work/blob.tmp
  cat > "$tmp"
  blob_digest=$(sha256sum "$tmp" | cut -d' ' -f1)
  blob_size=$(stat -c %s "$tmp")
  mv "$tmp" "$work/blobs/sha256/$blob_digest"
}

# Same entrypoint, user, ports and paths as the Dockerfile.
cmd_json=""
[[ -z $cmd ]] || cmd_json="\"Cmd\":[\"$cmd\"],"
blob <<JSON
{"architecture":"amd64","os":"linux","config":{"User":"$user","Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],"Entrypoint":["$bin_path"],$cmd_json"ExposedPorts":{"8443/tcp":{},"8080/tcp":{}},"WorkingDir":"/home/nonroot"},"rootfs":{"type":"layers","diff_ids":["sha256:$layer_digest"]},"history":[{"created_by":"scripts/oci-image.sh"}]}
JSON
config_digest=$blob_digest config_size=$blob_size
blob <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$layer_digest","size":$layer_size}]}
JSON
manifest_digest=$blob_digest manifest_size=$blob_size
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/oci-layout"
cat > "$work/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest_digest","size":$manifest_size,"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"${name##*:}"}}]}
JSON
mkdir -p "$(dirname "$out")"
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$work" -cf "$out.tmp" oci-layout index.json blobs
mv "$out.tmp" "$out"
echo "oci-image: $name -> $out ($(du -h "$out" | cut -f1), layer sha256:${layer_digest:0:12})"
