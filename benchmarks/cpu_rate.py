"""Calibrate the CPU time model (planner/cost.py CPU_TFLOPS, CPU_MICRO_STEP_S, CPU_OPT_STEP_S).

Times real training steps of random-init Llama models built from a config (no download) on this
machine's CPU: ``loss = model(**batch).loss; loss.backward()`` per micro-step and ``AdamW.step();
zero_grad()`` per optimizer step, as the executor's Trainer does (torch AdamW, foreach, on CPU).
Per case it reports seconds per micro-step and per optimizer step and the model FLOPs
(planner.cost.flops_per_token), then fits  t_micro = overhead + flops / rate  by least squares.

    .venv/bin/python benchmarks/cpu_rate.py            # prints JSON, writes benchmarks/results/cpu_rate.json
    .venv/bin/python benchmarks/cpu_rate.py --metrics RUN/output/metrics.jsonl  # + an executor run's s/step
    python benchmarks/cpu_rate.py --device cuda        # launch-bound GPU overhead (gpu_overhead.json)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (hidden, layers, intermediate, vocab, micro_batch, seq): the demo's model first, then larger ones
CASES = [
    (128, 2, 512, 512, 1, 64),
    (128, 2, 512, 512, 4, 64),
    (128, 2, 512, 512, 16, 64),
    (128, 2, 512, 512, 32, 64),
    (256, 4, 1024, 2048, 8, 128),
    (512, 4, 2048, 4096, 4, 128),
]
# GPU: launch-bound cases (tiny width, FLOPs negligible) over the layer count: t = a + b * layers gives
# the per-micro-step and per-layer overhead of planner/cost.py GPU_MICRO_STEP_S / GPU_KERNELS_PER_LAYER.
GPU_CASES = [(128, n, 512, 512, 4, 64) for n in (2, 8, 16, 32)]
# The minimum over repeats: the machine is shared, and contention only ever adds time.
WARMUP, REPEAT = 2, 8


def _spec_and_setup(h, layers, inter, vocab, mb, seq):
    from planner.memory import TrainSetup
    from planner.model_spec import spec_from_config

    cfg = {"model_type": "llama", "hidden_size": h, "num_hidden_layers": layers, "intermediate_size": inter,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": vocab,
           "max_position_embeddings": 1024, "tie_word_embeddings": False}
    spec = spec_from_config(cfg, f"llama-h{h}-l{layers}", "local", "")
    return cfg, spec, TrainSetup(method="full", precision="fp32", seq_len=seq, micro_batch=mb)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_case(case, device: str = "cpu") -> dict:
    import torch
    import transformers

    from planner.cost import flops_per_token

    h, layers, inter, vocab, mb, seq = case
    cfg, spec, setup = _spec_and_setup(*case)
    config = transformers.LlamaConfig(**{k: v for k, v in cfg.items() if k != "model_type"})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(device)
    model.train()
    # the executor's optimizer: fused AdamW on CUDA (Trainer "adamw_torch_fused"), foreach on CPU
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    ids = torch.randint(0, vocab, (mb, seq), device=device)
    batch = {"input_ids": ids, "labels": ids}
    micro, step = [], []
    for i in range(WARMUP + REPEAT):
        _sync(device)
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        _sync(device)
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t2 = time.perf_counter()
        if i >= WARMUP:
            micro.append(t1 - t0)
            step.append(t2 - t1)
    fpt = flops_per_token(spec, setup)
    return {"case": dict(zip(("hidden", "layers", "intermediate", "vocab", "micro_batch", "seq"), case)),
            "params": sum(p.numel() for p in model.parameters()),
            "micro_step_s": min(micro), "optimizer_step_s": min(step),
            "flops_per_micro_step": fpt * mb * seq}


def fit(rows: list[dict], key: str = "flops_per_micro_step") -> dict:
    """Least squares t = a + x * slope over the cases (x: FLOPs on CPU, layers on GPU)."""
    xs = [r[key] if key in r else r["case"][key] for r in rows]
    ys = [r["micro_step_s"] for r in rows]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    if key != "flops_per_micro_step":
        return {"overhead_s": my - slope * mx, f"seconds_per_{key}": slope}
    return {"overhead_s": my - slope * mx, "tflops": 1e-12 / slope}


def executor_step_seconds(metrics: Path) -> dict:
    """Median seconds per optimizer step of an ``ftplan run`` (its metrics.jsonl timestamps, logged
    every step or two), skipping the first logged step (model/optimizer set-up, first-call warm-up)
    and any interval that contains an evaluation."""
    rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r and "time" in r]
    evals = {r["step"] for r in rows if "eval_loss" in r}
    per_step = sorted(
        (b["time"] - a["time"]) / (b["step"] - a["step"])
        for a, b in zip(train[1:], train[2:])
        if b["step"] > a["step"] and not any(a["step"] < e <= b["step"] for e in evals)
    )
    tps = sorted(r["tokens_per_second"] for r in train[1:] if "tokens_per_second" in r)
    return {"metrics": str(metrics), "seconds_per_step": per_step[len(per_step) // 2],
            "tokens_per_second": tps[len(tps) // 2] if tps else None, "intervals": len(per_step)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", type=Path, help="metrics.jsonl of an `ftplan run` to report beside the fit")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args(argv)
    gpu = args.device == "cuda"
    rows = [time_case(c, args.device) for c in (GPU_CASES if gpu else CASES)]
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "device": torch.cuda.get_device_name() if gpu else "cpu",
           "cases": rows, "fit": fit(rows, "layers" if gpu else "flops_per_micro_step")}
    if args.metrics:
        out["executor"] = executor_step_seconds(args.metrics)
    text = json.dumps(out, indent=2)
    print(text)
    res = Path(os.environ.get("OUT", Path(__file__).resolve().parent / "results")) / (
        "gpu_overhead.json" if gpu else "cpu_rate.json")
    res.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
