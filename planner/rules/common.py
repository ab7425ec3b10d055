"""Shared vocabulary of the rule modules: a rule returns a :class:`Choice` (value, reason, source).

Every rule is a small pure function over plain numbers and the typed inputs; the thresholds live in
module-level tables next to the rule that reads them, each with the source it comes from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Short names of the practice sources cited by the rules (the files in ../shared/seeds and papers).
SEED_STRATEGIES = "seeds/001 (Fine-Tuning Strategies & Best Practices)"
SEED_GUIDE = "seeds/002 (Fine-Tuning guide, §1 and §6)"
SEED_MATRIX = "seeds/003 (Fine-Tuning vs RAG decision matrix, best practices)"
SEED_HPARAMS = "seeds/004 (Fine-tuning hyperparameters, pitfalls)"
SEED_CHAPTER = "seeds/000 (Ch. 3.6 engineering best practices)"
QLORA = "Dettmers et al. 2023, QLoRA (arXiv:2305.14314)"
LORA = "Hu et al. 2021, LoRA (arXiv:2106.09685)"
ZERO = "Rajbhandari et al. 2020, ZeRO (arXiv:1910.02054)"
CKPT = "Chen et al. 2016, gradient checkpointing (arXiv:1604.06174): one extra forward pass"
MIXED = "Micikevicius et al. 2018, mixed precision training (arXiv:1710.03740)"
ESTIMATOR = "planner.estimate (memory/time model)"


@dataclass(frozen=True)
class Choice(Generic[T]):
    """One decision: the value, why, and the practice source behind the rule."""

    value: T
    reason: str
    source: str = ""


def pow2_floor(x: float) -> int:
    """Largest power of two <= x (1 for x < 2)."""
    n = 1
    while n * 2 <= x:
        n *= 2
    return n


def clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def hours_text(h: float) -> str:
    """Hours as the unit a reader wants: seconds for tiny CPU runs, minutes under an hour, else hours."""
    if h is None or not math.isfinite(h):
        return "n/a"
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def params_text(n: int) -> str:
    """Parameter counts as practitioners say them: 0.58M, 494M, 8.03B."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.3g}M"


def human_count(n: float) -> str:
    """12_345_678 -> '12.3M'."""
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:g}"
