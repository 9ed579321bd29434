#!/usr/bin/env bash
# Two release binaries benchmarked alternately, three rounds: ingest (15 s against
# s3s-fs on loopback) and query (1,000,000 traces, local directory).
#   scripts/bench-before-after.sh OLD-BINARY NEW-BINARY   (after scripts/test-env.sh)
set -u
OLD=$1
NEW=$2
S3=${KUBETRAIL_CACHE:-$HOME/.cache/kubetrail}/s3s-fs/bin/s3s-fs
rm -rf /tmp/bench-s3; mkdir -p /tmp/bench-s3
$S3 --host 127.0.0.1 --port 18014 --access-key bench --secret-key benchsecret /tmp/bench-s3 > /tmp/s3s-bench.log 2>&1 &
S3PID=$!
sleep 2
ARGS="--endpoint http://127.0.0.1:18014 --access-key bench --secret-key benchsecret"
for i in 1 2 3; do
  echo "== round $i before ingest"; $OLD bench $ARGS --seconds 15 2>&1 | grep -v "^\s*$" | tail -12
  echo "== round $i after ingest"; $NEW bench $ARGS --seconds 15 2>&1 | grep -v "^\s*$" | tail -12
done
for i in 1 2 3; do
  echo "== round $i before query"; $OLD bench --query-traces 1000000 2>&1 | grep -v "^\s*$" | tail -12
  echo "== round $i after query"; $NEW bench --query-traces 1000000 2>&1 | grep -v "^\s*$" | tail -12
done
kill $S3PID
