"""`prep bench encode --peer-python PY`: sentence-transformers on the same texts and model folder.

On a GPU (`--device cuda:N`) at `--precision` f32, tf32 (TF32 matmuls) or bf16 (the model cast to
bfloat16, as `model.half()` would for fp16); there each line also has the peak GPU memory.

Prints one JSON object per configuration (threads, batch, best seconds of --rounds, CPU seconds of
that round, peak RSS since the configuration began), then saves the first 64 texts' vectors as
float32 .npy for the comparison with prep's.
"""
import argparse
import json
import math
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


def reset_peak_rss():
    # Same as prep's: the high-water mark restarts, so each configuration reports its own.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--texts", required=True)
    p.add_argument("--batch", type=int, action="append", required=True)
    p.add_argument("--threads", type=int, action="append", required=True)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--npy", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="f32", choices=["f32", "tf32", "bf16"])
    a = p.parse_args()

    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    with open(a.texts, encoding="utf-8") as f:
        texts = f.read().split("\n")
    model = SentenceTransformer(a.model, device=a.device)
    gpu = a.device.startswith("cuda")
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = a.precision == "tf32"
        if a.precision == "bf16":
            model = model.to(torch.bfloat16)
    print(json.dumps({
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
        },
        "max_seq_length": model.max_seq_length,
    }), flush=True)
    model.encode(texts[:64], batch_size=32)  # warm-up, as prep's
    for threads in a.threads:
        torch.set_num_threads(threads)
        for batch in a.batch:
            reset_peak_rss()
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            best, best_cpu = math.inf, math.inf
            for _ in range(a.rounds):
                t, c = time.perf_counter(), cpu_seconds()
                model.encode(texts, batch_size=batch, convert_to_numpy=True)
                best = min(best, time.perf_counter() - t)
                best_cpu = min(best_cpu, cpu_seconds() - c)
            print(json.dumps({
                "threads": threads,
                "batch": batch,
                "seconds": best,
                "cpu_seconds": best_cpu,
                "peak_rss_bytes": peak_rss_bytes(),
                "peak_gpu_bytes": torch.cuda.max_memory_allocated() if gpu else None,
            }), flush=True)
    v = model.encode(texts[:64], batch_size=32, convert_to_tensor=True).float().cpu().numpy()
    np.save(a.npy, np.ascontiguousarray(v, dtype="<f4"))


if __name__ == "__main__":
    main()
