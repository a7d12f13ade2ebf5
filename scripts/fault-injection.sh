#!/usr/bin/env bash
# Fault injection at scale: kill `prep ingest`, `prep mix` and `prep train` (SIGKILL) at seeded
# random moments N times each, rerun, and check every result is byte-identical to an
# uninterrupted run (prep/tests/fault_injection.rs). CI runs the same test with N=3.
#   bash scripts/fault-injection.sh [TRIALS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
export PREP_FAULT_TRIALS="${1:-50}" PREP_FAULT_SEED="${2:-1}"
cargo test -p prep --test it fault_injection:: -- --nocapture --test-threads 1 2>&1 |
    grep -E "trials|test result|panicked|FAILED"
