#!/usr/bin/env bash
# The test command (README, .ci/run): every crate's unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
# Data-parallel training over MPI (needs Open MPI: .ci/run installs it): only the two crates
# that change with the feature, only the tests that need it.
cargo test -p train --features mpi --test it distributed::
cargo test -p prep --features mpi --test it mpi::
