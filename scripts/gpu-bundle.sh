#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on the GPU machine into .gpu/ (git-ignored), under the
# device tool's 64 MiB travel limit: the cuda build of prep (stripped, xz), libcudart.so.13 from
# the nvcc venv (the machine's Python has one too; this is the fallback), the test model with
# its unreachable word-embedding rows zeroed, split into byte planes and xz-compressed
# (scripts/gpu/prune_model.py), the parity reference and the bench corpus. Run
# scripts/build-cuda.sh --no-default-features --features nccl first (the bundle's binary leaves
# out `prep inspect` and Polars: it must fit).
#
# Then, on the GPU machine (device tool: carry [".gpu"]): scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${1:-target-cuda/release/prep}"
shared="${PREP_SHARED:-../shared}"
model="${PREP_TEST_MODEL:-$HOME/.cache/prep/test-models/all-MiniLM-L6-v2}"
venv="${PREP_CUDA_VENV:-$HOME/.cache/prep/cuda-nvcc-13.0}"
[ -x "$bin" ] || { echo "error: no $bin (run scripts/build-cuda.sh)" >&2; exit 1; }
[ -f "$model/model.safetensors" ] || { echo "error: no test model (scripts/fetch-test-model.sh)" >&2; exit 1; }

rm -rf .gpu
mkdir -p .gpu/model/1_Pooling .gpu/shared/reference .gpu/shared/bench
strip -o .gpu/prep "$bin"
python3 -c 'import lzma,sys; d=open(sys.argv[1],"rb").read(); lzma.open(sys.argv[1]+".xz","wb",preset=9 | lzma.PRESET_EXTREME).write(d)' .gpu/prep
rm .gpu/prep
cudart="$(find "$venv" -name 'libcudart.so.13' | head -n 1)"
[ -n "$cudart" ] && cp "$cudart" .gpu/
for f in config.json modules.json sentence_bert_config.json config_sentence_transformers.json \
    tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt 1_Pooling/config.json; do
    [ -f "$model/$f" ] && cp "$model/$f" ".gpu/model/$f"
done
python3 scripts/gpu/prune_model.py "$model" "$shared/reference/minilm_parity.json" \
    .gpu/model/model.safetensors.shuf.xz
cp "$shared/reference/minilm_parity.json" .gpu/shared/reference/
cp "$shared/bench/corpus.txt" .gpu/shared/bench/
du -sh .gpu
total=$(du -sb .gpu | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
echo "bundle $((total / 1048576)) MiB + tracked tree $((tree / 1048576)) MiB (limit 64 MiB)" >&2
