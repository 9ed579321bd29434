#!/usr/bin/env bash
# Brings up a one-node Kubernetes cluster on this host for the `cluster` tests:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy (iptables)
# and kubelet (built by scripts/test-env.sh), containerd + runc + CNI bridge from
# Debian, images imported from OCI archives (no registry). Everything lives in $D;
# what it changes on the host (sysctls, iptables, the bridge, mounts, cgroups) is
# recorded there and restored by tests/node/down.sh.
#
#   tests/node/up.sh [DIR] [IMAGE.tar...]     (run as root)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
D=$(realpath -m "${1:-/tmp/kubetrail-node}"); shift || true
cache=${KUBETRAIL_CACHE:-$HOME/.cache/kubetrail}
bin=$cache/bin
NODE=${NODE_NAME:-ktnode}
BRIDGE=${NODE_BRIDGE:-kt0}
POD_CIDR=${NODE_POD_CIDR:-10.88.0.0/16}
GW=${NODE_GW:-10.88.0.1}
SVC_CIDR=10.96.0.0/16
API_PORT=${NODE_API_PORT:-6443}
mkdir -p "$D"/{pki,containerd,cni/net.d,cni/ipam,kubelet,logs,etc}
cd "$D"
pids=$D/pids

# ---- host state, recorded before anything changes it -------------------------------------
if [[ ! -f $D/host.saved ]]; then
  iptables-save > "$D/iptables.saved"
  ip6tables-save > "$D/ip6tables.saved" 2>/dev/null || true
  : > "$D/sysctl.saved"
  for k in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables \
           vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops \
           kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet \
           net.netfilter.nf_conntrack_max; do
    v=$(sysctl -n "$k" 2>/dev/null) && echo "$k=$v" >> "$D/sysctl.saved"
  done
  touch "$D/host.saved"
fi
sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1

# The pod bridge with the gateway address, before the first pod: the apiserver
# advertises it (pods reach the API through kube-proxy's DNAT of the kubernetes Service).
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge
  ip addr add "$GW/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
fi
echo "$BRIDGE" > "$D/bridge"

# ---- certificates ---------------------------------------------------------------------------
pki=$D/pki
if [[ ! -f $pki/ca.crt ]]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=kubetrail-node-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  cert() { # name subject [san]
    openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
    local ext=$pki/$1.ext
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n' > "$ext"
    [[ -n ${3:-} ]] && echo "subjectAltName=$3" >> "$ext"
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 30 -extfile "$ext" -out "$pki/$1.crt" 2>/dev/null
  }
  cert apiserver "/CN=kube-apiserver" "IP:127.0.0.1,IP:$GW,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin "/O=system:masters/CN=kubetrail-node-admin"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert kubelet "/O=system:nodes/CN=system:node:$NODE"
  cert kubelet-serving "/CN=$NODE" "IP:$GW,IP:127.0.0.1,DNS:$NODE"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert proxy "/CN=system:kube-proxy"
  cert nobody "/CN=kubetrail-node-nobody"   # no groups, no RBAC: for denied requests
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
fi
kubeconfig() { # name -> $D/etc/name.kubeconfig
  cat > "$D/etc/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: node
  cluster: {server: "https://$GW:$API_PORT", certificate-authority: "$pki/ca.crt"}
users:
- name: u
  user: {client-certificate: "$pki/$1.crt", client-key: "$pki/$1.key"}
contexts:
- name: node
  context: {cluster: node, user: u}
current-context: node
KC
}
for n in admin nobody kubelet controller-manager scheduler proxy; do kubeconfig $n; done

start() { # name command... : starts a process logging to logs/name.log, records its pid
  local name=$1; shift
  setsid "$@" > "$D/logs/$name.log" 2>&1 < /dev/null &
  echo "$name $!" >> "$pids"
}
wait_for() { # what seconds command...
  local what=$1 secs=$2; shift 2
  for ((i = 0; i < secs * 4; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "node: $what not ready within ${secs}s" >&2; return 1
}

# ---- containerd -----------------------------------------------------------------------------
cat > "$D/containerd/config.toml" <<TOML
version = 2
root = "$D/containerd/root"
state = "$D/containerd/state"
[grpc]
  address = "$D/containerd/containerd.sock"
[ttrpc]
  address = "$D/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$D/cni/net.d"
TOML
cat > "$D/cni/net.d/10-kubetrail.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "kubetrail-node", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$GW"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$D/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
JSON
sock=$D/containerd/containerd.sock
start containerd containerd --config "$D/containerd/config.toml"
wait_for containerd 30 ctr --address "$sock" version
for img in "$cache/pause.tar" "$@"; do
  ctr --address "$sock" -n k8s.io images import --all-platforms "$img"
done

# ---- etcd + kube-apiserver ------------------------------------------------------------------
start etcd "$bin/etcd" --data-dir="$D/etcd" --listen-client-urls=http://127.0.0.1:2479 \
  --advertise-client-urls=http://127.0.0.1:2479 --listen-peer-urls=http://127.0.0.1:2480 \
  --initial-advertise-peer-urls=http://127.0.0.1:2480 --initial-cluster=default=http://127.0.0.1:2480 \
  --unsafe-no-fsync=true --log-level=warn
wait_for etcd 30 curl -sf http://127.0.0.1:2479/health
# Extra apiserver flags (the audit webhook, once kubetrail is installed) come from $D/etc/apiserver.flags.
touch "$D/etc/apiserver.flags"
cat > "$D/etc/apiserver.sh" <<SH
#!/bin/sh
exec "$bin/kube-apiserver" --etcd-servers=http://127.0.0.1:2479 --secure-port=$API_PORT \\
  --bind-address=0.0.0.0 --advertise-address=$GW --cert-dir="$pki" \\
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \\
  --client-ca-file="$pki/ca.crt" --service-cluster-ip-range=$SVC_CIDR \\
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \\
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \\
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \\
  --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \\
  --kubelet-client-key="$pki/apiserver-kubelet-client.key" \\
  --kubelet-preferred-address-types=InternalIP --allow-privileged=true --v=1 \\
  \$(cat "$D/etc/apiserver.flags")
SH
chmod +x "$D/etc/apiserver.sh"
start kube-apiserver "$D/etc/apiserver.sh"
KC="$D/etc/admin.kubeconfig"
wait_for kube-apiserver 90 curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "https://$GW:$API_PORT/readyz"

# ---- controller-manager, scheduler -----------------------------------------------------------
start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$D/etc/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$D/etc/controller-manager.kubeconfig" --authorization-kubeconfig="$D/etc/controller-manager.kubeconfig" \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" --use-service-account-credentials=true \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --leader-elect=false --secure-port=10357 --bind-address=127.0.0.1 --service-cluster-ip-range=$SVC_CIDR --v=1
start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$D/etc/scheduler.kubeconfig" \
  --authentication-kubeconfig="$D/etc/scheduler.kubeconfig" --authorization-kubeconfig="$D/etc/scheduler.kubeconfig" \
  --leader-elect=false --secure-port=10359 --bind-address=127.0.0.1 --v=1

# ---- kube-proxy (iptables; leaves conntrack sysctls and localhost NodePorts alone) ----------
cat > "$D/etc/proxy.yaml" <<Y
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$D/etc/proxy.kubeconfig"}
mode: iptables
hostnameOverride: $NODE
clusterCIDR: $POD_CIDR
iptables: {masqueradeAll: true, localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10349
healthzBindAddress: 127.0.0.1:10356
Y
start kube-proxy "$bin/kube-proxy" --config="$D/etc/proxy.yaml" --v=1

# ---- kubelet --------------------------------------------------------------------------------
cat > "$D/etc/kubelet.yaml" <<Y
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
address: $GW
port: 10350
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10348
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
protectKernelDefaults: false
serializeImagePulls: false
Y
start kubelet "$bin/kubelet" --config="$D/etc/kubelet.yaml" --kubeconfig="$D/etc/kubelet.kubeconfig" \
  --root-dir="$D/kubelet" --hostname-override=$NODE --node-ip=$GW --v=1
node_ready() {
  curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "https://$GW:$API_PORT/api/v1/nodes/$NODE" \
    | python3 -c 'import json,sys; n=json.load(sys.stdin); sys.exit(0 if any(c["type"]=="Ready" and c["status"]=="True" for c in n["status"]["conditions"]) else 1)'
}
wait_for node 90 node_ready
cat > "$D/etc/node.env" <<ENV
NODE_NAME=$NODE
NODE_GW=$GW
API_SERVER=https://$GW:$API_PORT
KUBECONFIG=$KC
CONTAINERD_ADDRESS=$sock
ENV
echo "node: $NODE is Ready; KUBECONFIG=$KC"
