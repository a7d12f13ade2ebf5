#!/usr/bin/env bash
# The test command (README, .ci/run): every crate's unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
