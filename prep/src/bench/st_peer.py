"""`prep bench encode --peer-python PY`: sentence-transformers on the same texts and model folder.

On a GPU (`--device cuda:N`) at `--precision` f32, tf32 (TF32 matmuls) or bf16 (the model cast to
bfloat16, as `model.half()` would for fp16); there each line also has the peak GPU memory.

With `--onnx DIR` (CPU) it also measures ONNX Runtime on the same model: exported from the same
PyTorch module with `torch.onnx` (BERT, mean pooling and L2 normalisation in one graph) at fp32,
and that graph dynamically quantised to int8 (`onnxruntime.quantization.quantize_dynamic`: int8
weights, per-tensor dynamic activation scales), each on batches padded to their longest text after
sorting by length, as sentence-transformers batches them. An engine that cannot run prints
`{"skipped": ENGINE, "why": ...}` and the others go on.

Prints one JSON object per configuration (engine, threads, batch, best seconds of --rounds, CPU
seconds of that round, peak RSS since the configuration began), then saves each engine's vectors
of every text as float32 .npy (`--npy` for sentence-transformers, `NPY.<engine>.npy` for the
others) for the comparison with prep's.
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
    p.add_argument("--onnx", help="also ONNX Runtime fp32/int8, exported into this folder")
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

    def st_encode(batch):
        return model.encode(texts, batch_size=batch, convert_to_tensor=True).float().cpu().numpy()

    engines = [("sentence-transformers", st_encode, a.npy)]
    if a.onnx and not gpu:
        engines += onnx_engines(model, texts, a.onnx, a.threads, a.npy)
    for name, encode, npy in engines:
        vectors = None
        for threads in a.threads:
            torch.set_num_threads(threads)
            for batch in a.batch:
                vectors = measure(name, encode, threads, batch, a.rounds, gpu)
        np.save(npy, np.ascontiguousarray(vectors, dtype="<f4"))


def measure(name, encode, threads, batch, rounds, gpu):
    """Best of `rounds` encodes of every text; prints its line, returns the vectors."""
    import torch

    reset_peak_rss()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    best, best_cpu, vectors = math.inf, math.inf, None
    for _ in range(rounds):
        t, c = time.perf_counter(), cpu_seconds()
        vectors = encode(batch)
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, cpu_seconds() - c)
    print(json.dumps({
        "engine": name,
        "threads": threads,
        "batch": batch,
        "seconds": best,
        "cpu_seconds": best_cpu,
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if gpu else None,
    }), flush=True)
    return vectors


def onnx_engines(model, texts, folder, threads, npy):
    """ONNX Runtime fp32 and int8 encoders of `texts` (each a function of the batch size), or
    a `skipped` line each when onnxruntime or the export is missing."""
    import os

    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        f32 = os.path.join(folder, "model.onnx")
        export_onnx(model, f32)
        i8 = os.path.join(folder, "model.int8.onnx")
        quantize_dynamic(f32, i8, weight_type=QuantType.QInt8)
    except Exception as e:  # noqa: BLE001 - any failure means: say so, go on without it
        for name in ("onnxruntime fp32", "onnxruntime int8"):
            print(json.dumps({"skipped": name, "why": f"{type(e).__name__}: {e}"}), flush=True)
        return []
    print(json.dumps({"versions": {"onnxruntime": ort.__version__}}), flush=True)
    tok = model.tokenizer
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))

    def engine(path, name):
        sessions = {}

        def encode(batch):
            n = torch_threads()
            if n not in sessions:
                so = ort.SessionOptions()
                so.intra_op_num_threads = n
                so.inter_op_num_threads = 1
                sessions[n] = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            return run_sorted(sessions[n], tok, texts, order, batch, model.max_seq_length)

        return (name, encode, f"{npy}.{name.replace(' ', '-')}.npy")

    return [engine(f32, "onnxruntime fp32"), engine(i8, "onnxruntime int8")]


def torch_threads():
    import torch

    return torch.get_num_threads()


def run_sorted(session, tok, texts, order, batch, max_len):
    import numpy as np

    parts = []
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len,
                  return_tensors="np")
        feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        parts.append((idx, session.run(None, feed)[0]))
    out = np.zeros((len(texts), parts[0][1].shape[1]), dtype=np.float32)
    for idx, v in parts:
        out[idx] = v
    return out


def export_onnx(model, path):
    """BERT + mean pooling + L2 normalisation as one ONNX graph (dynamic batch and length)."""
    import torch

    bert = model[0].auto_model.eval()

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(v, p=2, dim=1)

    ex = model.tokenizer(["an example text", "and another, longer example text"], padding=True,
                         return_tensors="pt")
    args = (ex["input_ids"], ex["attention_mask"], ex["token_type_ids"])
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "seq"} for n in names}
    axes["embedding"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(Pooled(), args, path, input_names=names, output_names=["embedding"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)


if __name__ == "__main__":
    main()
