"""ftplan executor: trains a plan folder with the HF stack (transformers/TRL, peft, bitsandbytes, DeepSpeed).

Public API (imported lazily, so ``import executor`` stays cheap)::

    from executor import run_plan, RunSummary
    summary = run_plan("plans/qwen")          # resumes automatically; see executor/run.py

Builders, usable on their own: ``build_tokenizer(plan)``, ``build_model(plan, tokenizer)``,
``build_datasets(plan, tokenizer)``, ``build_training_args(plan, paths, has_val)``,
``build_trainer(plan, model, tokenizer, data, args, paths)``.
"""

from __future__ import annotations

_EXPORTS = {
    "run_plan": "executor.run",
    "TrainingDiverged": "executor.run",
    "RunSummary": "executor.report",
    "RunPaths": "executor.paths",
    "build_tokenizer": "executor.tokenizer",
    "build_model": "executor.model",
    "build_datasets": "executor.data",
    "build_training_args": "executor.trainer",
    "build_trainer": "executor.trainer",
    "load_trained": "executor.inference",
}

__all__ = [  # noqa: RUF022 - same order as _EXPORTS
    "run_plan",
    "TrainingDiverged",
    "RunSummary",
    "RunPaths",
    "build_tokenizer",
    "build_model",
    "build_datasets",
    "build_training_args",
    "build_trainer",
    "load_trained",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'executor' has no attribute {name!r}")
