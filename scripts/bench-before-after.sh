#!/usr/bin/env bash
# Two release binaries benchmarked in pairs, ROUNDS rounds (default 6), the order
# alternating each round (before-after, after-before, …) so drift on a shared
# machine falls on both: ingest (15 s against s3s-fs on loopback) and query
# (1,000,000 traces, local directory). Prints every figure, then per measure
# the median of each build and the median of the paired ratios after/before.
#   scripts/bench-before-after.sh OLD-BINARY NEW-BINARY   (after scripts/test-env.sh)
# QUERY_ONLY=1 skips the ingest runs (more query rounds in the same time).
set -u
OLD=$1
NEW=$2
ROUNDS=${ROUNDS:-6}
S3=${KUBETRAIL_CACHE:-$HOME/.cache/kubetrail}/s3s-fs/bin/s3s-fs
OUT=$(mktemp -d)
rm -rf /tmp/bench-s3; mkdir -p /tmp/bench-s3
$S3 --host 127.0.0.1 --port 18014 --access-key bench --secret-key benchsecret /tmp/bench-s3 > /tmp/s3s-bench.log 2>&1 &
S3PID=$!
trap 'kill $S3PID 2>/dev/null' EXIT
sleep 2
ARGS="--endpoint http://127.0.0.1:18014 --access-key bench --secret-key benchsecret"
# One run: appends "round build measure value" lines to $OUT/figures.
run() { # round build binary
  local r=$1 b=$2 bin=$3 text
  if [ -z "${QUERY_ONLY:-}" ]; then
    text=$($bin bench $ARGS --seconds 15 2>/dev/null)
    echo "$text" | grep -E '^(accepted|peak RSS)' | sed "s/^/[$r $b ingest] /"
    echo "$text" | awk -v r="$r" -v b="$b" '/^accepted/ {print r, b, "ingest_events_per_s", $4}' >> "$OUT/figures"
  fi
  text=$($bin bench --query-traces 1000000 2>/dev/null)
  echo "$text" | grep -E 'traces/s' | sed "s/^/[$r $b query] /"
  echo "$text" | awk -v r="$r" -v b="$b" -F'=' '/full scan, no filter/ {split($2,a," "); print r, b, "query_full_scan", a[1]}
    /full scan, delete secrets/ {split($2,a," "); print r, b, "query_filtered", a[1]}
    /one day of seven/ {split($2,a," "); print r, b, "query_one_day", a[1]}' >> "$OUT/figures"
}
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then run "$r" before "$OLD"; run "$r" after "$NEW"
  else run "$r" after "$NEW"; run "$r" before "$OLD"; fi
done
python3 - "$OUT/figures" <<'PY'
import sys, statistics, collections
v = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    r, b, m, x = line.split()
    v[m].setdefault(b, {})[int(r)] = float(x)
print(f"{'measure':<22} {'before median':>14} {'after median':>14} {'paired after/before, median [min–max]':>40}")
for m, d in v.items():
    rounds = sorted(set(d.get('before', {})) & set(d.get('after', {})))
    ratios = [d['after'][r] / d['before'][r] for r in rounds]
    print(f"{m:<22} {statistics.median(d['before'].values()):>14.0f} {statistics.median(d['after'].values()):>14.0f}"
          f"   {statistics.median(ratios):.3f} [{min(ratios):.3f}–{max(ratios):.3f}] over {len(ratios)} pairs")
PY
