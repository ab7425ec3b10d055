"""The README demo: teach a tiny model a task on a laptop CPU, with no download, through `ftplan go`.

    bash examples/demo.sh            # sets up .venv first, then runs this file
    python examples/demo.py --out demo_out

1. Build a small Llama-style model locally: a byte-level BPE tokenizer trained on the sample data and a
   2-layer, 128-wide transformer with random weights (``examples.tiny_model``), saved with
   ``save_pretrained`` like any Hub checkpoint.
2. ``ftplan go`` plans the fine-tuning of that model on ``examples/data/dates.jsonl`` (ISO date <-> date in
   words), prints the plan, and runs it: base model evaluated, trained, tuned model evaluated.
3. Print the report's headline numbers from ``run_summary.json``.

The ``--set`` overrides are the demo's only tuning, each explained in DEMO_OVERRIDES. Re-running
replaces the output folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from a checkout

DATA = REPO / "examples" / "data" / "dates.jsonl"
# A ~0.6M-parameter model: learns the task to ~100% held-out exact match in ~150 optimizer steps of
# 32 examples (measured on a 2-core CPU, see examples/README.md).
MODEL_SIZE = {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 512,
              "max_position_embeddings": 256, "vocab_size": 512}

# Why each override: the planner's defaults assume a pretrained model; this one starts from random
# weights, so it needs every weight trained and a from-scratch learning rate.
DEMO_OVERRIDES: dict[str, str] = {
    # Random init: there is no pretrained knowledge for an adapter to steer, so train all weights.
    "strategy.method": "full",
    # From-scratch small transformers train at ~1e-3..5e-3 with AdamW (nanoGPT's shakespeare-char
    # config uses 1e-3 for a 10M model; smaller models tolerate more). 3e-3 measured best here.
    "training.lr": "3e-3",
    "training.warmup_ratio": "0.05",
    "training.weight_decay": "0.0",
    # 32 examples per step: ~1,200 tokens, a good CPU matmul size for a 128-wide model.
    "training.micro_batch": "32",
    "training.grad_accum": "1",
    "training.epochs": "3",
    # Evaluate and checkpoint once per epoch (62 steps): frequent evaluation is what costs time on CPU.
    "evaluation.eval_steps": "62",
    "checkpointing.save_steps": "62",
    "evaluation.max_eval_samples": "100",
}


def build_model(out: Path, seed: int = 0) -> Path:
    from examples.tiny_model import build_tiny_model, iter_corpus_file

    return build_tiny_model(out, corpus_texts=list(iter_corpus_file(DATA)), seed=seed, **MODEL_SIZE)


def go_command(model: Path, plan_dir: Path, overrides: dict[str, str]) -> list[str]:
    """The `ftplan go` command line (the installed console script when there is one)."""
    ftplan = Path(sys.executable).parent / "ftplan"
    head = [str(ftplan)] if ftplan.is_file() else [sys.executable, "-m", "ftplan.cli"]
    cmd = head + ["go", "--model", str(model), "--data", str(DATA), "--task", "sft", "--yes",
                  "--out", str(plan_dir)]
    for key, value in overrides.items():
        cmd += ["--set", f"{key}={value}"]
    return cmd


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def headline(summary: dict) -> str:
    """The numbers a reader wants first, from run_summary.json."""
    base, tuned = summary.get("base") or {}, summary.get("tuned") or {}
    comps = {c["quantity"]: c for c in summary.get("comparisons", [])}
    mem = next((c for q, c in comps.items() if "memory" in q), None)
    step_time = comps.get("training time")
    lines = [
        "",
        "=== ftplan demo: results ===",
        (f"held-out exact match : {_pct(base.get('exact_match'))} (base) -> "
         f"{_pct(tuned.get('exact_match'))} (tuned)   [{tuned.get('samples', '?')} unseen dates]"),
        f"validation loss      : {_num(base.get('loss'))} -> {_num(tuned.get('loss'))}",
        f"final training loss  : {_num(summary.get('final_train_loss'), '.4f')}",
    ]
    if mem:
        lines.append(f"peak memory          : estimated {mem['estimate']:.2f} {mem['unit']}, measured "
                     f"{mem['measured']:.2f} {mem['unit']} ({mem['error_pct']:+.0f}%)")
    if step_time:
        lines.append(f"training time        : estimated {step_time['estimate']:.0f} s, measured "
                     f"{step_time['measured']:.0f} s")
    lines += [
        (f"throughput           : {summary.get('tokens_per_second', 0):,.0f} tokens/s "
         f"({summary.get('global_step')} optimizer steps, {summary.get('tokens_seen', 0):,} tokens)"),
        f"wall time            : {summary.get('wall_seconds', 0):.0f} s",
    ]
    examples = tuned.get("examples") or []
    for ex in examples[:3]:
        lines.append(f"  {ex['prompt']!r} -> {ex['prediction']!r} (reference {ex['reference']!r})")
    return "\n".join(lines)


def run_demo(out: Path, overrides: dict[str, str] | None = None, seed: int = 0) -> dict:
    """Build the model, run `ftplan go`, return run_summary.json. Replaces ``out``."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    print(f"[demo] building a tiny random-init model + tokenizer trained on {DATA.name} ...", flush=True)
    model = build_model(out / "model", seed=seed)
    print(f"[demo] model saved to {model} ({time.perf_counter() - t0:.0f} s)", flush=True)
    cmd = go_command(model, out / "plan", {**DEMO_OVERRIDES, **(overrides or {})})
    print("[demo] $ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=REPO, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.returncode)
    summary_path = out / "plan" / "output" / "run_summary.json"
    return json.loads(summary_path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "demo_out", help="replaced on every run")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="extra plan overrides, e.g. --set training.epochs=1")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.extra)
    summary = run_demo(args.out.resolve(), extra)
    print(headline(summary))
    print(f"\nplan folder: {args.out / 'plan'} (REPORT.md, plan.yaml, output/)")
    print(f"try it: ftplan generate {args.out / 'plan'} --prompt 'Write 2031-07-04 as a date in words.'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
