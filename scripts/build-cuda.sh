#!/usr/bin/env bash
# Builds `prep` with the `cuda` feature on a machine with no GPU and no CUDA toolkit (issue 14).
#
# - nvcc comes from PyPI (`nvidia-cuda-nvcc`), pinned to the GPU machine's CUDA 13.0: PTX from a
#   newer nvcc than the driver's CUDA may not load there (../shared/GPU.md). It goes into a venv
#   under ~/.cache/prep, never into the repo.
# - candle-kernels compiles its kernels with that nvcc at build time; with no GPU to ask,
#   CUDA_COMPUTE_CAP=90 targets the H200 (Hopper, sm_90).
# - candle-core 0.11 builds cudarc with `dynamic-linking`: the binary is linked against libcuda,
#   nvrtc, cuRAND, cuBLAS(Lt), NCCL and cudart (DT_NEEDED by soname). The link needs those
#   libraries by their unversioned names: cuBLAS, cuRAND, nvrtc and NCCL come from NVIDIA's PyPI
#   wheels (pinned to 13.0 like nvcc); libcuda belongs to the driver and is on no registry, so the
#   link uses a stub (as the CUDA toolkit's lib64/stubs/libcuda.so): every `cu*` entry point of
#   cudarc's driver bindings, soname libcuda.so.1, never loaded at run time (the GPU machine's
#   driver provides the real one). The GPU machine's Python wheels provide the rest at run time.
# - The build goes to its own target folder (target-cuda/), so it never invalidates the CPU
#   build's artifacts.
#
# Usage: scripts/build-cuda.sh [extra cargo args]   -> target-cuda/release/prep
#   e.g. scripts/build-cuda.sh --features nccl,mpi   (NCCL between GPUs, ranks started by mpirun)
# (PREP_CUDA_COMMAND=check or clippy runs that cargo command instead of build, for a quick check.)
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
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" \
    "nvidia-cublas==13.0.*" "nvidia-curand==10.4.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-nccl-cu13==2.*"

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
link_dir="$venv/link"
mkdir -p "$link_dir"
for soname in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libnccl.so.2; do
    lib="$(find "$venv" -path '*nvidia*' -name "$soname" | head -n 1)"
    [ -n "$lib" ] || { echo "error: no $soname in $venv" >&2; exit 1; }
    ln -sf "$lib" "$link_dir/${soname%%.so.*}.so"
done
scripts/cuda-driver-stub.sh "$link_dir/libcuda.so"
export LIBRARY_PATH="$link_dir:$cuda_root/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
echo "nvcc: $nvcc ($("$nvcc" --version | tail -n 1)); CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP" >&2

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target-cuda}"
package="${PREP_CUDA_PACKAGE:-prep}"
if [ "$package" = prep ]; then
    cargo "${PREP_CUDA_COMMAND:-build}" --release -p prep --features cuda "$@"
    if [ "${PREP_CUDA_COMMAND:-build}" = build ]; then
        echo "built $CARGO_TARGET_DIR/release/prep (cuda, sm_$CUDA_COMPUTE_CAP)" >&2
    fi
else
    cargo build --release -p "$package" --features cuda "$@"
fi
