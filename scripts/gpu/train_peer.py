"""PyTorch's side of `prep bench train` (scripts/gpu-check.sh): the same training step on the
same GPU, texts, model folder and shape, so the two are timed in one run.

The step is prep's: BERT (HF transformers, under sentence-transformers), mean pooling, L2
normalisation, symmetric MultipleNegativesRankingLoss at scale 20, dropout 0.1 (train mode),
gradient-norm clip 1.0, AdamW (lr 2e-5, eps 1e-6). `--mini-batch-size M` computes it GradCache
style (embed without a graph, loss on the detached embeddings, re-embed each chunk with a graph
replaying its dropout, backpropagate the cached gradients), as prep does with the same flag;
without it, one graph. Precision: f32; tf32 (TF32 matmuls); bf16 (autocast to bfloat16: f32
master weights and moments, as prep's bf16). Prints one JSON object.
"""
import argparse
import json
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--max-length-positive", type=int, default=250)
    p.add_argument("--mini-batch-size", type=int)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precision", default="f32", choices=["f32", "tf32", "bf16"])
    p.add_argument("--device", default="cuda")
    p.add_argument("--json")
    a = p.parse_args()

    import torch
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer

    dev = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
    torch.backends.cudnn.allow_tf32 = a.precision == "tf32"
    st = SentenceTransformer(a.model, device=a.device)
    bert = st[0].auto_model
    bert.train()
    tok = st.tokenizer

    with open(a.corpus, encoding="utf-8") as f:
        lines = [l for l in f.read().split("\n") if l.strip()]
    b = a.batch_size
    # As prep bench train: anchors lines 0..B, positives the next B, the corpus cycled.
    anchors = [lines[i % len(lines)] for i in range(b)]
    positives = [lines[(b + i) % len(lines)] for i in range(b)]

    def features(texts, max_length):
        f = tok(texts, padding="longest", truncation=True, max_length=max_length,
                return_tensors="pt")
        return {k: v.to(dev) for k, v in f.items()}

    fa = features(anchors, a.max_length)
    fp = features(positives, a.max_length_positive)
    tokens = int(fa["attention_mask"].sum() + fp["attention_mask"].sum())
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.precision == "bf16")

    def embed(feat):
        with autocast:
            out = bert(input_ids=feat["input_ids"], attention_mask=feat["attention_mask"])
        h = out.last_hidden_state.float()
        m = feat["attention_mask"].unsqueeze(-1).float()
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)

    def mnrl(ea, ep):
        s = ea @ ep.T * 20.0
        labels = torch.arange(s.shape[0], device=s.device)
        return (F.cross_entropy(s, labels) + F.cross_entropy(s.T, labels)) / 2

    def chunks(feat, m):
        n = feat["input_ids"].shape[0]
        return [{k: v[i:i + m] for k, v in feat.items()} for i in range(0, n, m)]

    def step_one_graph():
        loss = mnrl(embed(fa), embed(fp))
        loss.backward()
        return loss

    def step_gradcache(m):
        cols = [chunks(fa, m), chunks(fp, m)]
        states, embs = [], []
        with torch.no_grad():
            for col in cols:
                parts = []
                for c in col:
                    states.append(torch.cuda.get_rng_state(dev))
                    parts.append(embed(c))
                embs.append(torch.cat(parts))
        leaves = [e.detach().requires_grad_() for e in embs]
        loss = mnrl(*leaves)
        loss.backward()
        k = 0
        for col, leaf in zip(cols, leaves):
            at = 0
            for c in col:
                torch.cuda.set_rng_state(states[k], dev)
                k += 1
                e = embed(c)
                n = e.shape[0]
                (e * leaf.grad[at:at + n]).sum().backward()
                at += n
        return loss.detach()

    opt = torch.optim.AdamW(bert.parameters(), lr=2e-5, eps=1e-6, weight_decay=0.0)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = step_gradcache(a.mini_batch_size) if a.mini_batch_size else step_one_graph()
        torch.nn.utils.clip_grad_norm_(bert.parameters(), 1.0)
        opt.step()
        torch.cuda.synchronize(dev)
        return float(loss)

    step()  # warm-up
    torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(max(a.steps, 1)):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    mean = sum(times) / len(times)
    result = {
        "engine": f"pytorch {torch.__version__}",
        "precision": a.precision,
        "batch_size": b,
        "max_length": a.max_length,
        "max_length_positive": a.max_length_positive,
        "mini_batch_size": a.mini_batch_size,
        "steps": len(times),
        "seconds_per_step": mean,
        "min_seconds_per_step": min(times),
        "tokens": tokens,
        "tokens_per_s": tokens / mean,
        "peak_gpu_bytes": torch.cuda.max_memory_allocated(dev),
        "attention": getattr(bert.config, "_attn_implementation", None),
    }
    print(json.dumps(result), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
