#!/usr/bin/env bash
# Restarts the one-node cluster's kube-apiserver (started by tests/node/up.sh DIR) so it
# picks up new flags from DIR/etc/apiserver.flags (one flag a line), as an operator
# edits the apiserver's manifest; waits until it is ready again.
set -euo pipefail
D=$(realpath -m "${1:-/tmp/kubetrail-node}")
pid=$(awk '$1 == "kube-apiserver" { p = $2 } END { print p }' "$D/pids")
if [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null; then
  for ((i = 0; i < 120; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -KILL "$pid" 2>/dev/null || true
fi
setsid "$D/etc/apiserver.sh" > "$D/logs/kube-apiserver.log" 2>&1 < /dev/null &
echo "kube-apiserver $!" >> "$D/pids"
. "$D/etc/node.env"
for ((i = 0; i < 360; i++)); do
  if curl -sf --cacert "$D/pki/ca.crt" --cert "$D/pki/admin.crt" --key "$D/pki/admin.key" "$API_SERVER/readyz" >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.25
done
echo "node: kube-apiserver not ready within 90s after a restart" >&2
tail -n 30 "$D/logs/kube-apiserver.log" >&2
exit 1
