"""Evaluation and safety nets: eval cadence, early stopping, task metric, checkpoints, forgetting."""

from __future__ import annotations

import math

from planner.plan import world_size
from planner.rules.common import SEED_HPARAMS, SEED_MATRIX, SEED_STRATEGIES, Choice

EVALS_PER_RUN = 10  # about ten validation points draw a usable loss curve
CHECKPOINT_MINUTES = 30  # a crash loses at most half an hour (issue 3)
SHORT_ANSWER_TOKENS = 16  # responses this short are compared exactly (class names, numbers, short QA)
PATIENCE = 3  # evaluations without improvement before stopping (HF EarlyStoppingCallback)


def metric_rule(task: str, response_tokens_mean: float) -> Choice[str]:
    if task == "classification":
        return Choice(
            "accuracy", "classification: accuracy of the predicted label", SEED_HPARAMS + " 'Accuracy'"
        )
    if task == "continued-pretraining":
        return Choice(
            "perplexity",
            "continued pretraining: perplexity on held-out text",
            SEED_HPARAMS + " 'Perplexity: useful for domain adaptation'",
        )
    if task == "preference":
        return Choice(
            "loss",
            "preference: DPO validation loss and reward accuracy (TRL logs both)",
            "TRL DPOTrainer metrics",
        )
    if response_tokens_mean <= SHORT_ANSWER_TOKENS:
        return Choice(
            "exact_match",
            f"responses average {response_tokens_mean:.0f} tokens (<= "
            f"{SHORT_ANSWER_TOKENS}): short answers are compared exactly",
            SEED_HPARAMS + " 'Exact Match: QA tasks'",
        )
    return Choice(
        "rouge_l",
        f"responses average {response_tokens_mean:.0f} tokens: ROUGE-L for generated text",
        SEED_HPARAMS + " 'BLEU/ROUGE'; " + SEED_MATRIX,
    )


def eval_steps_rule(total_steps: int, seconds_per_step: float) -> Choice[int]:
    """~10 evaluations per run, and never more than 30 minutes apart."""
    every = max(1, total_steps // EVALS_PER_RUN)
    reason = f"every {every} of {total_steps} steps (~{EVALS_PER_RUN} per run)"
    if seconds_per_step > 0:
        cap = max(1, int(CHECKPOINT_MINUTES * 60 // seconds_per_step))
        if every > cap:
            every = cap
            reason = (
                f"every {every} steps: at most {CHECKPOINT_MINUTES} min apart ({seconds_per_step:.1f} s/step)"
            )
        else:
            reason += f", ~{every * seconds_per_step / 60:.1f} min apart"
    return Choice(every, reason, SEED_MATRIX + " 'Monitor train/val loss curves'")


def save_steps_rule(eval_steps: int, seconds_per_step: float) -> Choice[int]:
    """Checkpoint at every evaluation (HF keeps the best one for load_best_model_at_end, which needs
    save_steps to be a multiple of eval_steps); evaluations are at most 30 minutes apart."""
    minutes = eval_steps * seconds_per_step / 60
    return Choice(
        eval_steps,
        f"checkpoint with every evaluation (every {eval_steps} steps, ~{minutes:.1f} min of "
        f"estimated time, <= {CHECKPOINT_MINUTES} min)",
        SEED_MATRIX + " 'Save checkpoints regularly'",
    )


def early_stopping_rule(val_rows: int) -> Choice[int | None]:
    if val_rows <= 0:
        return Choice(None, "no validation set: no early stopping", "")
    return Choice(
        PATIENCE,
        f"stop after {PATIENCE} evaluations without a lower validation loss",
        SEED_MATRIX + " 'Use validation loss for early stopping'",
    )


def forgetting_rule(general_given: bool) -> Choice[bool]:
    if general_given:
        return Choice(
            True,
            "perplexity on held-out general text, base vs tuned, to catch catastrophic forgetting",
            SEED_STRATEGIES + " 'Monitor validation loss on general tasks'",
        )
    return Choice(False, "no general corpus (--general-data) to measure forgetting on", SEED_STRATEGIES)


def seconds_per_step(time_hours: float, total_steps: int) -> float:
    return time_hours * 3600 / total_steps if total_steps > 0 and math.isfinite(time_hours) else 0.0


SEED = 42  # any fixed value; what matters is that it is recorded (data order, split, LoRA init)


def compare_base_rule() -> Choice[bool]:
    return Choice(
        True,
        "evaluate the base model on the same validation set before training: the tuned model must beat it",
        SEED_MATRIX + " 'Compare against base model and baselines'",
    )


def seed_rule() -> Choice[int]:
    return Choice(
        SEED,
        f"fixed seed {SEED} (data order, validation split, adapter init) for a reproducible run",
        "HF Trainer set_seed / TrainingArguments.seed",
    )


# Bytes per saved parameter: weights in the training precision (fp32 master weights with mixed precision);
# AdamW's two fp32 states per trained parameter are the estimate's optimizer bytes.
SAVED_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
CHECKPOINT_MARGIN = 1.1  # safetensors/JSON headers, RNG and scheduler states, the trainer state


def checkpoint_bytes(plan) -> int:
    """Disk size of one checkpoint: the trained weights + the optimizer state, over all ranks.

    Full fine-tuning saves every weight; adapters save only the trainable ones, which the estimate's
    gradient bytes count (one gradient per trainable parameter). Sharded strategies (ZeRO-2/3, FSDP)
    hold 1/world of the gradients and optimizer state per GPU, so the total is world times that."""
    e, s = plan.estimate, plan.strategy
    world = world_size(plan)
    shards = world if s.distribution in ("zero2", "zero3", "fsdp") else 1
    if s.method == "full":
        weights = plan.model.total_params * (4 if s.mixed_precision else SAVED_BYTES.get(s.precision, 4))
    else:
        weights = e.gradients * shards
    optimizer = e.optimizer * (world if s.distribution in ("zero1", "zero2", "zero3", "fsdp") else 1)
    return int((weights + optimizer) * CHECKPOINT_MARGIN)


def disk_warning(plan, free: int) -> str | None:
    """A warning when the output disk cannot hold the checkpoints the plan keeps (save_total_limit + 1 while
    the newest is committed before the oldest is rotated out)."""
    one = checkpoint_bytes(plan)
    keep = plan.checkpointing.save_total_limit + 1
    if not one or free >= one * keep:
        return None
    return (
        f"disk: {free / 2**30:.1f} GiB free where the run writes, {keep} checkpoints of ~{one / 2**30:.2f} GiB "
        f"need {one * keep / 2**30:.1f} GiB; free space or lower checkpointing.save_total_limit"
    )
