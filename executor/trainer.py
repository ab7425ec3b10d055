"""build_training_args / build_trainer: the plan's numbers handed to TRL's and HF's trainers.

sft, chat, classification-by-generation and continued pre-training: TRL ``SFTTrainer`` (packing,
completion-only loss); preference: TRL ``DPOTrainer``; classification with a head: HF ``Trainer``.
"""

from __future__ import annotations

import json
import math
import re

from executor.callbacks import (
    CommitCheckpointCallback,
    InterruptCallback,
    MetricsCallback,
    NanGuardCallback,
    SaveAtEndCallback,
)
from executor.data import DataBundle
from executor.model import is_head_classification
from executor.paths import RunPaths
from executor.tracking import TrackingCallback, configure, report_to
from planner.plan import Plan
from planner.render import render_deepspeed

# plan.strategy.optimizer -> transformers OptimizerNames (transformers/training_args.py).
# "adamw" is the fused CUDA kernel on GPU (one launch per step for all params, torch.optim.AdamW
# fused=True) and the plain torch implementation on CPU.
OPTIMIZERS_GPU = {
    "adamw": "adamw_torch_fused",
    # torch.optim.AdamW without fused=: torch picks the multi-tensor (foreach) kernels on CUDA
    # (torch/optim/optimizer.py _default_to_fused_or_foreach)
    "adamw_foreach": "adamw_torch",
    "paged_adamw_32bit": "paged_adamw_32bit",  # bitsandbytes PagedAdamW32bit
    "adamw_8bit": "adamw_bnb_8bit",  # Dettmers et al. 2022, 8-bit optimizer states
    "paged_adamw_8bit": "paged_adamw_8bit",  # QLoRA paper: paged optimizer states
    "sgd": "sgd",
    "adafactor": "adafactor",  # Shazeer & Stern 2018
}
OPTIMIZERS_CPU = {**OPTIMIZERS_GPU, "adamw": "adamw_torch"}
# Log at most every LOG_EVERY steps; the logging interval always divides save_steps (see logging_steps).
LOG_EVERY = 10


def use_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def optimizer_name(plan: Plan) -> str:
    return (OPTIMIZERS_GPU if use_cuda() else OPTIMIZERS_CPU)[plan.strategy.optimizer]


def logging_steps(plan: Plan) -> int:
    """Largest divisor of save_steps up to LOG_EVERY, so every save step is also a log step (NaN guard)."""
    return math.gcd(plan.checkpointing.save_steps, LOG_EVERY)


def early_stopping(plan: Plan, has_val: bool) -> bool:
    return has_val and plan.evaluation.early_stopping_patience is not None


def _common_args(plan: Plan, paths: RunPaths, has_val: bool) -> dict:
    t, s, ev = plan.training, plan.strategy, plan.evaluation
    best = early_stopping(plan, has_val) and plan.checkpointing.save_steps % ev.eval_steps == 0
    # The DeepSpeed config is rendered from plan.yaml here, not read from deepspeed.json: after an OOM
    # fallback or a hand edit of plan.yaml the two cannot disagree (DeepSpeed refuses a micro-batch that
    # differs from per_device_train_batch_size). The file is re-rendered too (executor.run), for launchers.
    deepspeed = (
        json.loads(render_deepspeed(plan))
        if (s.distribution.startswith("zero") and paths.deepspeed_config.is_file())
        else None
    )
    return dict(  # noqa: C408 - keyword arguments of TrainingArguments, one per line
        output_dir=str(paths.checkpoints),
        per_device_train_batch_size=t.micro_batch,
        per_device_eval_batch_size=t.micro_batch,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=t.lr,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio of the total steps (transformers 5)
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=optimizer_name(plan),
        bf16=s.precision == "bf16",
        fp16=s.precision == "fp16",
        gradient_checkpointing=s.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if s.gradient_checkpointing else None,
        eval_strategy="steps" if has_val else "no",
        eval_steps=ev.eval_steps,
        save_strategy="steps",
        save_steps=plan.checkpointing.save_steps,
        save_total_limit=None,  # rotation happens after the commit marker (CommitCheckpointCallback)
        logging_strategy="steps",
        logging_steps=logging_steps(plan),
        logging_first_step=True,
        logging_nan_inf_filter=False,  # the default hides NaN/inf losses; the NaN guard needs to see them
        include_num_input_tokens_seen="non_padding",
        report_to=report_to(plan),  # plan.tracking.backends: transformers' own integrations
        run_name=paths.plan_dir.name,  # the MLflow / W&B run is named after the plan folder
        seed=t.seed,
        data_seed=t.seed,
        load_best_model_at_end=best,
        metric_for_best_model="eval_loss" if has_val else None,
        greater_is_better=False if has_val else None,
        use_cpu=not use_cuda(),
        deepspeed=deepspeed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def build_training_args(plan: Plan, paths: RunPaths, has_val: bool):
    """SFTConfig / DPOConfig / TrainingArguments with every number the plan sets.

    Build it before the model: with a ZeRO-3 DeepSpeed config the arguments object registers
    HfDeepSpeedConfig, which makes ``from_pretrained`` partition weights at load (zero.Init).
    """
    configure(plan, paths)  # the environment the report_to integrations read (executor/tracking.py)
    common = _common_args(plan, paths, has_val)
    t = plan.training
    if plan.task == "preference":
        from trl import DPOConfig

        return DPOConfig(**common, beta=t.dpo_beta, max_length=t.seq_len)
    if is_head_classification(plan):
        from transformers import TrainingArguments

        return TrainingArguments(**common)
    from trl import SFTConfig

    return SFTConfig(
        **common,
        max_length=t.seq_len,
        packing=t.packing,
        # Raw text: concatenate-and-chunk (GPT-style pre-training). Examples: best-fit decreasing
        # bins, no example split across rows, attention kept within each example via position_ids
        # (TRL docs "Packing"; transformers masking_utils detects packed sequences).
        packing_strategy="wrapped" if plan.task == "continued-pretraining" else "bfd",
        completion_only_loss=t.completion_only_loss,
        dataset_num_proc=None,
    )


# ----------------------------------------------------------------------------------------------------
# layer-wise learning-rate decay (no library builds these param groups)
# ----------------------------------------------------------------------------------------------------

_LAYER_RE = re.compile(r"\.(?:layers|h|blocks|layer)\.(\d+)\.")


def layer_index(name: str, num_layers: int) -> int:
    """Transformer block of a parameter: embeddings are below block 0, head and final norm on top."""
    m = _LAYER_RE.search(f".{name}")
    if m:
        return int(m.group(1))
    if any(k in name for k in ("embed", "wte", "wpe")):
        return -1
    return num_layers - 1


def layerwise_param_groups(model, lr: float, decay: float, weight_decay: float, decay_names: set[str]):
    """One param group per (layer, weight-decay) pair, lr * decay**(L-1-l) (Clark et al. 2020, ELECTRA).

    Each group keeps its own lr; the LR scheduler (LambdaLR) scales every group by the same factor.
    """
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    indices = [int(m.group(1)) for n, _ in params if (m := _LAYER_RE.search(f".{n}"))]
    num_layers = max(indices) + 1 if indices else 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in params:
        layer = layer_index(name, num_layers)
        wd = name in decay_names
        key = (layer, wd)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": lr * decay ** (num_layers - 1 - layer),
                "weight_decay": weight_decay if wd else 0.0,
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(plan: Plan, model, args):
    """The plan's optimizer over layer-wise param groups; None when the plan sets no decay."""
    decay = plan.training.layerwise_lr_decay
    if decay is None:
        return None
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import get_parameter_names

    # Same no-decay rule as Trainer.get_decay_parameter_names (biases and norms).
    names = set(
        get_parameter_names(
            model,
            [torch.nn.LayerNorm],
            [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"],
        )
    )
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    groups = layerwise_param_groups(model, args.learning_rate, decay, args.weight_decay, names)
    return cls(groups, **kwargs)


# ----------------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------------


def build_callbacks(plan: Plan, paths: RunPaths, has_val: bool) -> list:
    from transformers import EarlyStoppingCallback

    cbs = [
        SaveAtEndCallback(),
        CommitCheckpointCallback(plan.checkpointing.save_total_limit),
        InterruptCallback(),
        NanGuardCallback(check_grad_norm=plan.strategy.precision != "fp16"),
    ]
    if {"mlflow", "wandb"} & set(plan.tracking.backends):
        cbs.append(TrackingCallback(plan))  # the plan's settings and estimate as the run's parameters
    if early_stopping(plan, has_val):
        cbs.append(EarlyStoppingCallback(early_stopping_patience=plan.evaluation.early_stopping_patience))
    return cbs


def _accuracy(eval_pred) -> dict[str, float]:
    import numpy as np

    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def build_trainer(plan: Plan, model, tokenizer, data: DataBundle, args, paths: RunPaths):
    """The library trainer for the plan's task, with our callbacks; metrics first in the callback list."""
    has_val = data.val is not None
    callbacks = build_callbacks(plan, paths, has_val)
    optimizer = build_optimizer(plan, model, args)
    common = {
        "model": model,
        "args": args,
        "train_dataset": data.train,
        "eval_dataset": data.val,
        "processing_class": tokenizer,
        "callbacks": callbacks,
        "optimizers": (optimizer, None),
    }
    if plan.task == "preference":
        from trl import DPOTrainer

        trainer = DPOTrainer(**common)
    elif is_head_classification(plan):
        from transformers import DataCollatorWithPadding, Trainer

        trainer = Trainer(
            **common, data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=_accuracy
        )
    else:
        from trl import SFTTrainer

        from executor.packing import packed_rows_collator

        trainer = (SFTTrainer if plan.training.fused_loss else _unfused_loss(SFTTrainer))(**common)
        rows = packed_rows_collator(plan, tokenizer)  # packs as rows for SDPA/eager (see executor/packing.py)
        if rows is not None:  # set after construction: TRL refuses a custom collator with padding-free
            trainer.data_collator = rows
    trainer.callback_handler.callbacks.insert(0, MetricsCallback(paths.metrics))
    return trainer


def _unfused_loss(sft_trainer_cls):
    """``training.fused_loss: false``: TRL's SFTTrainer always scores through its fused LM head
    (trl/trainer/sft_trainer.py compute_loss: ``model(**inputs, fused_lm_head=True)``); this subclass takes
    the loss from the model's own forward instead (transformers Trainer.compute_loss: ``model(**inputs)``,
    ForCausalLMLoss over the full logits), which is what the estimate models with fused_loss False.
    The collator already folded the completion mask into ``labels`` (-100), so the trained tokens match.
    SFTTrainer's token accuracy/entropy metrics are not logged on this path."""
    from transformers import Trainer

    class UnfusedLossSFTTrainer(sft_trainer_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return UnfusedLossSFTTrainer


def find_callback(trainer, cls):
    return next((cb for cb in trainer.callback_handler.callbacks if isinstance(cb, cls)), None)
