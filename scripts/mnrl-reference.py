#!/usr/bin/env python3
"""Reference numbers for train's loss test with several negative columns (not run in CI).

Builds the same seeded embeddings as `train/tests/it/loss.rs` (SplitMix64, 24-bit values, so
every number is exact in float32), L2-normalises them (the model's Normalize module), and
computes sentence-transformers' MultipleNegativesRankingLoss on them:

    candidates = cat([positive, negative_1, ..., negative_N])        # (N+1)·B rows
    scores     = cos_sim(anchor, candidates) * scale                 # B × (N+1)·B
    loss       = cross_entropy(scores, labels=arange(B))

(sentence_transformers/losses/MultipleNegativesRankingLoss.py: `embeddings_b =
torch.cat(reps[1:])`), and for pair batches the symmetric variant
(MultipleNegativesSymmetricRankingLoss: `(CE(S) + CE(S[:, :B].T)) / 2`). It writes only numbers:
the loss, and per column the gradient norm w.r.t. the raw (unnormalised) vectors and the
gradient's dot product with a seeded probe vector (which catches rows or columns swapped).

With PyTorch installed the gradients come from autograd; without it, from the closed form in
NumPy (softmax − one-hot, through cos_sim and the normalisation), checked here against central
finite differences in float64. The JSON says which engine wrote it.

    python3 scripts/mnrl-reference.py --out train/tests/data/mnrl-negatives.json
"""

import argparse
import json
import platform

MASK = (1 << 64) - 1


def splitmix_values(seed, count):
    """`count` values in [-1, 1) with 24 significant bits: exact in float32."""
    state = seed & MASK
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        out.append((z >> 40) / float(1 << 23) - 1.0)
    return out


def matrix(seed, column, rows, dim):
    """Column `column` (0 anchor, 1 positive, 2.. negatives) of case `seed`, row-major."""
    v = splitmix_values(seed * 1000 + column, rows * dim)
    return [v[r * dim:(r + 1) * dim] for r in range(rows)]


# (name, rows, dim, negative columns, scale, symmetric); the Rust test replays these.
CASES = [
    ("pairs-symmetric", 6, 16, 0, 20.0, True),
    ("pairs-one-way", 6, 16, 0, 20.0, False),
    ("one-negative", 6, 16, 1, 20.0, False),
    ("three-negatives", 6, 16, 3, 20.0, False),
    ("five-negatives-scale-10", 4, 24, 5, 10.0, False),
]


def torch_case(cols, scale, symmetric):
    import torch
    import torch.nn.functional as F

    raw = [torch.tensor(c, dtype=torch.float32, requires_grad=True) for c in cols]
    reps = [F.normalize(r, p=2, dim=1) for r in raw]

    def cos_sim(a, b):
        return F.normalize(a, p=2, dim=1) @ F.normalize(b, p=2, dim=1).T

    b = reps[0].shape[0]
    labels = torch.arange(b)
    scores = cos_sim(reps[0], torch.cat(reps[1:])) * scale
    loss = F.cross_entropy(scores, labels)
    if symmetric:
        loss = (loss + F.cross_entropy(scores[:, :b].T, labels)) / 2
    loss.backward()
    grads = [r.grad.double().tolist() for r in raw]
    return float(loss.detach()), grads, "torch " + torch.__version__


def numpy_loss_and_grads(cols, scale, symmetric):
    import numpy as np

    raw = [np.array(c, dtype=np.float64) for c in cols]
    norms = [np.linalg.norm(r, axis=1, keepdims=True) for r in raw]
    unit = [r / n for r, n in zip(raw, norms)]
    a, cand = unit[0], np.concatenate(unit[1:])
    b = a.shape[0]

    def ce(s):
        m = s.max(axis=1, keepdims=True)
        e = np.exp(s - m)
        p = e / e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(e.sum(axis=1)) + m[:, 0] - s[np.arange(len(s)), np.arange(len(s))]))
        g = p.copy()
        g[np.arange(len(s)), np.arange(len(s))] -= 1.0
        return loss, g / len(s)

    s = a @ cand.T * scale
    loss, gs = ce(s)
    if symmetric:
        l2, g2 = ce(s[:, :b].T)
        loss = (loss + l2) / 2
        gs = gs / 2
        gs[:, :b] += g2.T / 2
    ga = gs @ cand * scale
    gc = gs.T @ a * scale
    gunit = [ga] + [gc[i * b:(i + 1) * b] for i in range(len(cols) - 1)]
    # Through x / |x|: g_raw = (g − u (u·g)) / |x|.
    grads = []
    for g, u, n in zip(gunit, unit, norms):
        grads.append((g - u * np.sum(u * g, axis=1, keepdims=True)) / n)
    return loss, grads


def numpy_case(cols, scale, symmetric):
    import numpy as np

    loss, grads = numpy_loss_and_grads(cols, scale, symmetric)
    # The closed form checked against central differences on a few coordinates of each column.
    h = 1e-6
    for c in range(len(cols)):
        for (r, j) in [(0, 0), (len(cols[c]) - 1, len(cols[c][0]) - 1), (1, 3)]:
            plus = [np.array(x, dtype=np.float64) for x in cols]
            minus = [np.array(x, dtype=np.float64) for x in cols]
            plus[c][r, j] += h
            minus[c][r, j] -= h
            fd = (numpy_loss_and_grads(plus, scale, symmetric)[0]
                  - numpy_loss_and_grads(minus, scale, symmetric)[0]) / (2 * h)
            assert abs(fd - grads[c][r, j]) < 1e-6 * (1 + abs(fd)), (c, r, j, fd, grads[c][r, j])
    return loss, [g.tolist() for g in grads], "numpy " + np.__version__ + " (closed form, float64)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--engine", choices=["auto", "torch", "numpy"], default="auto")
    args = ap.parse_args()
    engine = args.engine
    if engine == "auto":
        try:
            import torch  # noqa: F401
            engine = "torch"
        except ImportError:
            engine = "numpy"
    results = []
    for seed, (name, rows, dim, negatives, scale, symmetric) in enumerate(CASES, start=1):
        cols = [matrix(seed, c, rows, dim) for c in range(2 + negatives)]
        run = torch_case if engine == "torch" else numpy_case
        loss, grads, version = run(cols, scale, symmetric)
        norms, probes = [], []
        for c, g in enumerate(grads):
            probe = matrix(seed, 100 + c, rows, dim)
            norms.append(sum(x * x for row in g for x in row) ** 0.5)
            probes.append(sum(x * p for gr, pr in zip(g, probe) for x, p in zip(gr, pr)))
        results.append({
            "name": name, "seed": seed, "rows": rows, "dim": dim, "negatives": negatives,
            "scale": scale, "symmetric": symmetric, "loss": loss,
            "grad_norms": norms, "grad_probes": probes,
        })
    out = {
        "what": "MultipleNegativesRankingLoss over [positives; all negatives], gradients w.r.t. "
                "the raw vectors before L2 normalisation (scripts/mnrl-reference.py)",
        "engine": version,
        "python": platform.python_version(),
        "cases": results,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
