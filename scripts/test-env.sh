#!/usr/bin/env bash
# Installs the real parts the tests run against, with nothing but Go, Rust and the
# package registries: kube-apiserver and etcd built from their published Go modules
# (tests/envtest/), and the s3s-fs S3 server from crates.io. Results are cached in
# $KUBETRAIL_CACHE (default ~/.cache/kubetrail) and rebuilt only when their inputs change.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KUBETRAIL_CACHE:-$HOME/.cache/kubetrail}
bin=$cache/bin
mkdir -p "$bin"

# Go: use the machine's toolchain; never fetch another one.
export GOTOOLCHAIN=local CGO_ENABLED=0
K8S_VERSION=v1.34.4
S3S_FS_VERSION=0.14.1

# Builds tests/envtest/$1 into $bin/$2 unless the stamp of its inputs matches.
build_go() {
  local dir=$root/tests/envtest/$1 out=$bin/$2 ldflags=${3:-}
  local stamp
  stamp=$(cat "$dir/go.mod" "$dir/go.sum" "$dir/main.go" <(echo "$ldflags") | sha256sum | cut -d' ' -f1)
  if [[ -x $out && -f $out.stamp && $(cat "$out.stamp") == "$stamp" ]]; then
    echo "test-env: $2 is up to date"
    return
  fi
  echo "test-env: building $2 from Go modules (a cold build takes several minutes)"
  (cd "$dir" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$out.tmp" .)
  mv "$out.tmp" "$out"
  echo "$stamp" > "$out.stamp"
}

minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
build_go etcd etcd
k8s_ldflags="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
build_go apiserver kube-apiserver "$k8s_ldflags"
# The one-node cluster (the `cluster` e2e group): the node and control-plane components
# from the same k8s.io/kubernetes module. Heavy: built at the lowest CPU priority.
build_go kubelet kubelet "$k8s_ldflags"
build_go controller-manager kube-controller-manager "$k8s_ldflags"
build_go scheduler kube-scheduler "$k8s_ldflags"
build_go proxy kube-proxy "$k8s_ldflags"
# kubectl reports its version (and its User-Agent) from client-go's version package.
build_go kubectl kubectl "$k8s_ldflags -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"

HELM_VERSION=v3.18.6
# A `go install`ed helm does not know its own patch version: a stamp records it.
if [[ -x $bin/helm && -f $bin/helm.stamp && $(cat "$bin/helm.stamp") == "$HELM_VERSION" ]]; then
  echo "test-env: helm $HELM_VERSION is installed"
else
  echo "test-env: building helm $HELM_VERSION from its Go module"
  GOBIN=$bin go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "$HELM_VERSION" > "$bin/helm.stamp"
fi

s3s=$cache/s3s-fs/bin/s3s-fs
# Capture output instead of piping into `grep -q`/`head`: under `pipefail` a reader that
# exits early makes the writer die of SIGPIPE (exit 141) and fails the script at random.
s3s_version=$([[ -x $s3s ]] && "$s3s" --version 2>/dev/null || true)
if [[ $s3s_version == *"$S3S_FS_VERSION"* ]]; then
  echo "test-env: s3s-fs $S3S_FS_VERSION is installed"
else
  echo "test-env: installing s3s-fs $S3S_FS_VERSION from crates.io"
  cargo install s3s-fs --version "$S3S_FS_VERSION" --features binary --locked --root "$cache/s3s-fs"
fi

# DuckDB from PyPI, in a venv of its own: the SQL test runs the documented query.
DUCKDB_VERSION=1.4.2
venv=$cache/duckdb-venv
duck_version=$([[ -x $venv/bin/python ]] && "$venv/bin/python" -c 'import duckdb; print(duckdb.__version__)' 2>/dev/null || true)
if [[ $duck_version == "$DUCKDB_VERSION" ]]; then
  echo "test-env: duckdb $DUCKDB_VERSION is installed"
else
  echo "test-env: installing duckdb $DUCKDB_VERSION from PyPI"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "duckdb==$DUCKDB_VERSION"
fi

# Headless Chromium (the Debian package) drives the web console in the browser test.
if command -v chromium >/dev/null 2>&1; then
  echo "test-env: chromium is installed"
else
  echo "test-env: installing chromium from the Debian archive"
  sudo=""
  if [[ $(id -u) != 0 ]]; then sudo=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y --no-install-recommends chromium; then
    $sudo apt-get update
    $sudo apt-get install -y --no-install-recommends chromium
  fi
fi

# The one-node cluster's runtime, from the Debian archive: containerd (1.6 on bookworm),
# runc, the CNI plugins (/usr/lib/cni) and iptables/conntrack for pod networking.
node_pkgs=(containerd runc containernetworking-plugins iptables conntrack)
if command -v containerd >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 \
  && [[ -x /usr/lib/cni/bridge ]] && command -v iptables >/dev/null 2>&1 && command -v conntrack >/dev/null 2>&1; then
  echo "test-env: containerd, runc and the CNI plugins are installed"
else
  echo "test-env: installing ${node_pkgs[*]} from the Debian archive"
  sudo=""
  if [[ $(id -u) != 0 ]]; then sudo=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y --no-install-recommends "${node_pkgs[@]}"; then
    $sudo apt-get update
    $sudo apt-get install -y --no-install-recommends "${node_pkgs[@]}"
  fi
fi

# The pod sandbox image: a static `pause` from tests/node/pause.c, packed as an OCI
# archive the node imports (no registry). Its name is the kubelet's default sandbox.
PAUSE_IMAGE=registry.k8s.io/pause:3.10
pause_stamp=$(cat "$root/tests/node/pause.c" "$root/scripts/oci-image.sh" <(echo "$PAUSE_IMAGE") | sha256sum | cut -d' ' -f1)
if [[ -f $cache/pause.tar && -f $cache/pause.tar.stamp && $(cat "$cache/pause.tar.stamp") == "$pause_stamp" ]]; then
  echo "test-env: pause image is up to date"
else
  echo "test-env: building the pause image (gcc -static)"
  gcc -static -O2 -o "$bin/pause" "$root/tests/node/pause.c"
  OCI_BIN_PATH=/pause OCI_CMD= OCI_USER=65535:65535 bash "$root/scripts/oci-image.sh" "$bin/pause" "$cache/pause.tar" "$PAUSE_IMAGE"
  echo "$pause_stamp" > "$cache/pause.tar.stamp"
fi

"$bin/kube-apiserver" --version
"$bin/kubelet" --version
"$bin/kube-controller-manager" --version
"$bin/kube-scheduler" --version
"$bin/kube-proxy" --version
kubectl_version=$("$bin/kubectl" version --client)
echo "${kubectl_version%%$'\n'*}"
containerd --version
etcd_version=$("$bin/etcd" --version)
echo "${etcd_version%%$'\n'*}"
"$s3s" --version
"$bin/helm" version --short
chromium --version
