"""Shrinks a BERT model.safetensors for the trip to the GPU machine (64 MiB travel limit; the
f32 all-MiniLM-L6-v2 weights are 87 MiB): rows of the word-embedding table that no text of the
GPU check can reach are zeroed, then the file is xz-compressed (the zeros vanish).

What stays is exact: a row is kept when its WordPiece (without `##`) occurs in the normalised
(lower-cased, accent-stripped) text of any reference sentence or batch, or its id is in the
reference's token ids. Every piece WordPiece produces is a substring of the normalised text, so
the kept rows are a superset of the rows the parity checks use: their embeddings, losses and
gradients are the real model's. Other texts (the bench corpus) may hit zeroed rows: that changes
their values, not the shapes or the time a step takes, and PyTorch is timed on the same folder.

Usage: prune_model.py MODEL_DIR REFERENCE_JSON OUT.safetensors.xz
"""
import json
import lzma
import struct
import sys
import unicodedata

WORD = "embeddings.word_embeddings.weight"


def normalise(text):
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in text if unicodedata.category(c) != "Mn")


def texts_of(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from texts_of(v)


def kept_ids(vocab, reference):
    text = "\n".join(
        normalise(t)
        for key in ("sentences", "pair_batch", "triplet_batch")
        for t in texts_of(reference[key])
    )
    keep = set()
    for key in ("input_ids_max256", "input_ids_max128"):
        for row in reference[key]:
            keep.update(row)
    for i, piece in enumerate(vocab):
        bare = piece[2:] if piece.startswith("##") and len(piece) > 2 else piece
        if piece.startswith("[") or bare in text:
            keep.add(i)
    return keep


def main():
    model_dir, reference_path, out = sys.argv[1:4]
    with open(f"{model_dir}/vocab.txt", encoding="utf-8") as f:
        vocab = f.read().split("\n")
    with open(reference_path, encoding="utf-8") as f:
        reference = json.load(f)
    with open(f"{model_dir}/model.safetensors", "rb") as f:
        data = bytearray(f.read())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    name = WORD if WORD in header else "bert." + WORD
    info = header[name]
    assert info["dtype"] == "F32", info
    rows, dim = info["shape"]
    begin = 8 + n + info["data_offsets"][0]
    keep = kept_ids(vocab, reference)
    row_bytes = dim * 4
    for r in range(rows):
        if r not in keep:
            at = begin + r * row_bytes
            data[at:at + row_bytes] = bytes(row_bytes)
    with lzma.open(out, "wb", preset=6) as f:
        f.write(data)
    print(f"kept {len(keep)} of {rows} word-embedding rows; wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
