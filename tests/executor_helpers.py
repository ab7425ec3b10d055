"""Fixtures for the executor tests: a tiny model (built once), small datasets, plan folders."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

from planner.plan import (
    CheckpointSection,
    DataSection,
    EvaluationSection,
    Fallback,
    HardwareSection,
    LoraSection,
    ModelSection,
    Plan,
    StrategySection,
    TrainingSection,
    save_plan,
)

_MODEL_CACHE: dict[str, Path] = {}


def arith_rows(n: int, seed: int = 0) -> list[dict]:
    """alpaca rows 'a+b' -> sum: learnable by a tiny model."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append({"instruction": f"{a}+{b}", "input": "", "output": str(a + b)})
    return rows


def corpus_for(rows: list[dict]) -> list[str]:
    texts = []
    for r in rows:
        texts.extend(str(v) for v in r.values() if isinstance(v, str))
    return texts + ["user assistant system the answer is"]


def tiny_model(root: Path, arch: str = "llama") -> Path:
    """A 2-layer, 64-dim random model + BPE tokenizer with a chat template (built once per process)."""
    key = f"{root}:{arch}"
    if key not in _MODEL_CACHE:
        from examples.tiny_model import build_tiny_model

        corpus = (
            corpus_for(arith_rows(200))
            + [
                "positive negative good bad movie great awful",
                "the cat sat on the mat",
            ]
            * 5
        )
        _MODEL_CACHE[key] = build_tiny_model(
            root / f"tiny-{arch}",
            arch=arch,
            corpus_texts=corpus,
            vocab_size=300,
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            intermediate_size=128,
            max_position_embeddings=256,
        )
    return _MODEL_CACHE[key]


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


DATASETS = {
    "alpaca": lambda n: arith_rows(n),
    "chat": lambda n: [
        {
            "messages": [
                {"role": "user", "content": r["instruction"]},
                {"role": "assistant", "content": r["output"]},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": r["output"]},
            ]
        }
        for r in arith_rows(n)
    ],
    "text": lambda n: [
        {"text": f"the cat sat on the mat {i} times and {r['instruction']} is {r['output']}"}
        for i, r in enumerate(arith_rows(n))
    ],
    "classification": lambda n: [
        {
            "text": f"{'good great' if i % 2 else 'bad awful'} movie {i}",
            "label": "positive" if i % 2 else "negative",
        }
        for i in range(n)
    ],
    "preference": lambda n: [
        {"prompt": r["instruction"], "chosen": r["output"], "rejected": "0"} for r in arith_rows(n)
    ],
}


def make_plan(
    tmp: Path,
    *,
    task: str = "sft",
    fmt: str = "alpaca",
    method: str = "lora",
    rows: int = 48,
    model: Path | None = None,
    **sections,
) -> Plan:
    """A small runnable plan; ``sections`` override fields, e.g. training={"max_steps": 4}."""
    model = model or tiny_model(tmp.parent if tmp.parent.name else tmp)
    data_path = write_jsonl(tmp / "data" / f"{fmt}.jsonl", DATASETS[fmt](rows))
    plan = Plan(
        model=ModelSection(name_or_path=str(model), source="local"),
        data=DataSection(path=str(data_path), format=fmt, rows=rows, valid_rows=rows, val_split=0.125),
        task=task,
        hardware=HardwareSection(gpu=None),
        strategy=StrategySection(method=method, precision="fp32", optimizer="adamw"),
        lora=LoraSection(r=4, alpha=8, dropout=0.0) if method in ("lora", "dora", "qlora") else None,
        training=TrainingSection(
            seq_len=64,
            micro_batch=4,
            grad_accum=1,
            epochs=1.0,
            max_steps=6,
            lr=1e-2,
            warmup_ratio=0.0,
            lr_scheduler="constant_with_warmup",
            seed=0,
        ),
        evaluation=EvaluationSection(
            eval_steps=3, early_stopping_patience=None, metric="exact_match", max_eval_samples=8
        ),
        checkpointing=CheckpointSection(save_steps=3, save_total_limit=2),
    )
    for name, values in sections.items():
        plan = (
            replace(plan, **{name: replace(getattr(plan, name), **values)})
            if isinstance(values, dict)
            else replace(plan, **{name: values})
        )
    return plan


def plan_folder(tmp: Path, plan: Plan, name: str = "plan") -> Path:
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    save_plan(plan, folder / "plan.yaml")
    return folder


__all__ = ["Fallback", "arith_rows", "make_plan", "plan_folder", "tiny_model", "write_jsonl"]
