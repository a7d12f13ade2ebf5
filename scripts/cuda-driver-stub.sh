#!/usr/bin/env bash
# Writes a link-time stub of the CUDA driver library (libcuda.so, soname libcuda.so.1) to $1: one
# symbol per `cu*` function of cudarc's driver bindings, as the CUDA toolkit's lib64/stubs does.
# Only the linker reads it; at run time the driver's own libcuda.so.1 is loaded instead (the stub
# is never on LD_LIBRARY_PATH). Used by scripts/build-cuda.sh on machines without a driver.
set -euo pipefail
out="$1"
bindings="$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*cudarc-0.19.*/src/driver/sys/mod.rs' | sort | tail -n 1)"
[ -n "$bindings" ] || { echo "error: cudarc 0.19's driver bindings are not in the cargo registry (cargo fetch first)" >&2; exit 1; }
src="$(mktemp --suffix=.c)"
trap 'rm -f "$src"' EXIT
# A stub returns CUDA_ERROR_STUB_LIBRARY (34) should it ever be called.
grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$bindings" | sed 's/^pub unsafe fn //' | sort -u |
    sed 's/.*/int &(void) { return 34; }/' >"$src"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$out" "$src"
echo "libcuda stub: $(grep -c . "$src") entry points -> $out" >&2
