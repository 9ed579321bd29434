#!/usr/bin/env bash
# The test command: installs the real parts (scripts/test-env.sh), then runs every
# test. Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test e2e tracker`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-env.sh
cache=${KUBETRAIL_CACHE:-$HOME/.cache/kubetrail}
export KUBETRAIL_TEST_BIN=$cache/bin
export KUBETRAIL_S3S_FS=$cache/s3s-fs/bin/s3s-fs
export KUBETRAIL_PYTHON=$cache/duckdb-venv/bin/python
cargo test --locked "$@"
