"""Shrinks a BERT model.safetensors for the trip to the GPU machine (64 MiB travel limit; the
f32 all-MiniLM-L6-v2 weights are 87 MiB): rows of the word-embedding table that no text of the
GPU check can reach are zeroed, the tensor bytes are split into byte planes (`shuffle`), and the
file is xz-compressed (the zeros vanish). scripts/gpu-check.sh undoes it with `unshuffle`.

What stays is exact: a row is kept when its WordPiece (without `##`) occurs in the normalised
(lower-cased, accent-stripped) text of any reference sentence or batch, or its id is in the
reference's token ids. Every piece WordPiece produces is a substring of the normalised text, so
the kept rows are a superset of the rows the parity checks use: their embeddings, losses and
gradients are the real model's. Other texts (the bench corpus) may hit zeroed rows: that changes
their values, not the shapes or the time a step takes, and PyTorch is timed on the same folder.

Usage: prune_model.py MODEL_DIR REFERENCE_JSON OUT.safetensors.shuf.xz
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


def shuffle(data):
    """The safetensors header as is, then the tensor bytes as 4 byte planes (every 1st byte of
    each f32, then every 2nd, ...): the planes of sign and exponent bits are repetitive, so xz
    packs them far better than interleaved floats (41 -> 38 MiB for all-MiniLM-L6-v2), which
    keeps the GPU bundle under the device tool's 64 MiB."""
    (n,) = struct.unpack("<Q", data[:8])
    head, body = data[:8 + n], data[8 + n:]
    assert len(body) % 4 == 0, "tensor bytes are not whole f32s"
    return head + b"".join(body[i::4] for i in range(4))


def unshuffle(data):
    """The inverse of shuffle: the original model.safetensors bytes."""
    (n,) = struct.unpack("<Q", data[:8])
    head, planes = data[:8 + n], data[8 + n:]
    size = len(planes) // 4
    body = bytearray(len(planes))
    for i in range(4):
        body[i::4] = planes[i * size:(i + 1) * size]
    return bytes(head) + bytes(body)


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
    packed = shuffle(bytes(data))
    assert unshuffle(packed) == data, "byte planes do not round-trip"
    with lzma.open(out, "wb", preset=6) as f:
        f.write(packed)
    print(f"kept {len(keep)} of {rows} word-embedding rows; wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
