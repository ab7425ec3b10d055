"""Data decisions: sequence length, truncation share, packing, validation split, loss masking,
replay mixing, and the data-quality warnings.

Inputs are a :class:`planner.dataset.profile.DataProfile` (token-length percentiles, counts) and the
model's maximum positions; everything here is arithmetic over those numbers.
"""

from __future__ import annotations

import math

from planner.errors import FtplanError
from planner.rules.common import SEED_MATRIX, SEED_STRATEGIES, Choice

# Sequence lengths are rounded up to a multiple of 64 (tensor-core friendly shapes: NVIDIA's
# "Matrix Multiplication Background" guide recommends multiples of 64/128 for fp16/bf16 GEMMs),
# and to 128 above 1024 tokens.
SEQ_ROUND_SMALL = 64
SEQ_ROUND_LARGE = 128
SEQ_MIN = 64

# Warn when more than this share of examples would be cut (the cut part of a response is lost).
HEAVY_TRUNCATION = 0.05
# Warn when more than this share of rows will not train (malformed, or no trained token within seq_len).
DROPPED_WARNING = 0.05
# Packing pays when an average example fills less than this share of the sequence: padding would
# waste more than half the compute (TRL SFTTrainer docs, "packing").
PACKING_FILL = 0.5
TINY_DATA = 100  # seeds/003: "100 high-quality > 10K low-quality"; below this, warn
# Classes whose share is this many times smaller than the largest one trigger an imbalance warning.
IMBALANCE_RATIO = 10.0
# Validation split: 10% up to VAL_CAP rows (standard hold-out; a few thousand rows give a stable
# loss estimate, more is wasted eval time), at least VAL_MIN rows when the data allows it.
VAL_FRACTION = 0.1
VAL_CAP = 2000
VAL_MIN = 10
CPT_CHUNK = 2048
REPLAY_RATIO = 0.2  # seeds/001 "Replay: 80% task-specific, 20% general"


def round_seq_len(tokens: int) -> int:
    """Round a token count up to the next multiple of 64 (128 above 1024)."""
    step = SEQ_ROUND_LARGE if tokens > 1024 else SEQ_ROUND_SMALL
    return max(SEQ_MIN, int(math.ceil(tokens / step) * step))


def truncated_share(seq_len: int, p50: int, p95: int, p99: int, max_len: int) -> float:
    """Share of examples longer than ``seq_len``, interpolated between the profile's percentiles.

    The profile keeps p50/p95/p99/max only, so between two known points the tail is taken as linear;
    the result is exact at the percentiles themselves.
    """
    if seq_len >= max_len:
        return 0.0
    points = [(p50, 0.50), (p95, 0.05), (p99, 0.01), (max_len, 0.0)]  # (length, share longer)
    if seq_len < p50:
        return 0.5 + 0.5 * (1 - seq_len / max(p50, 1))
    for (l0, s0), (l1, s1) in zip(points, points[1:], strict=False):
        if l0 <= seq_len <= l1:
            if l1 == l0:
                return s1
            return s0 + (s1 - s0) * (seq_len - l0) / (l1 - l0)
    return 0.0


def truncated_fraction(profile, seq_len: int, task: str = "") -> float:
    """Share of valid rows longer than ``seq_len``: exact from the profile's length histogram (the lengths
    the run tokenizes), else interpolated between its percentiles. Raw text is chunked, never cut."""
    if task == "continued-pretraining":
        return 0.0
    hist = profile.length_hist
    if hist:
        return cut_rows(profile, seq_len, task)[0] / max(sum(hist.values()), 1)
    return truncated_share(seq_len, profile.tokens_p50, profile.tokens_p95, profile.tokens_p99, profile.tokens_max)


def cut_rows(profile, seq_len: int, task: str) -> tuple[int, int]:
    """(rows cut at seq_len, rows left with no trained token and dropped) as the executor will count them."""
    if task == "continued-pretraining" or not profile.length_hist:
        return 0, 0
    return profile.over(seq_len)


def check_trainable(profile, seq_len: int, task: str) -> None:
    """Refuse a plan in which no row keeps a trained token within ``seq_len`` (every prompt fills it)."""
    _, untrained = cut_rows(profile, seq_len, task)
    if untrained and untrained >= profile.valid_rows:
        raise FtplanError(
            f"{profile.path}: no trainable rows: in all {untrained} valid rows the prompt alone fills "
            f"training.seq_len {seq_len}, so no answer token would be trained",
            hint=f"use a model with more positions or shorter prompts (longest row: {profile.tokens_max} tokens)",
        )


def seq_len_rule(profile, max_positions: int, task: str) -> Choice[int]:
    """Sequence length from the data's p99 token length, rounded up and capped by the model."""
    if task == "continued-pretraining":
        # Raw text is concatenated and chunked (HF run_clm.py group_texts): chunks of 2048 tokens
        # unless the model is shorter; longer chunks cost quadratic attention for little gain.
        value = min(max_positions, CPT_CHUNK)
        return Choice(
            value,
            f"continued pretraining packs the corpus into {value}-token chunks (model max {max_positions})",
            "HF run_clm.py group_texts",
        )
    wanted = round_seq_len(profile.tokens_p99)
    value = min(wanted, max_positions)
    cut = truncated_fraction(profile, value, task)
    capped = f", capped by the model's {max_positions} positions" if value < wanted else ""
    reason = (
        f"p99 of example lengths is {profile.tokens_p99} tokens (max {profile.tokens_max}); "
        f"rounded up to {value}{capped}: about {cut:.1%} of examples would be truncated"
    )
    return Choice(value, reason, "data profile percentiles")


def shorter_seq_lens(profile, seq_len: int) -> list[int]:
    """Shorter lengths to fall back to when nothing fits ``seq_len``: the p95 and p50 lengths (rounded
    up), then halvings down to 512, longest first."""
    cands = {round_seq_len(profile.tokens_p95), round_seq_len(profile.tokens_p50)}
    n = seq_len // 2
    while n >= 512:
        cands.add(round_seq_len(n))
        n //= 2
    return sorted((c for c in cands if SEQ_MIN <= c < seq_len), reverse=True)


def packing_rule(profile, seq_len: int, task: str) -> Choice[bool]:
    """Pack short examples into full sequences (no padding) when they fill under half a sequence."""
    if task == "continued-pretraining":
        return Choice(True, "raw text is concatenated into full sequences", "HF run_clm.py group_texts")
    if task in ("preference", "classification"):
        return Choice(False, f"{task} examples are scored one by one (no packing)", "TRL DPOTrainer")
    fill = profile.tokens_mean / max(seq_len, 1)
    if fill < PACKING_FILL:
        return Choice(
            True,
            f"an average example ({profile.tokens_mean:.0f} tokens) fills {fill:.0%} of "
            f"{seq_len}: packing avoids padding waste",
            "TRL SFTTrainer packing (padding-free)",
        )
    return Choice(
        False,
        f"examples fill {fill:.0%} of the sequence on average: little padding to save",
        "TRL SFTTrainer packing",
    )


def val_split_rule(valid_rows: int) -> tuple[Choice[float], int]:
    """(fraction, rows) held out for validation: 10%, at least 10 rows, at most 2000."""
    if valid_rows < 2 * VAL_MIN:
        return Choice(
            0.0, f"only {valid_rows} valid examples: too few to hold out a validation set", SEED_MATRIX
        ), 0
    rows = int(min(VAL_CAP, max(VAL_MIN, round(valid_rows * VAL_FRACTION))))
    frac = rows / valid_rows
    return Choice(
        round(frac, 4),
        f"hold out {rows} of {valid_rows} examples ({frac:.1%}): 10%, at most "
        f"{VAL_CAP} (enough for a stable validation loss)",
        "seeds/003 'Train/val/test splits'",
    ), rows


def completion_only_rule(task: str) -> Choice[bool]:
    if task in ("sft", "chat"):
        return Choice(
            True,
            "loss on response tokens only: the prompt is given, not learned",
            "seeds/004 'Train with language modeling objective on responses only'",
        )
    if task == "classification":
        return Choice(True, "loss on the label tokens only", "seeds/001 'Generate class name'")
    if task == "preference":
        return Choice(False, "DPO scores whole chosen/rejected responses (its own loss)", "TRL DPOTrainer")
    return Choice(
        False,
        "continued pretraining learns every token of the corpus",
        "seeds/004 'Domain-Adaptive Pre-Training'",
    )


def replay_rule(general_given: bool) -> Choice[float]:
    if general_given:
        return Choice(
            REPLAY_RATIO,
            "mix 20% general data into training (80/20) against catastrophic forgetting",
            SEED_STRATEGIES + " 'Replay'",
        )
    return Choice(0.0, "no general corpus given (--general-data): no replay", SEED_STRATEGIES)


def data_warnings(profile, truncated: float, seq_len: int, task: str = "") -> list[str]:
    """Quality warnings with counts: tiny data, invalid/duplicate rows, truncation and rows left without a
    trained token, content the chat template does not render, class imbalance."""
    out: list[str] = []
    cut, untrained = cut_rows(profile, seq_len, task)
    rows = max(profile.valid_rows, 1)
    dropped = profile.invalid_count + untrained
    if dropped > DROPPED_WARNING * max(profile.rows, 1):
        out.append(
            f"{dropped} of {profile.rows} rows ({dropped / max(profile.rows, 1):.0%}) will not train: "
            f"{profile.invalid_count} malformed, {untrained} with no trained token within {seq_len} tokens"
        )
    if untrained:
        out.append(
            f"{untrained} rows have a prompt of {seq_len} tokens or more: no answer token is left after "
            "truncation, so they are dropped; raise training.seq_len to keep them"
        )
    for kind, n in (profile.skipped or {}).items():
        out.append(f"{n} of {rows} valid rows: {kind}")
    if profile.valid_rows < TINY_DATA:
        out.append(
            f"tiny dataset: {profile.valid_rows} valid examples (< {TINY_DATA}); expect overfitting, "
            "consider few-shot prompting or collecting more data (seeds/003)"
        )
    if profile.invalid_count:
        first = ", ".join(f"line {r.line}: {r.reason}" for r in profile.invalid[:3])
        out.append(f"{profile.invalid_count} malformed rows will be dropped ({first})")
    if profile.duplicates:
        share = profile.duplicates / max(profile.rows, 1)
        out.append(
            f"{profile.duplicates} exact duplicate rows ({share:.1%}) will be dropped (seeds/003 "
            "'Remove duplicates')"
        )
    if truncated > HEAVY_TRUNCATION and task != "continued-pretraining":
        count = f"{cut} rows ({truncated:.0%})" if cut else f"about {truncated:.0%} of examples"
        out.append(
            f"heavy truncation: {count} are longer than {seq_len} tokens "
            f"(p99 {profile.tokens_p99}, max {profile.tokens_max}); raise training.seq_len or "
            "shorten the data"
        )
    labels = {k: v for k, v in (profile.label_counts or {}).items() if v > 0}
    if len(labels) >= 2:
        big, small = max(labels.values()), min(labels.values())
        if big / small >= IMBALANCE_RATIO:
            rare = min(labels, key=labels.get)
            out.append(
                f"class imbalance: label '{rare}' has {small} rows vs {big} for the largest "
                f"({big / small:.0f}x); balance or reweight (seeds/003 'Balance dataset')"
            )
    return out


def trained_tokens(
    profile, seq_len: int, truncated: float, packing: bool, val_rows: int, replay: float
) -> int:
    """Tokens processed per epoch: training rows x their (truncated) length, plus replay data.

    Without packing, dynamic padding pads each micro-batch to its longest example; that waste is
    not counted (the estimator's throughput is per real token), which keeps the time a lower bound
    that packing makes tight.
    """
    rows = max(profile.valid_rows - profile.duplicates - val_rows, 1)
    per_row = min(profile.tokens_mean, seq_len) if truncated else profile.tokens_mean
    hist = profile.length_hist
    if hist and truncated:  # exact: every row cut at seq_len, as the executor cuts it
        per_row = sum(min(length, seq_len) * n for length, n in hist.items()) / max(sum(hist.values()), 1)
    # DPO runs chosen and rejected: two sequences per row (DataProfile.sequences_per_row).
    tokens = rows * per_row * max(1, int(profile.sequences_per_row or 1))
    if replay > 0:
        tokens /= 1 - replay  # general data is added on top: task data stays 1 - replay of the mix
    return int(tokens)
