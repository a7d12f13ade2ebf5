"""Prints the figures scripts/gpu-check.sh left in OUT as one table (and the recipe's projected
hours: 200,000 steps at the measured seconds per step). Missing files are shown as missing."""
import json
import os
import sys

RECIPE_STEPS = 200_000


def load(out, name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def peak(out, precision):
    try:
        with open(os.path.join(out, f"train-{precision}.peak")) as f:
            return f"{int(f.read().strip()) / 1024:.1f} GiB (nvidia-smi)"
    except (OSError, ValueError):
        return "?"


def main():
    out = sys.argv[1]
    names = sorted(os.listdir(out))
    precisions = [p for p in ("f32", "tf32", "bf16") if f"parity-{p}.json" in names
                  or f"train-{p}.json" in names]
    print("parity (goal: cosine >= 0.99999 f32, >= 0.999 bf16; loss rel <= 1e-4 f32, 1e-2 bf16)")
    for p in precisions:
        r = load(out, f"parity-{p}.json")
        if r is None:
            print(f"  {p:5} missing")
            continue
        worst = max(s["loss_rel_error"] for s in r["adamw_steps"])
        print(f"  {p:5} min cosine {r['embeddings_min_cosine']:.7f}  worst loss rel {worst:.1e}"
              f"  {'ok' if r['pass'] else 'FAIL'}")
    print("train step (s/step, tokens/s, peak GPU memory; recipe hours = 200k steps)")
    rows = [(f"prep {p}", load(out, f"train-{p}.json"), peak(out, p)) for p in precisions]
    rows += [(f"pytorch {p}", load(out, f"torch-train-{p}.json"), None) for p in precisions]
    rows.append(("pytorch bf16 one graph", load(out, "torch-train-bf16-onegraph.json"), None))
    for label, r, mem in rows:
        if r is None:
            print(f"  {label:24} missing")
            continue
        s = r["seconds_per_step"]
        mem = mem or f"{r['peak_gpu_bytes'] / 2**30:.1f} GiB (torch)"
        print(f"  {label:24} {s:8.3f} s/step  {r['tokens_per_s']:10.0f} tokens/s  peak {mem}"
              f"  recipe {s * RECIPE_STEPS / 3600:7.1f} h")
    print("encode (sentences/s)")
    for p in ("f32", "bf16"):
        r = load(out, f"encode-{p}.json")
        if r is None:
            continue
        for row in r["rows"]:
            print(f"  {row['engine']:48} batch {row['batch']:4}  {row['sentences_per_s']:9.1f}")
        if "min_cosine_vs_cpu" in r:
            print(f"  prep {p} vs CPU f32: min cosine {r['min_cosine_vs_cpu']:.6f}")


if __name__ == "__main__":
    main()
