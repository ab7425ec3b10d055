"""One data path, measured: planned vs trained tokens, and profiling speed on a 1 GB file.

    python benchmarks/data_path.py tokens              # planned vs trained tokens, shipped examples
    python benchmarks/data_path.py speed --gb 1.0      # profile a generated 1 GB chat file, template check on

``tokens``: for every file in examples/data and two tokenizer styles (byte-level BPE, character-level),
each with a ChatML template that adds a default system prompt (the case that used to train +47% more
tokens than planned), plan with ``plan_and_write`` (the CLI's code), then build the executor's datasets
and count the tokens the trainer receives per epoch; compare with the plan's tokens per epoch
(plan.estimate.tokens / epochs). Rows are the same ones the profile counted; the gap left is the plan using
the mean row length for the random training split.

``speed``: write a chat JSONL file of the requested size, then profile it with a local tokenizer (every
row rendered by the chat template and tokenized exactly) in a fresh process; report rows/s, MB/s and the
peak RSS (ru_maxrss), which must not grow with the file.

Results go to benchmarks/results/data_path_*.json; BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
RESULTS = REPO / "benchmarks" / "results"
EXAMPLES = {
    "alpaca.jsonl": "sft",
    "chat.jsonl": "chat",
    "classification.jsonl": "classification",
    "dates.jsonl": "sft",
    "preference.jsonl": "preference",
    "text.jsonl": "continued-pretraining",
}


def planned_vs_trained(root: Path) -> list[dict]:
    from tokenizer_matrix import build_model_folder

    from executor.data import build_datasets
    from executor.tokenizer import build_tokenizer
    from ftplan.commands.plan import plan_and_write
    from planner.dataset import profile_data
    from planner.plan import load_plan

    rows = []
    for style in ("bytebpe", "char"):
        model = build_model_folder(root, style, "chatml_default_system")
        for name, task in EXAMPLES.items():
            out = root / f"plan-{style}-{name}"
            result, folder = plan_and_write(
                model=str(model), data=str(REPO / "examples" / "data" / name), task=task, gpu=None, gpus=None,
                nodes=1, gpu_memory=None, price=None, goal="balanced", max_hours=None, max_cost=None,
                general_data=None, out_dir=str(out), sets=(), trust_remote_code=False, force=True,
            )  # fmt: skip
            plan = load_plan(folder)
            tok = build_tokenizer(plan)
            bundle = build_datasets(plan, tok)
            if "input_ids" in bundle.train.column_names:
                trained = sum(len(ids) for ids in bundle.train["input_ids"])
            else:  # DPO: TRL tokenizes prompt+chosen and prompt+rejected with the same template
                trained = 0
                for r in bundle.train:
                    for k in ("chosen", "rejected"):
                        trained += len(tok.apply_chat_template(r["prompt"] + r[k], tokenize=True)["input_ids"])
            planned = plan.estimate.tokens / plan.training.epochs if plan.training.max_steps <= 0 else None
            # The same rows counted without the tokenizer (heuristic + the template family's overhead table):
            # what a plan made without a local tokenizer assumes.
            heur = profile_data(str(REPO / "examples" / "data" / name), task=task, vocab_size=len(tok),
                                model_type="qwen2")  # fmt: skip
            seqs = 2 if task == "preference" else 1
            heuristic = heur.tokens_mean * seqs * len(bundle.train)
            rows.append({
                "tokenizer": style, "file": name, "task": task, "rows_trained": len(bundle.train),
                "planned_tokens_per_epoch": round(planned) if planned else None, "trained_tokens_per_epoch": trained,
                "error_pct": round(100 * (planned - trained) / trained, 2) if planned else None,
                "heuristic_tokens_per_epoch": round(heuristic),
                "heuristic_error_pct": round(100 * (heuristic - trained) / trained, 1),
                "profile_tokens_mean": round(result.profile.tokens_mean, 2),
            })  # fmt: skip
            print(json.dumps(rows[-1]))
    return rows


def _write_chat_file(path: Path, target_bytes: int) -> int:
    rng = random.Random(0)
    words = "the of and to in is it that for on with as was by at be this from have an are or".split()
    n = 0
    with path.open("w", encoding="utf-8") as f:
        while f.tell() < target_bytes:
            q = " ".join(rng.choice(words) for _ in range(rng.randint(20, 120)))
            a = " ".join(rng.choice(words) for _ in range(rng.randint(20, 120)))
            msgs = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": q},
                    {"role": "assistant", "content": a}]  # fmt: skip
            f.write(json.dumps({"messages": msgs}) + "\n")
            n += 1
    return n


SPEED_CHILD = """
import json, resource, sys, time
from planner.dataset import profile_data
t0 = time.perf_counter()
p = profile_data(sys.argv[1], tokenizer_path=sys.argv[2], task="chat")
dt = time.perf_counter() - t0
print(json.dumps({"rows": p.rows, "valid": p.valid_rows, "seconds": dt, "tokens": p.total_tokens,
                  "template": p.template, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def speed(root: Path, gb: float) -> dict:
    from tokenizer_matrix import build_tokenizer_folder

    tok = build_tokenizer_folder(root, "bytebpe", "chatml")
    data = root / "big_chat.jsonl"
    rows = _write_chat_file(data, int(gb * 1e9))
    size = data.stat().st_size
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", SPEED_CHILD, str(data), str(tok)], capture_output=True, text=True,
                         env=env, check=True)  # fmt: skip
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(file_mb=round(size / 1e6, 1), rows_written=rows, rows_per_s=round(res["rows"] / res["seconds"]),
               mb_per_s=round(size / 1e6 / res["seconds"], 2))  # fmt: skip
    print(json.dumps(res))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["tokens", "speed"])
    ap.add_argument("--gb", type=float, default=1.0)
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if args.what == "tokens":
            res = {"rows": planned_vs_trained(Path(tmp))}
        else:
            res = speed(Path(tmp), args.gb)
    res["when"] = time.strftime("%Y-%m-%d")
    (RESULTS / f"data_path_{args.what}.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
