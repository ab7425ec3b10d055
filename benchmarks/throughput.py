"""Tokens trained per second: `ftplan run` against the plain transformers Trainer script a user writes.

    .venv/bin/python benchmarks/throughput.py                 # ~5 min on 2 CPU cores
    .venv/bin/python benchmarks/throughput.py --rows 400 --json benchmarks/results/throughput.json

Both sides train the same locally built model (random init, no download) on the same data with the same
hyperparameters (full fine-tuning, AdamW, lr, warmup, cosine schedule, weight decay, clipping, seed,
micro-batch, one epoch), one after the other in the same invocation, each in its own process:

- **plain**: what a typical user writes (``--plain`` below): chat template applied in ``datasets.map``,
  ``DataCollatorForLanguageModeling`` (pads every batch to its longest example), no packing,
  ``Trainer.train()``; tokens/s = real (non-pad) tokens of the epoch / ``train_runtime``.
- **ftplan**: ``ftplan plan`` with the same numbers forced by ``--set`` (everything else as the planner
  decides, e.g. packing), then ``python -m executor run PLAN_DIR``; tokens/s = ``tokens_seen``
  (non-padding) / ``train_seconds`` from ``run_summary.json``.

Peak memory is each process's peak RSS (``getrusage(RUSAGE_CHILDREN)`` read by a fresh wrapper process
per side, so one side's peak never leaks into the other's). The ftplan side also reports the planner's
estimate against the measurement (memory, time, tokens) from ``run_summary.json``.

The data is a date task with a long-tailed length distribution (answers list 1 to 40 dates; the shape of
real instruction data, where a few long answers set the padded length of their batch): padding waste is
what packing removes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# A ~3.4M-parameter model: big enough that matmuls, not Python overhead, dominate a step on CPU.
MODEL_SIZE = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 1024,
              "max_position_embeddings": 1024, "vocab_size": 512}
# The hyperparameters both sides use (ftplan: forced with --set; plain: TrainingArguments).
HPARAMS = {"lr": 1e-3, "warmup_ratio": 0.05, "weight_decay": 0.0, "max_grad_norm": 1.0, "micro_batch": 8,
           "epochs": 1, "seed": 42, "scheduler": "cosine"}
VAL_SPLIT = 0.1  # ftplan holds out 10% for validation; the plain script trains on the same 90%


# ----------------------------------------------------------------------------------------------- data

def make_rows(n: int, seed: int = 0) -> list[dict]:
    """'List the N days after DATE' -> N ISO dates; N log-uniform in 1..40 (long-tailed lengths)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        start = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(365 * 100))
        days = max(1, int(math.exp(rng.uniform(0, math.log(41)))))
        answer = ", ".join((start + dt.timedelta(days=i + 1)).isoformat() for i in range(days))
        rows.append({"messages": [
            {"role": "user", "content": f"List the {days} days after {start.isoformat()}."},
            {"role": "assistant", "content": answer},
        ]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------- the plain script

def plain_main(model_dir: str, data: str, seq_len: str, out: str) -> None:
    """The script a typical user writes with transformers' Trainer (run in its own process)."""
    import torch
    from datasets import load_dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ds = load_dataset("json", data_files=data, split="train")
    ds = ds.select(range(int(len(ds) * (1 - VAL_SPLIT))))

    def tokenize(row):
        text = tok.apply_chat_template(row["messages"], tokenize=False)
        return tok(text, truncation=True, max_length=int(seq_len), add_special_tokens=False)

    ds = ds.map(tokenize, remove_columns=ds.column_names)
    args = TrainingArguments(
        output_dir=out, per_device_train_batch_size=HPARAMS["micro_batch"],
        num_train_epochs=HPARAMS["epochs"], learning_rate=HPARAMS["lr"],
        warmup_steps=HPARAMS["warmup_ratio"],  # transformers 5: a float < 1 is a ratio of the total steps
        lr_scheduler_type=HPARAMS["scheduler"], weight_decay=HPARAMS["weight_decay"],
        max_grad_norm=HPARAMS["max_grad_norm"], seed=HPARAMS["seed"], logging_steps=10, save_strategy="no",
        report_to=[], use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    metrics = trainer.train().metrics
    tokens = sum(len(ids) for ids in ds["input_ids"]) * HPARAMS["epochs"]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = {"train_seconds": metrics["train_runtime"], "tokens": tokens, "steps": trainer.state.global_step,
              "final_loss": losses[-1] if losses else None}
    Path(out, "plain_result.json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------- runners

_RSS_WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)\n"
    "sys.exit(rc)\n"
)


def run_measured(cmd: list[str], log: Path, env: dict) -> tuple[float, float]:
    """Run ``cmd`` in a fresh wrapper process; returns (wall seconds, peak RSS GiB of the command)."""
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *cmd], stdout=subprocess.PIPE,
                              stderr=fh, text=True, env=env, cwd=REPO, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed (exit {proc.returncode}); log: {log}")
    kib = next(int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("PEAK_RSS_KIB"))
    return wall, kib / 2**20


def plan_overrides(micro_batch: int = HPARAMS["micro_batch"]) -> list[str]:
    sets = {
        "strategy.method": "full",
        "strategy.precision": "fp32",
        "training.lr": HPARAMS["lr"],
        "training.warmup_ratio": HPARAMS["warmup_ratio"],
        "training.weight_decay": HPARAMS["weight_decay"],
        "training.max_grad_norm": HPARAMS["max_grad_norm"],
        "training.micro_batch": micro_batch,
        "training.grad_accum": 1,
        "training.epochs": HPARAMS["epochs"],
        "training.lr_scheduler": HPARAMS["scheduler"],
        "training.seed": HPARAMS["seed"],
        "data.val_split": VAL_SPLIT,
        # Measure training only: no evaluation or checkpoint inside the epoch, no base-model pass.
        "evaluation.eval_steps": 100000,
        "checkpointing.save_steps": 100000,
        "evaluation.compare_base": "false",
        "evaluation.metric": "loss",
        "evaluation.max_eval_samples": 16,
    }
    out = []
    for key, value in sets.items():
        out += ["--set", f"{key}={value}"]
    return out


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def run_ftplan(plan_dir: Path, log: Path, env: dict) -> dict:
    shutil.rmtree(plan_dir / "output", ignore_errors=True)  # a fresh run, not a resume
    wall, rss = run_measured([sys.executable, "-m", "executor", "run", str(plan_dir)], log, env)
    s = json.loads((plan_dir / "output" / "run_summary.json").read_text())
    return {"tokens": s["tokens_seen"], "train_seconds": s["train_seconds"],
            "tokens_per_second": s["tokens_seen"] / s["train_seconds"], "steps": s["global_step"],
            "peak_rss_gb": rss, "wall_seconds": wall, "final_loss": s["final_train_loss"],
            "estimate_vs_measured": s.get("comparisons", [])}


def run_plain(model: Path, data: Path, seq_len: int, out: Path, log: Path, env: dict) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    wall, rss = run_measured([sys.executable, str(Path(__file__).resolve()), "--plain", str(model), str(data),
                              str(seq_len), str(out)], log, env)
    p = json.loads((out / "plain_result.json").read_text())
    return {**p, "tokens_per_second": p["tokens"] / p["train_seconds"], "peak_rss_gb": rss, "wall_seconds": wall}


def run_benchmark(rows: int, work: Path, repeat: int) -> dict:
    from examples.tiny_model import build_tiny_model
    from planner.plan import load_plan

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    data_rows = make_rows(rows)
    data = write_jsonl(work / "train.jsonl", data_rows)
    texts = [m["content"] for r in data_rows for m in r["messages"]]
    model = build_tiny_model(work / "model", corpus_texts=texts, **MODEL_SIZE)

    plan_dir = work / "plan"

    def make_plan(micro_batch: int):
        planned = subprocess.run(
            [sys.executable, "-m", "ftplan.cli", "plan", "--model", str(model), "--data", str(data), "--task",
             "sft", "--out", str(plan_dir), "--force", *plan_overrides(micro_batch)],
            capture_output=True, text=True, env=env, cwd=REPO, check=False)
        if planned.returncode != 0:
            raise SystemExit(f"ftplan plan failed: {planned.stdout}{planned.stderr}")
        return load_plan(plan_dir / "plan.yaml")

    plan = make_plan(HPARAMS["micro_batch"])
    if plan.training.packing:
        # Same hyperparameters means the same examples per optimizer step: with packing a micro-batch
        # row holds several examples, so 8 examples ~ 8 x mean tokens / seq_len packed rows (what the
        # planner's own batch rule does). Forcing 8 packed rows would put ~3x more examples in each
        # step: fewer updates and larger activations than the plain script.
        from planner.dataset import profile_data

        mean = profile_data(str(data), tokenizer_path=str(model), task="sft").tokens_mean
        plan = make_plan(max(1, round(HPARAMS["micro_batch"] * mean / plan.training.seq_len)))

    # Other jobs on a shared machine change the speed by 3x from minute to minute (measured here), so
    # the two sides alternate (ftplan first on even rounds, plain first on odd ones) and each round's
    # ratio compares two neighbouring runs; the medians are reported.
    rounds = []
    for i in range(repeat):
        sides = {}
        order = ("ftplan", "plain") if i % 2 == 0 else ("plain", "ftplan")
        for side in order:
            if side == "ftplan":
                sides[side] = run_ftplan(plan_dir, work / f"ftplan{i}.log", env)
            else:
                sides[side] = run_plain(model, data, plan.training.seq_len, work / "plain", work / f"plain{i}.log", env)
        sides["speedup"] = sides["ftplan"]["tokens_per_second"] / sides["plain"]["tokens_per_second"]
        sides["rss_ratio"] = sides["ftplan"]["peak_rss_gb"] / sides["plain"]["peak_rss_gb"]
        sides["load_avg_1m"] = os.getloadavg()[0]
        rounds.append(sides)
        (work / "rounds.json").write_text(json.dumps(rounds, indent=2))  # kept if a later round fails
        print(f"round {i + 1}/{repeat}: ftplan {sides['ftplan']['tokens_per_second']:.0f} tok/s, plain "
              f"{sides['plain']['tokens_per_second']:.0f} tok/s, x{sides['speedup']:.2f}", flush=True)

    layouts = layout_probe(str(model), str(data), plan.training.seq_len, plan.training.micro_batch)

    def med(side: str, key: str) -> float:
        return _median([r[side][key] for r in rounds])

    summary = {side: {k: med(side, k) for k in ("tokens", "train_seconds", "tokens_per_second", "steps",
                                                  "peak_rss_gb", "wall_seconds", "final_loss")}
               for side in ("ftplan", "plain")}
    summary["ftplan"]["estimate_vs_measured"] = rounds[-1]["ftplan"]["estimate_vs_measured"]
    return {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "rows": rows, "model_params": model_param_count(model), "seq_len": plan.training.seq_len,
        "packing": plan.training.packing, "micro_batch": plan.training.micro_batch, "repeat": repeat,
        **summary,
        "speedup": _median([r["speedup"] for r in rounds]),
        "speedups": [r["speedup"] for r in rounds],
        "rss_ratio": _median([r["rss_ratio"] for r in rounds]),
        "load_avg_1m": [r["load_avg_1m"] for r in rounds],
        "layouts_tokens_per_second": layouts,
    }


def model_param_count(model: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(model / "model.safetensors"), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


# ------------------------------------------------------------------------- batch layouts, raw model

def layout_probe(model_dir: str, data: str, seq_len: int, micro_batch: int, rounds: int = 6) -> dict:
    """Real tokens/s of one forward+backward per batch layout, interleaved (same model, same CPU load).

    - ``padded``: ``micro_batch`` random examples padded to the longest (the plain script's batches);
    - ``packed_flat``: best-fit bins of ``seq_len`` concatenated into ONE row of micro_batch x seq_len
      tokens with restarting position_ids (what TRL's padding-free collator feeds the model);
    - ``packed_rows``: the same bins kept as ``micro_batch`` rows of ``seq_len``, position_ids, no mask.
    Both packed layouts are attention-isolated per example (transformers' masking_utils derives a
    block-diagonal mask from the position_ids); with SDPA's dense kernels (no varlen flash-attention),
    attention costs grow with the row length squared, which is what the flat layout pays for.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    model.train()
    rows = [json.loads(line) for line in Path(data).read_text().splitlines()]
    lens = [min(seq_len, len(tok(tok.apply_chat_template(r["messages"], tokenize=False))["input_ids"]))
            for r in rows]
    rng, vocab = random.Random(0), model.config.vocab_size

    def bins() -> list[list[int]]:
        out: list[list[int]] = []
        for n in sorted(rng.sample(lens, 6 * micro_batch), reverse=True):  # best-fit decreasing
            fits = [b for b in out if sum(b) + n <= seq_len]
            if fits:
                min(fits, key=lambda b: seq_len - sum(b) - n).append(n)
            else:
                out.append([n])
        return out[:micro_batch]

    def padded():
        lengths = rng.sample(lens, micro_batch)
        mask = torch.zeros(micro_batch, max(lengths), dtype=torch.long)
        for i, n in enumerate(lengths):
            mask[i, :n] = 1
        return {"input_ids": torch.randint(0, vocab, mask.shape), "attention_mask": mask}, sum(lengths)

    def packed(flat: bool):
        bs = bins()
        pos = [torch.cat([torch.arange(n) for n in b]) for b in bs]
        real = sum(map(sum, bs))
        if flat:
            p = torch.cat(pos)[None]
        else:
            width = max(len(x) for x in pos)
            p = torch.stack([torch.cat([x, torch.arange(width - len(x))]) for x in pos])
        return {"input_ids": torch.randint(0, vocab, p.shape), "position_ids": p}, real

    def step(batch) -> float:
        t0 = time.perf_counter()
        model(**batch, labels=batch["input_ids"], use_cache=False).loss.backward()
        return time.perf_counter() - t0

    makers = {"padded": padded, "packed_flat": lambda: packed(True), "packed_rows": lambda: packed(False)}
    step(padded()[0])  # warm-up
    totals = {name: [0.0, 0] for name in makers}
    for _ in range(rounds):
        for name, make in makers.items():
            batch, real = make()
            totals[name][0] += step(batch)
            totals[name][1] += real
    return {name: tokens / seconds for name, (seconds, tokens) in totals.items()}


def markdown(r: dict) -> str:
    f, p = r["ftplan"], r["plain"]
    lay = r["layouts_tokens_per_second"]
    lines = [
        f"Medians of {r['repeat']} alternating rounds:",
        "",
        "| side | steps | tokens | train s | tokens/s | peak RSS GiB | final loss |",
        "|---|---|---|---|---|---|---|",
        (f"| plain Trainer (pad to longest, no packing) | {p['steps']:.0f} | {p['tokens']:,.0f} | "
         f"{p['train_seconds']:.1f} | {p['tokens_per_second']:,.0f} | {p['peak_rss_gb']:.2f} | "
         f"{p['final_loss']:.3f} |"),
        (f"| ftplan run (packing={r['packing']}) | {f['steps']:.0f} | {f['tokens']:,.0f} | {f['train_seconds']:.1f} | "
         f"{f['tokens_per_second']:,.0f} | {f['peak_rss_gb']:.2f} | {f['final_loss']:.3f} |"),
        "",
        (f"speed-up (median of per-round ratios) {r['speedup']:.2f}x, rounds: "
         f"{', '.join(f'{x:.2f}' for x in r['speedups'])}; peak RSS ratio {r['rss_ratio']:.2f} (ftplan / plain); "
         f"{r['model_params']:,} parameters, seq_len {r['seq_len']}, micro-batch {r['micro_batch']}, "
         f"{r['machine']['cpu_count']} CPUs, 1-min load average after each round "
         f"{', '.join(f'{x:.1f}' for x in r['load_avg_1m'])}."),
        "",
        (f"Raw forward+backward, real tokens/s by batch layout (interleaved): padded {lay['padded']:,.0f}, "
         f"packed into one flat row {lay['packed_flat']:,.0f}, packed rows {lay['packed_rows']:,.0f}."),
        "",
        "| ftplan: estimate vs measured (last round) | unit | estimate | measured | error |",
        "|---|---|---|---|---|",
    ]
    for c in f["estimate_vs_measured"]:
        err = c.get("error_pct")
        lines.append(f"| {c['quantity']} | {c['unit']} | {c['estimate']:.4g} | {c['measured']:.4g} | "
                     f"{'n/a' if err is None else f'{err:+.0f}%'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--plain":
        plain_main(*argv[1:5])
        return 0
    parser = argparse.ArgumentParser(description="ftplan run vs a plain Trainer script: tokens/s and memory")
    parser.add_argument("--rows", type=int, default=600, help="examples in the generated dataset")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--repeat", type=int, default=3, help="alternating rounds of both sides")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="ftplan-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    result = run_benchmark(args.rows, work, args.repeat)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"\nwork folder: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

