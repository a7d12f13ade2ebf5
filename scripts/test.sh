#!/usr/bin/env bash
# The test command (README, .ci/run): every crate's unit and integration tests.
#
# With Open MPI installed (`.ci/run` installs it; CI=true insists on it) the workspace is built
# once with the `mpi` feature, so the data-parallel tests (train `distributed::`, prep `mpi::`)
# run in the same test binaries as everything else: a second build of train and prep with the
# feature cost CI several minutes. Without it, the rest runs and those tests are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
features=()
if command -v mpicc >/dev/null || [ "${CI:-}" = true ]; then
    features=(--features prep/mpi)
else
    echo "note: Open MPI not found (apt-get install openmpi-bin libopenmpi-dev libclang-dev):" \
        "testing without the mpi feature, so the data-parallel tests are left out" >&2
fi
cargo test --workspace --all-targets "${features[@]}"
