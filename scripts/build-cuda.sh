#!/usr/bin/env bash
# Builds `prep` with the `cuda` feature on a machine with no GPU and no CUDA toolkit (issue 14).
#
# - nvcc comes from PyPI (`nvidia-cuda-nvcc`), pinned to the GPU machine's CUDA 13.0: PTX from a
#   newer nvcc than the driver's CUDA may not load there (../shared/GPU.md). It goes into a venv
#   under ~/.cache/prep, never into the repo.
# - candle-kernels compiles its kernels with that nvcc at build time; with no GPU to ask,
#   CUDA_COMPUTE_CAP=90 targets the H200 (Hopper, sm_90).
# - cudarc loads libcuda, cuBLAS and cuRAND at run time; only cudart is linked (candle-kernels'
#   static MoE kernels need it).
# - The build goes to its own target folder (target-cuda/), so it never invalidates the CPU
#   build's artifacts.
#
# Usage: scripts/build-cuda.sh [extra cargo args]   -> target-cuda/release/prep
# (PREP_CUDA_PACKAGE=encoder builds only the encoder crate with its cuda feature: candle's CUDA
# backend and kernels, without the rest of prep; a quicker check of the toolchain.)
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${PREP_CUDA_VENV:-$HOME/.cache/prep/cuda-nvcc-13.0}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
# Every piece pinned: nvcc 13.0 alone pulls the newest nvvm (which writes the PTX), crt and
# runtime headers, and a 13.5 nvvm's PTX does not load under the 13.0 driver. CCCL (libcu++:
# `nv/target`, included by cuda_fp16.h) is a wheel of its own, not a dependency of nvcc's.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-crt==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*"

# The wheel's layout has moved between releases (nvidia/cuda_nvcc/bin, nvidia/cu13/bin): find it.
nvcc="$(find "$venv" -path '*nvidia*' -name nvcc -type f | head -n 1)"
if [ -z "$nvcc" ]; then
    echo "error: no nvcc in $venv after installing nvidia-cuda-nvcc==13.0.*" >&2
    exit 1
fi
chmod +x "$nvcc"
cuda_root="$(dirname "$(dirname "$nvcc")")"
export PATH="$cuda_root/bin:$PATH"
export CUDA_ROOT="$cuda_root" CUDA_PATH="$cuda_root" CUDA_HOME="$cuda_root"
export NVCC_PREPEND_FLAGS="${NVCC_PREPEND_FLAGS:-} -I$cuda_root/include -I$cuda_root/include/cccl"
# candle-kernels links its static MoE kernels against cudart (`-lcudart`): the wheel ships only
# libcudart.so.13, so give the linker the unversioned name. At run time the binary needs
# libcudart.so.13 (scripts/gpu-check.sh finds it, or uses the copy bundled beside the binary).
ln -sf libcudart.so.13 "$cuda_root/lib/libcudart.so"
export LIBRARY_PATH="$cuda_root/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
echo "nvcc: $nvcc ($("$nvcc" --version | tail -n 1)); CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP" >&2

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-cuda}"
package="${PREP_CUDA_PACKAGE:-prep}"
if [ "$package" = prep ]; then
    cargo build --release -p prep --features cuda "$@"
    echo "built $CARGO_TARGET_DIR/release/prep (cuda, sm_$CUDA_COMPUTE_CAP)" >&2
else
    cargo build --release -p "$package" --features cuda "$@"
fi
