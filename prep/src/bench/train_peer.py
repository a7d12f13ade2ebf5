"""`prep bench train --peer-python PY`: the same training step in sentence-transformers (PyTorch).

The batch is built as prep's is: the first --batch-size non-blank lines of --corpus are the
anchors, the next --batch-size the positives (wrapping around), each column truncated at its own
length and padded to its longest row. The step is sentence-transformers' own: the model in
training mode (dropout 0.1), MultipleNegativesRankingLoss (scale 20, cosine), backward, gradient
norm clipped at 1.0, torch.optim.AdamW at lr 2e-5 (weight decay 0.01, as `fit` sets it). One
untimed warm-up step, then --steps timed ones.

Prints one JSON object per --threads value: wall seconds of each step, CPU seconds (user +
system) per step, peak RSS of this process, and the first timed step's loss.
"""
import argparse
import json
import resource
import time


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--max-length", type=int, required=True)
    p.add_argument("--max-length-positive", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--threads", type=int, action="append", required=True)
    a = p.parse_args()

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer, losses

    print(json.dumps({"versions": {"sentence-transformers": sentence_transformers.__version__,
                                   "torch": torch.__version__}}), flush=True)
    with open(a.corpus, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    b = a.batch_size
    anchors = [lines[i % len(lines)] for i in range(b)]
    positives = [lines[(b + i) % len(lines)] for i in range(b)]

    torch.manual_seed(1)
    model = SentenceTransformer(a.model, device="cpu")
    model.train()
    loss_fn = losses.MultipleNegativesRankingLoss(model)

    def features(texts, max_length):
        model.max_seq_length = max_length
        return model.tokenize(texts)

    batch = [features(anchors, a.max_length), features(positives, a.max_length_positive)]
    tokens = sum(int(f["attention_mask"].sum()) for f in batch)
    for threads in a.threads:
        torch.set_num_threads(threads)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(batch, None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return float(loss)

        step()  # warm-up: allocator, thread pool
        times, losses_seen = [], []
        c0 = cpu_seconds()
        for _ in range(max(a.steps, 1)):
            t0 = time.perf_counter()
            losses_seen.append(step())
            times.append(time.perf_counter() - t0)
        print(json.dumps({
            "engine": "sentence-transformers",
            "threads": threads,
            "times": times,
            "cpu_seconds_per_step": (cpu_seconds() - c0) / len(times),
            "peak_rss_bytes": peak_rss_bytes(),
            "tokens": tokens,
            "loss": losses_seen[0],
        }), flush=True)


if __name__ == "__main__":
    main()
