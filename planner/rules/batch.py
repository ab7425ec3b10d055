"""Batch decisions: effective batch, micro-batch (largest that fits with margin), gradient
accumulation, gradient checkpointing."""

from __future__ import annotations

import math
from collections.abc import Callable

from planner.estimate import largest_fitting
from planner.rules.common import (
    CKPT,
    SEED_CHAPTER,
    SEED_GUIDE,
    SEED_HPARAMS,
    SEED_STRATEGIES,
    Choice,
    clamp,
    pow2_floor,
)

STEPS_PER_EPOCH_TARGET = 100  # at least ~100 optimizer steps per epoch, so warmup/eval have room
# Effective batch (examples per optimizer step): seeds/001 "Batch size: 8-32" (full), seeds/004
# "8-128 examples"; adapters have few parameters and need less averaging: 8-32.
EFFECTIVE_BATCH = {"full": (8, 128), "peft": (8, 32)}
TINY_ROWS_FOR_SMALL_BATCH = 400  # below ~400 examples a batch of 8 leaves < 50 steps per epoch
CPT_TOKENS_PER_STEP = 1 << 19  # ~0.5M tokens per step (GPT-3 small-model batch, Brown et al. 2020 Table 2.1)
MAX_MICRO_BATCH = 64


def effective_batch_rule(
    method: str,
    task: str,
    train_rows: int,
    tokens_mean: float,
    seq_len: int,
    packing: bool,
    total_tokens: int,
) -> Choice[int]:
    """Sequences per optimizer step (examples, or packed sequences when packing)."""
    if task == "continued-pretraining":
        per_step = min(CPT_TOKENS_PER_STEP, max(total_tokens // STEPS_PER_EPOCH_TARGET, seq_len))
        seqs = max(1, pow2_floor(per_step / seq_len))
        return Choice(
            seqs,
            f"{seqs} x {seq_len}-token chunks = {seqs * seq_len} tokens per step (~0.5M, or "
            "less to keep >= 100 steps)",
            "Brown et al. 2020 Table 2.1",
        )
    lo, hi = EFFECTIVE_BATCH["full" if method == "full" else "peft"]
    if train_rows < TINY_ROWS_FOR_SMALL_BATCH:
        lo = 4
    examples = int(clamp(pow2_floor(train_rows / STEPS_PER_EPOCH_TARGET), lo, hi))
    reason = (
        f"{examples} examples per step for {train_rows} examples ({method}: {lo}-{hi}, >= ~100 steps per "
        "epoch when the data allows)"
    )
    if packing:
        seqs = max(1, round(examples * tokens_mean / seq_len))
        return Choice(
            seqs,
            reason + f"; packed: {examples} x {tokens_mean:.0f} tokens = {seqs} sequence(s) of {seq_len}",
            SEED_STRATEGIES + "; " + SEED_HPARAMS,
        )
    return Choice(examples, reason, SEED_STRATEGIES + "; " + SEED_HPARAMS)


def fit_micro_batch(fits: Callable[[int], bool], upper: int) -> int:
    """Largest micro-batch in [1, upper] with ``fits(mb)`` true (0 if even 1 does not fit): the
    estimator's own monotone search, so `ftplan estimate`'s "max mb" and the plan always agree."""
    return largest_fitting(fits, upper)


def micro_batch_reason(mb: int, upper: int, gradient_checkpointing: bool) -> str:
    if mb >= upper:
        return f"micro-batch {mb}: the effective batch needs no more per GPU (more would still fit)"
    ck = " with gradient checkpointing" if gradient_checkpointing else ""
    return f"micro-batch {mb}: the largest that fits with the safety margin{ck}"


MICRO_BATCH_SOURCE = SEED_GUIDE + " 'Use the largest batch size that fits'"


def grad_accum_rule(effective: int, micro_batch: int, world: int) -> Choice[int]:
    accum = max(1, math.ceil(effective / (micro_batch * world)))
    real = accum * micro_batch * world
    return Choice(
        accum,
        f"{micro_batch} per GPU x {world} GPU(s) x {accum} accumulation = {real} per step "
        f"(target {effective})",
        SEED_CHAPTER + " 'Gradient Accumulation'",
    )


def grad_ckpt_reason(needed: bool, name: str) -> Choice[bool]:
    if needed:
        return Choice(
            True,
            f"{name} does not fit one micro-batch without it: recompute activations (about +33% compute)",
            CKPT,
        )
    return Choice(False, f"{name} fits without it (checkpointing would cost about +33% compute)", CKPT)
