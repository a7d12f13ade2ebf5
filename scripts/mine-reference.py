#!/usr/bin/env python3
"""Reference negatives for mine's agreement test (not run in CI: needs PyTorch).

Runs sentence-transformers' `mine_hard_negatives` with `sampling_strategy="top"` on a pairs
dataset written by `prep ingest`, for each option set below, and writes only hashes: for each
distinct anchor, sha256(anchor) -> the sha256 of each chosen negative, best first. No text of
the dataset is written.

    prep ingest --source squad --input ../shared/fixtures/squad2/dev-v2.0.Normans.pretty.json --out /tmp/ref
    prep ingest --source amazon_qa --input ../shared/fixtures/amazon_qa/qa_Appliances.json --out /tmp/ref
    python scripts/mine-reference.py --model ~/.cache/prep/test-models/all-MiniLM-L6-v2 \
        --pairs /tmp/ref/squad --out mine/tests/data/reference-squad.json
"""

import argparse
import glob
import hashlib
import json
import os
import platform

import datasets
import pyarrow.parquet as pq
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives

# The option sets the Rust test replays (names as in mine's NegativeOptions).
CONFIGS = [
    {"num_negatives": 3},
    {"num_negatives": 3, "range_min": 2, "range_max": 12},
    {"num_negatives": 3, "relative_margin": 0.05},
    {"num_negatives": 2, "absolute_margin": 0.02, "max_score": 0.7},
]


def sha(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    parts = sorted(glob.glob(os.path.join(args.pairs, "part-*.parquet")))
    anchors, positives = [], []
    for p in parts:
        t = pq.read_table(p, columns=["anchor", "positive"])
        anchors += t.column("anchor").to_pylist()
        positives += t.column("positive").to_pylist()
    dataset = datasets.Dataset.from_dict({"anchor": anchors, "positive": positives})
    torch.manual_seed(0)
    model = SentenceTransformer(os.path.expanduser(args.model), device="cpu")

    out = {
        "generated_by": "scripts/mine-reference.py",
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
            "datasets": datasets.__version__,
            "python": platform.python_version(),
        },
        "model_sha256": file_sha(os.path.join(os.path.expanduser(args.model), "model.safetensors")),
        "pairs_parts_sha256": [file_sha(p) for p in parts],
        "rows": len(anchors),
        "configs": [],
    }
    for cfg in CONFIGS:
        mined = mine_hard_negatives(
            dataset,
            model,
            sampling_strategy="top",
            output_format="triplet",
            batch_size=64,
            verbose=False,
            **cfg,
        )
        negatives = {}
        for a, n in zip(mined["anchor"], mined["negative"]):
            lst = negatives.setdefault(sha(a), [])
            if sha(n) not in lst:
                lst.append(sha(n))
        out["configs"].append({"options": cfg, "negatives": negatives})
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


if __name__ == "__main__":
    main()
