"""Optimisation decisions: learning rate, warmup, schedule, weight decay, clipping, epochs,
layer-wise LR decay. Ranges from the seeds; per-size learning rates from the QLoRA paper."""

from __future__ import annotations

import math

from planner.rules.common import QLORA, SEED_GUIDE, SEED_HPARAMS, SEED_STRATEGIES, Choice, clamp, params_text
from planner.vocab import ADAPTER_METHODS

# (max params, lr) for full fine-tuning: seeds/001 and /004 give 1e-5..5e-5; smaller models take
# the top of the range, the largest the bottom (larger models are more sensitive to large steps).
FULL_LR = ((1.5e9, 5e-5), (15e9, 2e-5), (math.inf, 1e-5))
# LoRA/QLoRA: seeds/001 1e-4..3e-4; QLoRA paper Table 9: 2e-4 for 7B/13B, 1e-4 for 33B/65B.
LORA_LR = ((20e9, 2e-4), (math.inf, 1e-4))
# DPO: much smaller steps (Zephyr, Tunstall et al. 2023: 5e-7 full; LoRA DPO commonly 5e-6).
DPO_LR = {"full": 5e-7, "peft": 5e-6}
# Prompt/prefix tuning: soft prompts train from scratch; Lester et al. 2021 used 0.3 with Adafactor,
# PEFT's prompt-tuning examples use 3e-2 with AdamW.
PEFT_SOFT_LR = 3e-2

# Epochs by dataset size (seeds/002: one epoch for large instruction sets; seeds/001: 2-3 usually
# enough; small data gets more passes with early stopping on the validation loss).
EPOCHS_BY_ROWS = ((1_000, 5.0), (10_000, 3.0), (50_000, 2.0), (math.inf, 1.0))
WARMUP_FRACTION = 0.05  # seeds/001 "Warmup: 5-10% of steps"
WARMUP_MIN_STEPS, WARMUP_MAX_STEPS = 100, 500  # seeds/004 "Warmup: 100-500 steps"
COSINE_MIN_STEPS = 500  # seeds/001: cosine "for longer fine-tuning (many epochs)"; shorter: constant
COSINE_MIN_EPOCHS = 3


def _by_size(table, params: int) -> float:
    return next(v for limit, v in table if params <= limit)


def lr_rule(method: str, task: str, total_params: int) -> Choice[float]:
    size = params_text(total_params)
    if task == "preference":
        key = "full" if method == "full" else "peft"
        return Choice(
            DPO_LR[key],
            f"DPO on a {size} model ({method}): small steps keep the policy near the reference",
            "Tunstall et al. 2023 (Zephyr) / TRL DPO examples",
        )
    if method in ("prompt", "prefix"):
        return Choice(
            PEFT_SOFT_LR, "soft prompts train from scratch and need a large lr", "PEFT prompt-tuning examples"
        )
    if method == "full":
        lr = _by_size(FULL_LR, total_params)
        return Choice(
            lr,
            f"full fine-tuning of a {size} model: 1e-5..5e-5, lower for larger models",
            SEED_STRATEGIES + "; " + SEED_HPARAMS,
        )
    lr = _by_size(LORA_LR, total_params)
    return Choice(
        lr,
        f"{method} on a {size} model: 1e-4..3e-4 (2e-4 up to 13B, 1e-4 for 33B+ per QLoRA)",
        SEED_STRATEGIES + "; " + QLORA + " Table 9",
    )


def lr_range(method: str, task: str) -> tuple[float, float]:
    """The usual range of the method (used to warn about --set overrides)."""
    if task == "preference":
        return (1e-7, 1e-5)
    if method == "full":
        return (1e-5, 5e-5)
    if method in ("prompt", "prefix"):
        return (1e-3, 3e-1)
    return (1e-4, 3e-4) if method in ADAPTER_METHODS else (1e-5, 1e-2)


def epochs_rule(task: str, train_rows: int, goal: str) -> Choice[float]:
    if task in ("continued-pretraining", "preference"):
        why = (
            "a corpus is seen once" if task == "continued-pretraining" else "DPO overfits preferences quickly"
        )
        return Choice(1.0, f"{task}: one epoch ({why})", SEED_HPARAMS)
    epochs = next(e for limit, e in EPOCHS_BY_ROWS if train_rows < limit)
    reason = f"{train_rows} training examples: {epochs:g} epoch(s)"
    if goal == "cost" and epochs > 1:
        epochs -= 1
        reason += " (one fewer for goal=cost)"
    if epochs >= 5:
        reason += "; small data gets more passes, stopped early when validation loss stalls"
    return Choice(epochs, reason, SEED_GUIDE + " (single epoch for instruction data); " + SEED_STRATEGIES)


def warmup_rule(total_steps: int) -> Choice[float]:
    """5% of steps, but at least 100 (or 10% of a short run) and at most 500."""
    lo = min(WARMUP_MIN_STEPS, 0.1 * total_steps)
    steps = clamp(WARMUP_FRACTION * total_steps, lo, WARMUP_MAX_STEPS)
    ratio = round(steps / max(total_steps, 1), 4)
    return Choice(
        ratio,
        f"{steps:.0f} warmup steps of {total_steps} ({ratio:.1%}): 5-10% of steps, 100-500 steps",
        SEED_STRATEGIES + "; " + SEED_HPARAMS,
    )


def schedule_rule(total_steps: int, epochs: float) -> Choice[str]:
    if total_steps >= COSINE_MIN_STEPS or epochs >= COSINE_MIN_EPOCHS:
        return Choice(
            "cosine",
            f"a longer run ({total_steps} steps, {epochs:g} epochs): cosine decay",
            SEED_STRATEGIES + " 'Cosine decay: for longer fine-tuning'",
        )
    return Choice(
        "constant_with_warmup",
        f"a short run ({total_steps} steps): constant lr after warmup",
        SEED_STRATEGIES + " 'Constant with warmup: most common for fine-tuning'",
    )


def weight_decay_rule(method: str, train_rows: int) -> Choice[float]:
    if method == "full":
        wd = 0.1 if train_rows < 10_000 else 0.01
        return Choice(
            wd,
            "full fine-tuning: 0.01 (0.1 below 10K examples against overfitting)",
            SEED_STRATEGIES + "; " + SEED_HPARAMS + " 'Weight Decay: 0.01-0.1'",
        )
    return Choice(0.0, f"{method}: adapters start at zero and are few; no weight decay", QLORA + " Table 9")


def clipping_rule() -> Choice[float]:
    return Choice(1.0, "clip the gradient norm at 1.0", SEED_HPARAMS + " 'Gradient Clipping: 1.0'")


def layerwise_rule(method: str) -> Choice[float | None]:
    return Choice(
        None,
        "off (opt in with --set training.layerwise_lr_decay=0.9 for full fine-tuning: lower "
        "lr for early, general layers)",
        SEED_STRATEGIES + " 'Layer-wise LR decay'",
    )
