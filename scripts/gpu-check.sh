#!/usr/bin/env bash
# Every GPU check of issue 14 in one run (< 10 minutes on an H200), with the cuda build of prep
# packed by scripts/gpu-bundle.sh. On the GPU machine, from the repo root:
#
#   scripts/gpu-check.sh            # device tool: carry [".gpu"]; figures land in $OUT
#
# 1. parity: embeddings of the reference sentences (min cosine) and the parity test's 3 AdamW
#    steps (losses), at f32, tf32 and bf16 (`prep bench parity`);
# 2. the recipe's step (1,024 pairs, anchors cut at 64 tokens, answers at 250, real texts from
#    the bench corpus) at each precision: prep (`prep bench train`) and PyTorch
#    (scripts/gpu/train_peer.py) on the same GPU, seconds per step, tokens/s, peak GPU memory;
# 3. encoding (`prep bench encode`) against sentence-transformers on the same GPU;
# 4. the data-parallel step's exchanges over NCCL in a world of one (`prep bench collective`:
#    all-gather of 1,024 × 384 embeddings per column, all-reduce of the 22.7M-float gradient);
# 5. a summary (scripts/gpu/summary.py), with the hours the 200k-step recipe would take.
#
# A failing check is reported and the others still run. The CPU half runs here too, on tiny
# shapes: PREP_BIN=target/debug/prep DEVICE=cpu PRECISIONS=f32 BATCH=16 LEN_A=16 LEN_B=32 \
#   MINI_BATCH=8 STEPS=1 ENCODE_BATCHES=8 CORPUS=small.txt OUT=/tmp/gpu-check scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."

bundle="${BUNDLE:-.gpu}"
out="${OUT:-/tmp/gpu-check}"
device="${DEVICE:-cuda}"
precisions="${PRECISIONS:-f32 tf32 bf16}"
batch="${BATCH:-1024}"
len_a="${LEN_A:-64}"
len_b="${LEN_B:-250}"
# GradCache chunk: our composed attention keeps ~30 MB per row at 250 tokens per layer, so the
# 1,024 answers do not fit in one graph; 256 rows do on an H100 or H200.
mini_batch="${MINI_BATCH:-256}"
steps="${STEPS:-3}"
encode_batches="${ENCODE_BATCHES:-256}"
python="${PYTHON:-python3}"
mkdir -p "$out"
work="$(mktemp -d)"

say() { printf '\n== %s\n' "$*"; }

# The binary and model: unpacked from the bundle, or PREP_BIN and PREP_TEST_MODEL as given.
unpack() {
    if [ -n "${PREP_BIN:-}" ]; then
        prep="$PREP_BIN"
        model="${PREP_TEST_MODEL:-$HOME/.cache/prep/test-models/all-MiniLM-L6-v2}"
        shared="${PREP_SHARED:-../shared}"
        return
    fi
    "$python" - "$bundle" "$work" <<'PY'
import lzma, os, shutil, sys
sys.path.insert(0, os.path.join("scripts", "gpu"))
from prune_model import unshuffle
bundle, work = sys.argv[1:3]
shutil.copytree(os.path.join(bundle, "model"), os.path.join(work, "model"))
with lzma.open(os.path.join(bundle, "prep.xz")) as f, open(os.path.join(work, "prep"), "wb") as g:
    shutil.copyfileobj(f, g)
packed = os.path.join(work, "model", "model.safetensors.shuf.xz")
with lzma.open(packed) as f, open(os.path.join(work, "model", "model.safetensors"), "wb") as g:
    g.write(unshuffle(f.read()))
os.remove(packed)
os.chmod(os.path.join(work, "prep"), 0o755)
PY
    prep="$work/prep"
    model="$work/model"
    shared="$bundle/shared"
    # cuBLAS, cuRAND and the CUDA runtime from the machine's Python wheels; the bundle's cudart last.
    libs="$("$python" -c 'import glob, site, os; print(":".join(sorted({os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + "/nvidia/**/lib*.so*", recursive=True)})))' 2>/dev/null)"
    export LD_LIBRARY_PATH="${libs}:$(cd "$bundle" && pwd)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# Runs "$@" while sampling the GPU's used memory; prints the peak (MiB) into $1's file.
with_peak_memory() {
    local file="$1"
    shift
    if command -v nvidia-smi >/dev/null && [ "$device" != cpu ]; then
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$file.log" &
        local sampler=$!
        "$@"
        local rc=$?
        kill "$sampler" 2>/dev/null
        wait "$sampler" 2>/dev/null
        sort -n "$file.log" | tail -n 1 >"$file"
        return $rc
    fi
    "$@"
}

unpack
export PREP_SHARED="$shared" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
corpus="${CORPUS:-$shared/bench/corpus.txt}"
# The PyTorch peers need sentence-transformers (the GPU machine has it; this one may not).
peer=1
"$python" -c 'import sentence_transformers' 2>/dev/null || { peer=0; echo "no sentence-transformers in $python: PyTorch peers skipped"; }
say "machine"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
# The cuda build is linked against the driver's libcuda and NVIDIA's libraries by soname: say
# which are missing (and where this script looked) rather than fail in every check below.
missing="$(ldd "$prep" 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ')"
[ -n "$missing" ] && echo "MISSING LIBRARIES: $missing(LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})"
"$prep" --version

say "1. parity against PyTorch (embeddings; 3 AdamW steps)"
for p in $precisions; do
    timeout 120 "$prep" bench parity --device "$device" --precision "$p" --model "$model" \
        --json "$out/parity-$p.json" || echo "parity $p: FAILED (exit $?)"
done

say "2. the recipe's step: $batch pairs, max lengths $len_a/$len_b, GradCache chunks of $mini_batch"
for p in $precisions; do
    with_peak_memory "$out/train-$p.peak" timeout 150 "$prep" bench train --device "$device" \
        --precision "$p" --model "$model" --corpus "$corpus" --batch-size "$batch" \
        --max-length "$len_a" --max-length-positive "$len_b" --mini-batch-size "$mini_batch" \
        --steps "$steps" --loader-batches 0 --json "$out/train-$p.json" \
        || echo "prep bench train $p: FAILED (exit $?)"
    [ "$peer" = 1 ] && { timeout 150 "$python" scripts/gpu/train_peer.py --model "$model" \
        --corpus "$corpus" --device "$device" --precision "$p" --batch-size "$batch" \
        --max-length "$len_a" --max-length-positive "$len_b" --mini-batch-size "$mini_batch" \
        --steps "$steps" --json "$out/torch-train-$p.json" || echo "PyTorch train $p: FAILED (exit $?)"; }
done
# PyTorch at its own best: bf16 in one graph (SDPA attention; no GradCache needed in 141 GB).
if [ "$device" != cpu ] && [ "$peer" = 1 ]; then
    timeout 120 "$python" scripts/gpu/train_peer.py --model "$model" --corpus "$corpus" \
        --device "$device" --precision bf16 --batch-size "$batch" --max-length "$len_a" \
        --max-length-positive "$len_b" --steps "$steps" --json "$out/torch-train-bf16-onegraph.json" \
        || echo "PyTorch train bf16 one graph: FAILED (exit $?)"
fi

say "3. encoding against sentence-transformers"
for p in $precisions; do
    [ "$p" = tf32 ] && continue
    peer_args=()
    [ "$peer" = 1 ] && peer_args=(--peer-python "$python")
    timeout 120 "$prep" bench encode --device "$device" --precision "$p" --model "$model" \
        --corpus "$corpus" --batch-sizes "$encode_batches" --rounds 2 --no-peers \
        "${peer_args[@]}" --json "$out/encode-$p.json" || echo "prep bench encode $p: FAILED (exit $?)"
done

say "4. the data-parallel exchanges over NCCL (a world of one), batch $batch"
timeout 120 "$prep" bench collective --device "$device" --batch-size "$batch" \
    | tee "$out/collective.txt" || echo "prep bench collective: FAILED (exit $?)"

say "5. summary"
"$python" scripts/gpu/summary.py "$out" | tee "$out/summary.txt"
rm -rf "$work"
