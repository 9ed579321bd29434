#!/usr/bin/env bash
# Stops the one-node cluster started by tests/node/up.sh DIR and restores the host:
# processes, containers and their shims, mounts under DIR and the pods' network
# namespaces, the bridge and veths, iptables, sysctls, the kubelet's cgroups.
set -uo pipefail
D=$(realpath -m "${1:-/tmp/kubetrail-node}")
[[ -d $D ]] || exit 0
sock=$D/containerd/containerd.sock
stop() { # name
  local pid
  pid=$(awk -v n="$1" '$1 == n { p = $2 } END { print p }' "$D/pids" 2>/dev/null)
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  kill -KILL "$pid" 2>/dev/null
}
stop kubelet
# Containers and sandboxes: kill every task, then containerd itself, then any shim left
# (the shims are started with our containerd's address on their command line).
if [[ -S $sock ]]; then
  for t in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1
  done
  sleep 1
fi
for n in kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd containerd; do stop $n; done
for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
sleep 0.5
# Mounts under DIR (deepest first), then the pods' network namespaces CNI created.
awk -v d="$D/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
for ns in /var/run/netns/cni-*; do
  [[ -e $ns ]] || continue
  umount "$ns" 2>/dev/null; rm -f "$ns"
done
# The bridge (its veths go with the namespaces).
if [[ -f $D/bridge ]]; then ip link del "$(cat "$D/bridge")" 2>/dev/null; fi
# iptables and sysctls as they were.
# A table absent from the saved state was empty: restore it as an empty table (an
# iptables-restore input without it would leave the node's chains in place).
restore_tables() { # restore-command saved-file
  local saved=$2 t
  {
    cat "$saved"
    for t in filter nat mangle raw; do
      grep -q "^\*$t\$" "$saved" || printf '*%s\nCOMMIT\n' "$t"
    done
  } | $1
}
[[ -f $D/iptables.saved ]] && restore_tables iptables-restore "$D/iptables.saved"
[[ -f $D/ip6tables.saved ]] && restore_tables ip6tables-restore "$D/ip6tables.saved"
if [[ -f $D/sysctl.saved ]]; then
  while IFS='=' read -r k v; do sysctl -qw "$k=$v" 2>/dev/null; done < "$D/sysctl.saved"
fi
# The kubelet's cgroups (cgroupfs driver): kubepods and its children, deepest first.
for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
done
rm -f "$D/pids" "$D/host.saved"
echo "node: stopped and host restored ($D)"
