#!/usr/bin/env bash
# The test command: installs the real parts (scripts/test-env.sh), builds the image a
# user runs (the release binary, stripped, packed by scripts/oci-image.sh), then runs
# every test. Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test e2e tracker`).
#
# KUBETRAIL_IMAGE=<archive> runs the cluster tests on an image you built;
# KUBETRAIL_IMAGE=debug packs the debug binary under test instead of building the
# release one (faster while iterating; not what users run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/test-env.sh
cache=${KUBETRAIL_CACHE:-$HOME/.cache/kubetrail}
export KUBETRAIL_TEST_BIN=$cache/bin
export KUBETRAIL_S3S_FS=$cache/s3s-fs/bin/s3s-fs
export KUBETRAIL_PYTHON=$cache/duckdb-venv/bin/python
case ${KUBETRAIL_IMAGE:-} in
  debug) unset KUBETRAIL_IMAGE ;;
  "")
    target=$(realpath -m "${CARGO_TARGET_DIR:-target}")
    cargo build --release --locked --bin kubetrail
    mkdir -p "$target/image"
    strip -o "$target/image/kubetrail" "$target/release/kubetrail"
    bash scripts/oci-image.sh "$target/image/kubetrail" "$target/image/kubetrail-image.tar"
    export KUBETRAIL_IMAGE=$target/image/kubetrail-image.tar
    ;;
esac
cargo test --locked "$@"
